"""The type of a JSON document: a recursive alias, so that what a `to_dict()` returns is checked as JSON
(str, number, bool, null, list, object) instead of passing as `Any`.

A document read back (`json.loads`, `read_user_json`) is narrowed where it is used (`isinstance`) or read
into a typed dataclass (`from_dict`) at the edge."""

from __future__ import annotations

from typing import TypeAlias

JSONScalar: TypeAlias = "str | int | float | bool | None"
JSON: TypeAlias = "JSONScalar | list[JSON] | dict[str, JSON]"
JSONObject: TypeAlias = "dict[str, JSON]"
