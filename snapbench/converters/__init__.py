"""Converters: turn UNet blocks (and whole models) into Core ML packages.

    from snapbench.converters import ConvertOptions, ConvertRequest, convert, load_manifest
    result = convert(ConvertRequest(resolve_model("sd15"), Path("build/sd15"), ConvertOptions(mode="profile")))
    manifest = load_manifest("build/sd15")

`convert` is the one entry point (blocks, a whole model or part, the app pipeline); every kind hands back
a `ConvertResult`.

Heavy imports (torch, diffusers, coremltools) happen on first use, not at import of this package.
"""

from __future__ import annotations

from typing import Any

from snapbench.converters.options import COMPONENTS, MODES, PRECISIONS, TARGETS, WEIGHT_BITS, ConvertOptions

__all__ = [
    "ConvertOptions", "ConvertRequest", "ConvertResult", "Manifest", "ManifestBlock", "convert",
    "load_manifest", "COMPONENTS", "MODES", "PRECISIONS", "TARGETS", "WEIGHT_BITS",
]

_LAZY = {
    "ConvertRequest": "snapbench.converters.entry",
    "ConvertResult": "snapbench.converters.result",
    "convert": "snapbench.converters.entry",
    "Manifest": "snapbench.converters.manifest",
    "ManifestBlock": "snapbench.converters.manifest",
    "load_manifest": "snapbench.converters.manifest",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'snapbench.converters' has no attribute {name!r}")
