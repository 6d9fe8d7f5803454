import json

from snapbench.backbones import inspect_model, resolve_model
from snapbench.blocks.cut import InputShapes
from snapbench.cli import main
from snapbench.specs.stages import STAGES


def test_sd15_parameter_count_and_macs():
    r = inspect_model(resolve_model("sd15"), shapes=InputShapes(latent=64, batch=1))
    tot = r.totals()
    assert tot["params"] == 859_520_964
    # attention matmuls counted: ~401.6G MACs per 512x512 forward; without them BK-SDM's 338.7G
    assert abs(tot["macs"] / 1e9 - 401.6) < 0.5
    assert abs(tot["macs_no_attention"] / 1e9 - 338.7) < 0.5


def test_blocks_sum_to_the_whole_unet():
    r = inspect_model(resolve_model("sd15-tiny"), shapes=InputShapes(latent=16, batch=2, tokens=5))
    rows = r.block_rows()
    ids = [b["id"] for b in rows]
    assert len(ids) == len(set(ids))
    assert ids[0] == "TimeEmbedding" and ids[1] == "ConvIn" and ids[-1] == "ConvOut"
    import torch

    from snapbench.model.loading import build_unet

    unet = build_unet(resolve_model("sd15-tiny"), device="meta").base
    assert sum(b["params"] for b in rows) == sum(p.numel() for p in unet.parameters())
    # whole-UNet MACs counted in one go (on meta, where attention decomposes into countable bmm) equal the sum
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        args = (torch.randn(2, 4, 16, 16), torch.tensor([1.0, 1.0]), torch.randn(2, 5, 16))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        unet(*args)
    assert sum(b["macs"] for b in rows) == fc.get_total_flops() // 2


def test_stage_ids_and_signatures():
    r = inspect_model(resolve_model("snapfusion-tiny"), shapes=InputShapes(latent=16, batch=2, tokens=5))
    rows = {b["id"]: b for b in r.block_rows()}
    ca = rows["CA[Up-1, 2]"]
    assert ca["stage"] == "Up-1" and ca["file_id"] == "up1_ca2" and ca["module"] == "up_blocks.1.attentions.1"
    assert ca["signature"].startswith("CA|hidden=2x32x4x4,context=2x5x16")
    # equal structure, equal signature: the copy shares its original's key
    assert rows["CA[Up-1, 2] (copy 1)"]["signature"] == ca["signature"]
    assert rows["CA[Down-1, 1]"]["status"] == "removed" and rows["CA[Down-1, 1]"]["signature"] is None
    assert rows["RB[Up-1, 3]"]["signature"].startswith("RB-shortcut|")
    stages = r.stage_frame()
    assert list(stages["stage"]) == list(STAGES)
    assert stages.set_index("stage").loc["Up-1", "CA_count"] == 6


def test_inspect_json_cli(capsys):
    assert main(["inspect", "--model", "snapfusion-tiny", "--latent", "16", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "snapfusion-tiny"
    assert {s["stage"] for s in data["stages"]} == set(STAGES)
    assert data["totals"]["CA"] == 14 and data["totals"]["RB"] == 17


def test_inspect_table_cli(capsys):
    assert main(["inspect", "--model", "snapfusion", "--no-blocks"]) == 0
    text = capsys.readouterr().out
    for stage in STAGES:
        assert stage in text
    assert "788,005,764" in text and "848,000,000" in text


def _one_error_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "Traceback" not in err[0]
    return err[0]


def test_bad_inputs_one_line(capsys, tmp_path, tiny_checkpoint):
    line = _one_error_line(capsys, ["inspect", "--model", "sd16"])
    assert "unknown model preset 'sd16'" in line and "sd15" in line

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "base_config": {"down_block_types": []}}))
    line = _one_error_line(capsys, ["inspect", "--model", str(bad)])
    assert str(bad) in line and "base_config" in line

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "missing config.json" in _one_error_line(capsys, ["inspect", "--model", str(empty)])

    folder, _ = tiny_checkpoint
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / "weights.bak")
    assert "missing diffusion_pytorch_model.safetensors" in _one_error_line(capsys, ["inspect", "--model", str(folder)])


def test_spec_that_does_not_fit_checkpoint_names_block(capsys, tmp_path, tiny_checkpoint):
    folder, _ = tiny_checkpoint
    from snapbench.specs.arch_spec import save_spec
    from snapbench.specs.presets import load_preset

    spec = load_preset("snapfusion-tiny")
    cfg = dict(spec.base_config, cross_attention_dim=32)
    from snapbench.specs.arch_spec import ArchSpec

    path = save_spec(ArchSpec("wide", cfg, spec.stages), tmp_path / "wide.json")
    line = _one_error_line(capsys, ["inspect", "--model", str(path), "--weights", str(folder)])
    assert "CA[Down-1, 1]" in line and "attn2.to_k.weight" in line


def test_pickle_only_checkpoint_refused(capsys, tiny_checkpoint):
    folder, _ = tiny_checkpoint
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / "diffusion_pytorch_model.bin")
    assert "never unpickles" in _one_error_line(capsys, ["inspect", "--model", str(folder)])


def test_one_counted_forward_gives_each_block_the_macs_it_has_run_alone():
    """Blocks are cut from one forward that also counts (blocks/cut.py: CountingRecord): each block's MACs
    and attention MACs are what the block counts run again alone on its recorded inputs. SnapFusion's twin
    has removed blocks, copies and shortcut-only blocks; sdxl-tiny computes its text_time inputs between two
    blocks; a DiT's blocks run as a chain."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from snapbench.backbones import backbone_for
    from snapbench.dit.cut import cut_units, run_chain
    from snapbench.dit.cut import example_inputs as dit_inputs
    from snapbench.dit.source import dit_spec

    shapes = InputShapes(latent=8, batch=2, tokens=5)
    for ref in ("snapfusion-tiny", "sdxl-tiny", "sd35-tiny"):
        source = resolve_model(ref)
        backbone = backbone_for(source)
        model = backbone.build(source, device="meta")
        record: list = []
        with torch.no_grad():
            if backbone.name == "dit":
                spec = dit_spec(source.spec)
                run_chain(model.units, dit_inputs(spec, shapes, device="meta"), record)
                blocks = cut_units(model.units, spec, shapes, model.config)
            else:
                model(*backbone.example_inputs(model, shapes), record=record)
                blocks = backbone.cut(model, shapes)
        assert [b.block_id for b in blocks] == [unit.block_id for unit, _, _ in record]
        counted = 0
        for block, (unit, args, _) in zip(blocks, record):
            if block.signature is None:
                assert block.macs == 0
                continue
            with torch.no_grad(), FlopCounterMode(display=False) as alone:
                unit(*args)
            flops = alone.get_flop_counts().get("Global", {})
            attention = sum(v for op, v in flops.items() if "bmm" in str(op) or "_scaled_dot_product" in str(op))
            assert (block.macs, block.attention_macs) == (sum(flops.values()) // 2, attention // 2), (ref, block.block_id)
            counted += block.attention_macs > 0
        assert counted > 0, ref  # attention was there to count
