"""The conversion shortcuts in runtime.conversion_context change how fast a package is made, never its bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from snapbench.converters.ane_attention import rewrite_transformer
from snapbench.converters.convert_package import convert_module
from snapbench.converters.options import ConvertOptions
from snapbench.converters.package_io import PackageIO


def _attention_block(attention: str) -> nn.Module:
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    torch.manual_seed(0)
    t = Transformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=16, norm_num_groups=4,
                           cross_attention_dim=12)
    return rewrite_transformer(t.eval(), attention, query_chunk_size=32)


def _package_bytes(folder: Path) -> dict[str, bytes]:
    return {f.relative_to(folder).as_posix(): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()
            and f.name != "Manifest.json"}  # Manifest.json names its items by random UUIDs


BLOCK_IO = PackageIO((("hidden", (1, 16, 8, 8)), ("context", (1, 5, 12))), (("out", (1, 16, 8, 8)),))


def _with_and_without(tmp_path, monkeypatch, switch: str, opts: ConvertOptions):
    """An attention block's package bytes converted as usual, then with the environment switch `switch` at 1."""
    module = _attention_block(opts.attention)
    monkeypatch.delenv(switch, raising=False)
    packages = []
    for how in ("usual", "switched"):
        if how == "switched":
            monkeypatch.setenv(switch, "1")
        dest = tmp_path / how / "Block.mlpackage"
        convert_module(module, BLOCK_IO, opts, dest, metadata={}, description="block")
        packages.append(_package_bytes(dest))
    return packages


def test_validating_once_per_pipeline_makes_the_same_package(tmp_path, monkeypatch):
    once, every_pass = _with_and_without(tmp_path, monkeypatch, "SNAPBENCH_VALIDATE_EVERY_PASS",
                                         ConvertOptions(mode="deploy", attention="split_einsum_v2"))
    assert once == every_pass
    assert any(name.endswith("weight.bin") for name in once)


def test_an_invalid_program_still_fails(monkeypatch):
    """The one validation left still runs: a pass that breaks the program is caught at the pipeline's end."""
    import pytest
    from coremltools.converters.mil.mil.passes import pass_pipeline
    from coremltools.converters.mil.mil.program import Program

    from snapbench.converters.runtime import conversion_context

    calls = []

    def broken(self, *args, **kwargs):
        calls.append(1)
        raise ValueError("invalid program")

    monkeypatch.setattr(Program, "validate", broken)
    with conversion_context(), pytest.raises(ValueError, match="invalid program"):
        pass_pipeline.PassPipelineManager.apply_pipeline(Program(), pass_pipeline.PassPipeline.EMPTY)
    assert calls == [1]


def test_not_weights_from_the_program_equals_coremltools_metadata():
    """The text encoder's causal mask and position table are found the fast way as coremltools' API finds them."""
    from snapbench.backbones import resolve_model
    from snapbench.converters.app_parts import ModelFolder, text_encoder_part
    from snapbench.converters.compression import _not_weights_from_spec, not_weights
    from snapbench.converters.convert_package import to_coreml, trace

    opts = ConvertOptions(mode="deploy", tokens=64, weight_bits=6)
    part = text_encoder_part(resolve_model("sd15-tiny"), opts, ModelFolder(None, None, None, None))
    module, _ = part.build()
    mlmodel = to_coreml(trace(module, part.inputs()), part.io, opts)
    fast = not_weights(mlmodel)
    assert fast and sorted(fast) == sorted(_not_weights_from_spec(mlmodel))


def test_a_failed_conversion_leaves_its_report_to_snapbench(caplog):
    """coremltools logs "ERROR - converting 'op' op (located at ...)" before re-raising; snapbench reports
    the failure in its own line, so that record is not emitted (its text goes onto the exception as a
    note). coremltools' other messages, and the same record outside a conversion, still are."""
    import logging

    import pytest

    from snapbench.converters.convert_package import to_coreml, trace
    from snapbench.converters.runtime import conversion_context

    class NoCoreML(nn.Module):
        def forward(self, x):
            return torch.special.i0e(x) + 1  # no coremltools torch op for this one

    io = PackageIO((("x", (1, 4)),), (("y", (1, 4)),))
    caplog.set_level(logging.INFO)
    with pytest.raises(NotImplementedError, match="special_i0e") as got:
        to_coreml(trace(NoCoreML(), (torch.randn(1, 4),)), io, ConvertOptions())
    assert not [r for r in caplog.records if "ERROR - converting" in r.getMessage()]
    assert got.value.__notes__ == ["coremltools: ERROR - converting 'special_i0e' op (located at: '2'):"]
    log = logging.getLogger("coremltools")
    with conversion_context():
        log.warning("a coremltools warning that matters")
    log.error("\n\nERROR - converting 'x' op (located at: 'y'):\n")  # not during a conversion: emitted
    shown = [r.getMessage() for r in caplog.records]
    assert "a coremltools warning that matters" in shown and any("converting 'x'" in m for m in shown)


def test_a_conversion_leaves_no_temporary_package_behind(tmp_path, monkeypatch):
    """coremltools deletes the temporary packages of ct.convert and of each compression only at interpreter
    exit (atexit), so a long run kept every block's weights in /tmp twice and a killed one left them there.
    convert_module makes them in the package's own `.partial` folder and removes it, also when it fails."""
    import tempfile

    import pytest

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    io = PackageIO((("x", (1, 4, 8, 8)),), (("y", (1, 4, 8, 8)),))
    out = tmp_path / "out"
    # 6-bit weights: a palettization step after ct.convert, each making a temporary package of its own
    convert_module(nn.Conv2d(4, 4, 3, padding=1), io, ConvertOptions(weight_bits=6), out / "Conv.mlpackage",
                   metadata={}, description="conv")

    class Broken(nn.Module):
        def forward(self, x):
            return torch.special.i0e(x)  # no coremltools torch op for this one

    with pytest.raises(NotImplementedError):
        convert_module(Broken(), io, ConvertOptions(), out / "Broken.mlpackage", metadata={}, description="x")
    assert sorted(p.name for p in system_tmp.iterdir() if p.name.endswith(".mlpackage")) == []
    assert sorted(p.name for p in out.iterdir()) == ["Conv.mlpackage"]
    assert tempfile.tempdir == str(system_tmp)  # given back


@pytest.mark.parametrize(("attention", "bits"), [("original", 16), ("split_einsum_v2", 16), ("original", 4)])
def test_the_mil_shortcuts_make_the_same_package(tmp_path, monkeypatch, attention, bits):
    """converters/mil_shortcuts.py: the same bytes with coremltools' own methods (SNAPBENCH_PLAIN_MIL=1).
    Original attention runs reduce_transposes (many `_replace_var` calls), 4 bits puts constexpr ops into
    the program (non-empty replaceability sets) while the palettization passes run."""
    shortcuts, plain = _with_and_without(tmp_path, monkeypatch, "SNAPBENCH_PLAIN_MIL",
                                         ConvertOptions(mode="deploy", attention=attention, weight_bits=bits))
    assert shortcuts == plain
    assert any(name.endswith("weight.bin") for name in plain)


def _program_with_constexpr():
    """A MIL program whose vars have every kind of replaceability set: a constexpr weight (itself), vars
    downstream of it (its set), a shape op's output (empty: metadata) and plain inputs (empty)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    quantized = np.arange(16, dtype=np.uint8).reshape(4, 4)

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 4), dtype=types.fp32)],
                opset_version=ct().target.iOS16)
    def prog(x):
        w = mb.constexpr_affine_dequantize(quantized_data=quantized, zero_point=np.uint8(1), scale=np.float32(0.5),
                                           axis=0)
        y = mb.matmul(x=x, y=w)
        z = mb.add(x=y, y=x)
        s = mb.shape(x=z)
        c = mb.concat(values=[z, y], axis=0)
        return mb.reshape(x=c, shape=mb.mul(x=s, y=np.array([2, 1], dtype=np.int32)))

    return prog


def ct():
    from snapbench.converters.runtime import coremltools

    return coremltools()


@pytest.fixture
def builder_names():
    """coremltools' builder numbers unnamed ops with a global counter that a conversion resets only when it
    ends: a program built here would shift the op names of the next conversion in this process (a byte-for-
    byte comparison in tests/test_pipeline.py saw `reshape_2` against `reshape_0`). Reset it after the test."""
    yield
    from coremltools.converters.mil.converter import _reset_conversion_state

    _reset_conversion_state()


def test_the_replaceability_sets_are_the_same_with_the_shortcuts(monkeypatch, builder_names):
    from coremltools.converters.mil.mil.block import Block

    from snapbench.converters.mil_shortcuts import PLAIN_ENV, shortcuts

    monkeypatch.delenv(PLAIN_ENV, raising=False)

    def sets(prog) -> list[set[int]]:
        """Each var's set, as positions in the program (names differ: coremltools numbers them globally)."""
        f = prog.functions["main"]
        f._propagate_nonreplaceable_vars()
        order = [o for op in f.operations for o in op.outputs]
        return [{order.index(v) for v in o.nonreplaceable_vars_upstream} for o in order]

    plain = sets(_program_with_constexpr())
    original = Block.__dict__["_propagate_nonreplaceable_vars"]
    with shortcuts():
        assert Block.__dict__["_propagate_nonreplaceable_vars"] is not original
        fast = sets(_program_with_constexpr())
    assert Block.__dict__["_propagate_nonreplaceable_vars"] is original  # restored
    assert fast == plain
    assert any(s for s in plain) and any(not s for s in plain)  # both kinds present


def test_the_copied_replace_var_is_the_installed_coremltools_one(monkeypatch):
    """`_replace_var` is a copy of coremltools 9.0's: installed only while the original is that source. A new
    coremltools fails here, telling to re-copy it (or drop the shortcut), instead of silently losing it."""
    from coremltools.converters.mil.mil.block import Block

    from snapbench.converters.mil_shortcuts import PLAIN_ENV, REPLACE_VAR_SOURCE, _source_digest, shortcuts

    monkeypatch.delenv(PLAIN_ENV, raising=False)

    assert _source_digest(Block._replace_var) == REPLACE_VAR_SOURCE
    with shortcuts():
        assert Block.__dict__["_replace_var"].__module__ == "snapbench.converters.mil_shortcuts"


def test_a_program_is_printed_only_for_coremltools_debug_logging():
    """coremltools' `logger.debug(f"...{prog}")` prints the whole program whatever the level: during a
    conversion it costs nothing unless the coremltools logger would show it, and `str()` is whole again after."""
    import logging

    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program

    from snapbench.converters.runtime import conversion_context

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))])
    def prog(x):
        return mb.relu(x=x, name="the_relu")

    def printed() -> tuple[str, str]:
        return str(prog), str(prog.functions["main"])

    whole = printed()
    assert all("the_relu" in s for s in whole)
    logger = logging.getLogger("coremltools")
    level = logger.level
    try:
        logger.setLevel(logging.INFO)
        with conversion_context():
            assert not any("the_relu" in s for s in printed())
            assert f"{prog}".startswith("<Program") and str(prog.functions["main"]).startswith("<Function")
            logger.setLevel(logging.DEBUG)
            assert printed() == whole
    finally:
        logger.setLevel(level)
    assert printed() == whole
    assert "__str__" in Program.__dict__ and "__str__" in Function.__dict__
