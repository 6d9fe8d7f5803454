"""The efficient decoder: pruned shapes, weight inheritance by the channel rule, the distillation loss
doing its job, resume, the full-size figures, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from snapbench.cli import main
from snapbench.distillation.decoder import (
    DecoderDistillConfig,
    LatentSet,
    decode,
    decoder_params,
    distill_decoder,
    kept_indices,
    prune_vae,
    pruned_config,
    psnr_db,
)
from snapbench.errors import SnapbenchError

TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16], layers_per_block=1,
                norm_num_groups=4, sample_size=16, down_block_types=["DownEncoderBlock2D"] * 2,
                up_block_types=["UpDecoderBlock2D"] * 2)


def _vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**TINY_VAE).eval()


def _latents(n: int = 24) -> LatentSet:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(n, 4, 8, 8, generator=g)
    return LatentSet(z[:-6], z[-6:], None)


def test_channel_rule_keeps_the_first_channels_of_every_group():
    assert kept_indices(16, 8, 4).tolist() == [0, 1, 4, 5, 8, 9, 12, 13]
    assert kept_indices(10, 4, 4).tolist() == [0, 1, 2, 3]  # not divisible by the groups: the first ones
    assert pruned_config({"block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32}, 0.5)[
        "block_out_channels"] == [64, 128, 256, 256]  # the SnapFusion decoder
    with pytest.raises(SnapbenchError, match="cannot shrink"):
        pruned_config({"block_out_channels": [32], "norm_num_groups": 32}, 0.5)


def test_pruned_shapes_and_parameters():
    teacher = _vae()
    student = prune_vae(teacher, 0.5)
    assert list(student.config.block_out_channels) == [4, 8]
    assert student.config.norm_num_groups == 4 and student.config.latent_channels == 4
    t_state = teacher.state_dict()
    for name, p in student.state_dict().items():
        assert p.ndim == t_state[name].ndim and all(a <= b for a, b in zip(p.shape, t_state[name].shape)), name
    ratio = decoder_params(student) / decoder_params(teacher)
    assert 0.2 < ratio < 0.35  # about a quarter, as the paper says of halving the channels
    z = torch.randn(2, 4, 8, 8)
    assert decode(student, z).shape == decode(teacher, z).shape == (2, 3, 16, 16)


def test_every_weight_is_the_rules_slice_of_the_teachers():
    teacher = _vae()
    student = prune_vae(teacher, 0.5)
    t, s = teacher.state_dict(), student.state_dict()
    keep16, keep8 = kept_indices(16, 8, 4), kept_indices(8, 4, 4)
    # latent (4, unpruned) -> the last level's 16 channels
    assert torch.equal(s["decoder.conv_in.weight"], t["decoder.conv_in.weight"][keep16])
    assert torch.equal(s["decoder.conv_in.bias"], t["decoder.conv_in.bias"][keep16])
    # a 16 -> 8 ResNet: output rows and input columns both by the rule; its shortcut too
    name = "decoder.up_blocks.1.resnets.0"
    assert torch.equal(s[f"{name}.conv1.weight"], t[f"{name}.conv1.weight"][keep8][:, keep16])
    assert torch.equal(s[f"{name}.conv_shortcut.weight"], t[f"{name}.conv_shortcut.weight"][keep8][:, keep16])
    assert torch.equal(s[f"{name}.norm1.weight"], t[f"{name}.norm1.weight"][keep16])
    # the output conv keeps all 3 image channels
    assert torch.equal(s["decoder.conv_out.weight"], t["decoder.conv_out.weight"][:, keep8])
    # the same width keeps the same indices everywhere: residual additions stay aligned
    attn_q = s["decoder.mid_block.attentions.0.to_q.weight"]
    assert torch.equal(attn_q, t["decoder.mid_block.attentions.0.to_q.weight"][keep16][:, keep16])


def test_distillation_raises_psnr_trains_only_the_decoder_and_resumes(tmp_path):
    torch.set_num_threads(1)
    teacher = _vae()
    config = DecoderDistillConfig(prune=0.5, steps=30, batch_size=8, learning_rate=3e-3, save_every=1000)
    result = distill_decoder(teacher, _latents(), tmp_path / "half", config, teacher_ref="tiny", progress=False)
    assert result.psnr_distilled_db > result.psnr_untrained_db + 1.0
    assert result.psnr_teacher_db is None and result.params_student < result.params_teacher
    assert result.losses[-1][1] < result.losses[0][1]
    from diffusers import AutoencoderKL

    student = AutoencoderKL.from_pretrained(tmp_path / "half", local_files_only=True)  # save_pretrained
    untrained = prune_vae(teacher, 0.5)
    for name, p in student.encoder.state_dict().items():
        assert torch.equal(p, untrained.encoder.state_dict()[name]), name  # only the decoder trained
    assert any(not torch.equal(p, untrained.decoder.state_dict()[n]) for n, p in student.decoder.state_dict().items())
    info = json.loads((tmp_path / "half" / "decoder_distill.json").read_text())
    assert info["step"] == 30 and info["result"]["psnr_distilled_db"] == round(result.psnr_distilled_db, 2)

    # resume: 2 + 2 steps equal 4 straight
    four = DecoderDistillConfig(prune=0.5, steps=4, batch_size=8, learning_rate=3e-3, save_every=1000)
    two = DecoderDistillConfig(prune=0.5, steps=2, batch_size=8, learning_rate=3e-3, save_every=1000)
    distill_decoder(teacher, _latents(), tmp_path / "a", four, teacher_ref="tiny", progress=False)
    distill_decoder(teacher, _latents(), tmp_path / "b", two, teacher_ref="tiny", progress=False)
    again = distill_decoder(teacher, _latents(), tmp_path / "b", four, teacher_ref="tiny", progress=False)
    assert again.resumed_from == 2
    a = AutoencoderKL.from_pretrained(tmp_path / "a", local_files_only=True).state_dict()
    b = AutoencoderKL.from_pretrained(tmp_path / "b", local_files_only=True).state_dict()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    with pytest.raises(SnapbenchError, match="prune"):
        distill_decoder(teacher, _latents(), tmp_path / "b", DecoderDistillConfig(prune=0.25, steps=4, batch_size=8,
                        learning_rate=3e-3), teacher_ref="tiny", progress=False)


def test_psnr():
    a = torch.zeros(1, 3, 4, 4)
    assert psnr_db(a, a) == math.inf
    assert psnr_db(a, a + 0.2) == pytest.approx(10 * math.log10(4 / 0.04))


def test_full_size_decoder_figures_come_from_the_tables():
    from snapbench.distillation.decoder_latency import full_size_decoder

    half = full_size_decoder(0.5)
    assert half["block_out_channels_pruned"] == [64, 128, 256, 256]
    assert 49e6 < half["params_full"] < 50e6 and 12e6 < half["params_pruned"] < 13e6
    assert {d["device"] for d in half["devices"]} >= {"iphone14pro"}
    assert all(d["pruned_ms"] < d["full_ms"] and d["backend"] == "estimate" for d in half["devices"])
    other = full_size_decoder(0.25)
    assert other["devices"] == [] and "0.5" in other["note"]


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    def run(*args: str) -> str:
        assert main(["distill-decoder", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error:"), err
        return err

    out = str(tmp_path / "o")
    assert "(0, 1)" in run("--vae", "toy", "--prune", "1.5", "--out", out)
    assert "(0, 1)" in run("--vae", "toy", "--prune", "0", "--out", out)
    assert "no config.json" in run("--vae", str(tmp_path / "nope"), "--out", out)
    folder = tmp_path / "vae"
    _vae().save_pretrained(folder, safe_serialization=True)
    assert "--latents" in run("--vae", str(folder), "--out", out)
    assert "no .safetensors" in run("--vae", str(folder), "--latents", str(tmp_path), "--out", out)


def test_cli_on_a_local_vae_with_latents(tmp_path, capsys):
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    folder = tmp_path / "pipe" / "vae"
    _vae().save_pretrained(folder, safe_serialization=True)
    (tmp_path / "lat").mkdir()
    save_file({"latents": torch.randn(12, 4, 8, 8) * 0.18215}, str(tmp_path / "lat" / "a.safetensors"))
    assert main(["distill-decoder", "--vae", str(tmp_path / "pipe"), "--latents", str(tmp_path / "lat"),
                 "--out", str(tmp_path / "half"), "--steps", "2", "--batch-size", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("psnr_untrained_db", "psnr_distilled_db", "psnr_teacher_db", "params_teacher", "params_student"):
        assert key in data
    assert data["params_student"] < data["params_teacher"] and data["full_size_sd_decoder"]["devices"]
