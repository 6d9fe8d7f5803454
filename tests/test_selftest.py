"""Tiny fixtures in real checkpoint layouts, the CLIP score, the CLIP evaluator on them, and `selftest`."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import torch

from snapbench.errors import SnapbenchError
from snapbench.fixtures import PROMPTS, synthetic_images, write_fixtures


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    torch.set_num_threads(1)
    return write_fixtures(tmp_path_factory.mktemp("fixtures"))


def _uint8(images):
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def test_layouts_are_those_of_real_checkpoints(fx):
    files = {str(p.relative_to(fx.pipeline)) for p in fx.pipeline.rglob("*") if p.is_file()}
    assert files == {"model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
                     "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
                     "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "unet/config.json",
                     "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                     "vae/diffusion_pytorch_model.safetensors"}
    index = json.loads((fx.pipeline / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt"} <= {
        p.name for p in fx.clip.iterdir()}
    assert (fx.pipeline / "tokenizer" / "merges.txt").read_text().startswith("#version: 0.2\n")


def test_diffusers_and_transformers_load_them(fx):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPTokenizer

    pipe = StableDiffusionPipeline.from_pretrained(fx.pipeline, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(PROMPTS[0], num_inference_steps=1, height=64, width=64, output_type="pt").images
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()
    tok = CLIPTokenizer.from_pretrained(fx.pipeline / "tokenizer", local_files_only=True)
    ids = tok("a red cube").input_ids
    assert len(tok) == 1000 and ids[0] == tok.bos_token_id == 998 and ids[-1] == tok.eos_token_id == 999
    assert len(ids) < len("a red cube") + 2  # merges were applied: fewer tokens than characters
    assert isinstance(CLIPModel.from_pretrained(fx.clip, local_files_only=True), CLIPModel)


def test_training_data_is_what_train_data_reads(fx):
    from snapbench.backbones import resolve_model
    from snapbench.training.data import LatentFolderData

    data = LatentFolderData(fx.data, resolve_model(fx.pipeline).spec)
    assert data.latents.shape == (8, 4, 8, 8) and data.context.shape == (8, 77, 16)
    assert data.uncond is not None and data.uncond.shape == (77, 16)
    assert not torch.equal(data.context[0], data.context[1])  # different captions, different contexts


def test_clip_score_is_the_usual_definition(fx):
    """100 * max(cos, 0) of CLIP's projected embeddings, against a computation from the model's parts."""
    from transformers import CLIPModel, CLIPProcessor

    from snapbench.evolution.evaluators import clip_score

    clip = CLIPModel.from_pretrained(fx.clip, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(fx.clip, local_files_only=True)
    images = _uint8(synthetic_images(6, 64, seed=3))
    prompts = ["a red square", "a cat", "", "a very long " + "word " * 100, "blue", "a green circle"]
    got = clip_score(clip, processor, images, prompts)
    with torch.no_grad():
        pixels = processor.image_processor(images=list(images), return_tensors="pt").pixel_values
        ids = processor.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        img = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
        txt = clip.text_projection(clip.text_model(input_ids=ids.input_ids,
                                                   attention_mask=ids.attention_mask).pooler_output)
        cos = (img / img.norm(dim=-1, keepdim=True) * txt / txt.norm(dim=-1, keepdim=True)).sum(-1)
    assert torch.allclose(got, 100 * cos.clamp(min=0), atol=1e-4)
    assert (got > 0).any()  # the comparison is not between zeros


def test_clip_evaluator_scores_the_pipeline(fx):
    from snapbench.evolution.evaluators import ClipEvalConfig
    from snapbench.training.checkpoints import load_bundle

    bundle = load_bundle(fx.pipeline)
    config = ClipEvalConfig(PROMPTS[:2], str(fx.clip), str(fx.pipeline), steps=2)
    config.check(bundle.spec)
    evaluator = config.build()
    full = evaluator.evaluate(bundle, bundle.model)
    again = evaluator.evaluate(bundle, bundle.model)
    without = evaluator.evaluate(bundle, bundle.model, disabled=("CA[Up-1, 1]",))
    assert full.details == {"images": 2}
    assert 0 < full.quality <= 100 and full.quality == again.quality
    assert without.quality != full.quality


def test_clip_evaluator_scores_batched_candidates_per_sample(fx):
    """Evolution's path at SD scale: several candidates batched through one model, sample by sample (sample
    s = prompt s % P with its own seeded noise); each candidate's mean is what evaluate() gives it alone."""
    from snapbench.evolution.actions import Action
    from snapbench.evolution.evaluators import ClipEvalConfig
    from snapbench.evolution.executors import ScoreTask
    from snapbench.training.checkpoints import derive, load_bundle

    bundle = load_bundle(fx.pipeline)
    config = ClipEvalConfig(PROMPTS[:2], str(fx.clip), str(fx.pipeline), steps=2, batch=3)  # 4 rows: 2 passes
    spec = bundle.spec
    cands = [spec, Action("-", "Up-1", "CA1").apply(spec)]
    got = ScoreTask(str(fx.pipeline), tuple(c.to_dict() for c in cands), (0, 1), config).run()
    evaluator = config.build()
    for c, row in zip(cands, got):
        alone = evaluator.evaluate(bundle, derive(bundle.model, c)).quality
        assert sum(row) / len(row) == pytest.approx(alone, abs=1e-3)
    assert ScoreTask(str(fx.pipeline), (cands[1].to_dict(),), (1,), config).run()[0] == pytest.approx([got[1][1]],
                                                                                                      abs=1e-3)
    assert config.sample_count() == 2


def test_clip_evaluator_bad_input(fx, tmp_path):
    from snapbench.backbones import resolve_model
    from snapbench.evolution.evaluators import ClipEvalConfig, read_prompts

    spec = resolve_model(fx.pipeline).spec
    not_clip = tmp_path / "not-clip"
    shutil.copytree(fx.clip, not_clip)
    cfg = json.loads((not_clip / "config.json").read_text())
    (not_clip / "config.json").write_text(json.dumps({**cfg, "model_type": "siglip"}))
    with pytest.raises(SnapbenchError, match="not a CLIPModel"):
        ClipEvalConfig(PROMPTS, str(not_clip), str(fx.pipeline)).check(spec)
    partial = tmp_path / "partial"
    shutil.copytree(fx.pipeline, partial)
    shutil.rmtree(partial / "vae")
    with pytest.raises(SnapbenchError, match="missing .*vae/config.json"):
        ClipEvalConfig(PROMPTS, str(fx.clip), str(partial)).check(spec)
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(SnapbenchError, match="empty"):
        read_prompts(tmp_path / "empty.txt")


def test_evolve_cli_refuses_bad_clip_input_in_one_line(fx, tmp_path, cli_server):
    not_clip = tmp_path / "text-encoder-only"
    shutil.copytree(fx.clip, not_clip)
    cfg = json.loads((not_clip / "config.json").read_text())
    (not_clip / "config.json").write_text(json.dumps({**cfg["text_config"], "model_type": "clip_text_model"}))
    (tmp_path / "empty.txt").write_text("")
    base = ["ablate", "--model", str(fx.pipeline), "--evaluator", "clip", "--pipeline", str(fx.pipeline)]
    for extra, message in ((["--prompts", str(fx.prompts), "--clip-weights", str(not_clip)], "not a CLIPModel"),
                           (["--prompts", str(tmp_path / "empty.txt"), "--clip-weights", str(fx.clip)], "empty")):
        proc = cli_server.run(base + extra, cwd=tmp_path, env=dict(os.environ))
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_processes_beyond_the_devices_are_refused():
    from snapbench.selftest import Devices, training_processes

    assert training_processes(None, Devices("cpu", 2)) == 2
    assert training_processes(None, Devices("cpu", 1)) == 1
    assert training_processes(1, Devices("cuda", 4)) == 1
    with pytest.raises(SnapbenchError, match="only 2 CPU cores"):
        training_processes(3, Devices("cpu", 2))
    with pytest.raises(SnapbenchError, match="only 1 GPU here"):
        training_processes(2, Devices("cuda", 1))


def test_cli_bad_input_is_one_line_exit_2(tmp_path, cli_server):
    """In child processes forked from the session's CLI server."""
    proc = cli_server.run(["selftest", "--processes", "4096"], cwd=tmp_path, env=dict(os.environ))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--processes 4096" in proc.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    proc = cli_server.run(["selftest", "--keep", "busy"], cwd=tmp_path, env=dict(os.environ))
    assert proc.returncode == 2 and "not empty" in proc.stderr


def test_first_error_line():
    from snapbench.selftest import first_error_line

    assert first_error_line("noise\nerror: the prompts file is empty\n", 2) == "the prompts file is empty"
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1\n    boom()\nValueError: bad shape\n'
    assert first_error_line(tb, 1) == "ValueError: bad shape"
    assert first_error_line("", 9) == "exit code 9"


@pytest.mark.slow
@pytest.mark.long  # every stage in its own process: minutes; xdist starts it first (conftest)
def test_selftest_runs_every_stage(tmp_path, monkeypatch, capsys, cli_server):
    """The whole checklist, as `make test` runs it once: every stage passes. Each stage is its own process:
    the `python -m snapbench` ones are forked from the suite's CLI server (a fresh interpreter would spend
    4-6 CPU s importing torch, diffusers and coremltools for each of 16 stages); the training launches
    (accelerate, torchrun, their workers) are started as a user starts them."""
    from snapbench import selftest as selftest_module
    from snapbench.cli import main

    run_process, routed = selftest_module.run_process, []

    def forked(argv, *, cwd, env, timeout):
        snapbench_cli, fixtures_module = (sys.executable, "-m", "snapbench"), (sys.executable, "-m", "snapbench.fixtures")
        if tuple(argv[:3]) == snapbench_cli:
            routed.append(argv[3])
            return cli_server.run(list(argv[3:]), cwd=cwd, env=env, timeout=timeout or 600)
        if tuple(argv[:3]) == fixtures_module:
            routed.append("fixtures")
            return cli_server.run(list(argv[3:]), cwd=cwd, env=env, timeout=timeout or 600,
                                  script="import runpy; runpy.run_module('snapbench.fixtures', run_name='__main__')")
        return run_process(argv, cwd=cwd, env=env, timeout=timeout)

    monkeypatch.setattr(selftest_module, "run_process", forked)
    work = tmp_path / "st"
    code = main(["selftest", "--keep", str(work), "--json"])
    report = json.loads(capsys.readouterr().out)
    failed = [(s["name"], s["error"]) for s in report["stages"] if not s["ok"]]
    assert not failed and report["ok"] and code == 0
    assert routed.count("fixtures") == 1 and len(routed) == len(report["stages"]) - 2  # not train, distill
    names = [s["name"] for s in report["stages"]]
    assert names[:7] == ["fixtures (tiny pipeline, CLIP, data)", "inspect (pipeline folder)", "convert (per block)",
                         "convert (whole, 2 chunks)", "convert (text encoder)", "convert (VAE decoder)",
                         "profile (estimate)"]
    assert any(n.startswith("train (accelerate, ") for n in names)
    assert {"ablate (clip, 2 local workers)", "evolve (clip, ray)", "distill-decoder (50% channels)",
            "profile sdxl-tiny (convert per block, estimate)",
            "profile snapgen-tiny (convert per block, estimate)", "inspect (DiT)",
            "convert (DiT blocks, split_einsum_v2)", "profile (DiT, estimate)", "report (DiT)"} <= set(names)
    assert any(n.startswith("distill (cfg-aware, accelerate, ") for n in names) and names[-1] == "report"
    assert all(s["seconds"] >= 0 for s in report["stages"])
    assert (work / "report.html").is_file() and (work / "evolve" / "arch.json").is_file()
    assert (work / "report-dit.html").is_file()


def test_evaluations_go_to_a_gpu_when_the_worker_sees_one(monkeypatch):
    from snapbench.evolution.executors import evaluation_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert evaluation_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert evaluation_device() == "cuda"


def test_accelerate_launch_arguments():
    """Several CPU processes go through the multi-process launcher with ACCELERATE_USE_CPU (`--cpu` with
    --num_processes 2 starts a single process); one process on a GPU is a plain launch."""
    from snapbench.selftest import Devices, accelerate_launch

    argv, env = accelerate_launch(2, Devices("cpu", 2))
    assert "--multi_gpu" in argv and "--cpu" not in argv and dict(env) == {"ACCELERATE_USE_CPU": "true"}
    assert argv[argv.index("--num_processes") + 1] == "2" and argv[-2:] == ("-m", "snapbench.train")
    argv, env = accelerate_launch(1, Devices("cuda", 1))
    assert "--multi_gpu" not in argv and "--cpu" not in argv and env == ()
    argv, env = accelerate_launch(4, Devices("cuda", 8))
    assert "--multi_gpu" in argv and env == ()
