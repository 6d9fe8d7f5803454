"""The setting choices: now defined in `snapbench.settings` with `RunSettings` (this name stays so that
existing imports keep working)."""

from snapbench.settings import ATTENTIONS, COMPUTE_UNITS, PRECISIONS, WEIGHT_BITS, check_choice

__all__ = ["ATTENTIONS", "COMPUTE_UNITS", "PRECISIONS", "WEIGHT_BITS", "check_choice"]
