"""The settings every stage accepts, in one place (plain tuples: importing this loads nothing heavy)."""

ATTENTIONS: tuple[str, ...] = ("original", "split_einsum", "split_einsum_v2")
PRECISIONS: tuple[str, ...] = ("fp16", "fp32")
COMPUTE_UNITS: tuple[str, ...] = ("cpu_and_ne", "cpu_only", "cpu_and_gpu", "all")
WEIGHT_BITS: tuple[int, ...] = (16, 8, 6, 4)
