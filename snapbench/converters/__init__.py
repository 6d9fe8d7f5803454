"""Converters: turn UNet blocks (and whole models) into Core ML packages.

    from snapbench.converters.entry import ConvertRequest, convert
    from snapbench.converters.manifest import load_manifest
    from snapbench.converters.options import ConvertOptions
    result = convert(ConvertRequest(resolve_model("sd15"), Path("build/sd15"), ConvertOptions(mode="profile")))
    manifest = load_manifest("build/sd15")

`convert` is the one entry point (blocks, a whole model or part, the app pipeline); every kind hands back
a `ConvertResult` (`result.py`).

Import each name from the module that defines it (`entry`, `result`, `options`, `manifest`, ...): this
package re-exports nothing, so mypy checks every import and light commands load only what they use.
"""
