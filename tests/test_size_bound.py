"""The size bound on networks built from user input (snapbench/model/size_bound.py): refused before they are
allocated, whatever builds them; lifted on request. The CLI cases are in tests/hostile/."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
from torch import nn

from snapbench.errors import SnapbenchError
from snapbench.model.size_bound import (
    ModelTooLarge,
    SizeLimits,
    bounded_build,
    bounded_real_build,
    check_activations,
    count_size,
    size_limits_lifted,
)
from snapbench.specs.arch_spec import ArchSpec

SMALL = SizeLimits(params=10**7, modules=1_000, activation=10**6)


def _endless_layers():
    # a generator, like a config's layer count of 10**9: only the bound stops it
    return nn.Sequential(*(nn.Linear(1000, 1000) for _ in range(10**9)))


def test_a_billion_layers_stop_at_the_parameter_limit():
    with pytest.raises(ModelTooLarge, match="more than 10,000,000 parameters"):
        bounded_build(_endless_layers, "layers", limits=SMALL)


def test_a_billion_tiny_layers_stop_at_the_module_limit():
    with pytest.raises(ModelTooLarge, match="more than 1,000 modules"):
        bounded_build(lambda: nn.Sequential(*(nn.ReLU() for _ in range(10**9))), "relus", limits=SMALL)


def test_the_probe_is_on_meta_and_counts_exactly():
    net = bounded_build(lambda: nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), "mlp")
    assert next(net.parameters()).device.type == "meta"
    assert count_size(net).params == 4 * 8 + 8 + 8 * 2 + 2


def test_a_real_build_is_refused_before_its_huge_weight_exists():
    # 10**12 elements (4 TB): unguarded, torch would try to allocate it
    with pytest.raises(ModelTooLarge, match="one tensor of 1,000,000,000,000 elements"):
        bounded_real_build(lambda: nn.Linear(10**6, 10**6, bias=False), "linear")


def test_a_huge_activation_is_refused_on_meta_and_on_real_tensors():
    conv = nn.Conv2d(3, 64, 3, padding=1)
    with pytest.raises(ModelTooLarge, match="one activation would hold 6,553,600 elements"):
        check_activations(lambda: conv.to("meta")(torch.empty(1, 3, 320, 320, device="meta")), "conv", limits=SMALL)
    conv = nn.Conv2d(3, 64, 3, padding=1)
    x = torch.zeros(1, 3, 320, 320)
    with pytest.raises(ModelTooLarge, match="shape \\[1, 64, 320, 320\\]"):
        check_activations(lambda: conv(x), "conv", limits=SMALL)


def test_lifted_limits_build_anything():
    with size_limits_lifted():
        net = bounded_build(lambda: nn.Sequential(*(nn.Linear(1000, 1000) for _ in range(20))), "big", limits=SMALL)
    assert count_size(net).params > SMALL.params


def _sd15_config(**changes) -> dict:
    d = json.loads((resources.files("snapbench.specs") / "presets" / "sd15.json").read_text())
    d["base_config"].update(changes)
    d.pop("stages", None)
    return d


def test_real_models_pass():
    from snapbench.model.loading import ModelSource, build_unet

    spec = ArchSpec.from_dict(_sd15_config())
    model = build_unet(ModelSource("sd15", spec), device="meta")
    assert count_size(model).params == 859_520_964  # SD-v1.5's UNet


@pytest.mark.parametrize("changes, words", [
    ({"layers_per_block": 1_000_000}, "makes about 16,000,008 blocks"),
    ({"block_out_channels": [-8, 16, 32, 32]}, "block_out_channels is [-8, 16, 32, 32]"),
    ({"block_out_channels": ["x", 16, 32, 32]}, "give one positive whole number per down block"),
    ({"block_out_channels": [330, 640, 1280, 1280]}, "330, not divisible by norm_num_groups 32"),
    ({"sample_size": "64"}, "sample_size is '64'; must be a positive whole number"),
    ({"layers_per_block": 2.5}, "layers_per_block is 2.5"),
])
def test_bad_config_numbers_are_one_line_naming_the_field(changes, words):
    with pytest.raises(SnapbenchError) as e:
        ArchSpec.from_dict(_sd15_config(**changes), source="spec.json")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_channels_of_millions_are_refused_before_the_build():
    from snapbench.model.loading import ModelSource, build_unet

    spec = ArchSpec.from_dict(_sd15_config(block_out_channels=[32_000_000] * 4, norm_num_groups=32))
    with pytest.raises(ModelTooLarge, match="parameters"):
        build_unet(ModelSource("huge", spec), device="cpu")


def test_sample_size_of_a_million_is_refused_at_the_cut():
    from snapbench.blocks.cut import InputShapes, cut_blocks
    from snapbench.model.loading import ModelSource, build_unet

    spec = ArchSpec.from_dict(_sd15_config(sample_size=1_000_000))
    model = build_unet(ModelSource("wide", spec), device="meta")
    with pytest.raises(ModelTooLarge, match="one activation would hold"):
        cut_blocks(model, InputShapes(latent=1_000_000))


def test_a_dit_config_of_a_billion_layers_is_refused_before_building():
    from snapbench.dit.family import check_config
    from snapbench.dit.spec import load_preset

    config = dict(load_preset("sd3-tiny").config)
    check_config(config, "sd3-tiny")  # the preset itself passes
    config["num_layers"] = 10**9
    with pytest.raises(ModelTooLarge, match="num_layers 1,000,000,000"):
        check_config(config, "spec")
