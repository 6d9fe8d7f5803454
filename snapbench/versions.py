"""Tool versions stamped into manifests, cache keys, latency documents and reports."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from snapbench import __version__

# What changes a conversion's output (and so belongs in its cache key).
CONVERSION_TOOLS: tuple[str, ...] = ("coremltools", "torch", "diffusers", "transformers", "numpy")


def tool_versions(*extra: str) -> dict[str, str]:
    out = {"snapbench": __version__}
    for dist in (*CONVERSION_TOOLS, *extra):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "-"
    return out
