"""The Neural Engine cost model: op extraction from real tiny conversions, monotonicity, placement rules,
parameter-file validation, calibration (report shape; the fit beats the priors it starts from)."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import pytest

from snapbench.calibration.fit import (
    CalibrationPoint,
    calibration_report,
    fit_params,
    load_points,
)
from snapbench.devices import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.profilers.estimate import estimate_ops, estimate_package, load_params, prepare, read_op_records
from snapbench.profilers.estimate.params import default_priors_path, params_from_dict
from snapbench.profilers.estimate.program_ops import OpRecord

warnings.filterwarnings("ignore")
PHONE = resolve_device("iphone14pro")  # resolved once, as the CLI does; the estimator takes a Device


# --------------------------------------------------------------------------------------------------------
# real tiny conversions
# --------------------------------------------------------------------------------------------------------


def _convert(module, *shapes):
    import coremltools as ct
    import torch

    example = tuple(torch.randn(*s) for s in shapes)
    traced = torch.jit.trace(module.eval(), example, check_trace=False)
    return ct.convert(traced, inputs=[ct.TensorType(shape=s) for s in shapes], convert_to="mlprogram",
                      compute_precision=ct.precision.FLOAT16, minimum_deployment_target=ct.target.iOS16,
                      skip_model_load=True)


@pytest.fixture(scope="module")
def conv_model():
    import torch

    return _convert(torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.SiLU()), (1, 64, 16, 16))


@pytest.fixture(scope="module")
def attention_model():
    import torch

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (torch.nn.Linear(32, 32) for _ in range(3))

        def forward(self, x):  # x: (B, S, C)
            scores = self.q(x) @ self.k(x).transpose(1, 2) * 32 ** -0.5  # (B, S, S)
            return torch.softmax(scores, dim=-1) @ self.v(x)             # (B, S, C)

    return _convert(Attn(), (1, 64, 32))


def test_conv_record(conv_model):
    recs = read_op_records(conv_model)
    conv = next(r for r in recs if r.type == "conv")
    assert conv.out_shapes == ((1, 64, 16, 16),)
    assert conv.flops == 2 * 64 * 16 * 16 * 64 * 9  # MACs x 2
    assert conv.weight_bytes == (64 * 64 * 9 + 64) * 2  # fp16 weight + bias
    assert conv.weight_bits == 16
    assert any(r.type == "silu" for r in recs)


def test_attention_records(attention_model):
    recs = read_op_records(attention_model)
    types = [r.type for r in recs]
    assert types.count("linear") == 3 and types.count("matmul") == 2 and "softmax" in types
    qk = next(r for r in recs if r.type == "matmul")
    assert qk.out_shapes[0][-2:] == (64, 64)
    assert qk.flops == 2 * 64 * 64 * 32
    est = estimate_ops(recs, PHONE)
    assert est.source == "estimate" and est.total_ms > 0 and "matmul" in est.by_op_type


def test_palettized_weights_are_smaller(conv_model):
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=6, mode="uniform", weight_threshold=512))
    pal = cto.palettize_weights(conv_model, config)
    fp16 = next(r for r in read_op_records(conv_model) if r.type == "conv")
    six = next(r for r in read_op_records(pal) if r.type == "conv")
    assert six.weight_bytes < 0.5 * fp16.weight_bytes
    assert 5.5 < six.weight_bits < 8  # 6-bit indices + LUT + fp16 bias
    assert estimate_ops([six], PHONE).total_ms <= estimate_ops([fp16], PHONE).total_ms


def test_package_records_are_cached(conv_model, tmp_path, monkeypatch):
    path = tmp_path / "block.mlpackage"
    conv_model.save(str(path))
    first = estimate_package(path, PHONE)
    cache = path.with_name(path.name + ".ops.json")
    assert cache.is_file()
    import snapbench.profilers.estimate.program_ops as po

    monkeypatch.setattr(po, "records_from_spec", lambda spec: pytest.fail("re-parsed a cached package"))
    assert estimate_package(path, PHONE).total_ms == pytest.approx(first.total_ms)


# --------------------------------------------------------------------------------------------------------
# synthetic records: monotonicity and placement rules
# --------------------------------------------------------------------------------------------------------


def _conv(c=320, hw=64, k=3, batch=2, weight_bits=16.0, dilation=1):
    out = (batch, c, hw, hw)
    elems = c * c * k * k
    return OpRecord(type="conv", name="c", in_shapes=(out,), in_dtypes=("fp16",), out_shapes=(out,),
                    out_dtypes=("fp16",), flops=2.0 * batch * c * hw * hw * c * k * k,
                    weight_bytes=elems * weight_bits / 8, weight_elems=elems, weight_bits=weight_bits,
                    attrs={"dilations": [dilation, dilation]}, in_names=("x",), out_names=("y",))


def _ms(records, device="iphone14pro", params=None):
    return estimate_ops(records, resolve_device(device), params=params).total_ms


@pytest.mark.parametrize("rec", [_conv(), _conv(c=64, hw=8, k=1), _conv(c=1280, hw=8)])
def test_more_flops_or_bytes_never_cost_less(rec):
    base = _ms([rec])
    assert _ms([replace(rec, flops=rec.flops * 2)]) >= base
    assert _ms([replace(rec, weight_bytes=rec.weight_bytes * 2)]) >= base
    # twice the batch: twice the FLOPs too (a consistent record)
    bigger = replace(rec, in_shapes=((4, *rec.in_shapes[0][1:]),), out_shapes=((4, *rec.out_shapes[0][1:]),),
                     flops=rec.flops * 2)
    assert _ms([bigger]) >= base


def test_faster_device_never_costs_more():
    recs = [_conv(), _conv(c=1280, hw=8), _conv(c=64, hw=8, k=1)]
    slow = resolve_device("iphone12promax")
    fast = replace(slow, ane_fp16_tflops=slow.ane_fp16_tflops * 2, mem_bandwidth_gbps_est=slow.mem_bandwidth_gbps_est * 2)
    for r in recs:
        assert _ms([r], fast) <= _ms([r], slow)
    assert _ms(recs, "iphone14pro") <= _ms(recs, "iphone12promax")  # A16 beats A14 on both axes


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_quantised_weights_never_cost_more(bits):
    for rec in (_conv(), _conv(c=1280, hw=8)):
        assert _ms([_conv(c=rec.out_shapes[0][1], hw=rec.out_shapes[0][2], weight_bits=bits)]) <= _ms([rec])


def test_cpu_fallback_rules():
    gather = OpRecord(type="gather", name="g", in_shapes=((1, 77),), in_dtypes=("int32",),
                      out_shapes=((1, 77, 768),), out_dtypes=("fp16",), flops=77 * 768, weight_bytes=76e6,
                      weight_elems=38_000_000)
    est = estimate_ops([gather, _conv(dilation=2), _conv()], PHONE)
    reasons = {c.type: c.reason for c in est.cpu_ops}
    assert "gather" in reasons["gather"]
    assert any("dilated" in c.reason for c in est.cpu_ops)
    assert est.cpu_ms > 0 and est.n_engine_segments == 1
    # a gather reads the rows it returns, not its whole 76 MB table
    assert est.cpu_ops[0].ms < 5


def test_huge_intermediate_goes_to_cpu_and_costs_more():
    def softmax(n):
        return OpRecord(type="softmax", name="s", in_shapes=((16, n, n),), in_dtypes=("fp16",),
                        out_shapes=((16, n, n),), out_dtypes=("fp16",), flops=5.0 * 16 * n * n, weight_bytes=0)

    params = load_params()
    small, big = estimate_ops([softmax(1024)], PHONE), estimate_ops([softmax(4096)], PHONE)
    assert not small.cpu_ops and (params.max_tensor_mb * 2**20 < 16 * 4096 * 4096 * 2) == bool(big.cpu_ops)
    assert big.total_ms > 16 * small.total_ms * 0.9


def test_tiny_last_axis_pays_row_padding():
    def add(shape):
        return OpRecord(type="add", name="a", in_shapes=(shape, shape), in_dtypes=("fp16", "fp16"),
                        out_shapes=(shape,), out_dtypes=("fp16",), flops=float(shape[0] * shape[1]), weight_bytes=0)

    # same element count; an 8-wide fp16 row (16 B) is padded to 64 B
    assert _ms([add((2**20, 8))]) > 2 * _ms([add((2**17, 64))])


def test_prepared_ops_give_the_same_answer():
    recs = [_conv(), _conv(c=64, hw=8, k=1)]
    assert estimate_ops(prepare(recs), resolve_device("iphone14")).total_ms == pytest.approx(_ms(recs, "iphone14"))


# --------------------------------------------------------------------------------------------------------
# parameter file
# --------------------------------------------------------------------------------------------------------


def test_shipped_params_are_valid():
    for p in (load_params(), load_params(default_priors_path())):
        assert p.version >= 1


@pytest.mark.parametrize("path,value,needle", [
    (("efficiency", "conv"), "fast", "efficiency.conv"),
    (("bandwidth_efficiency",), 3.0, "bandwidth_efficiency"),
    (("version",), "one", "version"),
])
def test_broken_param_file_names_the_field(tmp_path, path, value, needle):
    doc = json.loads(default_priors_path().read_text())
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    f = tmp_path / "ane_params.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(SnapbenchError) as e:
        load_params(f)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_param_field():
    doc = json.loads(default_priors_path().read_text())
    del doc["dispatch_ms"]
    with pytest.raises(SnapbenchError, match="dispatch_ms"):
        params_from_dict(doc, "x.json")


# --------------------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------------------


def _synthetic_points(truth):
    programs = {
        "big-conv": [_conv(c=640, hw=32)] * 4,
        "small-convs": [_conv(c=64, hw=8, k=1)] * 40,
        "weights": [_conv(c=1280, hw=4)] * 6,
        "mixed": [_conv(), _conv(c=1280, hw=8)],
    }
    pts = []
    for name, recs in programs.items():
        for dev in ("iphone14pro", "iphone12promax"):
            prep = prepare(recs)
            measured = estimate_ops(prep, resolve_device(dev), params=truth).total_ms
            pts.append(CalibrationPoint(f"synthetic {name} {dev}", "synthetic", dev, "package", name, "-",
                                        measured, ((prep, 1),)))
    return pts


def test_fit_recovers_better_than_priors():
    prior = load_params(default_priors_path())
    truth = prior.with_values({"efficiency.conv": prior.efficiency["conv"] * 1.5,
                               "bandwidth_efficiency": prior.bandwidth_efficiency * 0.7,
                               "dispatch_ms": prior.dispatch_ms * 2})
    pts = _synthetic_points(truth)
    before = calibration_report(prior, pts)
    fitted = fit_params(pts, prior)
    after = calibration_report(fitted, pts)
    assert list(after.columns[:8]) == ["reference", "device", "component", "model", "settings", "published_ms",
                                       "estimated_ms", "error_pct"]
    assert len(after) == len(pts) and (after["backend"] == "estimate").all()
    assert after["error_pct"].abs().mean() < before["error_pct"].abs().mean()
    assert fitted.fitted_on and fitted.version == prior.version + 1


def test_a_fit_leaves_each_chip_at_the_catalogs_peak():
    # v6: no throughput factor per chip generation. Points on two chips whose truth is one chip 1.5x faster
    # than the catalog says must move the shared knobs, never a per-chip one, and a v5 file's chip factors
    # still price as written.
    from snapbench.calibration.fit import fit_knobs

    prior = load_params(default_priors_path())
    truth = replace(prior, chip_factor={"A16": 1.5})
    pts = _synthetic_points(truth)
    assert not [k for k in fit_knobs(pts) if k.startswith("chip.")]
    assert fit_params(pts, prior, maxiter=20).chip_factor == {}
    prep = prepare([_conv(c=640, hw=32)])
    assert estimate_ops(prep, PHONE, params=truth).total_ms < estimate_ops(prep, PHONE,
                                                                                    params=prior).total_ms


def test_shipped_reference_points_load_offline(tmp_path, monkeypatch):
    # a fresh clone: no cache, no conversion; the shipped op records are enough. (How well the fit predicts
    # what it never saw is tested in test_validation.py, on held-out corpus sources.)
    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "empty-cache"))
    pts = load_points(convert=False)
    assert [pt.component for pt in pts] == ["text_encoder", "unet", "vae_decoder", "unet"]
    # the UNet points are priced per block package, as profile sums them (47 blocks of SD-1.5 / SD-2.1)
    assert all(sum(n for _, n in pt.programs) == (47 if pt.component == "unet" else 1) for pt in pts)
    assert not (tmp_path / "empty-cache").exists()


def _op(type_, name, ins, outs, shape, flops=0.0, **attrs):
    return OpRecord(type=type_, name=name, in_shapes=tuple(shape for _ in ins), in_dtypes=("fp16",) * len(ins),
                    out_shapes=(shape,), out_dtypes=("fp16",), flops=flops, weight_bytes=0.0, attrs=attrs,
                    in_names=tuple(ins), out_names=tuple(outs))


def test_equivalent_attention_programs_price_alike():
    # einsum -> softmax (snapbench's export) and einsum -> mul -> softmax (Apple's reference converter):
    # the same score map, spilled once either way; the extra mul, an epilogue of the einsum, costs at most its
    # own (vector) work.
    s = (1, 8, 512, 4096)  # one query chunk's score map: 32 MB, far above the on-chip working set
    qk = _op("einsum", "qk", ["q"], ["s"], s, flops=2.0 * 8 * 512 * 4096 * 40)
    plain = [qk, _op("softmax", "sm", ["s"], ["p"], s)]
    scaled = [qk, _op("mul", "m", ["s"], ["s2"], s, flops=float(8 * 512 * 4096)),
              _op("softmax", "sm", ["s2"], ["p"], s)]
    dev = resolve_device("iphone14pro")
    a, b = estimate_ops(plain, dev), estimate_ops(scaled, dev)
    assert a.cpu_ms == b.cpu_ms == 0
    assert a.dram_bytes == pytest.approx(b.dram_bytes, rel=1e-9) and a.dram_bytes > 3 * 32 * 2**20
    assert 0 <= b.total_ms - a.total_ms < 0.05 * a.total_ms


def test_one_stacked_pass_prices_like_each_program():
    import numpy as np

    from snapbench.profilers.estimate.cost_model import evaluate, stack_terms, terms, total_ms

    p = load_params()
    progs = [(prepare([_conv()]), resolve_device("iphone12")), (prepare([_conv(c=64, hw=8, k=1)]),
             resolve_device("iphone15pro")), (prepare([_conv(c=1280, hw=8)]), resolve_device("mac-m1ultra"))]
    stacked, pair = stack_terms([terms(prep, dev, p) for prep, dev in progs])
    t = evaluate(stacked, p)
    each = np.bincount(pair, t.op_ms) + t.overhead_ms
    assert each == pytest.approx([total_ms(prep, dev, p) for prep, dev in progs], rel=1e-12)


@pytest.mark.parametrize("header,needle", [
    ("device,component,model,latency", "'latency' has no unit"),
    ("device,model,latency_ms", "missing columns component"),
    ("component,model,latency_ms", "missing columns device"),
])
def test_bad_measured_files(tmp_path, header, needle):
    f = tmp_path / "m.csv"
    f.write_text(header + "\n" + ",".join(["x"] * len(header.split(","))) + "\n")
    with pytest.raises(SnapbenchError) as e:
        load_points(f, include_reference=False)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_measured_unknown_device(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("device,component,model,latency_ms\niphone99,unet,sd15,300\n")
    with pytest.raises(SnapbenchError, match="unknown device"):
        load_points(f, include_reference=False)


def test_op_record_cache_from_another_record_format_is_not_reused(tmp_path):
    """A package's .ops.json written by an older record format must be rebuilt, not trusted."""
    import json as _json

    from snapbench.profilers.estimate.program_ops import RECORDS_VERSION, load_records, save_records

    path = tmp_path / "x.mlpackage.ops.json"
    save_records(path, [], key="k", source="test")
    assert load_records(path, key="k") == []
    doc = _json.loads(path.read_text())
    doc["records_version"] = RECORDS_VERSION + 1
    path.write_text(_json.dumps(doc))
    assert load_records(path, key="k") is None
    path.write_text("{damaged")
    assert load_records(path, key="k") is None


def test_memory_serial_spans_overlap_to_sum():
    # one op whose compute and DRAM times are both substantial: v4 priced their max (full overlap)
    rec = _conv(c=1280, hw=8)
    p = load_params()
    est = [estimate_ops([rec], PHONE, params=replace(p, memory_serial=s)) for s in (0.0, 0.5, 1.0)]
    t = [e.total_ms for e in est]
    assert t[0] < t[1] < t[2]
    # linear in the share, and never more than the longer side again
    assert t[2] - t[0] == pytest.approx(2 * (t[1] - t[0]))
    assert t[2] - t[0] <= t[0]


def test_a_v4_file_reads_with_v4_behaviour():
    doc = json.loads(default_priors_path().read_text())
    del doc["memory_serial"]
    doc["version"] = 4
    assert params_from_dict(doc, "v4.json").memory_serial == 0.0
    doc["version"] = 5
    with pytest.raises(SnapbenchError, match="memory_serial"):
        params_from_dict(doc, "v5.json")


def test_measured_engine_bandwidth_not_the_socs_prices_a_max_chip():
    # a weight-streaming program (1 GB of fp16 weights, one token): the catalog's SoC bandwidth says an M1
    # Max reads it 5.9x faster than an M1; the engines' measured streaming rates (anemll-bench) say slower
    from snapbench.devices import resolve_device
    from snapbench.profilers.estimate import estimate_ops

    w = OpRecord(type="conv", name="head", in_shapes=((1, 4096, 1, 1),), in_dtypes=("fp16",),
                 out_shapes=((1, 128256, 1, 1),), out_dtypes=("fp16",), flops=2.0 * 4096 * 128256,
                 weight_bytes=2.0 * 4096 * 128256, attrs={})
    m1, m1max = resolve_device("mac-m1"), resolve_device("mac-m1max")
    assert m1max.mem_bandwidth_gbps_est > 5 * m1.mem_bandwidth_gbps_est
    assert m1max.ane_bandwidth_gbps < m1.ane_bandwidth_gbps
    t1, tmax = (estimate_ops([w], d).total_ms for d in (m1, m1max))
    assert tmax > t1
    # memory-bound: within a few percent of bytes over the measured rate (1050.67 MB / 54.62 GB/s = 19.2 ms)
    assert tmax == pytest.approx(2.0 * 4096 * 128256 / 54.62e9 * 1e3, rel=0.1)
    phone = resolve_device("iphone14pro")
    assert phone.ane_bandwidth_gbps is None  # unmeasured: the SoC's bandwidth x the fitted efficiency


@pytest.fixture(scope="module")
def group_norm_model():
    import torch

    # 128 x 96 x 96 fp16 = 2.25 MiB: above the 2 MB working set, so every pass over it is DRAM traffic
    return _convert(torch.nn.GroupNorm(8, 128), (1, 128, 96, 96))


def test_a_spelt_out_group_norm_moves_what_one_norm_moves(group_norm_model):
    # coremltools lowers torch's group_norm to reduce_mean -> sub -> square -> reduce_mean -> ... -> real_div;
    # the engine runs the chain as one norm: x read by the two reductions' passes, the result written once
    recs = read_op_records(group_norm_model)
    assert [r.type for r in recs if r.type in ("reduce_mean", "sub", "square", "real_div")] == \
        ["reduce_mean", "sub", "square", "reduce_mean", "real_div"]
    x_bytes = 128 * 96 * 96 * 2
    est = estimate_ops(recs, PHONE)
    assert est.dram_bytes == pytest.approx(3 * x_bytes)
    # v6 sent the centred tensor and its square through DRAM: two more writes, three more reads
    from snapbench.profilers.estimate import cost_model

    keep = cost_model._norm_internals
    try:
        cost_model._norm_internals = lambda records: set()
        spelt = estimate_ops(recs, PHONE)
    finally:
        cost_model._norm_internals = keep
    assert spelt.dram_bytes == pytest.approx(8 * x_bytes)
    assert spelt.total_ms > est.total_ms


def test_a_depthwise_convs_taps_are_free():
    # v8: the engine runs all taps of a depthwise output element at once, so a 7x7 depthwise conv (FastViT's)
    # costs what a 3x3 one does; its FLOPs are still reported as they are
    def dw(k):
        shape = (1, 256, 64, 64)
        return OpRecord(type="conv", name=f"dw{k}", in_shapes=(shape,), in_dtypes=("fp16",), out_shapes=(shape,),
                        out_dtypes=("fp16",), flops=2.0 * k * k * 256 * 64 * 64, weight_bytes=2.0 * k * k * 256,
                        attrs={"groups": 256})

    e3, e7 = (estimate_ops([dw(k)], PHONE) for k in (3, 7))
    assert e7.flops == pytest.approx(e3.flops * 49 / 9)
    assert e7.total_ms == pytest.approx(e3.total_ms, rel=0.01)
    # a dense conv's taps are not free
    dense = replace(dw(7), attrs={"groups": 1}, flops=2.0 * 49 * 256 * 256 * 64 * 64)
    assert estimate_ops([dense], PHONE).total_ms > 10 * e7.total_ms


def test_a_palette_per_channel_group_is_fetched_at_dram_latency():
    # v9: every palette must be on chip before the weights that index it expand: one dependent DRAM access
    # per table. A per-tensor palette (one table) costs nothing visible; coremltools' per-grouped-channel
    # palettes fetch one table per G output channels, which can outlast the weights' own bytes.
    from snapbench.profilers.estimate.stored_weights import palette_tables, with_stored_weights

    # a 1x1 conv with 4096 output channels at a 4x4 map: little work, 2M weights
    rec = OpRecord(type="conv", name="c", in_shapes=((1, 512, 4, 4),), in_dtypes=("fp16",),
                   out_shapes=((1, 4096, 4, 4),), out_dtypes=("fp16",), flops=2.0 * 512 * 4096 * 16,
                   weight_bytes=2.0 * 512 * 4096, weight_elems=512 * 4096, weight_bits=16.0)
    assert [palette_tables(rec, w) for w in ("fp16", "pal4", "pal4g16", "pal4g4", "pal4g1", "pal4g")] == \
        [0, 1, 256, 1024, 4096, 128]  # a bare g: coremltools' default group of 32 channels
    linear = replace(rec, type="linear", out_shapes=((1, 77, 4096),))
    assert palette_tables(linear, "pal4g8") == 512  # a linear layer's tables: per output feature group
    # a prior (DRAM latency), never fitted: the shipped fit carries it unchanged
    assert load_params(default_priors_path()).table_fetch_ns == load_params().table_fetch_ns == 100.0
    p = load_params()

    def priced(weights, ns=p.table_fetch_ns):
        (r,) = with_stored_weights([rec], weights)
        return estimate_ops([r], resolve_device("iphone15pro"), params=replace(p, table_fetch_ns=ns))

    # the tables' bytes are counted (a 16-entry fp16 table each), not only their fetches
    assert priced("pal4g1").dram_bytes - priced("pal4").dram_bytes == pytest.approx(4095 * 32)
    t = {w: priced(w).total_ms for w in ("pal4", "pal4g16", "pal4g4", "pal4g1")}
    assert t["pal4"] < t["pal4g4"] < t["pal4g1"]
    # latency-bound at one table per channel: each extra 100 ns per fetch costs 4096 x 100 ns
    assert priced("pal4g1", ns=200.0).total_ms - t["pal4g1"] == pytest.approx(4096 * 100e-9 * 1e3, rel=1e-6)
    # with the fetches free (v8), every grouping prices as the per-tensor palette, up to the tables' bytes
    dev = resolve_device("iphone15pro")
    tables_ms = 4095 * 32 / (dev.mem_bandwidth_gbps_est * 1e9 * p.bandwidth_efficiency) * 1e3
    assert 0 < priced("pal4g1", ns=0.0).total_ms - priced("pal4", ns=0.0).total_ms <= tables_ms * (1 + 1e-6)
    # a v8 parameter file reads with v8 behaviour (no fetch cost)
    doc = json.loads(default_priors_path().read_text())
    del doc["table_fetch_ns"]
    doc["version"] = 8
    assert params_from_dict(doc, "v8.json").table_fetch_ns == 0.0


def test_a_programs_inputs_and_outputs_cross_dram_and_are_copied_by_the_cpu():
    # v10: the app hands a prediction's inputs over and takes its outputs back: they live in DRAM whatever their
    # size (an intermediate under the working set stays on chip), and Core ML copies them between the app's
    # buffers and the engine's on the CPU, at the rate the CPU fallback's copies run
    shape = (1, 128, 10, 512)  # 1.31 MB: under the 2 MB working set
    conv = OpRecord(type="conv", name="c", in_shapes=(shape,), in_dtypes=("fp16",), out_shapes=(shape,),
                    out_dtypes=("fp16",), flops=2.0 * 128 * 128 * 9 * 5120, weight_bytes=2.0 * 128 * 128 * 9,
                    weight_elems=128 * 128 * 9, weight_bits=16.0, in_names=("x",), out_names=("y",))
    second = replace(conv, name="c2", in_names=("y",), out_names=("z",))
    p, dev = load_params(), resolve_device("iphone14")
    one, two = estimate_ops([conv], dev, params=p), estimate_ops([conv, second], dev, params=p)
    act = 128 * 10 * 512 * 2.0
    # y crosses DRAM as the output of the one-conv program; between two convs it stays on chip
    assert one.dram_bytes == pytest.approx(conv.weight_bytes + 2 * act)
    assert two.dram_bytes == pytest.approx(2 * conv.weight_bytes + 2 * act)
    # the CPU copies x in and the output out: the same bytes either way, so the same overhead
    copy_ms = 2 * act / (dev.mem_bandwidth_gbps_est * 1e9 * p.bandwidth_efficiency * p.copy_bandwidth_fraction) * 1e3
    assert one.overhead_ms == pytest.approx(p.dispatch_ms + copy_ms)
    assert two.overhead_ms == pytest.approx(one.overhead_ms)
    # a program that returns more pays more: the same conv returning 4x the channels
    wide = replace(conv, out_shapes=((1, 512, 10, 512),), flops=conv.flops * 4, weight_bytes=conv.weight_bytes * 4,
                   weight_elems=conv.weight_elems * 4)
    assert estimate_ops([wide], dev, params=p).overhead_ms - one.overhead_ms == pytest.approx(3 * act / (
        dev.mem_bandwidth_gbps_est * 1e9 * p.bandwidth_efficiency * p.copy_bandwidth_fraction) * 1e3)


def test_a_reduction_sweeps_its_inputs_padded_rows_not_its_results():
    # v11: the vector units work on 64-byte rows of the tensor they sweep; a reduction sweeps its input. The
    # (1, C, 1, 1) mean of a squeeze-excite block or a global pool has one-element rows, each padded to 64 bytes
    # (32x), and v4-v10 charged that padding on every input element read
    from snapbench.profilers.estimate.cost_model import price

    x = (1, 64, 56, 56)  # rows of 56 fp16 = 112 B, padded to 128 B
    keep = OpRecord(type="reduce_mean", name="m", in_shapes=(x,), in_dtypes=("fp16",), out_shapes=((1, 64, 1, 1),),
                    out_dtypes=("fp16",), flops=float(64 * 56 * 56), weight_bytes=0.0, in_names=("x",), out_names=("m",))
    flat = replace(keep, out_shapes=((1, 64),))  # the same mean without keep_dims: 128-byte result rows
    p, dev = load_params(), resolve_device("iphone14pro")
    rate = dev.ane_fp16_tflops * 1e12 * p.efficiency["reduce"]
    compute = [float(price(prepare([r], p.pad_bytes), dev, p).compute_ms[0]) for r in (keep, flat)]
    # the result's layout does not change what is swept: both price the input's padded rows
    assert compute[0] == pytest.approx(compute[1])
    assert compute[0] == pytest.approx(64 * 56 * 56 * (128 / 112) / rate * 1e3)
    # an elementwise op still works on its output's rows (the same shape as its input)
    relu = replace(keep, type="relu", out_shapes=(x,), name="r")
    relu_ms = float(price(prepare([relu], p.pad_bytes), dev, p).compute_ms[0])
    assert relu_ms == pytest.approx(64 * 56 * 56 * (128 / 112) / (dev.ane_fp16_tflops * 1e12 * p.efficiency["activation"]) * 1e3)
