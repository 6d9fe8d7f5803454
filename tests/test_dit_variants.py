"""Efficient attention variants of DiT blocks (blockwise-local window, pooled keys/values): what they compute,
what they cost, that they convert, and the spec errors."""

from __future__ import annotations

import json

import pytest
import torch

from snapbench.backbones.dit import DitBackbone
from snapbench.cli import main
from snapbench.dit.cut import cut_dit, example_inputs
from snapbench.dit.source import to_arch_spec
from snapbench.dit.spec import DitSpec, load_preset
from snapbench.model.loading import ModelSource
from snapbench.settings import InputShapes

SHAPES = InputShapes(latent=8, batch=2, tokens=5)  # 16 image tokens (4x4 grid at patch 2)


def _with(name: str, variant: dict | None) -> DitSpec:
    d = load_preset(name).to_dict()
    if variant is not None:
        d["attention_variant"] = variant
    return DitSpec.from_dict(d, source="test")


def _run(spec: DitSpec) -> torch.Tensor:
    model = DitBackbone().build(ModelSource(spec.name, to_arch_spec(spec)), seed=1)
    with torch.no_grad():
        return model(*example_inputs(spec, SHAPES).values())


@pytest.mark.parametrize("name", ["sd3-tiny", "sd35-tiny", "pixart-sigma-tiny"])
def test_variants_reduce_to_full_attention_at_full_size_and_cost_less_otherwise(name):
    ref = _run(_with(name, None))
    # a window over the whole grid, a pool of 1: the same maths as diffusers' attention
    for whole in ({"kind": "window", "window": 16}, {"kind": "pooled_kv", "pool": 1}):
        assert torch.allclose(_run(_with(name, whole)), ref, atol=1e-5)
    full = [b for b in cut_dit(_with(name, None), SHAPES) if b.kind == "TB"][0]
    for cheaper in ({"kind": "window", "window": 4}, {"kind": "pooled_kv", "pool": 2}):
        spec = _with(name, cheaper)
        assert not torch.allclose(_run(spec), ref, atol=1e-3)
        tb = [b for b in cut_dit(spec, SHAPES) if b.kind == "TB"][0]
        assert tb.attention_macs < full.attention_macs and tb.params == full.params
        assert f"attention_variant={spec.attention_variant.label()}" in tb.signature.key()


@pytest.mark.slow
def test_a_variant_converts_and_is_priced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "sd3-window.json"
    path.write_text(json.dumps(_with("sd3-tiny", {"kind": "window", "window": 4}).to_dict()))
    argv = ["profile", "--model", str(path), "--device", "iphone15pro", "--latent", "8", "--tokens", "5",
            "--table", str(tmp_path / "t.csv"), "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["packages"] == 6 and all(b["latency_ms"] > 0 for b in doc["blocks"])


def test_bad_variants_are_one_line(tmp_path, capsys):
    def refused(name: str, variant: dict, *extra: str) -> str:
        path = tmp_path / "v.json"
        d = load_preset(name).to_dict()
        d["attention_variant"] = variant
        path.write_text(json.dumps(d))
        assert main(["inspect", "--model", str(path), *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    assert "linear already" in refused("sana-tiny", {"kind": "window", "window": 4})
    assert "must be" in refused("sd3-tiny", {"kind": "sliding", "window": 4})
    assert "from 1 to" in refused("sd3-tiny", {"kind": "window", "window": 0})
    assert "does not divide the 16 image tokens" in refused("sd3-tiny", {"kind": "window", "window": 5})
    assert "does not divide the 4x4 token grid" in refused("sd3-tiny", {"kind": "pooled_kv", "pool": 3})
    path = tmp_path / "v.json"
    assert main(["convert", "--model", str(path), "--attention", "split_einsum", "--out", str(tmp_path / "o")]) == 2
    assert "attention_variant" in capsys.readouterr().err
