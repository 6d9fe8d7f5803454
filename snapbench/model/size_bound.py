"""Bound the size of a network built from user input before anything is allocated.

A config says how big a network is only implicitly (layers, channels, sample size), and the only general way
to know what it implies is to build it. So a network is first built on PyTorch's meta device (shapes, no
storage) under a counter that stops the build as soon as it passes a limit: a billion layers stop after
`max_modules` modules, a 32M-channel convolution at its first weight. One forward at the requested input,
also on meta tensors, then gives the largest activation. Only a network within the limits is built for real.

    size = bounded_build(lambda: Net(**config), "hf:BertConfig")        # on meta; raises ModelTooLarge
    check_activations(lambda: net(x_meta), "sd15 at latent 64")          # the largest tensor a forward makes

Backbones use it through these two functions only (a function of how to build a network, not of which
network), so a new backbone is bounded by calling them. The limits sit far above any real model: SDXL's
UNet has 2.6 B parameters and about 2,700 modules, Sana 1.6 B, Flux 12 B. `--no-size-limit` (the CLI) or
`size_limits_lifted()` lifts them for the rare network that really is larger.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

if TYPE_CHECKING:
    from torch._ops import OpOverload

from snapbench.size_limits import (
    DEFAULT_LIMITS,
    LIFT_ENV,
    LIFT_HINT,
    ModelTooLarge,
    SizeLimits,
    limits_lifted,
    size_limits_lifted,
)

T = TypeVar("T")


@dataclass(frozen=True)
class ModelSize:
    params: int
    modules: int


class _Counter:
    """Counts parameters, buffers and modules as a network registers them, and raises past a limit: the
    build stops after at most one module's worth of Python objects beyond the limit."""

    def __init__(self, what: str, limits: SizeLimits):
        self.what, self.limits = what, limits
        self.params = self.modules = 0

    def on_module(self, module: nn.Module) -> None:
        self.modules += 1
        if self.modules > self.limits.modules:
            raise ModelTooLarge(f"{self.what}: more than {self.limits.modules:,} modules, far more than any real "
                                f"network has; check the layer and block counts ({LIFT_HINT})")

    def on_tensor(self, module: nn.Module, name: str, tensor: torch.Tensor | None) -> None:
        if tensor is None:
            return
        self.params += tensor.numel()
        if self.params > self.limits.params:
            raise ModelTooLarge(f"{self.what}: more than {self.limits.params:,} parameters, far more than any "
                                f"real network has; check the channel and layer counts ({LIFT_HINT})")


@contextlib.contextmanager
def _counting(what: str, limits: SizeLimits) -> Iterator[_Counter]:
    """Count within the block. Modules are counted as they are constructed, not as they are attached: a list
    of a billion parameter-free layers (ReLU) is built in full before any container registers one. The
    constructor is wrapped only here and restored on the way out, whatever happens."""
    from torch.nn.modules import module as module_mod

    counter = _Counter(what, limits)
    original_init = nn.Module.__init__

    def counted_init(self: nn.Module, *args: object, **kwargs: object) -> None:
        counter.on_module(self)
        original_init(self, *args, **kwargs)

    handles = [module_mod.register_module_parameter_registration_hook(counter.on_tensor),
               module_mod.register_module_buffer_registration_hook(counter.on_tensor)]
    nn.Module.__init__ = counted_init
    try:
        yield counter
    finally:
        nn.Module.__init__ = original_init
        for h in handles:
            h.remove()


def bounded_build(build: Callable[[], T], what: str, *, limits: SizeLimits = DEFAULT_LIMITS) -> T:
    """`build()` on the meta device, stopped with ModelTooLarge as soon as it passes `limits` (unless lifted).
    What comes back has no storage: count it, cut it, run it on meta tensors; build it again for real."""
    with torch.device("meta"):
        if limits_lifted():
            return build()
        with _counting(what, limits):
            return build()


def bounded_real_build(build: Callable[[], T], what: str, *, limits: SizeLimits = DEFAULT_LIMITS) -> T:
    """`build()` for real, for builders that cannot run on the meta device (they compute at build time):
    every allocation is checked before it is made, so the build stops at the limit without reaching it."""
    if limits_lifted():
        return build()
    with _counting(what, limits) as counter, _AllocationGuard(counter):
        return build()


class _AllocationGuard(TorchDispatchMode):
    """Refuses a factory op (empty, zeros, rand...) whose tensor would take the network past its limit,
    before the op allocates it."""

    def __init__(self, counter: _Counter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        size = _factory_numel(func, args, kwargs)
        if size is not None and self.counter.params + size > self.counter.limits.params:
            raise ModelTooLarge(f"{self.counter.what}: one tensor of {size:,} elements takes it past "
                                f"{self.counter.limits.params:,} parameters, far more than any real network has; "
                                f"check the channel and layer counts ({LIFT_HINT})")
        return func(*args, **kwargs)


def _factory_numel(func: OpOverload, args: tuple[object, ...], kwargs: dict[str, object]) -> int | None:
    """Elements a tensor-creating op with an explicit size would allocate (None: not such an op)."""
    name = func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else ""
    if name not in ("empty", "empty_strided", "zeros", "ones", "full", "rand", "randn", "randint", "new_empty",
                    "new_zeros", "new_ones", "new_full", "new_empty_strided"):
        return None
    sizes = next((a for a in (*args, kwargs.get("size")) if isinstance(a, (list, tuple, torch.Size))), None)
    if sizes is None or not all(isinstance(s, int) for s in sizes):
        return None
    n = 1
    for s in sizes:
        n *= max(int(s), 0)
    return n


def count_size(module: nn.Module) -> ModelSize:
    """Unique parameters and buffers (shared tensors once) and modules of a built network."""
    seen: set[int] = set()
    n = 0
    for t in (*module.parameters(), *module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            n += t.numel()
    return ModelSize(n, sum(1 for _ in module.modules()))


class _ActivationWatch(TorchDispatchMode):
    """Watches a forward and refuses the first op whose output would pass the activation limit. On meta
    tensors nothing is allocated, so the forward runs free up to there; on real tensors each op is first run
    on meta twins of its inputs (shapes only), so the refusal comes before the real op allocates."""

    def __init__(self, what: str, limit: int):
        super().__init__()
        self.what, self.limit = what, limit
        self.largest = 0

    def _check(self, out: object) -> None:
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._check_size(t.numel(), list(t.shape))

    def _check_size(self, n: int, shape: list[int]) -> None:
        self.largest = max(self.largest, n)
        if n > self.limit:
            raise ModelTooLarge(
                f"{self.what}: one activation would hold {n:,} elements (shape {shape}), far more than any real "
                f"network makes; check the input size, sample_size and channels ({LIFT_HINT})")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        size = _factory_numel(func, args, kwargs)
        if size is not None:
            self._check_size(size, [size])
        if any(isinstance(t, torch.Tensor) and t.device.type != "meta" for t in tree_flatten((args, kwargs))[0]):
            try:
                shadow = func(*tree_map(_meta_twin, args), **tree_map(_meta_twin, kwargs))
            except Exception:  # no meta kernel, or a data-dependent op: its real output is checked below
                shadow = None
            self._check(shadow)
        out = func(*args, **kwargs)
        self._check(out)
        return out


def _meta_twin(x: object) -> object:
    if isinstance(x, torch.Tensor) and x.device.type != "meta":
        return torch.empty_strided(tuple(x.shape), tuple(x.stride()), dtype=x.dtype, device="meta")
    return x


def check_activations(forward: Callable[[], T], what: str, *, limits: SizeLimits = DEFAULT_LIMITS) -> T:
    """Run `forward()` (on meta tensors) and refuse, with ModelTooLarge, at the first output past the limit."""
    if limits_lifted():
        return forward()
    with _ActivationWatch(what, limits.activation):
        return forward()


def check_input_elements(shape: tuple[int, ...], what: str, *, limits: SizeLimits = DEFAULT_LIMITS) -> None:
    """An input tensor is an activation too: refuse one past the limit before it is made."""
    n = 1
    for d in shape:
        n *= int(d)
    if n > limits.activation and not limits_lifted():
        raise ModelTooLarge(f"{what}: an input of shape {list(shape)} holds {n:,} elements, far more than any real "
                            f"network takes; check the input size and sample_size ({LIFT_HINT})")


__all__ = ["LIFT_HINT", "SizeLimits", "DEFAULT_LIMITS", "ModelTooLarge", "ModelSize", "bounded_build", "bounded_real_build",
           "check_activations", "check_input_elements", "count_size", "size_limits_lifted", "limits_lifted",
           "LIFT_ENV"]
