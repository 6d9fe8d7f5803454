"""The elastic DiT (snapbench/dit/elastic.py): blocks kept, removed, copied or made a variant as the spec
says; saved and read back; priced per block state; trained (robust) and evolved like the UNet toy."""

from __future__ import annotations

import json

import pytest
import torch

from snapbench.backbones import backbone_for, resolve_model
from snapbench.dit.cut import example_inputs
from snapbench.dit.elastic import save_dit
from snapbench.dit.source import dit_spec, resolve_dit
from snapbench.errors import SnapbenchError
from snapbench.evolution.actions import Action, parse_action, removal_actions
from snapbench.evolution.latency_costs import FixedTable, costs_from_source
from snapbench.model.elastic_unet import PerRow
from snapbench.model.loading import ModelSource
from snapbench.settings import InputShapes
from snapbench.specs.arch_spec import ArchSpec, BlockChoice
from snapbench.specs.variants import Variant

SHAPES = InputShapes(latent=8, batch=2, tokens=8)


def _inputs(name: str, batch: int = 2) -> dict[str, torch.Tensor]:
    spec = dit_spec(resolve_dit(name).spec)
    return example_inputs(spec, InputShapes(latent=8, batch=batch, tokens=8), seed=3)


def _run(model, x, **kw):
    with torch.no_grad():
        return model(x["sample"], x["timestep"], x["context"], x.get("pooled"), **kw)


def _with(spec: ArchSpec, **choices: BlockChoice) -> ArchSpec:
    """`spec` with some transformer blocks' choices replaced, by name: TB2=BlockChoice("TB2", False)."""
    stage_of = {s.name: s.stage for s in backbone_for(spec).removable(spec)}
    return spec.with_choices("changed", {(stage_of[k], k): v for k, v in choices.items()})


@pytest.mark.parametrize("name", ["pixart-sigma-tiny", "sd3-tiny", "sana-tiny"])
def test_the_full_elastic_dit_is_diffusers_forward(name):
    src = resolve_model(name)  # a DiT preset resolves through the common resolver
    model = backbone_for(src).build(src, seed=1)
    x = _inputs(name)
    kw = {"pooled_projections": x["pooled"]} if "pooled" in x else {}
    with torch.no_grad():
        ref = model.base(x["sample"], encoder_hidden_states=x["context"], timestep=x["timestep"], **kw).sample
    assert torch.allclose(_run(model, x), ref, atol=1e-5)


@pytest.mark.parametrize("name", ["pixart-sigma-tiny", "sd3-tiny"])
def test_a_removed_block_is_the_disabled_block_and_rows_are_independent(name):
    src = resolve_model(name)
    bb = backbone_for(src)
    model = bb.build(src, seed=1)
    x = _inputs(name)
    first = model.units[3]  # the first transformer block (SD3's joint block passes both streams through)
    removed = bb.reshape(model, _with(src.spec, TB1=BlockChoice("TB1", False)))
    assert removed.units[3].status == "removed"
    alone = _run(removed, x)
    assert torch.allclose(alone, _run(model, x, disabled={first.block_id}), atol=1e-6)
    assert not torch.allclose(alone, _run(model, x), atol=1e-3)
    # one batch, one candidate per row: row 0 without the block, row 1 with it
    mixed = _run(model, x, disabled=PerRow((frozenset({first.block_id}), frozenset())))
    assert torch.allclose(mixed[0], alone[0], atol=1e-5)
    assert torch.allclose(mixed[1], _run(model, x)[1], atol=1e-5)


def test_a_copy_runs_the_block_again_and_carries_its_weights_over():
    src = resolve_model("pixart-sigma-tiny")
    bb = backbone_for(src)
    model = bb.build(src, seed=1)
    copied = bb.reshape(model, _with(src.spec, TB2=BlockChoice("TB2", True, 1)))
    ids = [u.block_id for u in copied.units]
    assert ids[ids.index("TB[DiT-2, 2]") + 1] == "TB[DiT-2, 2] (copy 1)"
    with torch.no_grad():
        next(iter(copied.copies.values())).ff.net[2].bias.add_(1.0)  # trained apart from its original
    again = bb.reshape(copied, copied.spec)
    assert torch.equal(next(iter(again.copies.values())).ff.net[2].bias, next(iter(copied.copies.values())).ff.net[2].bias)
    x = _inputs("pixart-sigma-tiny")
    assert not torch.allclose(_run(copied, x), _run(model, x), atol=1e-4)


def test_block_variants_are_cheaper_blocks_with_their_own_signature():
    src = resolve_model("pixart-sigma-tiny")
    bb = backbone_for(src)
    spec = _with(src.spec, TB1=BlockChoice("TB1", variant=Variant(kv_heads=1)),
                 TB2=BlockChoice("TB2", variant=Variant(ff_mult=2)))
    blocks = {b.block_id: b for b in bb.cut(bb.build(ModelSource("v", spec), device="meta"), SHAPES)}
    full = {b.block_id: b for b in bb.cut(bb.build(src, device="meta"), SHAPES)}
    for bid, attr in (("TB[DiT-1, 1]", "kv_heads"), ("TB[DiT-2, 2]", "ff_inner")):
        assert blocks[bid].params < full[bid].params
        assert blocks[bid].signature.key() != full[bid].signature.key() and attr in blocks[bid].signature.key()
    assert blocks["TB[DiT-3, 3]"].signature.key() == full["TB[DiT-3, 3]"].signature.key()
    model = bb.build(ModelSource("v", spec), seed=1)
    assert set(model.variants) == {"dit1_tb1", "dit2_tb2"}
    assert _run(model, _inputs("pixart-sigma-tiny")).shape == (2, 8, 8, 8)


def test_variants_refused_where_they_do_not_apply():
    src = resolve_model("sd3-tiny")
    with pytest.raises(SnapbenchError, match="does not divide the block's 2 heads"):
        backbone_for(src).build(ModelSource("v", _with(src.spec, TB1=BlockChoice("TB1", variant=Variant(kv_heads=3)))))
    with pytest.raises(SnapbenchError, match="without its image attention"):
        backbone_for(src).build(ModelSource("v", _with(src.spec, TB1=BlockChoice("TB1",
                                                                                variant=Variant(self_attention=False)))))


def test_saved_folder_round_trips_choices_and_weights(tmp_path):
    src = resolve_model("pixart-sigma-tiny")
    bb = backbone_for(src)
    spec = _with(src.spec, TB1=BlockChoice("TB1", False), TB2=BlockChoice("TB2", True, 1),
                 TB3=BlockChoice("TB3", variant=Variant(kv_heads=1)))
    model = bb.build(ModelSource("e", spec), seed=4)
    bb.save(model, tmp_path / "saved")
    assert {p.name for p in (tmp_path / "saved").iterdir()} == {"dit.json", "transformer", "copies.safetensors",
                                                                "variants.safetensors"}
    back_src = resolve_model(tmp_path / "saved")
    assert back_src.spec.stages == spec.stages
    back = bb.build(back_src)
    x = _inputs("pixart-sigma-tiny")
    assert torch.equal(_run(back, x), _run(model, x))
    # the spec as evolution's state stores it reads back through the common ArchSpec
    assert ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_saved_folder_whose_copies_do_not_fit_is_refused(tmp_path):
    src = resolve_model("pixart-sigma-tiny")
    bb = backbone_for(src)
    model = bb.build(ModelSource("e", _with(src.spec, TB2=BlockChoice("TB2", True, 1))), seed=4)
    save_dit(model, tmp_path / "saved")
    data = json.loads((tmp_path / "saved" / "dit.json").read_text())
    data["stages"]["DiT-2"] = [{"block": "TB2"}]  # the copy's weights no longer have a block
    (tmp_path / "saved" / "dit.json").write_text(json.dumps(data))
    with pytest.raises(SnapbenchError, match="copies.safetensors: does not fit"):
        bb.build(resolve_model(tmp_path / "saved"))


@pytest.mark.parametrize("stages, message", [
    ({"DiT-9": []}, "unknown stage"),
    ({"DiT-1": [{"block": "TB2"}]}, "list every block of the stage in order"),
    ({"DiT-1": [{"block": "TB1", "keep": False, "copies": 1}]}, "cannot also be copied"),
    ({"DiT-1": [{"block": "TB1", "separable": 2}]}, "separable applies to RB blocks"),
    ([], "stages must be an object"),
])
def test_bad_block_choices_in_a_dit_spec_are_one_line(tmp_path, stages, message):
    data = json.loads(json.dumps(dit_spec(resolve_dit("pixart-sigma-tiny").spec).to_dict()))
    data["stages"] = stages
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SnapbenchError, match=message) as e:
        resolve_model(path)
    assert "\n" not in str(e.value)


def test_prices_per_block_state_and_actions_on_transformer_blocks():
    src = resolve_model("pixart-sigma-tiny")
    bb = backbone_for(src)
    blocks = bb.cut(bb.build(src, device="meta"), SHAPES)
    ms = {b.signature.key(): (5.0 if b.kind == "TB" else 1.0) for b in blocks}
    prices = costs_from_source(src.spec, FixedTable(ms), tokens=8)
    assert prices.latency(src.spec) == pytest.approx(3 * 5.0 + 4 * 1.0)
    assert prices.floor(src.spec) == pytest.approx(4.0)
    acts = removal_actions(src.spec)
    assert [a.block_id for a in acts] == ["TB[DiT-1, 1]", "TB[DiT-2, 2]", "TB[DiT-3, 3]"]
    fewer = acts[1].apply(src.spec)
    assert prices.latency(fewer) == pytest.approx(14.0)
    more = Action("+", "DiT-1", "TB1").apply(src.spec)
    assert prices.latency(more) == pytest.approx(24.0)
    assert parse_action("A- TB[DiT-2, 2]") == acts[1]
    assert fewer.counts() == {"Embed": {"TB": 0}, "DiT-1": {"TB": 1}, "DiT-2": {"TB": 0}, "DiT-3": {"TB": 1},
                              "DiT-4": {"TB": 0}, "Final": {"TB": 0}}


@pytest.mark.slow
def test_the_dit_toy_trains_robustly_and_resumes(tmp_path):
    from snapbench.evolution.robust_training import TrainConfig, train
    from snapbench.training.checkpoints import load_bundle

    config = TrainConfig(steps=2, batch_size=8, save_every=2, robust=True)
    first = train("toy-digits-dit", tmp_path / "run", config, progress=False)
    assert first.step == 2 and first.loss is not None and first.loss > 0
    bundle = load_bundle(tmp_path / "run")
    assert type(bundle.model).__name__ == "ElasticDiT" and bundle.encoder is not None
    again = train("toy-digits-dit", tmp_path / "run", TrainConfig(steps=3, batch_size=8, save_every=2, robust=True),
                  progress=False)
    assert (again.resumed_from, again.step) == (2, 3)


def test_robust_training_skips_transformer_blocks_from_the_step_generator():
    src = resolve_model("pixart-sigma-tiny")
    model = backbone_for(src).build(src, seed=1)
    model.set_skip_probabilities(ca=0.5, rb=0.0)
    model.train()
    x = _inputs("pixart-sigma-tiny")

    def once(seed: int) -> torch.Tensor:
        with torch.no_grad():
            return model(x["sample"], x["timestep"], x["context"], generator=torch.Generator().manual_seed(seed))

    outs = [once(s) for s in range(6)]
    assert torch.equal(outs[0], once(0))  # the same draws from the same generator
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])  # and blocks do get skipped
    with pytest.raises(SnapbenchError, match=r"\[0, 1\)"):
        model.set_skip_probabilities(ca=1.0, rb=0.0)


def test_a_variant_at_the_full_sizes_is_the_block_itself():
    # kv_heads = heads and ff_mult = 4 change nothing: PixArt's key/value biases and its tanh GELU carry over
    src = resolve_model("pixart-sigma-tiny")
    bb = backbone_for(src)
    model = bb.build(src, seed=2)
    same = bb.reshape(model, _with(src.spec, TB1=BlockChoice("TB1", variant=Variant(kv_heads=2, ff_mult=4))))
    assert set(same.variants) == {"dit1_tb1"}
    x = _inputs("pixart-sigma-tiny")
    assert torch.allclose(_run(same, x), _run(model, x), atol=1e-5)


def test_evolution_swaps_apply_to_every_dit_family():
    from snapbench.evolution.moves import SWAPS, check_moves_apply

    pix = resolve_model("pixart-sigma-tiny").spec
    slot = backbone_for(pix).removable(pix)[0]
    assert SWAPS["mqa"].blocked(pix, slot) is None and SWAPS["ffn"].blocked(pix, slot) is None
    assert "applies to CA blocks" in SWAPS["drop-self-attn"].blocked(pix, slot)
    for name, ratio in (("pixart-sigma-tiny", 3), ("sd3-tiny", 3), ("sd35-tiny", 3), ("sana-tiny", 2)):
        spec = resolve_model(name).spec
        slots = backbone_for(spec).removable(spec)
        check_moves_apply(["mqa", "ffn"], spec, slots)
        swapped = spec
        for move in ("mqa", "ffn"):
            swapped = Action("S", slots[0].stage, slots[0].name, move).apply(swapped)
        assert swapped.choice(slots[0]).variant == Variant(kv_heads=1, ff_mult=ratio)  # Sana's 2.5 -> 2
        model = backbone_for(swapped).build(ModelSource("s", swapped), seed=1)
        assert set(model.variants) == {slots[0].file_id}
        assert _run(model, _inputs(name)).shape[0] == 2
    sana = resolve_model("sana-tiny").spec
    done = Action("S", slots[0].stage, slots[0].name, "ffn").apply(sana)
    assert "already has ff_mult=2" in SWAPS["ffn"].blocked(done, backbone_for(sana).removable(sana)[0])


@pytest.mark.slow
def test_the_dit_toy_evolves_and_its_result_reads_back(tmp_path):
    from evolution_helpers import TINY_EVAL, KindSource

    from snapbench.evolution.evolve import EvolveConfig, evolve
    from snapbench.evolution.executors import SerialExecutor

    def costs(spec):
        return costs_from_source(spec, KindSource(), device="iphone15pro", tokens=3)

    spec = resolve_model("toy-digits-dit").spec
    full = costs(spec).latency(spec)
    r = evolve("toy-digits-dit", tmp_path / "evo", EvolveConfig(target_ms=full - 0.15, add_phase=False),
               evaluator=TINY_EVAL, costs=costs, executor=SerialExecutor(), progress=False)
    assert r.final_latency_ms <= full - 0.15 and [t["action"] for t in r.trajectory][1:3] == ["A-", "A-"]
    back = resolve_model(tmp_path / "evo")
    assert (tmp_path / "evo" / "dit.json").is_file() and not (tmp_path / "evo" / "arch.json").exists()
    assert sum(not c.keep for cs in back.spec.stages.values() for c in cs) == 2
    assert costs(back.spec).latency(back.spec) == pytest.approx(r.final_latency_ms)
