"""The interface of a Core ML package: named inputs with shapes, named outputs. Its own module so that
converting (convert_package.py) and checking (checks.py) both use it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:  # typing has it from 3.11; the annotation is never evaluated (postponed annotations)
    from typing_extensions import NotRequired

Shape = tuple[int, ...]
DTYPES = ("float32", "float16", "int32")  # what a package may declare for a tensor (Core ML's names, lower case)


class TensorEntry(TypedDict):
    """One input or output as the manifest records it."""

    name: str
    shape: list[int] | None  # None: an output whose shape is not known before conversion
    dtype: NotRequired[str]  # only when pinned (PackageIO.dtypes)


@dataclass(frozen=True)
class PackageIO:
    """The interface a package must have: named inputs with shapes, named outputs (shapes if known)."""

    inputs: tuple[tuple[str, Shape], ...]
    outputs: tuple[tuple[str, Shape | None], ...] = (("out", None),)
    int_inputs: frozenset[str] = frozenset()  # token ids: int32, not floating point
    # Tensors whose dtype is pinned (name, one of DTYPES); the rest get coremltools' default, which for
    # fp16 programs from iOS16 on is float16. App packages pin all of theirs (swift_interface.json).
    dtypes: tuple[tuple[str, str], ...] = ()

    def dtype(self, name: str) -> str | None:
        if name in self.int_inputs:
            return "int32"
        return dict(self.dtypes).get(name)

    def to_dict(self) -> dict[str, list[TensorEntry]]:
        def entry(n: str, s: Shape | None) -> TensorEntry:
            d: TensorEntry = {"name": n, "shape": list(s) if s is not None else None}
            if dict(self.dtypes).get(n):  # only pinned ones: unpinned interfaces keep their cache keys
                d["dtype"] = dict(self.dtypes)[n]
            return d

        return {"inputs": [entry(n, s) for n, s in self.inputs], "outputs": [entry(n, s) for n, s in self.outputs]}
