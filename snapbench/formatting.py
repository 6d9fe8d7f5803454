"""Numbers as people read them, shared by the terminal tables and the HTML report."""

from __future__ import annotations


def fmt_count(n: float | None, unit: str = "", *, missing: str = "-") -> str:
    """1234567 -> '1.23M' (with `unit`: '1.23MB'); None -> `missing`."""
    if n is None:
        return missing
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"
