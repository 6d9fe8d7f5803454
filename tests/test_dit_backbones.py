"""DiT presets, their parameter counts, cutting into blocks, checkpoint folders and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from cli_checks import one_error_line

from snapbench.backbones import DitBackbone, backbone_for, inspect_model
from snapbench.cli import main
from snapbench.dit.cut import STAGES, cut_dit, default_shapes, example_inputs, make_units, run_chain
from snapbench.dit.source import build_dit, dit_spec, is_dit_ref, resolve_dit
from snapbench.dit.spec import load_preset, preset_names
from snapbench.settings import InputShapes

# Counted independently (diffusers 0.42.1 on the meta device) in shared/reference/configs/README.md:
# a wrong transcription of any config field shows here.
REFERENCE_COUNTS = {"sd3-medium": 2_028_328_000, "sd35-medium": 2_243_171_520, "pixart-sigma": 610_856_096,
                    "sana-600m": 591_747_872, "sana-1600m": 1_604_462_752}
TINY = ["sd3-tiny", "sd35-tiny", "pixart-sigma-tiny", "sana-tiny"]


def inspect_dit(name: str, **shape_changes):
    """What `snapbench inspect --model NAME` cuts: through the backbone seam, at the model's own shapes."""
    source = resolve_dit(name)
    return inspect_model(source, shapes=default_shapes(dit_spec(source.spec), **shape_changes))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_full_presets_count_the_reference_parameters_block_by_block(name):
    from snapbench.commands.dit_render import published

    r = inspect_dit(name, tokens=8)  # the text length does not change parameters; short keeps it quick
    assert r.totals()["params"] == REFERENCE_COUNTS[name]
    model = build_dit(resolve_dit(name), device="meta")
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_COUNTS[name]
    pub = published(r)
    assert pub is not None and abs(pub["difference"]) < 0.15


@pytest.mark.slow
def test_full_presets_cut_into_a_handful_of_signatures():
    sd3 = inspect_dit("sd3-medium")
    assert sd3.shapes.latent == 128 and sd3.shapes.tokens == 333  # 1024x1024, CLIP 77 + T5 256
    tb = [b for b in sd3.blocks if b.kind == "TB"]
    assert len(tb) == 24 and tb[0].inputs[0] == ("hidden", (2, 4096, 1536))
    # 23 joint blocks share one signature, the last (image stream only) its own; plus 4 aux blocks
    assert len({b.signature.key() for b in tb}) == 2 and sd3.totals()["signatures"] == 6
    assert list(sd3.stage_frame()["stage"]) == list(STAGES) == ["Embed", "DiT-1", "DiT-2", "DiT-3", "DiT-4", "Final"]
    assert list(sd3.stage_frame()["TB_count"]) == [0, 6, 6, 6, 6, 0]
    sana = inspect_dit("sana-600m")
    assert sana.shapes.latent == 32 and sana.blocks[3].inputs[0] == ("hidden", (2, 1024, 1152))
    assert sana.totals()["signatures"] == 5
    assert list(sana.stage_frame()["TB_count"]) == [0, 7, 7, 7, 7, 0]


@pytest.mark.parametrize("name", TINY)
def test_blocks_add_up_to_the_diffusers_forward(name):
    spec = load_preset(name)
    model = build_dit(resolve_dit(name), seed=3)
    shapes = InputShapes(latent=8, tokens=5)
    x = example_inputs(spec, shapes)
    kwargs = {"pooled_projections": x["pooled"]} if "pooled" in x else {}
    with torch.no_grad():
        ours = run_chain(make_units(model, spec.family), x)
        ref = model(x["sample"], encoder_hidden_states=x["context"], timestep=x["timestep"], return_dict=False,
                    **kwargs)[0]
    assert torch.equal(ours, ref)
    blocks = cut_dit(spec, shapes)
    assert sum(b.params for b in blocks) == sum(p.numel() for p in model.parameters())
    # the backbone's elastic model runs the same blocks; its layout names the same slots
    backbone = backbone_for(resolve_dit(name))
    assert isinstance(backbone, DitBackbone)
    elastic = backbone.build(resolve_dit(name), seed=3)
    with torch.no_grad():
        assert torch.equal(elastic(*backbone.example_inputs(elastic, shapes, device="cpu")), ref)
    assert [u.slot.block_id for u in elastic.units] == [s.block_id for s in backbone.layout(elastic.spec)]
    assert all(b.macs > 0 for b in blocks)
    assert all(b.attention_macs > 0 for b in blocks if b.kind == "TB")


def test_dual_attention_blocks_have_their_own_signature():
    blocks = [b for b in cut_dit(load_preset("sd35-tiny"), InputShapes(8, 2, 4)) if b.kind == "TB"]
    keys = [b.signature.key() for b in blocks]
    assert keys[0] == keys[1] != keys[2] != keys[3]
    assert "dual_attention=1" in keys[0] and "context_out=0" in keys[3]


def test_local_checkpoint_folder_loads_like_a_unet(tmp_path, capsys):
    model = build_dit(resolve_dit("pixart-sigma-tiny"), seed=1)
    pipe = tmp_path / "pipe"
    model.save_pretrained(pipe / "transformer", safe_serialization=True)
    assert is_dit_ref(pipe) and is_dit_ref(pipe / "transformer") and not is_dit_ref(tmp_path)
    source = resolve_dit(pipe)
    loaded = build_dit(source)
    assert torch.equal(loaded.proj_out.weight, model.proj_out.weight)
    assert main(["inspect", "--model", str(pipe), "--latent", "8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backbone"] == "dit" and data["totals"]["TB"] == 3 and data["totals"]["signatures"] == 5
    assert data["totals"]["params"] == sum(p.numel() for p in model.parameters())


def _spec_file(tmp_path, preset: str, **config_changes):
    data = load_preset(preset).to_dict()
    data["config"].update(config_changes)
    path = tmp_path / f"{preset}-changed.json"
    path.write_text(json.dumps(data))
    return path


def test_bad_dit_input_is_one_line_exit_2(capsys, tmp_path):
    line = one_error_line(capsys, ["inspect", "--model", str(_spec_file(tmp_path, "sana-tiny", guidance_embeds=True))])
    assert "guidance_embeds=True is not supported" in line
    line = one_error_line(capsys, ["inspect", "--model", str(_spec_file(tmp_path, "sd3-tiny", qk_norm="layer_norm"))])
    assert "qk_norm" in line and "rms_norm" in line
    line = one_error_line(capsys, ["inspect", "--model", str(_spec_file(tmp_path, "pixart-sigma-tiny",
                                                                          use_additional_conditions=True))])
    assert "use_additional_conditions" in line
    line = one_error_line(capsys, ["inspect", "--model", str(_spec_file(tmp_path, "sd3-tiny", num_layer=3))])
    assert "'num_layer' is not a SD3Transformer2DModel argument" in line
    line = one_error_line(capsys, ["inspect", "--model", "sd3-medium", "--latent", "127"])
    assert "not divisible by sd3-medium's patch size 2" in line
    line = one_error_line(capsys, ["inspect", "--model", "sd3-medium", "--latent", "400"])
    assert "pos_embed_max_size 192" in line


def test_weights_that_do_not_match_the_config_name_the_block(capsys, tmp_path):
    model = build_dit(resolve_dit("sd3-tiny"))
    folder = tmp_path / "transformer"
    model.save_pretrained(folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["num_attention_heads"], config["attention_head_dim"] = 4, 4  # same width, other heads: fits
    (folder / "config.json").write_text(json.dumps(config))
    resolve_dit(folder)
    config["attention_head_dim"] = 8  # 32 channels: every tensor is the wrong shape
    config["caption_projection_dim"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    line = one_error_line(capsys, ["inspect", "--model", str(folder)])
    assert "PatchEmbed" in line and "do not match the config" in line
    config.update(num_attention_heads=2, attention_head_dim=8, caption_projection_dim=16, num_layers=4)
    (folder / "config.json").write_text(json.dumps(config))
    line = one_error_line(capsys, ["inspect", "--model", str(folder)])
    # the old last block (image stream only) is now a full joint block: the first mismatch names it
    assert "transformer_blocks.2.norm1_context" in line and "(TB[DiT-3, 3])" in line


def test_presets_are_listed():
    names = preset_names()
    assert {"sd3-medium", "sd35-medium", "pixart-sigma", "sana-600m", "sana-1600m"} <= set(names)
    assert set(TINY) <= set(names)
