"""`convert --whole` for DiTs: the whole backbone (every kept, copied and variant block, the embeddings and
the final layer) in one Core ML package, its attention rewritten for the Neural Engine if asked.

    from snapbench.converters.dit_whole import whole_dit_single
    convert_single(whole_dit_single(resolve_dit("pixart-sigma-tiny"), opts), out, opts)

Interface (the names `dit.cut.example_inputs` gives, read by `ElasticDiT.forward`):
    sample (B, C, H, W), timestep (B,), context (B, T, D) [, pooled (B, P): SD3] -> noise_pred (B, C_out, H, W)
PixArt's C_out is twice C (learned sigma: the pipeline keeps the first C channels).

The module is the elastic DiT itself with each attention module's processor swapped (weights untouched):
with every block kept and --attention original it computes diffusers' forward exactly; the rewrites are
checked against diffusers' forward by PSNR (`whole_psnr`).
"""

from __future__ import annotations

import torch
from torch import nn

from snapbench.converters.ane_attention import DEFAULT_QUERY_CHUNK_SIZE
from snapbench.converters.options import ConvertOptions
from snapbench.converters.package_io import PackageIO
from snapbench.converters.whole_model import SingleModel
from snapbench.dit.cut import default_shapes, example_inputs
from snapbench.dit.source import dit_spec
from snapbench.model.loading import ModelSource

WHOLE_NAME = "transformer"  # the package's stem and the manifest's content


class WholeDiT(nn.Module):
    """forward(sample, timestep, context[, pooled]) -> noise_pred: an elastic DiT as one traceable module."""

    def __init__(self, model: nn.Module, attention: str, query_chunk_size: int = DEFAULT_QUERY_CHUNK_SIZE) -> None:
        super().__init__()
        if attention != "original":
            from snapbench.converters.dit_ane_attention import rewrite_attention

            rewrite_attention(model, attention, query_chunk_size)  # base, copies and variants alike
        self.model = model.eval()

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                *pooled: torch.Tensor) -> torch.Tensor:
        return self.model(sample, timestep, context, *pooled)


def whole_io(source: ModelSource, opts: ConvertOptions) -> PackageIO:
    spec = dit_spec(source.spec)
    if opts.attention != "original" and spec.attention_variant is not None:
        from snapbench.errors import SnapbenchError

        raise SnapbenchError(f"{spec.name} has an attention_variant, which computes its own attention; "
                             "convert it with --attention original")
    shapes = default_shapes(spec, latent=opts.latent, batch=opts.batch, tokens=opts.tokens)
    from snapbench.dit.cut import check_shapes

    check_shapes(spec, shapes)  # the patch size divides the latent, the tokens fit: one line if not
    ins = {k: tuple(v.shape) for k, v in example_inputs(spec, shapes, device="meta").items()}
    cfg, fam = spec.config, spec.family
    out_channels = fam.setting(cfg, "out_channels") or fam.setting(cfg, "in_channels")
    out = (shapes.batch, int(out_channels), shapes.latent, shapes.latent)
    return PackageIO(tuple(ins.items()), (("noise_pred", out),))


def build_whole(source: ModelSource, opts: ConvertOptions,
                query_chunk_size: int = DEFAULT_QUERY_CHUNK_SIZE) -> WholeDiT:
    from snapbench.backbones.dit import DitBackbone

    return WholeDiT(DitBackbone().build(source, device="cpu", seed=opts.seed), opts.attention, query_chunk_size)


def whole_counts(source: ModelSource, opts: ConvertOptions) -> tuple[int, int, int]:
    """Parameters, MACs and MACs outside attention of what the package runs: the blocks cut on the meta
    device at the conversion's shapes (removed blocks run nothing; copies count again)."""
    from snapbench.backbones.dit import DitBackbone
    from snapbench.converters.convert_dit import shapes_of

    backbone = DitBackbone()
    blocks = [b for b in backbone.cut(backbone.build(source, device="meta"), shapes_of(opts),
                                      precision=opts.precision, attention=opts.attention) if b.signature is not None]
    return (sum(b.params for b in blocks), sum(b.macs for b in blocks),
            sum(b.macs - b.attention_macs for b in blocks))


def whole_dit_single(source: ModelSource, opts: ConvertOptions) -> SingleModel:
    """The `SingleModel` that `convert_single` turns into transformer.mlpackage + manifest.json."""
    from snapbench.converters.cache import source_fingerprint
    from snapbench.versions import tool_versions

    io = whole_io(source, opts)
    params, macs, macs_no_attention = whole_counts(source, opts)
    weights = sorted(source.weights_dir.glob("*.safetensors")) if source.weights_dir is not None else []
    fingerprint = source_fingerprint(source.spec.to_dict(), weights, opts.seed, tool_versions()["torch"])
    return SingleModel(name=WHOLE_NAME, title=f"backbone of {source.spec.name}", model=str(source.ref),
                       spec=source.spec.name, io=io, build=lambda: build_whole(source, opts),
                       identity={"spec": source.spec.to_dict(), "weights": fingerprint},
                       params=params, macs=macs, macs_no_attention=macs_no_attention)


def whole_psnr(source: ModelSource, opts: ConvertOptions, *, seed: int = 0,
               query_chunk_size: int = DEFAULT_QUERY_CHUNK_SIZE) -> float:
    """PSNR (dB) of the whole backbone as converted (attention rewritten) against diffusers' own forward,
    on seeded random inputs at the conversion's shapes. Needs a spec with every block kept (diffusers'
    model has no removed or copied blocks to compare with)."""
    from snapbench.converters.ane_attention import psnr
    from snapbench.converters.runtime import one_torch_thread
    from snapbench.dit.source import build_dit

    spec = dit_spec(source.spec)
    shapes = default_shapes(spec, latent=opts.latent, batch=opts.batch, tokens=opts.tokens)
    inputs = example_inputs(spec, shapes, seed=seed)
    reference = build_dit(source, seed=opts.seed)
    kwargs = {"hidden_states": inputs["sample"], "timestep": inputs["timestep"],
              "encoder_hidden_states": inputs["context"], "return_dict": False}
    if "pooled" in inputs:
        kwargs["pooled_projections"] = inputs["pooled"]
    with torch.no_grad(), one_torch_thread():  # tiny tensors: a second thread only waits (see one_torch_thread)
        want = reference(**kwargs)[0]
        got = build_whole(source, opts, query_chunk_size)(*inputs.values())
    return psnr(want, got)
