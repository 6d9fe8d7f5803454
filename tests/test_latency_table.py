"""LatencyTable: CSV round trip, merge with provenance, O(1) lookup, strict loading, estimate fallback."""

from __future__ import annotations

from dataclasses import replace

import pytest
from profile_fakes import FakePackages, toy_estimator

from snapbench.backbones import resolve_model
from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.latency.model_latency import block_latencies
from snapbench.latency.table import COLUMNS, LatencyRow, LatencyTable, Settings

S = Settings()


def row(backend="estimate", sig="RB|x", latency=10.0, created="2025-01-01T00:00:00+00:00", **kw) -> LatencyRow:
    base = dict(device="iphone14pro", chip="A16", backend=backend, compute_units="cpu_and_ne", precision="fp16",
                weight_bits=16, attention="original", stage="Down-1", block="RB[Down-1, 1]", signature=sig,
                latency_ms=latency, p90_ms=None if backend == "estimate" else latency + 1.5,
                samples=0 if backend == "estimate" else 20, macs=123, params=45, bytes_moved=678,
                versions="snapbench=0.1.0", created_at=created)
    base.update(kw)
    return LatencyRow(**base)


def test_round_trip_is_exact(tmp_path):
    t = LatencyTable.from_rows([row(), row("iphone", latency=12.5), row(sig="CA|y", stage="Up-3", p90_ms=None),
                                row(sig="component|vae_decoder", stage="-", block="vae_decoder", batch=1)])
    p = t.save(tmp_path / "t.csv")
    back = LatencyTable.load(p)
    assert back.rows() == t.rows()
    assert back.to_csv() == t.to_csv()
    assert list(back.to_frame().columns) == list(COLUMNS)
    assert len(back.to_frame()) == 4


def test_lookup_prefers_measured_and_keeps_provenance():
    est, imp, dev = row("estimate", latency=10), row("import", latency=11), row("iphone", latency=12)
    t = LatencyTable.from_rows([est])
    assert t.lookup("iphone14pro", S, "RB|x") == est
    t2 = t.merge(LatencyTable.from_rows([imp]))
    assert t2.lookup("iphone14pro", S, "RB|x") == imp
    t3 = t2.merge([dev])
    assert t3.lookup("iphone14pro", S, "RB|x") == dev
    # nothing is lost: every backend's row stays, and merge does not mutate its inputs
    assert {r.backend for r in t3.rows()} == {"estimate", "import", "iphone"}
    assert t3.lookup_backend("iphone14pro", S, "RB|x", "estimate") == est
    assert len(t) == 1 and len(t2) == 2
    # order of merging does not matter for which row wins
    assert LatencyTable.from_rows([dev]).merge([est, imp]).lookup("iphone14pro", S, "RB|x") == dev


def test_merge_same_backend_newer_wins_older_ignored():
    old = row("estimate", latency=10, created="2025-01-01T00:00:00+00:00")
    new = row("estimate", latency=9, created="2025-02-01T00:00:00+00:00")
    assert LatencyTable.from_rows([old]).merge([new]).lookup("iphone14pro", S, "RB|x") == new
    assert LatencyTable.from_rows([new]).merge([old]).lookup("iphone14pro", S, "RB|x") == new


def test_lookup_is_keyed_by_device_and_settings():
    t = LatencyTable.from_rows([row(), row(device="iphone14", chip="A15", latency=20),
                                row(weight_bits=6, latency=5)])
    assert t.lookup("iphone14pro", S, "RB|x").latency_ms == 10
    assert t.lookup("iphone14", S, "RB|x").latency_ms == 20
    assert t.lookup("iphone14pro", replace(S, weight_bits=6), "RB|x").latency_ms == 5
    assert t.lookup("iphone14pro", replace(S, batch=1), "RB|x") is None
    assert t.lookup("iphone14pro", S, "nope") is None


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace(",10.0,", ",ten,", 1), "line 2: column latency_ms: 'ten'"),
    (lambda s: s.replace("latency_ms,", "latency,", 1), "line 1: not a latency table: missing columns latency_ms"),
    (lambda s: s.replace(",estimate,", ",guess,", 1), "line 2: backend 'guess'"),
    (lambda s: s + s.splitlines()[1] + "\n", "line 3: duplicates line 2"),
    (lambda s: s.replace(",16,", ",5,", 1), "line 2: weight_bits 5"),
    (lambda s: s.rstrip("\n") + ",extra\n", "line 2: more fields"),
])
def test_corrupt_table_names_file_and_line(tmp_path, edit, message):
    p = tmp_path / "t.csv"
    p.write_text(edit(LatencyTable.from_rows([row()]).to_csv()))
    with pytest.raises(SnapbenchError) as e:
        LatencyTable.load(p)
    assert str(p) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_signatures_fall_back_to_labelled_estimates(tmp_path):
    fakes = FakePackages(tmp_path / "pk")
    first = block_latencies(resolve_model("sd15-tiny"), resolve_device("iphone14pro"), replace(S, latent=16), backend="estimate",
                            packages=fakes, estimator=toy_estimator())
    keys = {b.signature for b in first if b.signature}
    # a table that has measured rows for two signatures only
    measured_keys = sorted(keys)[:2]
    t = LatencyTable.from_rows([row("iphone", sig=k, latency=99.0, latent=16) for k in measured_keys])
    fakes.calls.clear()
    blocks = block_latencies(resolve_model("sd15-tiny"), resolve_device("iphone14pro"), replace(S, latent=16), table=t, backend="estimate",
                             packages=fakes, estimator=toy_estimator())
    assert len(blocks) == len(first)
    for b in blocks:
        if b.signature in measured_keys:
            assert (b.backend, b.latency_ms) == ("iphone", 99.0)
        elif b.signature:
            assert b.backend == "estimate" and b.latency_ms > 0 and b.samples == 0
    # only the missing signatures were converted
    assert fakes.calls == [("blocks", "sd15-tiny", replace(S, latent=16), len(keys) - 2)]


def test_lookup_returns_the_row_for_every_key_and_none_for_a_missing_one():
    """Every key of a 2000-row table found, a missing one is None (speed: benchmarks/bench_lookup.py)."""
    rows = [row(sig=f"RB|{i}", latency=float(i)) for i in range(2000)]
    t = LatencyTable.from_rows(rows)
    assert [t.lookup("iphone14pro", S, f"RB|{i}") for i in range(2000)] == rows
    assert t.lookup("iphone14pro", S, "RB|2000") is None
    assert t.lookup("iphone14pro", replace(S, latent=16), "RB|0") is None


def test_attention_choices_match_the_rewrites():
    """Settings validation and the converters must accept the same attention implementations."""
    from snapbench.choices import ATTENTIONS
    from snapbench.converters.ane_attention import ATTENTION_IMPLS

    assert ATTENTIONS == ATTENTION_IMPLS
