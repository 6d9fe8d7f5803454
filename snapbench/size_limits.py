"""How big a network built from user input may be, and the switch that lifts the bound (torch-free: config
checks use it before torch is imported). `snapbench/model/size_bound.py` applies the limits to a build.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass

from snapbench.errors import SnapbenchError

# Set by `--no-size-limit`; inherited by worker processes (convert --jobs, evolve's executors).
LIFT_ENV = "SNAPBENCH_NO_SIZE_LIMIT"
LIFT_HINT = "if it really is that large, add --no-size-limit"


@dataclass(frozen=True)
class SizeLimits:
    """What no real text-to-image network (or its encoders) reaches; a config past them is a typo or hostile."""

    params: int = 20_000_000_000  # 80 GB of fp32 weights; SDXL's UNet is 2.6 B, Flux 12 B
    modules: int = 200_000  # SDXL's UNet is ~2,700 modules, a 100-layer LLM ~1,500
    activation: int = 2**32  # elements of one tensor a forward produces (16 GiB in fp32)
    blocks: int = 10_000  # blocks a layout lists (SDXL's UNet: 45 RB/CA blocks, a large DiT: 60)


DEFAULT_LIMITS = SizeLimits()
_LIFTED: contextvars.ContextVar[bool] = contextvars.ContextVar("snapbench_size_limits_lifted", default=False)


class ModelTooLarge(SnapbenchError):
    """A network past a size limit, refused before it was allocated."""


def limits_lifted() -> bool:
    return _LIFTED.get() or os.environ.get(LIFT_ENV, "") not in ("", "0")


@contextlib.contextmanager
def size_limits_lifted(lifted: bool = True) -> Iterator[None]:
    """Within the block (and in worker processes started in it), build networks of any size."""
    token = _LIFTED.set(lifted)
    old = os.environ.get(LIFT_ENV)
    if lifted:
        os.environ[LIFT_ENV] = "1"
    try:
        yield
    finally:
        _LIFTED.reset(token)
        if lifted:
            if old is None:
                os.environ.pop(LIFT_ENV, None)
            else:
                os.environ[LIFT_ENV] = old
