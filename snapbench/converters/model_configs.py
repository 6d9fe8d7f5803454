"""The configs the pipeline parts are built from: a transformers / diffusers `config.json` as a JSON object.

The converters write these configs themselves (CLIP, T5, Gemma-2, the VAEs) or read them from a model folder,
hand them to the model classes as keyword arguments, and read a few numbers back (widths, layer counts, the
latent channels). A field read back is narrowed here, at the edge, with the type it must have: a config that
holds something else fails with the field's name instead of passing on as `Any`.
"""

from __future__ import annotations

from collections.abc import Mapping

from snapbench.json_types import JSON, JSONObject

ModelConfig = JSONObject  # the keyword arguments of a transformers / diffusers config class, as its config.json


def config_int(config: Mapping[str, JSON], key: str, default: int | None = None) -> int:
    """An integer field (a width, a count); `default` when missing (KeyError without one), TypeError when not a
    number."""
    value = config[key] if default is None else config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"config field {key!r} is {value!r}, not a number")
    return int(value)


def config_ints(config: Mapping[str, JSON], key: str) -> list[int]:
    """A list-of-integers field (`block_out_channels`); KeyError when missing, TypeError when not one."""
    value = config[key]
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise TypeError(f"config field {key!r} is {value!r}, not a list of numbers")
    return [int(v) for v in value if isinstance(v, (int, float))]
