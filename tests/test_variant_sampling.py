"""Robust training that samples SnapGen-style variants (`train --robust --variant-moves`): which blocks get
which variant, what they share with their block, how often they run, checkpoints and resume, and that a
swap in evolution starts from the trained variant."""

from __future__ import annotations

import json

import pytest
import torch

from snapbench.cli import main
from snapbench.errors import SnapbenchError
from snapbench.evolution.moves import SWAPS
from snapbench.evolution.robust_training import TrainConfig, sample_variants, train
from snapbench.model.elastic_unet import ElasticUNet
from snapbench.model.loading import ALTERNATIVES_FILE
from snapbench.specs.layout import text_embeds_dim
from snapbench.training.checkpoints import derive, load_bundle

ALL_SWAPS = ("separable", "mqa", "ffn", "drop-self-attn")


def _model(name: str) -> ElasticUNet:
    model = load_bundle(name).model
    assert isinstance(model, ElasticUNet)
    return model


def _train(folder, steps: int, moves=ALL_SWAPS, p: float = 0.5):
    torch.set_num_threads(1)
    return train("toy-digits-xl", folder, TrainConfig(steps=steps, batch_size=2, save_every=1000, robust=True,
                                                     variant_moves=moves, variant_p=p), progress=False)


@pytest.mark.slow  # builds an SDXL-class twin (tens of seconds on the shared 2-core machine)
def test_sdxl_tiny_samples_every_swap_that_applies_and_shares_same_shaped_weights():
    model = _model("sdxl-tiny")
    keys = sample_variants(model, TrainConfig(variant_moves=ALL_SWAPS))
    blocks = [s for s in model.spec.layout if s.kind in ("RB", "CA")]
    want = [f"{s.file_id}__{m}" for s in blocks for m in ALL_SWAPS if SWAPS[m].blocked(model.spec, s) is None]
    assert keys == want and set(model.alternatives) == set(want)
    assert {k.rpartition("__")[2] for k in keys} == set(ALL_SWAPS)
    ca = next(s for s in blocks if s.kind == "CA")
    block = model.unit(ca.file_id).transformer
    mqa = model.alternatives[f"{ca.file_id}__mqa"]
    b0, m0 = block.transformer_blocks[0], mqa.transformer_blocks[0]
    assert m0.attn1.to_q.weight is b0.attn1.to_q.weight  # same shape: one tensor, trained by both
    assert m0.attn1.to_k.weight is not b0.attn1.to_k.weight  # fewer key heads: its own
    assert m0.attn1.to_k.weight.shape[0] < b0.attn1.to_k.weight.shape[0]
    rb = next(s for s in blocks if s.kind == "RB")
    sep = model.alternatives[f"{rb.file_id}__separable"]
    assert sep.norm1.weight is model.unit(rb.file_id).resnet.norm1.weight
    own = set(dict(sep.named_parameters())) - model.shared_names[f"{rb.file_id}__separable"]
    assert own and all(n.startswith(("conv1.", "conv2.")) for n in own)
    assert sample_variants(model, TrainConfig(variant_moves=ALL_SWAPS)) == keys  # idempotent (resume)


@pytest.mark.slow  # builds an SDXL-class twin (tens of seconds on the shared 2-core machine)
def test_snapgen_tiny_gets_only_what_it_does_not_have_yet():
    model = _model("snapgen-tiny")
    with pytest.raises(SnapbenchError, match="--variant-moves mqa: applies to no block.*already has kv_heads=1"):
        sample_variants(model, TrainConfig(variant_moves=("mqa",)))
    keys = sample_variants(model, TrainConfig(variant_moves=("drop-self-attn",)))
    assert keys and all(k.endswith("__drop-self-attn") for k in keys)
    for k in keys:  # the spec's own variant (multi-query, FFN x3) plus the swap; everything shared
        v = model.alternative_variants[k]
        assert (v.kv_heads, v.ff_mult, v.self_attention) == (1, 3, False)
        assert model.shared_names[k] == set(dict(model.alternatives[k].named_parameters()))


@pytest.mark.slow  # builds an SDXL-class twin (tens of seconds on the shared 2-core machine)
def test_variants_run_with_their_probability_in_training_only():
    model = _model("sdxl-tiny")
    sample_variants(model, TrainConfig(variant_moves=("mqa", "ffn"), variant_p=0.4))
    ran = {"alt": 0, "block": 0}
    hooks = [m.register_forward_hook(lambda *a: ran.__setitem__("alt", ran["alt"] + 1))
             for m in model.alternatives.values()]
    units = [u for u in model.elastic_units() if model.alternatives_of(u)]
    hooks += [u.transformer.register_forward_hook(lambda *a: ran.__setitem__("block", ran["block"] + 1)) for u in units]
    x, c = torch.zeros(1, model.config.in_channels, 4, 4), torch.zeros(1, 3, model.config.cross_attention_dim)
    added = (torch.zeros(1, text_embeds_dim(model.config)), torch.zeros(1, 6))
    g = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(8):
            model(x, 10, c, *added, generator=g)
    share = ran["alt"] / (ran["alt"] + ran["block"])  # 8 x 8 block draws at p = 0.4: sd ~0.06
    assert 0.25 < share < 0.55, share
    model.eval()
    ran.update(alt=0, block=0)
    with torch.no_grad():
        model(x, 10, c, *added)
    assert ran["alt"] == 0 and ran["block"] == len(units)
    for h in hooks:
        h.remove()


@pytest.mark.slow
def test_training_saves_trained_variants_and_resumes_like_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    _train(straight, 3)
    assert (straight / ALTERNATIVES_FILE).is_file()
    state = json.loads((straight / "train_state.json").read_text())
    assert state["config"]["variant_moves"] == list(ALL_SWAPS)
    resumed = tmp_path / "resumed"
    _train(resumed, 1)
    _train(resumed, 3)
    a, b = load_bundle(straight).model, load_bundle(resumed).model
    fresh = _model("toy-digits-xl")
    sample_variants(fresh, TrainConfig(variant_moves=ALL_SWAPS))
    assert list(a.alternatives) == list(fresh.alternatives)
    moved = 0
    resumed_state, fresh_state = b.alternatives_state(), fresh.alternatives_state()  # (a state_dict each: once)
    for name, p in a.alternatives_state().items():
        assert torch.allclose(p, resumed_state[name], atol=1e-6), name
        moved += not torch.equal(p, fresh_state[name])
    assert moved > 0  # the variants' own weights trained
    with pytest.raises(SnapbenchError, match="variant_moves"):  # resuming under other moves is refused
        _train(resumed, 4, moves=("mqa",))


@pytest.mark.slow
def test_a_swap_in_evolution_starts_from_the_trained_variant(tmp_path):
    _train(tmp_path / "run", 2)
    model = load_bundle(tmp_path / "run").model
    slot = next(s for s in model.spec.layout if s.kind == "CA")
    key = f"{slot.file_id}__mqa"
    spec = model.spec.with_choices("swapped", {(slot.stage, slot.name): SWAPS["mqa"].apply(model.spec.choice(slot))})
    swapped = derive(model, spec)
    trained = model.alternatives[key].state_dict()
    for name, t in swapped.variants[slot.file_id].state_dict().items():
        assert torch.equal(t, trained[name]), name
    # and it runs as the sampled variant ran: the derived model's output is the trained one's with it forced
    x, c = torch.randn(1, model.config.in_channels, 8, 8), torch.randn(1, 3, model.config.cross_attention_dim)
    model.eval()
    unit = model.unit(slot.file_id)
    forced = unit.run
    unit.run = lambda *a, active, module=None: forced(*a, active=active, module=model.alternatives[key])
    with torch.no_grad():
        want = model(x, 10, c)
        unit.run = forced
        got = swapped.eval()(x, 10, c)
    assert torch.allclose(want, got, atol=1e-5)


def test_cli_bad_variant_moves_are_one_line_exit_2(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["train", "--model", "toy-digits-xl", "--out", out, "--steps", "1", "--variant-moves", "mqa"]) == 2
    assert "add --robust" in capsys.readouterr().err
    assert main(["train", "--model", "toy-digits-xl", "--out", out, "--robust", "--steps", "1",
                 "--variant-moves", "remove"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a swap" in err
    assert main(["train", "--model", "toy-digits-xl", "--out", out, "--robust", "--steps", "1",
                 "--variant-moves", "mqa", "--variant-p", "1.5"]) == 2
    assert "--variant-p" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing written
