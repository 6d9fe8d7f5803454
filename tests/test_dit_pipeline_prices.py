"""A DiT pipeline's text encoders and decoder priced for real: parts converted by coremltools into the cache
(once: a second device converts nothing) and estimated by the real cost model; a part too large to convert
is priced from two slices, and on a part small enough to convert whole the slices' extrapolation is held to
the whole part's estimate."""

from __future__ import annotations

import pytest

from snapbench.converters.app_parts import AppPart
from snapbench.converters.dit_app import encoder_part, slice_part
from snapbench.converters.dit_text_encoders import TextEncoderSpec
from snapbench.converters.options import ConvertOptions
from snapbench.devices.catalog import resolve_device
from snapbench.dit.source import resolve_dit
from snapbench.latency.dit_pipeline import pipeline_components, price_dit_pipeline
from snapbench.latency.packages import ConverterPackages
from snapbench.latency.table import Settings
from snapbench.profilers.backends import EstimatePricer
from snapbench.profilers.measurement import PackageJob


@pytest.mark.slow
def test_a_six_layer_encoder_priced_from_slices_matches_its_whole_package(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    config = dict(vocab_size=1000, d_model=64, d_kv=32, d_ff=128, num_layers=6, num_heads=2,
                  relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu")
    enc = TextEncoderSpec("t5", "TextEncoderT5", "T5", "t5", config, 32, "text_encoder", False)
    opts = ConvertOptions(latent=8, batch=1, tokens=32)
    source, dev, pricer, packages = resolve_dit("pixart-sigma-tiny"), resolve_device("iphone15pro"), EstimatePricer(), \
        ConverterPackages()

    def ms(part: AppPart) -> float:
        path = packages.part_package(part, opts, source)
        return float(pricer(PackageJob("k", part.name, path), dev).total_ms)

    whole = ms(encoder_part(enc, opts, "pixart", None))
    one, two = (ms(slice_part(enc, n, opts, "pixart")) for n in (1, 2))
    extrapolated = one + 5 * (two - one)
    assert two > one > 0
    # the cost model adds up ops: one layer's price times the depth, within 5% of the whole package's
    assert abs(extrapolated - whole) / whole < 0.05, (whole, extrapolated)


@pytest.mark.slow
def test_the_tiny_twins_parts_convert_once_and_are_estimated(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    settings = Settings(latent=8, tokens=8)
    # what a run killed while converting a part leaves (its process gone): removed by the next conversion
    killed = tmp_path / "cache" / "dit-parts" / f".VAEDecoder-0123456789ab.mlpackage.{_dead_pid()}.partial"
    (killed / "VAEDecoder-0123456789ab.mlpackage" / "Data").mkdir(parents=True)
    parts, rows = price_dit_pipeline(resolve_dit("sana-tiny"), resolve_device("iphone15pro"), settings)
    assert not killed.exists()
    assert [p.name for p in parts] == ["TextEncoderGemma", "VAEDecoder"]
    assert all(p.latency_ms > 0 and p.backend == "estimate" for p in parts) and len(rows) == 2
    comps = pipeline_components(parts)
    assert comps["text_encoder"].latency_ms == parts[0].latency_ms and comps["vae_decoder"].per == "image"
    packages = sorted(p.name for p in (tmp_path / "cache" / "dit-parts").glob("*.mlpackage"))
    assert len(packages) == 2
    assert not list((tmp_path / "cache" / "dit-parts").glob(".*"))  # no temporary left behind
    # another device: the same packages, nothing converted
    said: list[str] = []
    again, _ = price_dit_pipeline(resolve_dit("sana-tiny"), resolve_device("iphone16promax"), settings, say=said.append)
    assert sorted(p.name for p in (tmp_path / "cache" / "dit-parts").glob("*.mlpackage")) == packages
    assert [p.name for p in again] == [p.name for p in parts]


def _dead_pid() -> int:
    """A process id no process has (past the kernel's largest)."""
    from snapbench.locks import pid_alive

    pid = 4_194_304 + 1
    assert not pid_alive(pid)
    return pid
