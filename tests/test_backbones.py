"""The run settings and the backbone seam: one settings type, one registry that resolves a model to its
family, and stages that ask the family instead of assuming a UNet."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import get_args

import pytest

from snapbench import backbones
from snapbench.backbones import BACKBONES, UNetBackbone, backbone_for, backbone_named, inspect_model, resolve_model
from snapbench.blocks.cut import InputShapes, cut_blocks
from snapbench.blocks.inspection import Inspection
from snapbench.converters.options import ConvertOptions
from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.latency.table import Settings
from snapbench.model.loading import build_unet
from snapbench.settings import (
    ATTENTIONS,
    BACKEND_CHOICES,
    BACKENDS,
    COMPONENTS,
    MEASURING,
    PIPELINE_PARTS,
    Attention,
    RunSettings,
)
from snapbench.specs.layout import removable_slots
from snapbench.specs.stages import STAGES


# -- RunSettings -------------------------------------------------------------------------------------
def test_the_settings_module_loads_no_torch():
    code = "import sys, snapbench.settings, snapbench.converters.options; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_one_settings_type_with_shapes_key_and_component_settings():
    s = RunSettings(attention="split_einsum", batch=2, latent=32, tokens=5)
    assert Settings is RunSettings
    assert s.shapes == InputShapes(latent=32, batch=2, tokens=5)
    assert s.key == ("cpu_and_ne", "fp16", 16, "split_einsum", 2, 32)
    assert s.for_component("unet") is s
    assert s.for_component("vae_decoder") == replace(s, batch=1)
    with pytest.raises(SnapbenchError, match="component 'vae' is not one of text_encoder, unet, vae_decoder"):
        s.for_component("vae")
    with pytest.raises(SnapbenchError, match="attention 'flash' is not one of"):
        RunSettings(attention="flash")


def test_the_choice_lists_are_the_literal_types():
    assert ATTENTIONS == get_args(Attention) == ("original", "split_einsum", "split_einsum_v2")
    assert set(COMPONENTS) == {"unet", *PIPELINE_PARTS}
    assert set(BACKEND_CHOICES) == {"auto", *BACKENDS} and set(MEASURING) < set(BACKENDS)
    # the stages' old names are the same objects, so nothing can drift
    from snapbench.converters import ane_attention, options
    from snapbench.profilers import backends as profiler_backends
    from snapbench.profilers import readiness
    from snapbench.report import reference

    assert ane_attention.ATTENTION_IMPLS is ATTENTIONS and options.COMPONENTS is COMPONENTS
    assert profiler_backends.BACKEND_CHOICES is BACKEND_CHOICES and readiness.MEASURING is MEASURING
    assert reference.COMPONENTS is COMPONENTS


def test_convert_options_carry_the_run_settings():
    s = RunSettings(precision="fp16", weight_bits=6, attention="split_einsum_v2", batch=1, latent=16, tokens=7)
    opts = ConvertOptions.from_settings(s, mode="deploy", jobs=1)
    assert (opts.mode, opts.weight_bits, opts.attention, opts.latent, opts.batch, opts.tokens, opts.jobs) == \
        ("deploy", 6, "split_einsum_v2", 16, 1, 7, 1)
    assert opts.run_settings() == s


# -- the backbone seam -------------------------------------------------------------------------------
def test_sd_unets_resolve_to_the_unet_backbone_and_others_are_refused():
    for ref in ("sd15-tiny", "snapfusion-tiny", "toy-digits"):
        assert type(backbone_for(resolve_model(ref))) is UNetBackbone
    assert isinstance(backbone_named("sd-unet"), UNetBackbone) and backbone_named("sd-unet") in BACKBONES
    with pytest.raises(SnapbenchError, match=r"no backbone family takes a 'FluxTransformer2DModel'.*dit, sd-unet"):
        backbone_for({"_class_name": "FluxTransformer2DModel", "num_layers": 19})


def test_the_unet_backbone_delegates_to_the_unet_code():
    source = resolve_model("snapfusion-tiny")
    bb = backbone_for(source)
    settings = RunSettings(latent=16, batch=2, tokens=5, attention="split_einsum")
    got = bb.cut_source(source, settings)
    want = cut_blocks(build_unet(source, device="meta"), settings.shapes, attention="split_einsum")
    assert [(b.block_id, b.signature, b.params, b.macs) for b in got] == \
        [(b.block_id, b.signature, b.params, b.macs) for b in want]
    assert bb.removable(source.spec) == removable_slots(source.spec.layout)
    assert bb.stages == STAGES
    # the swap: another spec over the same base weights
    model = bb.build(source, device="cpu", seed=0)
    kept_all = source.spec.with_choices("all", {})
    other = bb.reshape(model, replace(kept_all, name="other"))
    assert other.base is model.base and other.spec.name == "other"
    sample, timestep, context = bb.example_inputs(model, settings.shapes, device="cpu")
    assert tuple(sample.shape) == (2, 4, 16, 16) and tuple(context.shape)[:2] == (2, 5)


def test_inspection_is_unchanged_through_the_seam():
    """What `inspect --json` prints for a tiny twin is the same as cutting the UNet directly (main's path)."""
    source = resolve_model("sd15-tiny")
    shapes = InputShapes(latent=16, batch=2, tokens=5)
    direct = Inspection(source, shapes, cut_blocks(build_unet(source, device="meta"), shapes))
    assert inspect_model(source, shapes=shapes).to_dict() == direct.to_dict()


class _ReversedStages(UNetBackbone):
    """A family that groups the same blocks under its own stage order: what a new backbone changes."""

    name = "test-reversed"
    stages = tuple(reversed(STAGES))

    def accepts(self, config):
        return config.get("sample_size") == 8 and super().accepts(config)  # the tiny twins


def test_stages_ask_the_backbone(monkeypatch, tmp_path):
    monkeypatch.setattr(backbones, "BACKBONES", [_ReversedStages(), *BACKBONES])
    source = resolve_model("sd15-tiny")
    assert source.spec.base_config.get("sample_size") == 8
    r = inspect_model(source, shapes=InputShapes(latent=8, batch=1, tokens=5))
    assert list(r.stage_frame()["stage"]) == list(reversed(STAGES))

    from profile_fakes import FakePackages, toy_estimator

    from snapbench.latency.document import stage_summary
    from snapbench.latency.model_latency import profile_model

    run = profile_model(source, resolve_device("iphone14pro"), RunSettings(latent=8, batch=1, tokens=5), backend="estimate",
                        estimator=toy_estimator(), components=("unet",), packages=FakePackages(tmp_path),
                        progress=False)
    assert run.stages == tuple(reversed(STAGES))
    assert [s["stage"] for s in stage_summary(run)] == list(reversed(STAGES))


def test_a_cut_is_run_once_per_architecture_and_settings(monkeypatch):
    """The meta forward runs once per (architecture, shapes, precision, attention, size limits); a repeat hands
    back the same figures as new CutBlocks holding the caller's own units (its weights)."""
    from snapbench.blocks import cut as cut_module
    from snapbench.model.size_bound import size_limits_lifted

    monkeypatch.setattr(cut_module, "_CUTS", type(cut_module._CUTS)())
    runs: list[str] = []
    real_cut = cut_module._cut
    monkeypatch.setattr(cut_module, "_cut", lambda model, *a: runs.append(model.spec.name) or real_cut(model, *a))
    source = resolve_model("sd15-tiny")
    shapes = InputShapes(latent=8, tokens=4)
    first = cut_blocks(build_unet(source, device="meta"), shapes)
    real = build_unet(source, device="cpu", seed=3)
    again = cut_blocks(real, shapes)
    assert runs == ["sd15-tiny"]
    assert [(b.block_id, b.inputs, b.output, b.params, b.macs, b.attention_macs, b.signature) for b in again] == \
        [(b.block_id, b.inputs, b.output, b.params, b.macs, b.attention_macs, b.signature) for b in first]
    assert all(b.unit is u for b, u in zip(again, real.units)) and again[0] is not first[0]
    # anything that changes what a cut finds runs it again
    cut_blocks(real, InputShapes(latent=16, tokens=4))
    cut_blocks(real, shapes, attention="split_einsum")
    cut_blocks(build_unet(resolve_model("snapfusion-tiny"), device="meta"), shapes)
    with size_limits_lifted():
        cut_blocks(real, shapes)
    assert runs == ["sd15-tiny", "sd15-tiny", "sd15-tiny", "snapfusion-tiny", "sd15-tiny"]
