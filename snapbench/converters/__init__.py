"""Converters: turn UNet blocks (and whole models) into Core ML packages.

    from snapbench.converters.convert_blocks import convert_model
    from snapbench.converters.manifest import load_manifest
    from snapbench.converters.options import ConvertOptions
    result = convert_model("sd15", "build/sd15", ConvertOptions(mode="profile"))
    manifest = load_manifest("build/sd15")

Import each name from the module that defines it (`options`, `convert_blocks`, `components`, `manifest`):
this package re-exports nothing, so mypy checks every import and light commands load only what they use.
"""
