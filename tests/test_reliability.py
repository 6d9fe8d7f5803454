"""Locks (folders, tables), tables merged under their lock, names made safe for paths, a conversion folder
that belongs to one model, bounded input."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.latency.table import LatencyRow, LatencyTable, merge_into_file
from snapbench.locks import FOLDER_LOCK, claimed_run_folder, file_lock, folder_lock
from snapbench.names import safe_file_name


def _row(i: int, bits: int = 16) -> LatencyRow:
    return LatencyRow(device="iphone14pro", chip="A16", backend="estimate", compute_units="cpu_and_ne",
                      precision="fp16", weight_bits=bits, attention="original", stage="Down-1", block=f"RB[Down-1, {i}]",
                      signature=f"sig{i}", latency_ms=1.0 + i, p90_ms=None, samples=0, macs=1, params=1,
                      bytes_moved=None, versions="snapbench=test", created_at="2026-01-01T00:00:00Z")


def _hold_lock_in_child(path: Path, kind: str) -> subprocess.Popen:
    """Another process that takes the lock, says so on stdout and holds it until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from snapbench.locks import folder_lock, file_lock
        cm = folder_lock(Path({str(path)!r}), "test") if {kind!r} == "folder" else file_lock(Path({str(path)!r}), "t")
        with cm:
            print("held", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# -- locks ------------------------------------------------------------------------------------------------


def test_a_second_convert_into_a_folder_being_written_says_so_at_once(tmp_path, cli_server):
    """Two real processes: one holds the conversion folder's lock (as a running `convert --out same` does),
    a second convert into it (a child of the session's CLI server) refuses in one line naming the folder, the writer's pid
    and how to stop it, exit 2, before it loads the model (this one does not exist: it would say that first
    if it got that far) and without touching the folder."""
    same = tmp_path / "same"
    same.mkdir()
    proc = _hold_lock_in_child(same, "folder")
    try:
        before = sorted(p.name for p in same.iterdir())
        r = cli_server.run(["convert", "--model", "no-such-model", "--out", str(same)], cwd=tmp_path,
                           env=dict(os.environ), timeout=600)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert str(same) in lines[0] and f"pid {proc.pid}" in lines[0] and f"kill {proc.pid}" in lines[0], lines
        assert sorted(p.name for p in same.iterdir()) == before
    finally:
        proc.kill()
        proc.wait()
    # the writer gone, the same command gets as far as the model
    r = cli_server.run(["convert", "--model", "no-such-model", "--out", str(same)], cwd=tmp_path, env=dict(os.environ),
                       timeout=600)
    assert r.returncode == 2 and "no-such-model" in r.stderr and "writing there" not in r.stderr


def test_a_folder_held_by_a_live_process_is_refused_naming_it(tmp_path):
    proc = _hold_lock_in_child(tmp_path, "folder")
    try:
        with pytest.raises(SnapbenchError, match=rf"another snapbench evolve \(pid {proc.pid}\).*--out"):
            with folder_lock(tmp_path, "evolve"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with folder_lock(tmp_path, "evolve"):  # the kernel released the killed process's lock: taken over
        assert (tmp_path / FOLDER_LOCK).read_text() == str(os.getpid())
    assert not (tmp_path / FOLDER_LOCK).exists()


def test_a_stale_lock_file_from_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / FOLDER_LOCK).write_text(dead.stdout.strip())  # as a killed run (or an older snapbench) leaves it
    with folder_lock(tmp_path, "convert"):  # refused (SnapbenchError) if the dead pid still counted as an owner
        assert (tmp_path / FOLDER_LOCK).read_text() == str(os.getpid())
    assert not (tmp_path / FOLDER_LOCK).exists()


def test_claimed_run_folder_removes_a_folder_it_created_when_the_run_wrote_nothing(tmp_path):
    with pytest.raises(SnapbenchError), claimed_run_folder(tmp_path / "new", "evolve"):
        raise SnapbenchError("bad input")
    assert not (tmp_path / "new").exists()


def _merge_worker(args: tuple[str, int]) -> None:
    path, start = args
    for i in range(start, start + 10):
        merge_into_file(path, [_row(i)])


def test_concurrent_merges_into_one_table_keep_every_row(tmp_path):
    path = tmp_path / "t.csv"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_merge_worker, [(str(path), k * 100) for k in range(4)])
    assert len(LatencyTable.load(path)) == 40
    assert not (tmp_path / ".t.csv.lock").exists()


def test_a_table_lock_held_too_long_is_one_line(tmp_path):
    path = tmp_path / "t.csv"
    proc = _hold_lock_in_child(path, "file")
    try:
        with pytest.raises(SnapbenchError, match=rf"pid {proc.pid} has held this latency table"):
            with file_lock(path, "latency table", timeout_s=0.3):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_profile_merges_into_the_table_a_concurrent_run_wrote(tmp_path, monkeypatch, capsys):
    """Two profiles (8-bit, 4-bit) on one --table: the second to finish must keep the first's rows."""
    from profile_fakes import FakePackages, fake_mac, toy_estimator

    from snapbench.cli import main
    from snapbench.latency.model_latency import ProfileTools

    table = tmp_path / "shared.csv"
    other_rows = [_row(i, bits=4) for i in range(5)]

    class Racing(FakePackages):
        def block_packages(self, *a, **k):
            merge_into_file(table, other_rows)  # the 4-bit run finishes while this one works
            return super().block_packages(*a, **k)

    packages = Racing(tmp_path / "packages")
    tools = ProfileTools(packages=packages, estimator=toy_estimator(),
                         machine=fake_mac(tmp_path / "machine", platform="linux"))
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "--device", "iphone14pro", "--model", "sd15-tiny", "--latent", "16", "--weight-bits",
                 "8", "--backend", "estimate", "--table", str(table), "--component", "unet"], obj=tools) == 0
    rows = LatencyTable.load(table).rows()
    assert {r.weight_bits for r in rows} == {4, 8}
    assert sum(r.weight_bits == 4 for r in rows) == 5
    assert f"{len(rows)} in the table" in capsys.readouterr().err


# -- names --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../../work/evil", "<script>alert(1)</script>", "..", ".", "", "a/b",
                                  "x" * 500, "con\x00trol"])
def test_safe_file_names_stay_in_their_folder(tmp_path, name):
    safe = safe_file_name(name)
    assert safe and "/" not in safe and "\x00" not in safe and safe not in (".", "..") and len(safe) <= 100
    assert (tmp_path / safe).resolve().parent == tmp_path.resolve()


def test_safe_file_names_keep_plain_names_and_do_not_collide():
    assert safe_file_name("sd15-tiny") == "sd15-tiny"
    assert safe_file_name("a/b") != safe_file_name("a?b")


def test_package_cache_folder_of_a_hostile_spec_name_stays_in_the_cache(tmp_path, monkeypatch):
    from snapbench.latency.packages import ConverterPackages, cache_root
    from snapbench.latency.table import Settings
    from snapbench.model.loading import ModelSource
    from snapbench.specs.presets import load_preset

    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    root = (cache_root() / "packages").resolve()
    for name in ("../../../work/evil", "<script>"):
        spec = load_preset("sd15-tiny")
        spec = type(spec).from_dict({**spec.to_dict(), "name": name}, source="test")
        folder = ConverterPackages()._dir(ModelSource(name, spec), Settings())
        assert folder.resolve().parent == root, folder


def test_default_table_path_of_a_hostile_model_name_stays_under_latency_tables(tmp_path):
    from snapbench.paths import user_table_path

    for model in ("..", "../..", "<script>.json", "a/../../b.json", "x/.."):
        p = user_table_path("iphone14pro", model, tmp_path)
        assert p.parent == tmp_path / "iphone14pro" and p.name not in ("..csv", "...csv", ".csv"), p


# -- a conversion folder belongs to one model ----------------------------------------------------------


def test_converting_another_model_into_a_folder_is_refused_naming_its_owner(tmp_path):
    from snapbench.converters.manifest import Manifest, inspect_out_dir

    out = tmp_path / "out"
    out.mkdir()
    Manifest(content="blocks", model="sd15", spec="sd15", options={}, versions={}, shapes={}, blocks=[],
             folder=out).write()
    assert inspect_out_dir(out, "blocks", "sd15", "sd15") is not None
    with pytest.raises(SnapbenchError, match=r"holds the conversion of sd15 .*use another --out"):
        inspect_out_dir(out, "blocks", "sd15-tiny", "sd15-tiny")


# -- bounded input --------------------------------------------------------------------------------------


def test_input_files_are_read_up_to_a_limit(tmp_path, monkeypatch):
    from snapbench.user_files import read_user_text

    monkeypatch.setenv("SNAPBENCH_MAX_INPUT_MB", "0.001")
    big = tmp_path / "big.csv"
    big.write_text("x" * 2000)
    with pytest.raises(SnapbenchError, match="larger than 1048 bytes"):
        read_user_text(big, "import file")
    (tmp_path / "small.csv").write_text("x" * 100)
    assert read_user_text(tmp_path / "small.csv", "import file") == "x" * 100


def test_json_deeper_than_the_limit_is_refused_but_real_specs_load(tmp_path):
    from snapbench.specs.arch_spec import load_spec
    from snapbench.user_files import parse_user_json

    with pytest.raises(SnapbenchError, match="nested more than"):
        parse_user_json("[" * 70 + "]" * 70, "x")
    assert parse_user_json("[" * 60 + "]" * 60, "x") is not None
    from importlib import resources

    text = (resources.files("snapbench.specs") / "presets" / "sd15.json").read_text()
    (tmp_path / "sd15.json").write_text(text)
    assert load_spec(tmp_path / "sd15.json").name == "sd15"


# -- cached packages are verified, not trusted ------------------------------------------------------------


@pytest.fixture
def converted(sd15_tiny_blocks):
    """The session's sd15-tiny block conversion (conftest), shared with test_convert_blocks.py; copied
    before it is broken."""
    return sd15_tiny_blocks


def _break(package: Path, how: str) -> None:
    data = package / "Data" / "com.apple.CoreML"
    if how == "empty spec":
        (data / "model.mlmodel").write_bytes(b"")
    elif how == "no weights":
        (data / "weights" / "weight.bin").unlink()
    elif how == "other weights":
        (data / "weights" / "weight.bin").write_bytes(os.urandom(100))
    elif how == "no Data":
        import shutil

        shutil.rmtree(package / "Data")


@pytest.mark.slow
def test_broken_cached_packages_are_converted_again(converted, tmp_path):
    import shutil

    from snapbench.backbones import resolve_model
    from snapbench.converters.entry import ConvertRequest, convert
    from snapbench.converters.manifest import load_manifest
    from snapbench.converters.options import ConvertOptions

    out = tmp_path / "out"
    shutil.copytree(converted, out)
    manifest = load_manifest(out)
    owners = sorted({b.package for b in manifest.blocks if b.package})
    broken = dict(zip(owners, ["empty spec", "no weights", "other weights", "no Data"]))
    for package, how in broken.items():
        _break(out / package, how)
    result = convert(ConvertRequest(resolve_model("sd15-tiny"), out, ConvertOptions(latent=8, tokens=4, jobs=1), progress=False))
    remade = {b.package for b in result.manifest.blocks if b.id in result.converted}
    assert remade == set(broken), (remade, broken)
    assert result.ok and result.manifest.complete
    for package in broken:
        assert (out / package / "Data" / "com.apple.CoreML" / "model.mlmodel").stat().st_size > 0


@pytest.mark.slow
def test_a_cache_conversion_waits_for_another_run_converting_there_and_reuses_its_packages(converted, tmp_path,
                                                                                          capsys):
    """Two profiles at once convert the same packages into one cache folder: the second waits for the first
    (a real process holding the folder's lock) instead of refusing, then reuses what it finished."""
    import shutil
    import threading

    from snapbench.backbones import resolve_model
    from snapbench.converters.entry import ConvertRequest, convert
    from snapbench.converters.options import ConvertOptions

    cache = tmp_path / "cache-folder"
    shutil.copytree(converted, cache)
    unfinished = cache / "conv_out.mlpackage"
    shutil.rmtree(unfinished)  # the package the other run is still converting
    request = ConvertRequest(resolve_model("sd15-tiny"), cache, ConvertOptions(latent=8, tokens=4, jobs=1),
                             progress=False, shared_folder=True)
    proc = _hold_lock_in_child(cache, "folder")
    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(_result_or_error(lambda: convert(request))), daemon=True)
    try:
        waiter.start()
        for _ in range(600):  # the waiter says so once it finds the folder held
            if "waiting for another snapbench" in capsys.readouterr().err:
                break
            waiter.join(0.1)
        else:
            pytest.fail(f"the second conversion never said it was waiting: {[type(r) for r in results]}")
        waiter.join(1.0)
        assert waiter.is_alive() and not results  # still waiting while the other run holds the folder
        shutil.copytree(converted / unfinished.name, unfinished)  # the other run finishes it, then ends
    finally:
        proc.kill()
        proc.wait()
    waiter.join(300)
    assert len(results) == 1 and not isinstance(results[0], BaseException), results
    result = results[0]
    assert result.ok and not result.converted and "ConvOut" in result.reused  # nothing converted again
    # a folder the user named (not the cache's) is still refused at once
    shutil.rmtree(unfinished)
    proc = _hold_lock_in_child(cache, "folder")
    try:
        with pytest.raises(SnapbenchError, match=f"pid {proc.pid}"):
            convert(ConvertRequest(request.source, cache, request.options, progress=False))
    finally:
        proc.kill()
        proc.wait()


def _result_or_error(run):
    try:
        return run()
    except BaseException as e:  # handed to the test's thread to assert on
        return e


@pytest.mark.slow
def test_profile_packages_names_a_broken_package(converted, tmp_path, capsys, monkeypatch):
    import shutil

    from snapbench.cli import main
    from snapbench.converters.manifest import load_manifest

    out = tmp_path / "out"
    shutil.copytree(converted, out)
    victim = sorted({b.package for b in load_manifest(out).blocks if b.package})[0]
    _break(out / victim, "no weights")
    monkeypatch.chdir(tmp_path)
    code = main(["profile", "--device", "iphone14pro", "--model", "sd15-tiny", "--latent", "8", "--tokens", "4",
                 "--packages", str(out), "--backend", "estimate", "--component", "unet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert victim in err[0] and "broken package" in err[0] and "weight.bin" in err[0]


# -- progress without a terminal ---------------------------------------------------------------------------


def test_line_progress_logs_at_first_then_every_interval_and_at_the_end():
    from rich.console import Console

    from snapbench.progress_log import LineProgress, make_progress

    console = Console(record=True, force_terminal=False, width=200)
    assert isinstance(make_progress("train", console=console), LineProgress)
    with LineProgress("train", console, every=3600) as bar:
        t = bar.add_task("", total=100)
        for step in range(1, 101):
            bar.update(t, completed=step, description=f"loss {1 / step:.3f}")
    lines = console.export_text().strip().splitlines()
    assert lines[0].startswith("train: 1/100 (1%), loss 1.000") and "elapsed" in lines[0]
    assert lines[-1].startswith("train: 100/100 (100%), loss 0.010")
    assert len(lines) == 2  # nothing in between: the interval is an hour


@pytest.mark.slow
def test_train_without_a_terminal_logs_progress_lines(tmp_path):
    env = {**os.environ, "SNAPBENCH_PROGRESS_EVERY_S": "0", "SNAPBENCH_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "snapbench", "train", "--model", "toy-digits", "--out",
                        str(tmp_path / "run"), "--steps", "6", "--batch-size", "4", "--save-every", "3"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("train: ")]
    assert len(lines) >= 3 and lines[-1].startswith("train: 6/6 (100%)"), r.stderr


# -- each model at its own latent size ----------------------------------------------------------------------


def test_a_report_prices_each_model_at_its_own_latent_unless_told(tmp_path):
    from snapbench.report.gather_data import gather
    from snapbench.report.latency_source import ProfileOutcome
    from snapbench.report.render import render_html

    asked: dict[str, int] = {}

    def profiler(source, device, settings, backend, table, say=None, cut=None):
        asked[source.spec.name] = settings["latent"]
        return ProfileOutcome(None, "not needed here")

    data = gather(baseline="sd15", candidates=["toy-digits"], devices=[resolve_device("iphone14pro")], profiler=profiler)
    doc = data.to_dict()  # the JSON document `report --json` writes
    assert asked == {"sd15": 64, "toy-digits": 8}
    assert {m["key"]: m["latent"] for m in doc["models"]} == {"sd15": 64, "toy-digits": 8}
    html = render_html(data)
    assert "toy-digits 8&times;8" in html and "sd15 64&times;64" in html
    asked.clear()
    gather(baseline="sd15", candidates=["toy-digits"], devices=[resolve_device("iphone14pro")], profiler=profiler,
           settings={"latent": 32})
    assert asked == {"sd15": 32, "toy-digits": 32}


def test_inspect_uses_the_models_own_latent(capsys):
    from snapbench.cli import main

    assert main(["inspect", "--model", "toy-digits", "--no-blocks", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shapes"]["latent"] == 8
    assert main(["inspect", "--model", "toy-digits", "--no-blocks", "--json", "--latent", "16"]) == 0
    assert json.loads(capsys.readouterr().out)["shapes"]["latent"] == 16


# -- the quantized text encoder -------------------------------------------------------------------------------


def _tiny_text_encoder():
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from snapbench.converters.components import TextEncoder
    from snapbench.converters.package_io import PackageIO

    torch.manual_seed(0)
    # SD's CLIP structure at test size; 77 positions, so the causal mask (77 x 77) is big enough to compress
    cfg = CLIPTextConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=2,
                         attn_implementation="eager")
    io = PackageIO((("input_ids", (1, 77)),), (("last_hidden_state", (1, 77, 64)),), int_inputs=frozenset({"input_ids"}))
    return TextEncoder(CLIPTextModel(cfg).eval()), io


def _consts(path: Path) -> dict[str, str]:
    """const name -> the op type that reads it, from the saved package's program."""
    from snapbench.converters.runtime import coremltools

    spec = coremltools().utils.load_spec(str(path))
    out = {}
    for op in spec.mlProgram.functions["main"].block_specializations[spec.mlProgram.functions["main"].opset].operations:
        for arg in op.inputs.values():
            for b in arg.arguments:
                if b.name:
                    out.setdefault(b.name, op.type)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode, bits", [("deploy", 6), ("profile", 4), ("deploy", 8)])
def test_a_quantized_text_encoder_converts_with_its_mask_left_alone(tmp_path, mode, bits):
    from snapbench.converters.convert_package import convert_module
    from snapbench.converters.options import ConvertOptions

    module, io = _tiny_text_encoder()
    dest = tmp_path / "te.mlpackage"
    convert_module(module, io, ConvertOptions(mode=mode, weight_bits=bits, tokens=77), dest,
                   metadata={}, description="test")
    consts = _consts(dest)
    mask = [n for n in consts if n.startswith("attention_mask")]
    assert mask and all(consts[n] == "add" for n in mask)  # read as it was, not through a lookup table
    compressed = [n for n in consts if "palettized" in n or "quantized" in n]
    assert any("q_proj" in n for n in compressed)  # the weights were compressed


@pytest.mark.slow
def test_a_package_whose_weights_hold_nan_fails_its_conversion(tmp_path, monkeypatch):
    """Palettize everything, the mask too (what the converter did before): its lookup table holds NaN,
    and the conversion must fail rather than save the package."""
    import snapbench.converters.convert_package as bp
    from snapbench.converters.options import ConvertOptions
    from snapbench.converters.runtime import coremltools

    def palettize_everything(mlmodel, opts):
        cto = coremltools().optimize.coreml
        config = cto.OpPalettizerConfig(mode="uniform", nbits=6, granularity="per_tensor")
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=config))

    monkeypatch.setattr(bp, "compress", palettize_everything)
    module, io = _tiny_text_encoder()
    with pytest.raises(ValueError, match="NaN or inf"):
        bp.convert_module(module, io, ConvertOptions(weight_bits=6, tokens=77), tmp_path / "te.mlpackage",
                          metadata={}, description="test")
    assert not any(tmp_path.iterdir())
