"""Mixed-bit palettization recipes: a bit width per layer, read, checked against a model, and applied.

    recipe = load_recipe("recipes/sdxl-4.5bit.json", source)      # one line (exit 2) if it does not fit
    opts = ConvertOptions(mode="deploy", recipe=recipe.items())   # convert_model applies it per block

A recipe is what `compress analyze` writes (sensitivity.py): the model it was made for (spec name and a
digest of its compressible layers), and for each layer, named by its module path in the diffusers UNet
(`down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`), 1, 2, 4, 6 or 8 bits (a k-means lookup
table of that many bits, palette.py) or 16 (fp16). Layers it does not name stay fp16.

Applying it: Core ML names a weight after the traced module's attribute path, which the attention rewrites
and block wrappers change, so layers are matched to the converted program's weight constants by content:
the histogram of a weight's fp16 values (what palettization sees; any reshape or transpose keeps it), and
each matched constant gets coremltools' `OpPalettizerConfig` under its op name. A recipe layer that
matches no constant fails the block's conversion instead of shipping it uncompressed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource
from snapbench.profilers.coreml_types import MLModel

RECIPE_FORMAT = "snapbench-mixed-bit-recipe"
RECIPE_BITS = (1, 2, 4, 6, 8, 16)  # constexpr_lut_to_dense takes 1, 2, 4, 6 and 8-bit indices (iOS16+); 16: fp16
COMPRESSIBLE = 2048  # coremltools' weight_threshold (compression.COMPRESSION_THRESHOLD): smaller stays fp16
ROOT_PREFIX = "base."  # the elastic UNet keeps diffusers' UNet as `base`; recipes name layers without it


def layer_name(root_param: str) -> str:
    """A weight's recipe name from its name in the elastic UNet: base.down_blocks.0.conv.weight -> down_blocks.0.conv"""
    name = root_param.removesuffix(".weight")
    return name.removeprefix(ROOT_PREFIX)


def compressible_layers(model: torch.nn.Module) -> dict[str, int]:
    """{recipe name: weight elements} of every layer a package compresses: convolutions and linear layers
    (nn.Conv*, nn.Linear, and anything else with a 2-D or larger `weight`) of at least COMPRESSIBLE elements.
    Works on the meta device (nothing allocated)."""
    return {layer_name(name): p.numel() for name, p in compressible_weights(model)}


def compressible_weights(module: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of each weight a package compresses (see compressible_layers), names as in `module`."""
    return [(name, p) for name, p in module.named_parameters()
            if name.endswith(".weight") and p.dim() >= 2 and p.numel() >= COMPRESSIBLE]


def layers_digest(layers: Mapping[str, int]) -> str:
    return hashlib.sha256(json.dumps(sorted(layers.items())).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Recipe:
    spec: str  # the arch spec it was made for
    digest: str  # layers_digest of that model's compressible layers
    bits: dict[str, int]  # recipe name -> bits
    path: Path | None = None

    def items(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.bits.items()))


def _bad(path: Path, what: str) -> SnapbenchError:
    return SnapbenchError(f"{path}: {what}")


def load_recipe(path: str | os.PathLike, model: ModelSource) -> Recipe:
    """Read a recipe and check it against `model` (a resolved ModelSource): its format, that it was made for
    this model, that every layer exists and every bit width is one a package can hold. One line if not."""
    from snapbench.backbones import backbone_for

    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise _bad(p, "no such recipe file (write one with `snapbench compress analyze`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(p, f"not a readable JSON recipe ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != RECIPE_FORMAT or not isinstance(doc.get("layers"), dict):
        raise _bad(p, f"not a mixed-bit recipe (needs \"format\": \"{RECIPE_FORMAT}\" and a \"layers\" object; "
                      "write one with `snapbench compress analyze`)")
    if not doc["layers"]:
        raise _bad(p, "the recipe names no layer; write one with `snapbench compress analyze`")
    with torch.device("meta"):
        layers = compressible_layers(backbone_for(model).build(model, device="meta"))
    spec = model.spec.name
    if doc.get("spec") != spec or doc.get("layers_digest") != layers_digest(layers):
        raise _bad(p, f"a recipe for {doc.get('spec')!r} (layers {doc.get('layers_digest')}), not for {spec!r} "
                      f"(layers {layers_digest(layers)}); analyze this model with `snapbench compress analyze`")
    bits: dict[str, int] = {}
    for name, b in doc["layers"].items():
        if name not in layers:
            close = next((n for n in layers if n.rsplit(".", 1)[-1] == str(name).rsplit(".", 1)[-1]), next(iter(layers), ""))
            raise _bad(p, f"layer {name!r} does not exist in {spec} (or holds under {COMPRESSIBLE} weights); "
                          f"layers are module paths such as {close!r}")
        if isinstance(b, bool) or b not in RECIPE_BITS:
            raise _bad(p, f"layer {name!r}: {b!r} bits is not supported; use one of {', '.join(map(str, RECIPE_BITS))} "
                          "(16: fp16)")
        bits[name] = int(b)
    return Recipe(spec, layers_digest(layers), bits, p)


# -- applying a recipe to one converted package -----------------------------------------------------------


def fingerprint(values: np.ndarray | torch.Tensor) -> str:
    """A weight's identity that survives conversion: the histogram of its fp16 bit patterns and its size."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to(torch.float16).numpy()
    bits = np.ascontiguousarray(values, dtype=np.float16).reshape(-1).view(np.uint16)
    counts = np.bincount(bits, minlength=1 << 16)
    return hashlib.sha1(counts.tobytes()).hexdigest()


def stored_fingerprints(unit: torch.nn.Module, attention: str) -> dict[str, str]:
    """{parameter name: fingerprint} of the unit's compressible weights as its package stores them: with an
    ANE attention rewrite (`attention` anything but "original"), each query projection multiplied by its
    softmax scale (ane_attention.scaled_weights). Read from the unit before it is rewritten (the recipe names
    diffusers' layers). What `convert --recipe` (package_bits) and the latency budget's pricer
    (latency/recipe_price.py) both look for among a converted program's weight constants."""
    from snapbench.model.units import AttentionUnit

    scaled: dict[str, float] = {}
    if attention != "original" and isinstance(unit, AttentionUnit) and unit.has_compute:
        from snapbench.converters.ane_attention import scaled_weights

        scaled = {f"transformer.{k}": f for k, f in scaled_weights(unit.transformer).items()}
    return {name: fingerprint(p * scaled[name] if name in scaled else p) for name, p in compressible_weights(unit)}


def package_bits(unit: torch.nn.Module, root_names: Mapping[str, str], recipe: Mapping[str, int],
                 attention: str) -> dict[str, tuple[int, str]]:
    """{fingerprint: (bits, layer)} of the recipe's layers in one materialised unit, as its package holds
    them (stored_fingerprints). `root_names`: the unit's parameter names -> their names in the elastic UNet.
    Two layers with equal weights (a copied block) get the wider of their widths."""
    found: dict[str, tuple[int, str]] = {}
    for name, fp in stored_fingerprints(unit, attention).items():
        layer = layer_name(root_names.get(name, name))
        if layer in recipe:
            merge_bits(found, {fp: (recipe[layer], layer)})
    return found


def merge_bits(into: dict[str, tuple[int, str]], more: Mapping[str, tuple[int, str]]) -> None:
    """Several units' bits in one package: a weight found twice (a copied block) keeps the wider width."""
    for fp, (bits, layer) in more.items():
        if fp not in into or into[fp][0] < bits:
            into[fp] = (bits, layer)


def op_configs(mlmodel: MLModel, by_fingerprint: Mapping[str, tuple[int, str]]) -> dict[str, object]:
    """coremltools' op_name_configs for a converted model: each weight constant whose content is a recipe
    layer's gets a k-means palettizer of that layer's bits (None: stays fp16). Raises if a recipe layer
    matched no constant (its weights were changed on the way: compressing something else would be wrong)."""
    from snapbench.converters.compression import WEIGHT_CONSUMERS, histogram_lut, program_ops
    from snapbench.converters.runtime import coremltools

    cto = coremltools().optimize.coreml
    program = mlmodel._mil_program
    assert program is not None, "a freshly converted model keeps its program in memory"
    configs: dict[str, object] = {}  # op name -> an OpPalettizerConfig, or None: left as it is
    matched: set[str] = set()
    for fn in program.functions.values():
        for op in program_ops(fn):
            val = op.outputs[0].val if op.op_type == "const" else None
            if not isinstance(val, np.ndarray) or val.size < COMPRESSIBLE or val.dtype.kind != "f":
                continue
            if any(c.op_type not in WEIGHT_CONSUMERS for c in op.outputs[0].child_ops):
                configs[op.name] = None
                continue
            fp = fingerprint(val)
            nbits = by_fingerprint.get(fp, (16, ""))[0]
            if fp in by_fingerprint:
                matched.add(fp)
            # weight_threshold: coremltools palettizes only weights of *more* than this many elements (2048
            # by default), which would leave a recipe's layers of exactly COMPRESSIBLE elements fp16
            configs[op.name] = None if nbits == 16 else cto.OpPalettizerConfig(
                mode="custom", lut_function=functools.partial(histogram_lut, nbits=nbits), granularity="per_tensor",
                weight_threshold=COMPRESSIBLE - 1)
    missed = sorted(layer for fp, (_, layer) in by_fingerprint.items() if fp not in matched)
    if missed:
        raise ValueError(f"recipe layer(s) {', '.join(missed[:3])}{' ...' if len(missed) > 3 else ''} match no weight "
                         "of the converted program (changed on the way to Core ML); nothing was saved")
    return configs


def compress_mixed(mlmodel: MLModel, by_fingerprint: Mapping[str, tuple[int, str]]) -> MLModel:
    """The model with each matched weight palettized at its recipe's bits (the rest fp16)."""
    from snapbench.converters.runtime import coremltools

    if not by_fingerprint:
        return mlmodel
    cto = coremltools().optimize.coreml
    configs = op_configs(mlmodel, by_fingerprint)
    mlmodel._mil_program = None  # see compression.compress: coremltools compresses a reloaded copy
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=None, op_name_configs=configs))
