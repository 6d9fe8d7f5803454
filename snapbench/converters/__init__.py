"""Converters: turn UNet blocks (and whole models) into Core ML packages.

    from snapbench.converters import ConvertOptions, convert_model, convert_component, load_manifest
    result = convert_model("sd15", "build/sd15", ConvertOptions(mode="profile"))
    manifest = load_manifest("build/sd15")

Heavy imports (torch, diffusers, coremltools) happen on first use, not at import of this package.
"""

from __future__ import annotations

from typing import Any

from snapbench.converters.options import COMPONENTS, MODES, PRECISIONS, TARGETS, WEIGHT_BITS, ConvertOptions

__all__ = [
    "ConvertOptions", "ConvertResult", "Manifest", "ManifestBlock", "convert_model", "convert_component",
    "load_manifest", "COMPONENTS", "MODES", "PRECISIONS", "TARGETS", "WEIGHT_BITS",
]

_LAZY = {
    "ConvertResult": "snapbench.converters.convert_blocks",
    "convert_model": "snapbench.converters.convert_blocks",
    "convert_component": "snapbench.converters.components",
    "Manifest": "snapbench.converters.manifest",
    "ManifestBlock": "snapbench.converters.manifest",
    "load_manifest": "snapbench.converters.manifest",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'snapbench.converters' has no attribute {name!r}")
