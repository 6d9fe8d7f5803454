"""Step distillation: the DDIM arithmetic against diffusers, the CFG-aware target, SNR weighting, a step
lowering the loss, resume, bad input, the toy comparison's format, and `sample`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from evolution_helpers import toy_folder, train_tiny  # noqa: F401  (toy_folder is a fixture)

from snapbench.cli import main
from snapbench.devices.catalog import resolve_device
from snapbench.distillation.ddim_math import NoiseLevels, ddim_timesteps, prev_timestep
from snapbench.distillation.step_distillation import (
    DistillConfig,
    as_sampled,
    distill,
    distillation_loss,
    guided,
    read_sampling,
    teacher_target,
)
from snapbench.errors import SnapbenchError
from snapbench.training.checkpoints import TOY_SCHEDULE, load_bundle
from snapbench.training.loop import step_generator
from snapbench.training.sampling import ddim_scheduler

TINY = DistillConfig(teacher_steps=4, student_steps=2, steps=2, batch_size=4, save_every=1000)


class Fake(torch.nn.Module):
    """A 'UNet' with a known output: a*z + the condition's first feature + t/1000, recording batch sizes."""

    def __init__(self, a: float = 0.3) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))
        self.batches: list[int] = []

    def forward(self, z, t, cond, generator=None):
        self.batches.append(z.shape[0])
        t = torch.as_tensor(t, dtype=torch.float32).expand(z.shape[0])
        return self.a * z + cond[:, 0, 0].view(-1, 1, 1, 1) + t.view(-1, 1, 1, 1) / 1000


def _levels(prediction: str, clip: bool = True) -> tuple[NoiseLevels, dict]:
    schedule = {**TOY_SCHEDULE, "prediction_type": prediction, "clip_sample": clip}
    return NoiseLevels.from_schedule(schedule), schedule


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("clip", [True, False])
def test_batched_ddim_step_equals_diffusers_per_sample(prediction, clip):
    levels, schedule = _levels(prediction, clip)
    steps = 8
    sched = ddim_scheduler(schedule)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    ts = torch.tensor([int(sched.timesteps[i]) for i in (0, 3, 7)])  # includes the last step (to final alpha)
    z, out = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    t_prev = torch.tensor([prev_timestep(schedule, int(t), steps) for t in ts])
    mine = levels.ddim_step(out, z, ts, t_prev)
    for i, t in enumerate(ts.tolist()):
        ref = sched.step(out[i:i + 1], t, z[i:i + 1], eta=0.0, use_clipped_model_output=clip).prev_sample
        assert torch.allclose(mine[i:i + 1], ref, atol=1e-5), (t, prediction, clip)
    assert t_prev[-1] < 0  # the last student step lands on the final alpha


class FixedX0(torch.nn.Module):
    """A v-prediction 'UNet' whose x0 prediction is always `x0`, outside the clip range [-1, 1] (what a
    strongly guided prediction does)."""

    def __init__(self, schedule: dict, x0: float) -> None:
        super().__init__()
        self.levels, self.x0 = NoiseLevels.from_schedule(schedule), x0

    def forward(self, z, t, context, disabled=()):
        a, s = self.levels.alpha_sigma(torch.as_tensor(t).expand(z.shape[0]))
        return (a * z - self.x0) / s  # v with a * z - s * v = x0


@pytest.mark.parametrize("steps", [8, 32])
def test_clipped_ddim_sampling_lands_on_the_clipped_x0_at_any_step_count(steps):
    """The bug that made 32 guided steps collapse where 8 did not: diffusers' DDIM step clips x0 but by
    default keeps the raw eps, so an overshooting x0 drags the sample off the clip range, the more the
    more steps (here 0.13 at 32 steps, 0.86 at 8). Re-deriving eps from the clipped x0 lands on 1."""
    from snapbench.training.sampling import ddim_sample

    schedule = {**TOY_SCHEDULE, "prediction_type": "v_prediction", "clip_sample": True}
    model = FixedX0(schedule, 3.0)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    out = ddim_sample(model, torch.zeros(2, 3, 4), torch.zeros(1, 3, 4), noise, noise_schedule=schedule,
                      steps=steps, guidance=1.0)
    assert torch.allclose(out, torch.ones_like(out), atol=0.05)  # DDIM keeps sigma_final * eps
    levels = NoiseLevels.from_schedule(schedule)  # distillation's batched step does the same
    z = noise
    for t in ddim_timesteps(schedule, steps):
        tt = torch.full((2,), t)
        z = levels.ddim_step(model(z, t, None), z, tt, torch.full((2,), prev_timestep(schedule, t, steps)))
    assert torch.allclose(z, torch.ones_like(z), atol=0.05)


def test_x0_reaching_inverts_one_ddim_step():
    levels, _ = _levels("v_prediction", clip=False)
    g = torch.Generator().manual_seed(1)
    z_t, x0 = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    t, t_prev = torch.tensor([999, 874, 500, 124]), torch.tensor([874, 749, 375, -1])
    a, s = levels.alpha_sigma(t)
    eps = (z_t - a * x0) / s
    a2, s2 = levels.alpha_sigma(t_prev)
    z_prev = a2 * x0 + s2 * eps  # where a DDIM step with this x0 lands
    assert torch.allclose(levels.x0_reaching(z_t, t, z_prev, t_prev), x0, atol=1e-4)


def test_truncated_snr_weight():
    levels, _ = _levels("v_prediction")
    t = torch.tensor([0, 100, 500, 900, 999])
    a, s = levels.alpha_sigma(t)
    snr = (a.square() / s.square()).view(-1)
    w = levels.snr_weight(t)
    assert torch.allclose(w, torch.maximum(snr, torch.ones_like(snr)))
    assert w[0] > 100 and w[-1] == 1.0 and w[-2] == 1.0  # clean end weighted up, noisy end truncated at 1
    assert bool((w[:-1] >= w[1:]).all())


def test_guided_output_is_cfg_in_one_batched_call():
    m = Fake()
    z = torch.randn(3, 1, 8, 8)
    cond, uncond = torch.full((3, 3, 4), 2.0), torch.zeros(1, 3, 4)
    w = torch.tensor([1.0, 3.0, 7.5])
    out, out_c = guided(m, z, torch.tensor([10, 10, 10]), cond, uncond, w)
    assert m.batches == [6]
    c, u = m(z, 10, cond), m(z, 10, uncond.expand(3, -1, -1))
    assert torch.allclose(out, u + w.view(-1, 1, 1, 1) * (c - u)) and torch.allclose(out_c, c)
    m.batches.clear()
    guided(m, z, torch.tensor([10, 10, 10]), cond, uncond, torch.ones(3))
    assert m.batches == [3]  # w = 1 everywhere: the conditional pass alone


def test_teacher_target_runs_guided_teacher_steps_like_diffusers():
    """The CFG-aware target: the teacher's ratio DDIM steps, each on the CFG-combined output at w."""
    levels, schedule = _levels("v_prediction")
    teacher = Fake(0.2)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 1, 8, 8, generator=g)
    t = torch.tensor(ddim_timesteps(schedule, 2))  # the 2 student timesteps
    cond, uncond = torch.full((2, 3, 4), 1.5), torch.zeros(1, 3, 4)
    w = torch.tensor([4.0, 9.0])
    z_prev, t_prev = teacher_target(teacher, levels, schedule, z, t, cond, uncond, w, teacher_steps=4, ratio=2)
    sched = ddim_scheduler(schedule)
    sched.set_timesteps(4)
    for i in range(2):
        x, tt = z[i:i + 1], int(t[i])
        for _ in range(2):
            c, u = teacher(x, tt, cond[i:i + 1]), teacher(x, tt, uncond)
            x = sched.step(u + w[i] * (c - u), tt, x, eta=0.0, use_clipped_model_output=True).prev_sample
            tt = prev_timestep(schedule, tt, 4)
        assert torch.allclose(z_prev[i:i + 1], x, atol=1e-5)
        assert int(t_prev[i]) == tt
    # and guidance matters: at w = 1 the target is another one
    z_plain, _ = teacher_target(teacher, levels, schedule, z, t, cond, uncond, torch.ones(2), teacher_steps=4, ratio=2)
    assert not torch.allclose(z_plain, z_prev, atol=1e-3)
    assert t_prev.tolist() == [ddim_timesteps(schedule, 2)[1], -1]  # lands where the student's step does


def test_teacher_target_under_clipping_stays_in_the_clip_range():
    """With a clipping schedule the teacher's landing point is reached by a convex mix of its clipped x0s,
    so the student's x0 target is in [-1, 1] however far guidance throws the raw predictions."""
    levels, schedule = _levels("v_prediction", clip=True)
    z = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    t = torch.tensor(ddim_timesteps(schedule, 4))
    cond, uncond = torch.full((4, 3, 4), 4.0), torch.zeros(1, 3, 4)
    z_prev, t_prev = teacher_target(Fake(0.9), levels, schedule, z, t, cond, uncond, torch.full((4,), 9.0),
                                    teacher_steps=16, ratio=4)
    x = levels.x0_reaching(z, t, z_prev, t_prev)
    assert x.abs().max() <= 1 + 1e-4
    raw, _ = levels.to_x0_eps(Fake(0.9)(z, t, cond), z, t)
    assert raw.abs().max() > 2  # the raw predictions do overshoot


def test_distillation_compares_the_x0_the_sampler_steps_with():
    """A clipping sampler steps with clip(x0): an overshoot past a pixel whose target sits on the bound
    lands in the same place and costs nothing (it did cost, and pulled guided students' guidance
    down); anything else is pulled toward the target, the gradient passed straight through the clip."""
    x = torch.tensor([3.0, 3.0, -0.5, 0.2], requires_grad=True)
    target = torch.tensor([1.0, 0.5, -0.5, -1.0])
    err = as_sampled(x, 1.0) - target
    assert torch.allclose(err, torch.tensor([0.0, 0.5, 0.0, 1.2]))
    err.square().sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.0, 1.0, 0.0, 2.4]))
    assert as_sampled(x, None) is x  # SD's schedule does not clip: the loss is the paper's as written


@pytest.mark.parametrize("cfg_aware", [True, False])
def test_loss_applies_guidance_to_student_and_teacher_only_when_cfg_aware(cfg_aware):
    levels, schedule = _levels("v_prediction")
    teacher, student = Fake(0.2), Fake(0.5)
    config = DistillConfig(teacher_steps=4, student_steps=2, cfg_aware=cfg_aware, cond_dropout=0.0)
    x0, cond, uncond = torch.zeros(3, 1, 8, 8), torch.full((3, 3, 4), 1.0), torch.zeros(3, 4)
    parts = distillation_loss(student, teacher, levels, levels, schedule, x0, cond, uncond, config,
                              torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.isfinite(parts.total) and parts.total.requires_grad
    b = 6 if cfg_aware else 3  # [uncond; cond] for both models, or the conditional pass alone
    assert teacher.batches == [b, b] and student.batches == [b]
    assert torch.allclose(parts.total.detach(), parts.distill + config.gamma * parts.original)


def test_one_distillation_step_lowers_the_loss_on_a_fixed_batch(toy_folder):
    import copy

    from snapbench.training.data import ToyDigitsData
    from snapbench.training.loop import Trainable

    torch.set_num_threads(1)
    bundle = load_bundle(toy_folder)
    bundle.noise_schedule["prediction_type"] = "v_prediction"
    teacher = Trainable(copy.deepcopy(bundle.model), copy.deepcopy(bundle.encoder)).eval().requires_grad_(False)
    student = Trainable(bundle.model, bundle.encoder).train()
    bundle.model.set_skip_probabilities(ca=0.0, rb=0.0)
    levels = NoiseLevels.from_schedule(bundle.noise_schedule)
    data = ToyDigitsData()
    config = DistillConfig(teacher_steps=4, student_steps=2)
    x0, cond = data.batch(8, step_generator(0, 0))
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in student.parameters()]

    def loss():
        return distillation_loss(student, teacher, levels, levels, bundle.noise_schedule, x0, cond, data.uncond,
                                 config, step_generator(0, 1), torch.device("cpu")).total

    first = float(loss().detach())
    opt.zero_grad()
    loss().backward()
    opt.step()
    assert float(loss().detach()) < first
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_checkpoint_sampling_settings_and_resume_equal_an_uninterrupted_run(tmp_path, toy_folder):
    torch.set_num_threads(1)
    straight = distill(toy_folder, tmp_path / "straight", TINY, progress=False)
    cut = DistillConfig(**{**TINY.to_dict(), "steps": 1})
    distill(toy_folder, tmp_path / "resumed", cut, progress=False)
    assert json.loads((tmp_path / "resumed" / "distill_state.json").read_text())["step"] == 1
    again = distill(toy_folder, tmp_path / "resumed", TINY, progress=False)
    assert again.resumed_from == 1 and straight.step == again.step == 2
    a, b = load_bundle(tmp_path / "straight"), load_bundle(tmp_path / "resumed")
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name
    settings = read_sampling(tmp_path / "straight")
    assert settings["steps"] == 2 and settings["teacher_steps"] == 4 and settings["scheduler"] == "DDIMScheduler"
    assert settings["prediction_type"] == "epsilon" and settings["cfg_aware"] is True
    assert (tmp_path / "straight" / "unet" / "diffusion_pytorch_model.safetensors").is_file()  # save_pretrained
    assert (tmp_path / "straight" / "arch.json").is_file()


def test_v_prediction_fine_tune_then_distill(tmp_path, toy_folder):
    torch.set_num_threads(1)
    config = DistillConfig(**{**TINY.to_dict(), "steps": 1, "prediction_type": "v_prediction",
                              "v_finetune_steps": 1})
    distill(toy_folder, tmp_path / "d", config, progress=False)
    v_teacher = tmp_path / "d-v-teacher"
    assert load_bundle(v_teacher).noise_schedule["prediction_type"] == "v_prediction"
    assert read_sampling(tmp_path / "d")["prediction_type"] == "v_prediction"
    assert json.loads((tmp_path / "d" / "distill_state.json").read_text())["teacher"] == str(v_teacher)


def test_student_of_another_arch_spec_starts_from_the_teachers_weights(tmp_path, toy_folder):
    """A teacher and a student of different specs (the paper's efficient UNet from SD-v1.5)."""
    from snapbench.specs.arch_spec import BlockChoice, save_spec

    torch.set_num_threads(1)
    teacher = load_bundle(toy_folder)
    spec = teacher.spec.with_choices("toy-small", {("Up-3", "CA1"): BlockChoice("CA1", keep=False),
                                                   ("Mid", "RB1"): BlockChoice("RB1", keep=True, copies=1)})
    save_spec(spec, tmp_path / "student.json")
    config = DistillConfig(**{**TINY.to_dict(), "steps": 1, "learning_rate": 1e-12})
    distill(toy_folder, tmp_path / "d", config, student=tmp_path / "student.json", progress=False)
    student = load_bundle(tmp_path / "d")
    assert student.spec.name == "toy-small"
    assert any(u.removed for u in student.model.elastic_units())
    assert any(u.instance == 1 for u in student.model.elastic_units())
    # inherited, not random: after one step at a vanishing learning rate the shared weights are the teacher's
    t_state = teacher.model.base.state_dict()
    for name, p in student.model.base.state_dict().items():
        assert torch.allclose(p, t_state[name], atol=1e-6), name


def test_bad_input_is_one_line_exit_2_and_keeps_the_run(tmp_path, capsys, toy_folder):
    def run(*args: str) -> str:
        assert main(["distill", "--model", str(toy_folder), "--no-eval", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error:"), err
        return err

    out = str(tmp_path / "d")
    assert "below --teacher-steps" in run("--out", out, "--teacher-steps", "8", "--student-steps", "8")
    assert "multiple" in run("--out", out, "--teacher-steps", "8", "--student-steps", "3")
    assert "reversed" in run("--out", out, "--guidance-min", "9", "--guidance-max", "3")
    assert "v-finetune" in run("--out", out, "--prediction-type", "v_prediction")
    assert "latent shape" in run("--out", out, "--student", "sd15-tiny")
    assert main(["distill", "--model", "toy-digits", "--out", out, "--no-eval"]) == 2
    assert "no trained weights" in capsys.readouterr().err
    assert main(["distill", "--model", str(toy_folder), "--out", out, "--teacher-steps", "4", "--student-steps", "2",
                 "--steps", "1", "--batch-size", "2", "--no-eval"]) == 0
    capsys.readouterr()
    assert "gamma" in run("--out", out, "--teacher-steps", "4", "--student-steps", "2", "--steps", "2",
                          "--batch-size", "2", "--gamma", "0.5")
    assert json.loads((tmp_path / "d" / "distill_state.json").read_text())["step"] == 1  # nothing lost
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x").write_text("x")
    assert "not a snapbench distillation folder" in run("--out", str(junk))


def test_config_refuses_reversed_bounds_directly():
    with pytest.raises(SnapbenchError, match="reversed"):
        DistillConfig(guidance_min=5, guidance_max=2)
    with pytest.raises(SnapbenchError, match="below"):
        DistillConfig(teacher_steps=8, student_steps=16)


def test_frechet_distance():
    from snapbench.distillation.toy_compare import frechet_distance

    g = np.random.default_rng(0)
    a = g.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # same covariance, mean shifted by 2 along one axis: the distance is the squared shift
    assert frechet_distance(a, a + np.array([2.0, 0, 0])) == pytest.approx(4.0, rel=1e-6)
    assert frechet_distance(a, 3 * g.normal(size=(4000, 3))) > 10


def test_distill_json_has_teacher_student_undistilled_on_each_guidance(tmp_path, capsys, toy_folder):
    torch.set_num_threads(1)
    code = main(["distill", "--model", str(toy_folder), "--out", str(tmp_path / "d"), "--teacher-steps", "4",
                 "--student-steps", "2", "--steps", "1", "--batch-size", "2", "--eval-samples", "2",
                 "--eval-guidance", "1,5", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert {"teacher", "student", "undistilled"} <= set(data)
    assert data["teacher"]["steps"] == 4 and data["student"]["steps"] == 2 and data["undistilled"]["steps"] == 2
    for e in (data["teacher"], data["student"], data["undistilled"]):
        assert set(e["quality"]) == set(e["fd"]) == {"1", "5"}
        assert all(0.0 <= q <= 1.0 for q in e["quality"].values())
    # the student starts as the teacher and took one step: at w=1 it generates nearly what the teacher does
    # at the same step count, and a different step count gives other images
    assert data["teacher"]["fd"] != data["undistilled"]["fd"]


def test_sample_writes_a_png_grid_with_the_distilled_step_count(tmp_path, capsys, toy_folder):
    from PIL import Image

    torch.set_num_threads(1)
    distill(toy_folder, tmp_path / "d", DistillConfig(**{**TINY.to_dict(), "steps": 1}), progress=False)
    png = tmp_path / "three.png"
    assert main(["sample", "--model", str(tmp_path / "d"), "--cfg", "5", "--prompt", "digit 3", "--prompt", "digit 7",
                 "--per-prompt", "3", "--out", str(png), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["steps"] == 2  # from sampling.json
    img = Image.open(png)
    assert img.size == (3 * 32 + 2, 2 * 32 + 1) and img.mode == "RGB"
    px = np.asarray(img)
    assert px[:32, :32].std() > 0  # an image, not a blank tile
    assert (px[32, :] == 255).all()  # the gap row between the prompts
    assert main(["sample", "--model", str(tmp_path / "d"), "--prompt", "a cat", "--out", str(png)]) == 2
    assert "digit" in capsys.readouterr().err
    assert main(["sample", "--model", str(tmp_path / "d"), "--prompt", "digit 1", "--out", str(tmp_path / "x.jpg")]) == 2


def test_report_takes_steps_and_decoder_from_what_was_distilled(tmp_path, toy_folder):
    from snapbench.distillation.decoder import DecoderDistillConfig, LatentSet, distill_decoder
    from snapbench.distillation.provenance import record_decoder
    from snapbench.report.gather_data import gather
    from snapbench.report.latency_source import ProfileOutcome
    from snapbench.report.render import render_html

    torch.set_num_threads(1)
    folder = tmp_path / "d"
    distill(toy_folder, folder, DistillConfig(**{**TINY.to_dict(), "steps": 1}), progress=False)
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=[8, 16],
                        layers_per_block=1, norm_num_groups=4, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2)
    z = torch.randn(6, 4, 4, 4)
    distill_decoder(vae, LatentSet(z[:4], z[4:]), tmp_path / "vae", DecoderDistillConfig(steps=1, batch_size=2),
                    teacher_ref="tiny", progress=False)
    record_decoder(folder, tmp_path / "vae")
    no_latency = lambda *a, **k: ProfileOutcome(None, "not needed here")  # noqa: E731
    data = gather(baseline="sd15-tiny", candidates=[str(folder), "snapfusion-tiny"], devices=[resolve_device("iphone14pro")],
                  profiler=no_latency)
    doc = data.to_dict()  # the JSON document `report --json` writes
    m = {x["ref"]: x for x in doc["models"]}
    mine, paper = m[str(folder)], m["snapfusion-tiny"]
    assert mine["steps"] == 2 and "distilled here" in mine["steps_source"] and "4-step teacher" in mine["steps_source"]
    assert "distilled here" in mine["decoder_source"] and str(tmp_path / "vae") in mine["decoder_source"]
    assert paper["steps"] == 8 and "assumed" in paper["steps_source"]
    assert "assumption" in paper["decoder_source"]
    assert mine["sample_grid"].startswith("data:image/png;base64,") and paper["sample_grid"] is None
    html = render_html(data)
    assert 'src="data:image/png;base64,' in html and "distilled here" in html
    # --steps still overrides
    data = gather(baseline="sd15-tiny", candidates=[str(folder)], devices=[resolve_device("iphone14pro")], steps={str(folder): 3},
                  profiler=no_latency)
    doc = data.to_dict()  # the JSON document `report --json` writes
    assert (doc["models"][1]["steps"], doc["models"][1]["steps_source"]) == (3, "--steps")
    # a resumed distillation keeps the recorded decoder
    distill(toy_folder, folder, DistillConfig(**{**TINY.to_dict(), "steps": 2}), progress=False)
    assert read_sampling(folder)["decoder"] == str(tmp_path / "vae")


def test_python_dash_m_entry_point_for_accelerate_launch(tmp_path, toy_folder):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "snapbench.distill", "--model", str(toy_folder), "--out",
                        str(tmp_path / "d"), "--teacher-steps", "4", "--student-steps", "2", "--steps", "1",
                        "--batch-size", "2", "--no-eval", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["run"]["step"] == 1


def test_teacher_scores_are_cached_by_weights(tmp_path, monkeypatch, toy_folder):
    from snapbench.distillation import toy_compare
    from snapbench.distillation.toy_compare import ToyCompareConfig, compare, score_cache_path

    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    teacher = load_bundle(toy_folder)
    config = ToyCompareConfig((1.0, 3.0), samples_per_digit=2)
    first = compare(teacher, teacher, 2, 1, config)
    assert score_cache_path(teacher, 2, config).is_file() and score_cache_path(teacher, 1, config).is_file()
    calls = []
    real_score = toy_compare.score
    monkeypatch.setattr(toy_compare, "score", lambda *a, **k: calls.append(a[1]) or real_score(*a, **k))
    again = compare(teacher, teacher, 2, 1, config)
    assert again == first and calls == [1]  # only the student was sampled again
    assert first["student"] == first["undistilled"]  # the same model and steps on the same noise
    other = load_bundle(toy_folder)
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)
    assert score_cache_path(other, 2, config) != score_cache_path(teacher, 2, config)


def test_sd_structured_teacher_distils_on_a_latent_folder_cfg_aware(tmp_path, tiny_checkpoint):
    """The real-scale path at tiny size: a diffusers UNet folder as teacher, precomputed latents and text
    contexts (with the empty prompt's, which CFG-aware distillation needs), v-prediction fine-tune first."""
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    folder, _unet = tiny_checkpoint
    (tmp_path / "d").mkdir()
    save_file({"latents": torch.randn(4, 4, 16, 16), "context": torch.randn(4, 5, 16),
               "uncond_context": torch.zeros(5, 16)}, str(tmp_path / "d" / "part0.safetensors"))
    config = DistillConfig(teacher_steps=4, student_steps=2, steps=1, batch_size=2, learning_rate=1e-5,
                           prediction_type="v_prediction", v_finetune_steps=1)
    r = distill(folder, tmp_path / "run", config, data=tmp_path / "d", progress=False)
    assert r.step == 1 and r.loss is not None and np.isfinite(r.loss)
    settings = read_sampling(tmp_path / "run")
    assert settings["prediction_type"] == "v_prediction" and settings["steps"] == 2
    sched = json.loads((tmp_path / "run" / "scheduler" / "scheduler_config.json").read_text())
    assert sched["beta_schedule"] == "scaled_linear"


def test_a_second_distill_on_a_held_out_folder_is_refused_naming_the_first(tmp_path, toy_folder):
    from snapbench.locks import folder_lock

    out = tmp_path / "student"
    out.mkdir()
    with folder_lock(out, "distill"):  # as if another run held it (the same lock, another holder)
        with pytest.raises(SnapbenchError, match=r"another snapbench distill .*--out"):
            distill(toy_folder, out, TINY, progress=False)
    assert not (out / "distill_state.json").exists()
