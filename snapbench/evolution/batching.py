"""Where candidate architectures share one forward pass.

Every candidate of an iteration is the same base UNet with blocks kept, removed or copied, so all have the
same latent and context shapes: they batch. The model that runs them holds every block any of them runs
(per block: kept if any keeps it, as many copies as the most); each candidate is that model with the
blocks it lacks run as removed (`PerRow`), which is exactly the candidate: a removed original runs as
removed either way, and a copy run as removed is the identity, as a copy that is not there.

A swapped block (evolve --moves) is another module, not a row mask: candidates that run different
variants of a block go in different batches (`variant_groups`), each with its own union.
"""

from __future__ import annotations

from collections.abc import Sequence

from snapbench.backbones import backbone_for
from snapbench.specs.arch_spec import ArchSpec, BlockChoice


def variant_groups(specs: Sequence[ArchSpec]) -> list[list[int]]:
    """Indices of `specs` grouped by the variant every block runs as (first appearance order)."""
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        key = tuple(spec.choice(s).variant for s in backbone_for(spec).removable(spec))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def union_spec(specs: Sequence[ArchSpec]) -> tuple[ArchSpec, list[frozenset[str]]]:
    """The spec holding every block any of `specs` runs, and per spec the block ids it runs as removed.
    The specs must run the same variant of every block (`variant_groups`)."""
    first = specs[0]
    slots = backbone_for(first).removable(first)
    changes: dict[tuple[str, str], BlockChoice] = {}
    for slot in slots:
        choices = [s.choice(slot) for s in specs]
        if len({c.variant for c in choices}) > 1:
            raise ValueError(f"union_spec: candidates run different variants of {slot.block_id}")
        changes[(slot.stage, slot.name)] = BlockChoice(slot.name, any(c.keep for c in choices),
                                                       max(c.copies for c in choices), choices[0].variant)
    union = first.with_choices(first.name, changes)
    off: list[frozenset[str]] = []
    for s in specs:
        ids = []
        for slot in slots:
            have, want = union.choice(slot), s.choice(slot)
            if have.keep and not want.keep:
                ids.append(slot.block_id)
            ids += [f"{slot.block_id} (copy {k})" for k in range(want.copies + 1, have.copies + 1)]
        off.append(frozenset(ids))
    return union, off
