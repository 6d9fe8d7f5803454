"""The SDXL-structured toy (`toy-digits-xl`): robust training, evaluation, evolution and step distillation
through SDXL's text_time conditioning, on the digits."""

from __future__ import annotations

import json

import pytest
import torch
from evolution_helpers import TINY_EVAL, fixed_costs

from snapbench.backbones import resolve_model
from snapbench.cli import main
from snapbench.errors import SnapbenchError
from snapbench.model.elastic_unet import text_time_from_context
from snapbench.specs.layout import text_embeds_dim
from snapbench.training.checkpoints import load_bundle

TOY_XL = "toy-digits-xl"


@pytest.fixture(scope="module")
def toy_xl_folder(tmp_path_factory):
    """A toy-digits-xl folder after 3 robust-training steps (weights barely trained: enough to run)."""
    from snapbench.evolution.robust_training import TrainConfig, train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("toy-xl") / "run"
    train(TOY_XL, out, TrainConfig(steps=3, batch_size=8, save_every=1000), progress=False)
    return out


def test_toy_xl_has_sdxl_structure_and_pools_its_context():
    spec = resolve_model(TOY_XL).spec
    sdxl = resolve_model("sdxl").spec
    cfg = spec.base_config
    for key in ("down_block_types", "up_block_types", "mid_block_type", "transformer_layers_per_block",
                "addition_embed_type", "layers_per_block"):
        assert cfg[key] == sdxl.base_config[key], key
    assert [(s.stage, s.name) for s in spec.layout] == [(s.stage, s.name) for s in sdxl.layout]
    # the pooled text embedding is the mean of the context: their widths must agree
    assert text_embeds_dim(cfg) == cfg["cross_attention_dim"]
    context, sample = torch.randn(3, 5, 32), torch.zeros(3, 1, 8, 8)
    pooled, ids = text_time_from_context(context, sample)
    assert torch.allclose(pooled, context.mean(1)) and ids.tolist() == [[8, 8, 0, 0, 8, 8]] * 3


def test_toy_xl_runs_with_the_context_alone_and_equals_explicit_added_inputs():
    bundle = load_bundle(TOY_XL)
    model = bundle.model.eval()
    context = bundle.encoder.encode(["digit 3", "digit 5"])
    z = torch.randn(2, 1, 8, 8)
    implicit = model(z, 10, context)
    explicit = model(z, 10, context, *text_time_from_context(context, z))
    assert torch.equal(implicit, explicit)
    other = model(z, 10, context, context.mean(1) * 0, torch.tensor([[16, 16, 0, 0, 16, 16]] * 2).float())
    assert not torch.allclose(implicit, other)  # the added conditioning reaches the output


def test_a_text_time_model_without_the_note_still_names_the_missing_inputs():
    model = load_bundle("sdxl-tiny").model
    with pytest.raises(SnapbenchError, match="text_embeds"):
        model(torch.randn(1, 4, 16, 16), 1, torch.randn(1, 3, 32))


def test_toy_xl_trains_resumes_and_evaluates(toy_xl_folder):
    state = json.loads((toy_xl_folder / "train_state.json").read_text())
    assert state["step"] == 3
    bundle = load_bundle(toy_xl_folder)
    assert bundle.encoder is not None and bundle.spec.notes["text_time"] == "from_context"
    q = TINY_EVAL.build().evaluate(bundle, bundle.model)
    off = TINY_EVAL.build().evaluate(bundle, bundle.model, disabled=("CA[Mid, 1]",))
    assert 0.0 <= q.quality <= 1.0 and q.details["images"] == 10
    assert off.quality != q.quality  # the 10-layer mid transformer block matters


@pytest.mark.slow
def test_toy_xl_evolves(toy_xl_folder, tmp_path):
    from snapbench.evolution.evolve import EvolveConfig, evolve
    from snapbench.evolution.executors import SerialExecutor

    r = evolve(toy_xl_folder, tmp_path / "evo", EvolveConfig(target_fraction=0.9, max_iterations=2, add_phase=False),
               evaluator=TINY_EVAL, costs=fixed_costs, executor=SerialExecutor(), progress=False)
    assert r.final_latency_ms < r.initial_latency_ms
    assert load_bundle(tmp_path / "evo").spec.notes["text_time"] == "from_context"


@pytest.mark.slow
def test_toy_xl_step_distillation_cli(toy_xl_folder, tmp_path, capsys):
    assert main(["distill", "--model", str(toy_xl_folder), "--out", str(tmp_path / "d"), "--teacher-steps", "4",
                 "--student-steps", "2", "--steps", "1", "--batch-size", "4", "--eval-samples", "2", "--eval-guidance", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["step"] == 1
    assert load_bundle(tmp_path / "d").spec.base_config["addition_embed_type"] == "text_time"
