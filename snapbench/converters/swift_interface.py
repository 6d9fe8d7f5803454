"""What Apple's Swift `StableDiffusion` package feeds each app package and reads back: swift_interface.json.

    from snapbench.converters.swift_interface import package_rules, with_swift_dtypes, check_package
    io = with_swift_dtypes(io, "TextEncoder")          # the dtypes the package must declare
    problems = check_package(path, "TextEncoder", {"S": 77, "D": 768})

The table (beside this module, transcribed by hand from the Swift sources and Apple's torch2coreml.py:
its `provenance` says so and each row how sure it is) is keyed model family -> package -> tensor, so a
family (SDXL: a second text encoder, the UNet's `text_embeds` / `time_ids`) is more rows, not more code.
A shape is a list of dimensions: an integer, a symbol (`S` tokens, `D` text width, `B` UNet batch, `C`
latent channels, `H` / `W` latent size), an integer times a symbol (`8H`, `2C`), or `*` (any).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from snapbench.profilers.coreml_types import FeatureDescription

if TYPE_CHECKING:
    from snapbench.converters.package_io import PackageIO

TABLE_FILE = Path(__file__).with_name("swift_interface.json")
DEFAULT_FAMILY = "sd"
XL_FAMILY = "sdxl"  # SDXL-class UNets (text_time conditioning): TextEncoder2, text_embeds, time_ids
_DIM = re.compile(r"^(\d*)([A-Za-z]\w*)?$")


@dataclass(frozen=True)
class TensorRule:
    name: str  # a tensor name, or an fnmatch pattern (skip_*)
    shape: tuple[str, ...]
    dtype: str  # what snapbench's package declares
    swift_dtype: str  # what the Swift package feeds or reads ("passed on": chunk 1 -> chunk 2 as it is)
    apple_dtype: str  # what Apple's converter declares
    swift_source: str
    apple_source: str
    sure: str
    notes: str

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.name)


@dataclass(frozen=True)
class PackageRules:
    name: str
    inputs: tuple[TensorRule, ...]
    outputs: tuple[TensorRule, ...]

    def rule(self, name: str, *, output: bool) -> TensorRule | None:
        return next((r for r in (self.outputs if output else self.inputs) if r.matches(name)), None)


def family_for(config: Mapping[str, object]) -> str:
    """The table's model family for a UNet config (an arch spec's base_config): sdxl for text_time UNets."""
    from snapbench.specs.layout import text_embeds_dim

    return XL_FAMILY if text_embeds_dim(config) is not None else DEFAULT_FAMILY


def folder_family(*folders: str | Path) -> str:
    """The family of converted pipeline folders: a DiT's when one holds a Transformer package (sana with a
    Gemma encoder, sd3 with a second CLIP, else pixart), sdxl when one holds a TextEncoder2, else sd."""
    def has(name: str) -> bool:
        return any((Path(f) / f"{name}.mlpackage").is_dir() for f in folders)

    if has("Transformer"):
        return "sana" if has("TextEncoderGemma") else "sd3" if has("TextEncoder2") or has("TextEncoder") else "pixart"
    return XL_FAMILY if has("TextEncoder2") else DEFAULT_FAMILY


class RuleRow(TypedDict):
    """One tensor of a package in swift_interface.json (a `TensorRule`, its shape as a list)."""

    name: str
    shape: list[str | int]
    dtype: str
    swift_dtype: str
    apple_dtype: str
    swift_source: str
    apple_source: str
    sure: str
    notes: str


class PackageRows(TypedDict):
    inputs: list[RuleRow]
    outputs: list[RuleRow]


class FamilyRows(TypedDict):
    title: str
    packages: dict[str, PackageRows]


class InterfaceTable(TypedDict):
    """swift_interface.json, the part read here (its other keys document where each rule came from)."""

    models: dict[str, FamilyRows]


@functools.lru_cache(maxsize=1)
def load_table() -> InterfaceTable:
    return json.loads(TABLE_FILE.read_text())


@functools.cache
def family_rules(family: str = DEFAULT_FAMILY) -> dict[str, PackageRules]:
    models = load_table()["models"]
    if family not in models:
        raise KeyError(f"swift_interface.json has no model family {family!r} (has {', '.join(models)})")

    def rules(rows: list[RuleRow]) -> tuple[TensorRule, ...]:
        return tuple(TensorRule(name=r["name"], shape=tuple(str(d) for d in r["shape"]), dtype=r["dtype"],
                                swift_dtype=r["swift_dtype"], apple_dtype=r["apple_dtype"],
                                swift_source=r["swift_source"], apple_source=r["apple_source"], sure=r["sure"],
                                notes=r["notes"]) for r in rows)

    return {name: PackageRules(name, rules(p["inputs"]), rules(p["outputs"]))
            for name, p in models[family]["packages"].items()}


def package_rules(package: str, family: str = DEFAULT_FAMILY) -> PackageRules:
    table = family_rules(family)
    if package not in table:
        raise KeyError(f"swift_interface.json: family {family!r} has no package {package!r}")
    return table[package]


def with_swift_dtypes(io: PackageIO, package: str, family: str = DEFAULT_FAMILY) -> PackageIO:
    """`io` with every input and output dtype the table gives for `package` (every tensor must have a row)."""
    rules = package_rules(package, family)
    dtypes = []
    for names, output in ((io.inputs, False), (io.outputs, True)):
        for name, _ in names:
            rule = rules.rule(name, output=output)
            if rule is None:
                raise KeyError(f"swift_interface.json: {package} has no {'output' if output else 'input'} {name!r}")
            dtypes.append((name, rule.dtype))
    return replace(io, dtypes=tuple(dtypes))


# -- checking a package against the table -----------------------------------------------------------------


def _bind(symbolic: tuple[str, ...], got: tuple[int, ...], sizes: MutableMapping[str, int]) -> str | None:
    """Match a package's shape to the table's, binding symbols in `sizes` (already bound ones must agree)."""
    if symbolic == ("*",):
        return None
    if len(symbolic) != len(got):
        return f"rank {len(got)}, the table has {len(symbolic)} ({', '.join(symbolic)})"
    for dim, n in zip(symbolic, got):
        m = _DIM.match(dim)
        if m is None:
            raise ValueError(f"swift_interface.json: bad dimension {dim!r}")
        factor = int(m.group(1)) if m.group(1) else 1
        symbol = m.group(2)
        if symbol is None:
            if n != factor:
                return f"dimension {n} where the table has {dim}"
            continue
        if n % factor:
            return f"dimension {n} is not {dim}"
        value = n // factor
        if sizes.setdefault(symbol, value) != value:
            return f"dimension {n} gives {symbol} = {value}, elsewhere {symbol} = {sizes[symbol]}"
    return None


def check_interface(interface: PackageInterface, package: str, sizes: MutableMapping[str, int] | None = None,
                    family: str = DEFAULT_FAMILY) -> list[str]:
    """Every way the package's inputs and outputs differ from the table (empty: none). `sizes` binds the
    shape symbols (pass the same dict for every package of a folder: one S, one D, ...)."""
    sizes = {} if sizes is None else sizes
    rules = package_rules(package, family)
    problems = []
    for tensors, wanted, output in ((interface.inputs, rules.inputs, False), (interface.outputs, rules.outputs, True)):
        kind = "output" if output else "input"
        for t in tensors:
            rule = rules.rule(t.name, output=output)
            if rule is None:
                problems.append(f"{package}: {kind} {t.name} is not in the table")
                continue
            if t.dtype != rule.dtype:
                problems.append(f"{package}: {kind} {t.name} is {t.dtype}, the table wants {rule.dtype}")
            shape_problem = _bind(rule.shape, t.shape, sizes)
            if shape_problem:
                problems.append(f"{package}: {kind} {t.name} {list(t.shape)}: {shape_problem}")
        for rule in wanted:
            if not any(rule.matches(t.name) for t in tensors):
                problems.append(f"{package}: no {kind} {rule.name}")
    return problems


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # float32 | float16 | int32 | ... (Core ML's ArrayDataType, lower case)


@dataclass(frozen=True)
class PackageInterface:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


def read_interface(path: str | Path) -> PackageInterface:
    """Names, shapes and dtypes of a saved package's inputs and outputs, read from its spec (any OS)."""
    from snapbench.converters.runtime import coremltools

    ct = coremltools()
    spec = ct.utils.load_spec(str(path))
    name_of = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name

    def tensors(features: Iterable[FeatureDescription]) -> tuple[Tensor, ...]:
        return tuple(Tensor(f.name, tuple(int(d) for d in f.type.multiArrayType.shape),
                            name_of(f.type.multiArrayType.dataType).lower()) for f in features)

    return PackageInterface(tensors(spec.description.input), tensors(spec.description.output))


def check_package(path: str | Path, package: str, sizes: MutableMapping[str, int] | None = None,
                  family: str = DEFAULT_FAMILY) -> list[str]:
    return check_interface(read_interface(path), package, sizes, family)


# -- the README's table ------------------------------------------------------------------------------------


def _fmt_tensors(tensors: tuple[Tensor, ...], rules: tuple[TensorRule, ...]) -> str:
    """`name` dtype (shape in the table's symbols); tensors matched by one pattern (skip_*) on one entry."""
    parts: list[str] = []
    seen: set[str] = set()
    for t in tensors:
        rule = next((r for r in rules if r.matches(t.name)), None)
        if rule is None or rule.name in seen:
            continue
        seen.add(rule.name)
        group = [x for x in tensors if rule.matches(x.name)]
        dtypes = sorted({x.dtype for x in group})
        label = f"`{group[0].name}` ... `{group[-1].name}`" if len(group) > 1 else f"`{t.name}`"
        shape = "" if rule.shape == ("*",) else " (" + ", ".join(rule.shape) + ("," if len(rule.shape) == 1 else "") + ")"
        parts.append(f"{label} {'/'.join(dtypes)}{shape}")
    return ", ".join(parts)


def interface_markdown(*folders: str | Path, family: str | None = None) -> str:
    """The README's table for the packages in `folders` (each package from the first folder that has it):
    names and dtypes as read from each package, shapes in the table's symbols after checking that each
    package's shapes fit them (raises ValueError if not). Family: from the folders unless given."""
    family = family or folder_family(*folders)
    table = family_rules(family)
    rows = ["| package | inputs | outputs |", "|---|---|---|"]
    sizes: dict[str, int] = {}
    for name, rules in table.items():
        path = next((p for p in (Path(f) / f"{name}.mlpackage" for f in folders) if p.is_dir()), None)
        if path is None:
            continue
        interface = read_interface(path)
        problems = check_interface(interface, name, sizes, family)
        if problems:
            raise ValueError("; ".join(problems))
        rows.append(f"| `{name}.mlpackage` | {_fmt_tensors(interface.inputs, rules.inputs)} | "
                    f"{_fmt_tensors(interface.outputs, rules.outputs)} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m snapbench.converters.swift_interface FOLDER...`: print the README's interface table."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m snapbench.converters.swift_interface CONVERTED_PIPELINE_FOLDER...", file=sys.stderr)
        return 2
    try:
        print(interface_markdown(*args), end="")
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
