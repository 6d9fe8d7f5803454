"""Optional parts of snapbench: a missing one is one line naming the extra to install, never a traceback."""

from __future__ import annotations

import importlib
from types import ModuleType

from snapbench.errors import SnapbenchError


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import `module`, or say which extra brings it: `what` names what needed it ("--ray-address")."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SnapbenchError(f"{what} needs the {module} package: pip install \"snapbench[{extra}]\"") from None
