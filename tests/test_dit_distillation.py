"""Step distillation of a DiT (issue 21, item 5): the UNet's loop, loss and checkpoints run on the elastic
DiT through the backbone seam. On the DiT toy: a distilled student's few steps land nearer the teacher's
many than the undistilled model's do, on fixed noise; a run checkpoints as a DiT folder and resumes to the
same weights; an evolved DiT spec as the student inherits the teacher's weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from snapbench.distillation.step_distillation import DistillConfig, distill, read_sampling
from snapbench.training.checkpoints import ModelBundle, load_bundle

TINY = DistillConfig(teacher_steps=4, student_steps=1, steps=2, batch_size=8, save_every=1000, guidance_min=1,
                     guidance_max=5)


@pytest.fixture(scope="module")
def dit_teacher(tmp_path_factory) -> Path:
    """toy-digits-dit after two plain training steps, v-prediction (what the toy's distillation table uses:
    the toy's cosine schedule makes an epsilon model's x0 at t = 999 meaningless). Near-random weights:
    enough for a teacher whose 4 steps differ from its 1 step."""
    from snapbench.evolution.robust_training import TrainConfig, train

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("dit") / "teacher"
    train("toy-digits-dit", folder, TrainConfig(steps=2, batch_size=8, robust=False, save_every=1000,
                                                prediction_type="v_prediction"), progress=False)
    return folder


def _samples(bundle: ModelBundle, steps: int, guidance: float) -> torch.Tensor:
    """Images of every digit twice from one fixed noise (the same for every model compared)."""
    from snapbench.training.sampling import ddim_sample
    from snapbench.training.toy_digits import DIGIT_PROMPTS

    assert bundle.encoder is not None
    labels = torch.arange(10).repeat(2)
    noise = torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(123))
    context = bundle.encoder.encode([DIGIT_PROMPTS[k] for k in labels.tolist()])
    with torch.no_grad():
        return ddim_sample(bundle.model, context, bundle.encoder.encode([""]), noise,
                           noise_schedule=bundle.noise_schedule, steps=steps, guidance=guidance)


@pytest.mark.slow
def test_a_distilled_dit_lands_nearer_its_teachers_many_steps_than_the_undistilled_model(tmp_path, dit_teacher):
    torch.set_num_threads(1)
    config = DistillConfig(**{**TINY.to_dict(), "steps": 10, "learning_rate": 1e-3})
    distill(dit_teacher, tmp_path / "student", config, progress=False)
    teacher, student = load_bundle(dit_teacher), load_bundle(tmp_path / "student")
    assert type(student.model).__name__ == "ElasticDiT"
    for w in (1.0, 3.0):  # CFG-aware over U[1, 5]: both the unguided and a guided trajectory
        target = _samples(teacher, 4, w)
        undistilled = float((_samples(teacher, 1, w) - target).square().mean())
        distilled = float((_samples(student, 1, w) - target).square().mean())
        assert distilled < 0.9 * undistilled, (w, distilled, undistilled)


@pytest.mark.slow
def test_a_dit_distillation_checkpoints_as_a_dit_folder_and_resumes_to_the_same_weights(tmp_path, dit_teacher):
    torch.set_num_threads(1)
    straight = distill(dit_teacher, tmp_path / "straight", TINY, progress=False)
    distill(dit_teacher, tmp_path / "resumed", DistillConfig(**{**TINY.to_dict(), "steps": 1}), progress=False)
    again = distill(dit_teacher, tmp_path / "resumed", TINY, progress=False)
    assert again.resumed_from == 1 and straight.step == again.step == 2
    a, b = load_bundle(tmp_path / "straight"), load_bundle(tmp_path / "resumed")
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name
    files = {p.name for p in (tmp_path / "straight").iterdir()}
    assert {"dit.json", "transformer", "sampling.json", "distill_state.json"} <= files and "arch.json" not in files
    settings = read_sampling(tmp_path / "straight")
    assert settings is not None and (settings["steps"], settings["teacher_steps"]) == (1, 4)
    assert settings["prediction_type"] == "v_prediction"
    teacher = load_bundle(dit_teacher)  # the student moved away from the teacher it started as
    assert any(not torch.equal(p, q) for p, q in zip(a.model.state_dict().values(),
                                                     teacher.model.state_dict().values()))


def test_an_evolved_dit_spec_as_student_starts_from_the_teachers_weights(tmp_path, dit_teacher):
    """The paper's pairing: the teacher distilled into the efficient (evolved) architecture."""
    from snapbench.dit.source import dit_spec
    from snapbench.specs.arch_spec import BlockChoice

    torch.set_num_threads(1)
    teacher = load_bundle(dit_teacher)
    spec = teacher.spec.with_choices("toy-dit-small", {("DiT-2", "TB3"): BlockChoice("TB3", keep=False),
                                                       ("DiT-3", "TB5"): BlockChoice("TB5", copies=1)})
    (tmp_path / "student.json").write_text(json.dumps(dit_spec(spec).to_dict()))
    config = DistillConfig(**{**TINY.to_dict(), "steps": 1, "learning_rate": 1e-12})
    distill(dit_teacher, tmp_path / "d", config, student=tmp_path / "student.json", progress=False)
    student = load_bundle(tmp_path / "d")
    assert student.spec.name == "toy-dit-small"
    assert student.model.unit("TB[DiT-2, 3]").removed and "dit3_tb5_copy1" in student.model.copies
    t_state = teacher.model.base.state_dict()  # inherited, not random
    for name, p in student.model.base.state_dict().items():
        assert torch.allclose(p, t_state[name], atol=1e-6), name


def test_a_narrower_dit_student_distils_and_a_unet_student_is_refused_in_one_line(tmp_path, dit_teacher):
    """A PixArt's cross_attention_dim is its inner width (a narrower student changes it); the text it reads
    is caption_channels wide, which must match."""
    from snapbench.dit.spec import load_preset
    from snapbench.errors import SnapbenchError

    torch.set_num_threads(1)
    data = load_preset("toy-digits-dit").to_dict()
    data["name"] = "toy-dit-narrow"
    data["config"] = {**data["config"], "num_attention_heads": 1, "cross_attention_dim": 16}
    (tmp_path / "narrow.json").write_text(json.dumps(data))
    config = DistillConfig(**{**TINY.to_dict(), "steps": 1})
    distill(dit_teacher, tmp_path / "d", config, student=tmp_path / "narrow.json", progress=False)
    assert load_bundle(tmp_path / "d").model.config["cross_attention_dim"] == 16
    data["config"]["caption_channels"] = 16
    (tmp_path / "other-text.json").write_text(json.dumps(data))
    with pytest.raises(SnapbenchError, match="caption_channels"):
        distill(dit_teacher, tmp_path / "e", config, student=tmp_path / "other-text.json", progress=False)
    with pytest.raises(SnapbenchError, match="different backbones"):
        distill(dit_teacher, tmp_path / "f", config, student="toy-digits", progress=False)
