"""`--model` / `--weights` beyond a plain folder: weight variants (`save_pretrained(variant="fp16")`) and
Hugging Face hub ids through a local Hugging Face cache laid out as huggingface_hub lays it out."""

from __future__ import annotations

import json

import pytest
import torch

from snapbench.backbones import resolve_model
from snapbench.cli import main
from snapbench.errors import SnapbenchError
from snapbench.model.loading import build_unet


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    from snapbench.specs.presets import load_preset

    cfg = {k: v for k, v in load_preset("sd15-tiny").base_config.items() if not k.startswith("_")}
    torch.manual_seed(7)
    return UNet2DConditionModel(**cfg)


@pytest.fixture(scope="module")
def unet():
    return _tiny_unet()


def _first_weight(model) -> torch.Tensor:
    return next(iter(model.base.state_dict().values()))


def test_the_only_variant_present_is_picked(tmp_path, unet):
    folder = tmp_path / "unet"
    unet.half().save_pretrained(folder, variant="fp16")
    unet.float()
    assert (folder / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert not (folder / "diffusion_pytorch_model.safetensors").exists()
    source = resolve_model(folder)
    assert source.variant == "fp16"
    loaded = build_unet(source)
    assert torch.allclose(_first_weight(loaded), next(iter(unet.state_dict().values())), atol=1e-3)
    assert resolve_model(folder, variant="fp16").variant == "fp16"
    with pytest.raises(SnapbenchError, match="no fp32 weights.*variants here: fp16"):
        resolve_model(folder, variant="fp32")


def test_plain_file_first_and_several_variants_need_a_choice(tmp_path, unet):
    folder = tmp_path / "unet"
    unet.save_pretrained(folder)
    unet.half().save_pretrained(folder, variant="fp16")
    unet.float()
    assert resolve_model(folder).variant is None  # the plain file, as diffusers does
    assert resolve_model(folder, variant="fp16").variant == "fp16"
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / "diffusion_pytorch_model.ema.safetensors")
    with pytest.raises(SnapbenchError, match=r"several weight variants \(ema, fp16\).*--variant"):
        resolve_model(folder)


def test_variant_on_the_command_line(tmp_path, unet, capsys):
    folder = tmp_path / "unet"
    unet.half().save_pretrained(folder, variant="fp16")
    unet.float()
    assert main(["inspect", "--model", str(folder), "--variant", "fp16", "--latent", "8", "--no-blocks",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["params"] == sum(p.numel() for p in unet.parameters())
    assert main(["inspect", "--model", str(folder), "--variant", "bf16", "--latent", "8"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _hub_cache(root, repo_id: str, unet, revision: str = "main", commit: str = "a" * 40):
    """The layout huggingface_hub keeps: models--org--name/{refs/<rev>, snapshots/<commit>/...}."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    unet.save_pretrained(repo / "snapshots" / commit / "unet")
    return repo / "snapshots" / commit


def test_hub_id_from_the_local_cache(tmp_path, unet, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = _hub_cache(tmp_path / "hub", "someone/tiny-sd", unet)
    source = resolve_model("someone/tiny-sd")
    assert source.weights_dir == snapshot / "unet"  # a pipeline snapshot: its unet/ folder
    assert resolve_model("someone/tiny-sd", subfolder="unet").weights_dir == snapshot / "unet"
    other = _hub_cache(tmp_path / "hub", "someone/tiny-sd", unet, revision="v2", commit="b" * 40)
    assert resolve_model("someone/tiny-sd", revision="v2").weights_dir == other / "unet"
    assert main(["inspect", "--model", "someone/tiny-sd", "--subfolder", "unet", "--latent", "8", "--no-blocks",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["params"] == sum(p.numel() for p in unet.parameters())
    # a hub id as --weights loads into a spec derived from its config
    assert resolve_model("sd15-tiny", weights="someone/tiny-sd").weights_dir == snapshot / "unet"


def test_missing_snapshot_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(SnapbenchError, match="huggingface-cli download runwayml/stable-diffusion-v1-5"):
        resolve_model("runwayml/stable-diffusion-v1-5")
    assert main(["inspect", "--model", "stabilityai/stable-diffusion-2-1-base", "--revision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: stabilityai/stable-diffusion-2-1-base: no such local folder") and err.count("\n") == 1
    assert "--revision fp16" in err
    assert not (tmp_path / "empty-hub").exists() or not any((tmp_path / "empty-hub").iterdir())  # nothing written
