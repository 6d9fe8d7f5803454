"""The settings of a run, in one place: the choices every stage accepts and `RunSettings`, what a latency
row, a conversion, an estimate and a report are priced at.

This module is low and torch-free on purpose (it imports only the standard library and `errors`): the
latency table, the estimator, the converters and the CLI all read it, so none of them has to import
another stage to learn what "fp16" or "split_einsum" means. The choices are `Literal` types for mypy and
tuples of the same values for run-time checks and help texts; the tuples are derived from the types, so the
two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject

Attention = Literal["original", "split_einsum", "split_einsum_v2"]
Precision = Literal["fp16", "fp32"]
ComputeUnits = Literal["cpu_and_ne", "cpu_only", "cpu_and_gpu", "all"]
WeightBits = Literal[16, 8, 6, 4]
# The parts of a text-to-image pipeline that are priced: the backbone (called "unet" in tables, documents
# and the CLI for every backbone family, so files stay readable by older versions) and the two around it.
Component = Literal["text_encoder", "unet", "vae_decoder"]
PipelinePart = Literal["text_encoder", "vae_decoder"]  # the components that are not the backbone
# Where a latency comes from (a table row's `backend` column), and what `--backend` accepts.
Backend = Literal["iphone", "mac", "import", "estimate"]
BackendChoice = Literal["auto", "iphone", "mac", "import", "estimate"]
Measuring = Literal["iphone", "mac"]  # the backends that time a package on real hardware
IOSTarget = Literal["iOS16", "iOS17", "iOS18"]  # a package's minimum deployment target (not a phone)

ATTENTIONS: tuple[str, ...] = get_args(Attention)
PRECISIONS: tuple[str, ...] = get_args(Precision)
COMPUTE_UNITS: tuple[str, ...] = get_args(ComputeUnits)
WEIGHT_BITS: tuple[int, ...] = get_args(WeightBits)
COMPONENTS: tuple[str, ...] = get_args(Component)
PIPELINE_PARTS: tuple[str, ...] = get_args(PipelinePart)
BACKENDS: tuple[str, ...] = get_args(Backend)
BACKEND_CHOICES: tuple[str, ...] = get_args(BackendChoice)
MEASURING: tuple[str, ...] = get_args(Measuring)
IOS_TARGETS: tuple[str, ...] = get_args(IOSTarget)


def check_choice(what: str, value: object, allowed: tuple[Any, ...]) -> Any:
    """`value` if it is one of `allowed`; else one line naming `what` (a flag or field) and the choices."""
    if isinstance(value, bool) or value not in allowed:
        raise SnapbenchError(f"{what} {value!r} is not one of {', '.join(map(str, allowed))}")
    return value


@dataclass(frozen=True)
class InputShapes:
    """The backbone's input shapes for cutting blocks and making example inputs."""

    latent: int = 64  # latent height = width (64 -> a 512x512 image)
    batch: int = 2  # 2 = the classifier-free guidance batch
    tokens: int = 77
    in_channels: int | None = None  # default: the backbone's config
    context_dim: int | None = None  # default: the backbone's cross-attention width


@dataclass(frozen=True)
class RunSettings:
    """Everything besides the block's structure that changes its cost on a device.

    Batch and latent size are in every UNet block's signature already; they are kept here too so that a
    table can say, for any row, which settings it belongs to (components such as the VAE decoder run at
    batch 1 whatever the UNet's batch: `for_component`). `tokens` (the text context length) is part of the
    input shapes and of the cross-attention signatures and the text encoder's key, so it is not a table
    column and not part of `key`."""

    compute_units: str = "cpu_and_ne"  # ComputeUnits; plain str: the CLI hands over what the user typed
    precision: str = "fp16"  # Precision
    weight_bits: int = 16  # WeightBits
    attention: str = "original"  # Attention
    batch: int = 2
    latent: int = 64
    tokens: int = 77
    if TYPE_CHECKING:  # set in __post_init__; declared only for mypy, so not a dataclass field
        _key: tuple[str, str, int, str, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, allowed in (("compute_units", COMPUTE_UNITS), ("precision", PRECISIONS),
                              ("weight_bits", WEIGHT_BITS), ("attention", ATTENTIONS)):
            check_choice(name, getattr(self, name), allowed)
        if self.batch < 1 or self.latent < 1 or self.tokens < 1:
            raise SnapbenchError(f"batch, latent and tokens must be >= 1 (got batch {self.batch}, latent "
                                 f"{self.latent}, tokens {self.tokens})")
        object.__setattr__(self, "_key", (self.compute_units, self.precision, self.weight_bits, self.attention,
                                          self.batch, self.latent))

    def to_dict(self) -> JSONObject:
        return asdict(self)

    def table_dict(self) -> dict[str, str | int]:
        """The settings a table row records (everything but `tokens`)."""
        d = asdict(self)
        d.pop("tokens")
        return d

    @property
    def shapes(self) -> InputShapes:
        """The backbone's input shapes at these settings."""
        return InputShapes(latent=self.latent, batch=self.batch, tokens=self.tokens)

    def input_shapes(self) -> InputShapes:
        """= `shapes` (the older name, kept for callers on other branches)."""
        return self.shapes

    def for_component(self, component: str) -> RunSettings:
        """The settings `component` runs at: the backbone at the run's batch; the text encoder and the VAE
        decoder at batch 1 (one prompt encoding, one image decode per CFG branch / image)."""
        check_choice("component", component, COMPONENTS)
        return self if component == "unet" else replace(self, batch=1)

    @property
    def key(self) -> tuple:
        """The settings as a plain tuple: what the table's index uses (builtin tuples compare in C; a
        dataclass's generated __eq__ is Python and would dominate evolution's millions of lookups)."""
        return self._key
