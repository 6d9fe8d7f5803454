"""Let torchvision import beside a CPU-only torch whose build its C extension does not match.

PyPI's Linux torchvision wheels are CUDA builds; beside this machine's CPU torch their C extension does not
load, and torchvision (0.28) then fails at import while registering fake kernels for `nms` and `qnms` (and
so does everything that imports it: transformers, timm, open_clip). Declaring those two ops' schemas first
lets the pure-Python parts load; snapbench never calls them. `install()` arranges this to happen right
before torchvision is first imported, and does nothing when its extension loads.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.library

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_library: torch.library.Library | None = None  # kept alive: dropping a torch.library.Library removes what it defined


def declare_missing_ops() -> None:
    global _library
    if _library is not None:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import ctypes
    import glob
    import os

    import torch

    ext = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so"))
    try:
        if ext:
            ctypes.CDLL(ext[0])
            return  # the extension loads: torchvision registers its own ops
    except OSError:
        pass
    try:
        lib = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            lib.define(schema)
        _library = lib
    except RuntimeError:  # defined already
        pass


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: D401 (importlib protocol)
        if name == "torchvision":
            sys.meta_path.remove(self)
            declare_missing_ops()
        return None


def install() -> None:
    if "torchvision" not in sys.modules and not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
