"""Robust training: skip frequencies, a training step, checkpoints, resume, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from evolution_helpers import toy_folder, train_tiny  # noqa: F401  (toy_folder is a fixture)

from snapbench.cli import main
from snapbench.errors import SnapbenchError
from snapbench.evolution.robust_training import NO_SKIP, SkipProbabilities, TrainConfig, diffusion_loss
from snapbench.model.units import AttentionUnit
from snapbench.training.checkpoints import load_bundle
from snapbench.training.data import ToyDigitsData
from snapbench.training.loop import Trainable, step_generator


def _count_runs(model, forwards: int, generator) -> tuple[float, float]:
    """Share of CA and RB executions skipped over `forwards` training-mode passes."""
    ran = {"CA": 0, "RB": 0}
    hooks = []
    for u in model.elastic_units():
        inner = u.transformer if isinstance(u, AttentionUnit) else u.resnet
        kind = "CA" if isinstance(u, AttentionUnit) else "RB"
        hooks.append(inner.register_forward_hook(lambda *a, k=kind: ran.__setitem__(k, ran[k] + 1)))
    x, c = torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 32)
    with torch.no_grad():
        for _ in range(forwards):
            model(x, 10, c, generator=generator)
    for h in hooks:
        h.remove()
    n_ca = sum(isinstance(u, AttentionUnit) for u in model.elastic_units())
    n_rb = sum(1 for _ in model.elastic_units()) - n_ca
    return 1 - ran["CA"] / (forwards * n_ca), 1 - ran["RB"] / (forwards * n_rb)


def test_skip_probabilities_match_empirical_frequency():
    torch.set_num_threads(1)
    model = load_bundle("toy-digits").model
    model.set_skip_probabilities(ca=0.3, rb=0.1)
    model.train()
    ca, rb = _count_runs(model, 60, torch.Generator().manual_seed(0))
    # 60 x 16 CA and 60 x 22 RB draws: binomial sd ~0.015 and ~0.008
    assert abs(ca - 0.3) < 0.06 and abs(rb - 0.1) < 0.04
    model.eval()  # no skipping at inference
    assert _count_runs(model, 2, None) == (0.0, 0.0)


def test_skip_probability_bounds_and_normal_training():
    with pytest.raises(SnapbenchError, match="in \\[0, 1\\)"):
        SkipProbabilities(ca=1.0)
    assert TrainConfig(robust=False).skip_probabilities == NO_SKIP
    assert TrainConfig(robust=True).skip_probabilities == SkipProbabilities()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_training_steps_lower_the_loss_on_a_fixed_batch(prediction):
    from diffusers import DDPMScheduler

    torch.set_num_threads(1)
    bundle = load_bundle("toy-digits")
    bundle.noise_schedule["prediction_type"] = prediction
    trainable = Trainable(bundle.model, bundle.encoder).train()
    sched = DDPMScheduler.from_config(bundle.noise_schedule)
    data = ToyDigitsData()
    config = TrainConfig(robust=False, cond_dropout=0.0)
    x0, cond = data.batch(8, step_generator(0, 0))
    opt = torch.optim.AdamW(trainable.parameters(), lr=3e-3)
    before = [p.detach().clone() for p in trainable.parameters()]

    def loss() -> torch.Tensor:  # same noise, timesteps and batch every time
        return diffusion_loss(trainable, sched, x0, cond, None, config, step_generator(0, 1), torch.device("cpu"))

    first = float(loss().detach())
    for _ in range(5):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < first
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable.parameters()))


def test_checkpoint_folder_and_resume_reproduce_an_uninterrupted_run(tmp_path):
    straight = train_tiny(tmp_path / "straight", steps=4)
    train_tiny(tmp_path / "resumed", steps=2)
    state = json.loads((tmp_path / "resumed" / "train_state.json").read_text())
    assert state["step"] == 2 and (tmp_path / "resumed" / "optimizer.pt").is_file()
    train_tiny(tmp_path / "resumed", steps=4)  # the same command with more steps resumes
    a, b = load_bundle(straight), load_bundle(tmp_path / "resumed")
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name
    assert torch.equal(a.encoder.tokens.weight, b.encoder.tokens.weight)
    # the folder is a model every command reads
    from snapbench.backbones import resolve_model

    assert resolve_model(straight).spec.name == "toy-digits"


def test_resume_with_other_settings_is_one_line_exit_2(tmp_path, capsys, toy_folder):
    out = tmp_path / "run"
    assert main(["train", "--model", "toy-digits", "--out", str(out), "--steps", "1", "--batch-size", "2"]) == 0
    capsys.readouterr()
    assert main(["train", "--model", "toy-digits", "--out", str(out), "--steps", "2", "--batch-size", "2",
                 "--lr", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "learning_rate" in err
    assert json.loads((out / "train_state.json").read_text())["step"] == 1  # nothing lost


def test_bad_inputs_exit_2(tmp_path, capsys):
    assert main(["train", "--model", "sd15-tiny", "--out", str(tmp_path / "a"), "--steps", "1"]) == 2
    assert "--data" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    assert main(["train", "--model", "toy-digits", "--out", str(tmp_path / "junk"), "--steps", "1"]) == 2
    assert "not a snapbench training folder" in capsys.readouterr().err
    assert main(["train", "--model", "toy-digits", "--out", str(tmp_path / "b"), "--prediction-type", "x0"]) == 2


def test_checkpoint_that_does_not_fit_its_spec_is_refused(tmp_path, toy_folder, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(toy_folder, bad)
    arch = json.loads((bad / "arch.json").read_text())
    arch["base_config"]["block_out_channels"] = [16, 32, 32, 64]
    (bad / "arch.json").write_text(json.dumps(arch))
    assert main(["ablate", "--model", str(bad), "--fixed-table", "x.csv"]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_latent_folder_data(tmp_path):
    from safetensors.torch import save_file

    from snapbench.specs.presets import load_preset
    from snapbench.training.data import training_data

    spec = load_preset("sd15-tiny")
    (tmp_path / "d").mkdir()
    save_file({"latents": torch.randn(3, 4, 8, 8), "context": torch.randn(3, 5, 16),
               "uncond_context": torch.zeros(1, 5, 16)}, str(tmp_path / "d" / "a.safetensors"))
    data = training_data(spec, tmp_path / "d")
    x, c = data.batch(2, torch.Generator().manual_seed(0))
    assert x.shape == (2, 4, 8, 8) and c.shape == (2, 5, 16) and data.uncond.shape == (5, 16)
    save_file({"latents": torch.randn(3, 4, 8, 8), "context": torch.randn(3, 5, 8)}, str(tmp_path / "d" / "a.safetensors"))
    with pytest.raises(SnapbenchError, match="cross_attention_dim"):
        training_data(spec, tmp_path / "d")


def test_sd_structured_model_trains_on_a_latent_folder(tmp_path):
    from safetensors.torch import save_file

    from snapbench.evolution.robust_training import train

    torch.set_num_threads(1)
    (tmp_path / "d").mkdir()
    save_file({"latents": torch.randn(4, 4, 8, 8), "context": torch.randn(4, 5, 16),
               "uncond_context": torch.zeros(5, 16)}, str(tmp_path / "d" / "part0.safetensors"))
    r = train("sd15-tiny", tmp_path / "run", TrainConfig(steps=1, batch_size=2, learning_rate=1e-5,
                                                         prediction_type="v_prediction"),
              data=tmp_path / "d", progress=False)
    assert r.step == 1
    sched = json.loads((tmp_path / "run" / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "v_prediction" and sched["beta_schedule"] == "scaled_linear"
    assert not (tmp_path / "run" / "toy_text.safetensors").exists()


def test_python_dash_m_entry_point_for_accelerate_launch(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "snapbench.train", "--model", "toy-digits", "--out",
                        str(tmp_path / "run"), "--steps", "1", "--batch-size", "2", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["step"] == 1
