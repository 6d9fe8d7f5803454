"""PyTorch ops coremltools 9 has no converter for, which the DiT pipelines' parts use, as MIL ops.

- `movedim` (diffusers' AutoencoderDC, Sana's 32x autoencoder: channel-last norms and its multi-scale
  linear attention): a transpose with the permutation torch.movedim defines.

Registered with coremltools' own registry (`register_torch_op`), once per process, before a conversion.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Protocol, SupportsInt


class _Context(Protocol):
    """coremltools' torch frontend `TranscriptionContext`: the MIL vars made so far, by torch node name."""

    def add(self, ssa_var: object) -> None: ...


class _Node(Protocol):
    """coremltools' `InternalTorchIRNode`: one op of the traced graph."""

    @property
    def name(self) -> str: ...


def _as_list(v: SupportsInt | Iterable[SupportsInt]) -> list[int]:
    return [int(x) for x in v] if isinstance(v, Iterable) else [int(v)]


def movedim_perm(rank: int, source: list[int], destination: list[int]) -> list[int]:
    """torch.movedim's permutation: the moved dims at their destinations, the others in order."""
    src = [s % rank for s in source]
    dst = [d % rank for d in destination]
    perm = [-1] * rank
    for s, d in zip(src, dst):
        perm[d] = s
    rest = iter(i for i in range(rank) if i not in src)
    return [p if p >= 0 else next(rest) for p in perm]


@functools.cache
def register() -> None:
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    if "movedim" in _TORCH_OPS_REGISTRY:  # a later coremltools has its own
        return

    @register_torch_op(torch_alias=["movedim.int", "movedim.intlist"])
    def movedim(context: _Context, node: _Node) -> None:
        x, source, destination = _get_inputs(context, node, expected=3)
        perm = movedim_perm(x.rank, _as_list(source.val), _as_list(destination.val))
        context.add(mb.transpose(x=x, perm=perm, name=node.name))
