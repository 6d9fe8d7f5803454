"""Any-network models: names, shapes, building with random weights, one whole program, cached records."""

from __future__ import annotations

import warnings

import pytest

from snapbench.errors import SnapbenchError
from snapbench.zoo.specs import is_network_spec, parse_model_spec, parse_shape

warnings.filterwarnings("ignore")


def test_specs_parse():
    s = parse_model_spec("timm:mobileone_s0")
    assert (s.kind, s.name, s.tower, s.options) == ("timm", "mobileone_s0", "", {})
    s = parse_model_spec('torchvision:mobilenet_v2:{"width_mult":1.3}')
    assert (s.name, s.options) == ("mobilenet_v2", {"width_mult": 1.3})
    assert parse_model_spec(s.text) == s
    s = parse_model_spec("open_clip:MobileCLIP-S1:text")
    assert (s.name, s.tower) == ("MobileCLIP-S1", "text")
    assert is_network_spec("timm:x") and is_network_spec("a/b.mlpackage") and not is_network_spec("sd15")


@pytest.mark.parametrize("text,needle", [
    ("resnet50", "KIND:NAME"),
    ("open_clip:MobileCLIP-S1", "open_clip:NAME:text"),
    ("timm:x:{bad", "not JSON"),
    ("timm:x:[1]", "JSON object"),
    ("missing/Thing.mlpackage", "not found"),
])
def test_bad_specs_say_what_is_wrong(text, needle):
    with pytest.raises(SnapbenchError) as e:
        parse_model_spec(text)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text,needle", [("1x3xax4", "not a shape"), ("1x0x2", "positive"),
                                          ("100000x100000", "limit"), ("", "empty")])
def test_bad_shapes(text, needle):
    with pytest.raises(SnapbenchError, match=needle):
        parse_shape(text)


def test_unknown_timm_name_suggests_the_closest():
    from snapbench.zoo.builders import build_network

    with pytest.raises(SnapbenchError, match="did you mean timm:mobileone_s0"):
        build_network(parse_model_spec("timm:mobilone_s0"))


def test_torchvision_needs_an_input_shape():
    from snapbench.zoo.builders import build_network

    with pytest.raises(SnapbenchError, match="needs --input"):
        build_network(parse_model_spec("torchvision:resnet18"))


def test_timm_default_input_and_reparameterized_graph():
    from snapbench.zoo.builders import build_network

    net = build_network(parse_model_spec("timm:mobileone_s0"))
    assert net.io.inputs[0][1] == (1, 3, 224, 224)
    # reparameterized: no training-time branches left (MobileOne blocks keep only their fused conv)
    assert not any("rbr_skip" in n or "conv_kxk" in n for n, _ in net.module.named_modules())


def test_network_records_are_one_program_and_cached(tmp_path, monkeypatch):
    from snapbench.zoo import programs

    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path))
    recs = programs.network_records("synthetic:dense-u16-l2", "1x10x32")
    assert [r.type for r in recs if r.type in ("linear", "matmul")] and sum(r.flops for r in recs) > 0
    assert sum(r.flops for r in recs if r.type in ("linear", "matmul")) == 2 * 10 * (32 * 16 + 16 * 16)

    def no_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(programs, "_convert", no_conversion)
    assert programs.network_records("synthetic:dense-u16-l2", "1x10x32") == recs
    assert programs.cached_records("synthetic:dense-u16-l2", "1x10x64") is None  # another shape: another key


def test_a_package_that_does_not_load(tmp_path):
    from snapbench.zoo.programs import network_records

    bad = tmp_path / "Broken.mlpackage"
    bad.mkdir()
    with pytest.raises(SnapbenchError, match="Broken.mlpackage"):
        network_records(str(bad))


def test_profile_prices_a_network_as_one_program(tmp_path, monkeypatch, capsys):
    import json

    from snapbench.cli import main

    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path))
    assert main(["profile", "--model", "synthetic:dense-u16-l2", "--input", "1x10x32", "--device", "iphone14",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backend"] == "estimate" and doc["model_ms"] > 0 and doc["chip"] == "A15"
    assert doc["estimate"]["n_ops"] >= 4
    assert "app_floor_ms" not in doc and "end_to_end_ms" not in doc  # no floor given: engine time only
    assert main(["profile", "--model", "sd15", "--input", "1x3x8x8", "--device", "iphone14"]) == 2
    assert "--input is for" in capsys.readouterr().err
    assert main(["profile", "--model", "synthetic:dense-u16-l2", "--input", "1x10x32", "--device", "iphone99"]) == 2
    assert "unknown device" in capsys.readouterr().err


def test_profile_document_has_model_ms():
    from snapbench.devices import resolve_device
    from snapbench.latency.document import model_ms
    from snapbench.latency.model_latency import ComponentLatency, ProfileRun
    from snapbench.latency.table import LatencyTable, Settings

    def run(components):
        return ProfileRun(device=resolve_device("iphone14"), model="sd15", settings=Settings(), backend="estimate",
                          blocks=[], components={c: ComponentLatency(c, ms, "estimate", "run")
                                                 for c, ms in components.items()},
                          new_rows=[], table=LatencyTable.load_or_empty("/nonexistent/x.csv"))

    assert model_ms(run({"text_encoder": 4.0, "unet": 900.0, "vae_decoder": 300.0})) == 900.0
    assert model_ms(run({"vae_decoder": 300.0})) == 300.0


def test_convert_a_network_then_price_its_package(tmp_path, monkeypatch, capsys):
    import json

    from snapbench.cli import main
    from snapbench.profilers.estimate import read_op_records

    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    # 64 x 64 weights: above coremltools' 2048-element threshold for compressing a tensor
    assert main(["convert", "--model", "synthetic:dense-u64-l2", "--input", "1x10x64", "--out", str(tmp_path / "o"),
                 "--weight-bits", "8", "--json"]) == 0
    pkg = json.loads(capsys.readouterr().out)["package"]
    bits = [r.weight_bits for r in read_op_records(pkg) if r.weight_elems]
    assert len(bits) == 2 and all(8 <= b < 9 for b in bits)  # int8 weights stored (+ per-channel scales)
    assert main(["profile", "--model", pkg, "--device", "iphone15pro", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == pkg and doc["model_ms"] > 0


@pytest.mark.parametrize("args,needle", [
    (["profile", "--device", "iphone14", "--attention", "split_einsum_v2"], "--attention split_einsum_v2 does not apply"),
    (["profile", "--device", "iphone14", "--compute-units", "all"], "--compute-units all does not apply"),
    (["convert", "--out", "o", "--attention", "split_einsum"], "--attention split_einsum does not apply"),
])
def test_unet_only_settings_are_refused_for_a_network_not_ignored(tmp_path, monkeypatch, capsys, args, needle):
    from snapbench.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(args + ["--model", "hf:BertConfig", "--input", "1x8"]) == 2
    e = capsys.readouterr().err
    assert needle in e and "Traceback" not in e and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_an_op_coremltools_lacks_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    # DINOv2 (and Depth Anything on it) interpolates its position embeddings bicubically; coremltools has no
    # conversion for that op: refused naming the op, exit 2, no traceback
    from snapbench.cli import main

    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path))
    tiny = '{"hidden_size":32,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":64,"image_size":28,"patch_size":14}'
    assert main(["profile", "--model", f"hf:Dinov2Config:{tiny}", "--input", "1x3x42x42", "--device", "iphone14"]) == 2
    e = capsys.readouterr().err
    assert "cannot convert the PyTorch op 'upsample_bicubic2d'" in e and "bilinear" in e and "Traceback" not in e


def test_hf_task_heads_and_bad_options(tmp_path, monkeypatch, capsys):
    from snapbench.cli import main
    from snapbench.zoo.builders import build_network

    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path))
    # Depth Anything has no bare AutoModel: its depth-estimation head is built instead
    tiny = ('{"backbone_config":{"model_type":"dinov2","hidden_size":32,"num_hidden_layers":4,'
            '"num_attention_heads":2,"intermediate_size":64,"image_size":28,"patch_size":14,'
            '"out_features":["stage1","stage2","stage3","stage4"]},"fusion_hidden_size":16,'
            '"neck_hidden_sizes":[8,16,32,32],"head_hidden_size":8}')
    net = build_network(parse_model_spec(f"hf:DepthAnythingConfig:{tiny}"), (1, 3, 28, 28))
    assert "DepthEstimation" in type(net.module.owner).__name__
    assert main(["profile", "--model", 'hf:BertConfig:{"no_such_option":[1', "--input", "1x8", "--device",
                 "iphone14"]) == 2
    assert "not JSON" in capsys.readouterr().err
