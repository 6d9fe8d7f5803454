"""Core ML programs of the whole SD components that published latencies refer to, for calibration.

Published figures are for whole components: the CLIP ViT-L/14 text encoder, the UNet per denoising step,
the VAE decoder. This module converts them itself (random weights: latency does not depend on weight
values) and keeps only their op records, cached under `.snapbench-cache/reference_ops/`, so calibration
runs offline in seconds once the cache exists.

The UNet is converted per diffusers sub-block (conv_in + time embedding, each down block, the mid block,
each up block, norm_out + conv_out), with each sub-block traced on the inputs it receives in one real
forward pass; the op records are concatenated in execution order and priced as ONE program. This keeps
peak memory near a quarter of a whole-UNet conversion on a shared 2-core machine, and gives exactly the
ops of the whole model except the few glue ops between sub-blocks (skip-connection concats are inside
the up blocks, so nothing of substance is lost).

Attention implementations: "original" uses diffusers' classic processor (baddbmm, softmax, bmm over the
whole score map); "split_einsum" / "split_einsum_v2" swap each Transformer2DModel for the ANE rewrite in
`snapbench.converters.ane_attention`.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Literal

from snapbench.errors import SnapbenchError
from snapbench.profilers.estimate.program_ops import (
    RECORDS_VERSION,
    OpRecord,
    load_records,
    records_from_spec,
    save_records,
)

Component = Literal["text_encoder", "unet", "vae_decoder"]

# Bumped when what this module converts changes (not the record format: that is RECORDS_VERSION).
_CONVERSION_VERSION = 1

# CLIP ViT-L/14 text tower, as used by SD v1.x (OpenAI CLIP config).
_CLIP_L14 = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                 projection_dim=768)
# SD v1.x / 2.x VAE (AutoencoderKL) config.
_SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
               block_out_channels=(128, 256, 512, 512), act_fn="silu", sample_size=512,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


@dataclass(frozen=True)
class ReferenceProgram:
    """What to convert: a component of a model preset under given settings."""

    component: Component
    model: str = "sd15"  # a preset name of snapbench.specs (for the UNet; the text encoder/VAE are shared)
    attention: str = "original"
    batch: int = 1
    latent: int = 64
    tokens: int = 77

    def key(self) -> str:
        # what decides the program's ops: the settings, the UNet config and this module's conversion recipe
        cfg = json.dumps({**self.__dict__, "unet": _unet_config(self.model) if self.component == "unet" else None,
                          "conv": _CONVERSION_VERSION, "rec": RECORDS_VERSION}, sort_keys=True, default=str)
        return hashlib.sha256(cfg.encode()).hexdigest()[:16]

    def slug(self) -> str:
        model = self.model if self.component == "unet" else "sd"
        return f"{self.component}-{model}-{self.attention}-b{self.batch}-l{self.latent}"


def cache_dir() -> Path:
    return Path(os.environ.get("SNAPBENCH_CACHE", ".snapbench-cache")) / "reference_ops"


def shipped_dir() -> Path:
    """Op records of the calibration programs shipped with the package, so calibration runs anywhere."""
    return Path(str(resources.files("snapbench.profilers.estimate") / "reference_ops"))


def reference_records(program: ReferenceProgram, *, convert: bool = True) -> list[OpRecord]:
    """Op records of a reference component: from the cache, else converted now (minutes) and cached.

    The converted programs' specs (graph and shapes, no weights: a few MB) are kept beside the records,
    so a change of the record format re-reads them instead of converting again.
    """
    key = program.key()
    base = cache_dir() / f"{program.slug()}-{key}"
    records_path = base.with_name(base.name + ".json")
    specs_path = base.with_name(base.name + ".specs.zip")
    cached = load_records(records_path, key=key)
    if cached is None:
        cached = load_records(shipped_dir() / records_path.name, key=key)
    if cached is not None:
        return cached
    if specs_path.is_file():
        records = _records_from_zip(specs_path)
    elif not convert:
        raise SnapbenchError(f"no cached op records for {program.slug()} under {cache_dir()}; "
                             "run `snapbench calibrate` once on a machine with coremltools to build them")
    else:
        parts = _convert(program)
        specs_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = specs_path.with_name(f".{specs_path.name}.{os.getpid()}.partial")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for i, (name, spec_bytes) in enumerate(parts):
                zf.writestr(f"{i:03d}_{name}.pb", spec_bytes)
        os.replace(tmp, specs_path)
        records = _records_from_zip(specs_path)
    save_records(records_path, records, key=key, source=program.slug())
    return records


def _records_from_zip(path: Path) -> list[OpRecord]:
    """Concatenate the parts' records in order; var names get the part as prefix so they never collide."""
    from coremltools.proto import Model_pb2

    records: list[OpRecord] = []
    with zipfile.ZipFile(path) as zf:
        for entry in sorted(zf.namelist()):
            spec = Model_pb2.Model()
            spec.ParseFromString(zf.read(entry))
            prefix = entry.rsplit(".", 1)[0] + "/"
            for r in records_from_spec(spec):
                records.append(replace(r, name=prefix + r.name, in_names=tuple(prefix + n for n in r.in_names),
                                       out_names=tuple(prefix + n for n in r.out_names)))
    return records


# --------------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------------


def _unet_config(model: str) -> dict:
    try:
        text = (resources.files("snapbench.specs") / "presets" / f"{model}.json").read_text()
    except FileNotFoundError:
        raise SnapbenchError(f"no UNet preset {model!r} in snapbench/specs/presets") from None
    cfg = dict(json.loads(text)["base_config"])
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _convert(program: ReferenceProgram) -> list[tuple[str, bytes]]:
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        if program.component == "text_encoder":
            return _convert_text_encoder(program)
        if program.component == "vae_decoder":
            return _convert_vae_decoder(program)
        if program.component == "unet":
            return _convert_unet(program)
    raise SnapbenchError(f"unknown component {program.component!r}; choose text_encoder, unet or vae_decoder")


def _to_spec(name: str, module, example: tuple) -> list[tuple[str, bytes]]:
    """Trace, convert to an fp16 ML Program (iOS16 ops); keep only its spec (graph, shapes, dtypes)."""
    import coremltools as ct
    import torch

    traced = torch.jit.trace(module.eval(), example, check_trace=False)  # one forward, not three
    inputs = []
    for i, t in enumerate(example):
        dtype = ct.converters.mil.mil.types.int32 if not t.is_floating_point() else None
        inputs.append(ct.TensorType(name=f"in{i}", shape=tuple(t.shape), dtype=dtype))
    mlmodel = ct.convert(traced, inputs=inputs, convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
                         minimum_deployment_target=ct.target.iOS16, skip_model_load=True)
    return [(name, mlmodel.get_spec().SerializeToString())]


def _convert_text_encoder(program: ReferenceProgram) -> list[tuple[str, bytes]]:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**{**_CLIP_L14, "max_position_embeddings": program.tokens})
    model = CLIPTextModel(config).eval()

    class LastHidden(torch.nn.Module):
        # SD conditions on the last hidden state only; the pooled output would add an argmax/gather
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, ids):
            return self.model(input_ids=ids, return_dict=False)[0]

    ids = torch.randint(0, config.vocab_size, (program.batch, program.tokens), dtype=torch.int32)
    return _to_spec("text_encoder", LastHidden(), (ids,))


def _convert_vae_decoder(program: ReferenceProgram) -> list[tuple[str, bytes]]:
    import torch
    from diffusers import AutoencoderKL
    from diffusers.models.attention_processor import AttnProcessor

    vae = AutoencoderKL(**_SD_VAE).eval()
    vae.set_attn_processor(AttnProcessor())  # explicit matmul/softmax/matmul, as in the diffusers model

    class Decode(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.post_quant_conv, self.decoder = vae.post_quant_conv, vae.decoder

        def forward(self, z):
            return self.decoder(self.post_quant_conv(z))

    z = torch.randn(program.batch, 4, program.latent, program.latent)
    return _to_spec("vae_decoder", Decode(), (z,))


class _TransformerAdapter:
    """Gives the ANE transformer rewrite diffusers' Transformer2DModel call convention (tuple output)."""

    @staticmethod
    def wrap(rewritten):
        import torch

        class Adapter(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = rewritten

            def forward(self, hidden_states, encoder_hidden_states=None, **_):
                return (self.inner(hidden_states, encoder_hidden_states),)

        return Adapter()


def _convert_unet(program: ReferenceProgram) -> list[tuple[str, bytes]]:
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor
    from torch.utils._pytree import tree_flatten, tree_unflatten

    cfg = _unet_config(program.model)
    unet = UNet2DConditionModel(**cfg).eval().requires_grad_(False)
    unet.set_attn_processor(AttnProcessor())
    if program.attention != "original":
        from snapbench.converters.ane_attention import DEFAULT_QUERY_CHUNK_SIZE, rewrite_transformer

        levels = len(unet.down_blocks)
        sides = ([program.latent >> i for i in range(levels)] + [program.latent >> (levels - 1)]
                 + [program.latent >> (levels - 1 - i) for i in range(levels)])
        for block, side in zip([*unet.down_blocks, unet.mid_block, *unet.up_blocks], sides):
            atts = getattr(block, "attentions", None)
            for i in range(len(atts) if atts is not None else 0):
                # a chunk no longer than the sequence: coremltools 9 fails on split(size > dim)
                chunk = min(DEFAULT_QUERY_CHUNK_SIZE, side * side)
                atts[i] = _TransformerAdapter.wrap(rewrite_transformer(atts[i], program.attention,
                                                                      query_chunk_size=chunk))

    blocks: list[tuple[str, torch.nn.Module]] = (
        [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)] + [("mid_block", unet.mid_block)]
        + [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    )
    captured: dict[str, tuple] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, kw, n=n: captured.setdefault(n, (a, kw)), with_kwargs=True)
             for n, m in blocks]
    sample = torch.randn(program.batch, cfg["in_channels"], program.latent, program.latent)
    timestep = torch.full((program.batch,), 999.0)
    context = torch.randn(program.batch, program.tokens, cfg["cross_attention_dim"])
    try:
        unet(sample, timestep, context, return_dict=False)
    finally:
        for h in hooks:
            h.remove()

    class Pre(torch.nn.Module):
        # conv_in + sinusoidal time projection + time MLP
        def __init__(self):
            super().__init__()
            self.conv_in, self.time_proj, self.time_embedding = unet.conv_in, unet.time_proj, unet.time_embedding

        def forward(self, x, t):
            return self.conv_in(x), self.time_embedding(self.time_proj(t).to(x.dtype))

    class Post(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.act, self.conv = unet.conv_norm_out, unet.conv_act, unet.conv_out

        def forward(self, x):
            return self.conv(self.act(self.norm(x)))

    class Call(torch.nn.Module):
        # re-plays one sub-block call with its captured (args, kwargs); tensors become trace inputs
        def __init__(self, mod, args, kwargs):
            super().__init__()
            self.mod = mod
            self.leaves, self.spec = tree_flatten((args, kwargs))
            self.slots = [i for i, v in enumerate(self.leaves) if isinstance(v, torch.Tensor)]

        def forward(self, *tensors):
            leaves = list(self.leaves)
            for i, t in zip(self.slots, tensors):
                leaves[i] = t
            args, kwargs = tree_unflatten(leaves, self.spec)
            out, _ = tree_flatten(self.mod(*args, **kwargs))
            return tuple(o for o in out if isinstance(o, torch.Tensor))

    parts = _to_spec("pre", Pre(), (sample, timestep))
    for name, mod in blocks:
        args, kwargs = captured[name]
        call = Call(mod, args, kwargs)
        parts += _to_spec(name, call, tuple(call.leaves[i] for i in call.slots))
    up_out = torch.randn(program.batch, cfg["block_out_channels"][0], program.latent, program.latent)
    parts += _to_spec("post", Post(), (up_out,))
    return parts


if __name__ == "__main__":  # build the calibration cache: python -m snapbench.profilers.estimate.reference_programs
    import sys
    import time

    for spec in sys.argv[1:]:
        comp, model, att, batch = spec.split(":")
        t0 = time.time()
        recs = reference_records(ReferenceProgram(comp, model, att, int(batch)))  # type: ignore[arg-type]
        print(f"{spec}: {len(recs)} ops in {time.time() - t0:.0f} s", flush=True)
