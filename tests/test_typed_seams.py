"""The narrowing helpers that replaced `Any` at the seams (issue 19, step 6): what they accept, and that
anything else fails naming the field instead of passing on."""

from __future__ import annotations

import json

import pytest

from snapbench.converters.manifest import FORMAT, is_manifest_doc
from snapbench.converters.model_configs import config_int, config_ints
from snapbench.profilers.estimate.program_ops import OpRecord


def test_config_fields_are_read_as_numbers_or_fail_naming_the_field():
    cfg = {"hidden_size": 768, "ratio": 2.0, "act": "gelu", "flag": True, "sizes": [8, 16], "mixed": [8, "x"]}
    assert config_int(cfg, "hidden_size") == 768
    assert config_int(cfg, "ratio") == 2
    assert config_int(cfg, "absent", 32) == 32
    assert config_ints(cfg, "sizes") == [8, 16]
    with pytest.raises(KeyError):
        config_int(cfg, "absent")
    for key in ("act", "flag"):  # a bool is not a width
        with pytest.raises(TypeError, match=repr(key)):
            config_int(cfg, key)
    for key in ("hidden_size", "mixed"):
        with pytest.raises(TypeError, match=repr(key)):
            config_ints(cfg, key)


def test_an_op_record_survives_its_json_and_reads_its_parameters():
    r = OpRecord(type="conv", name="c0", in_shapes=((1, 4, 8, 8),), in_dtypes=("fp16",), out_shapes=((1, 4, 8, 8),),
                 out_dtypes=("fp16",), flops=1024.0, weight_bytes=72.0, weight_elems=36, weight_bits=16.0,
                 attrs={"groups": 4, "kernel_sizes": [3, 3], "palette_tables": 2, "view": False},
                 in_names=("x",), out_names=("y",))
    assert OpRecord.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert (r.int_attr("groups"), r.int_attr("absent")) == (4, 1)
    assert (r.ints_attr("kernel_sizes"), r.ints_attr("dilations")) == ([3, 3], [1])
    assert (r.float_attr("palette_tables"), r.float_attr("absent")) == (2.0, 0.0)


def test_a_manifest_is_recognised_by_its_format():
    assert is_manifest_doc({"format": FORMAT, "content": "blocks"})
    assert not is_manifest_doc({"format": "snapbench.manifest/0"})
    assert not is_manifest_doc([{"format": FORMAT}])
