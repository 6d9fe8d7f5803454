"""The type of a JSON document: a recursive alias, so that what a `to_dict()` returns is checked as JSON
(str, number, bool, null, list, object) instead of passing as `Any`.

A document read back (`json.loads`, `read_user_json`) is narrowed where it is used (`isinstance`, `json_int`)
or read into a typed dataclass (`from_dict`, `dataclass_from_json`) at the edge."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

JSONScalar: TypeAlias = "str | int | float | bool | None"
JSON: TypeAlias = "JSONScalar | list[JSON] | dict[str, JSON]"
JSONObject: TypeAlias = "dict[str, JSON]"

D = TypeVar("D", bound="DataclassInstance")


def json_int(d: Mapping[str, JSON], key: str, default: int = 0) -> int:
    """`d[key]` where it is a whole number (a count in a document we wrote), else `default`."""
    v = d.get(key, default)
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def dataclass_from_json(cls: type[D], d: Mapping[str, JSON], **converted: object) -> D:
    """`cls` from the fields of a JSON object that `cls` has (others ignored, missing ones defaulted), with
    `converted` replacing the values that JSON cannot hold as the field's type (a tuple, a nested dataclass).

    The one place a parsed document meets a dataclass constructor: the fields' values are checked by the
    dataclass itself (`__post_init__`), which a static type cannot express for arbitrary JSON."""
    kw: dict[str, Any] = {f.name: d[f.name] for f in fields(cls) if f.name in d}
    kw.update(converted)
    return cls(**kw)
