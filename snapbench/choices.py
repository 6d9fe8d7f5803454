"""The settings every stage accepts, in one place (plain tuples: importing this loads nothing heavy)."""

from typing import Any

ATTENTIONS: tuple[str, ...] = ("original", "split_einsum", "split_einsum_v2")
PRECISIONS: tuple[str, ...] = ("fp16", "fp32")
COMPUTE_UNITS: tuple[str, ...] = ("cpu_and_ne", "cpu_only", "cpu_and_gpu", "all")
WEIGHT_BITS: tuple[int, ...] = (16, 8, 6, 4)


def check_choice(what: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    """`value` if it is one of `allowed`; else one line naming `what` (a flag or field) and the choices."""
    if isinstance(value, bool) or value not in allowed:
        from snapbench.errors import SnapbenchError

        raise SnapbenchError(f"{what} {value!r} is not one of {', '.join(map(str, allowed))}")
    return value
