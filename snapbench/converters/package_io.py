"""The interface of a Core ML package: named inputs with shapes, named outputs. Its own module so that
converting (convert_package.py) and checking (checks.py) both use it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Shape = tuple[int, ...]


@dataclass(frozen=True)
class PackageIO:
    """The interface a package must have: named inputs with shapes, named outputs (shapes if known)."""

    inputs: tuple[tuple[str, Shape], ...]
    outputs: tuple[tuple[str, Shape | None], ...] = (("out", None),)
    int_inputs: frozenset[str] = frozenset()  # token ids: int32, not floating point

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [{"name": n, "shape": list(s)} for n, s in self.inputs],
                "outputs": [{"name": n, "shape": list(s) if s is not None else None} for n, s in self.outputs]}
