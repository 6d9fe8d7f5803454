"""snapbench: take a Stable-Diffusion-style UNet apart for the iPhone.

Pipeline: model -> blocks -> converters -> profilers -> latency table -> evolution -> reports.
"""

__version__ = "0.1.0"

from snapbench import torchvision_compat as _torchvision_compat  # noqa: E402

_torchvision_compat.install()  # before anything imports torchvision (transformers, timm, open_clip do)
