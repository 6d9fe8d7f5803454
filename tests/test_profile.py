"""`snapbench profile` end to end on sd15-tiny with fake conversion and a toy estimator: the JSON
document's shape, table writing and re-use, import round trip, and every bad input (exit 2, one stderr
line, the table byte-identical afterwards)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from profile_fakes import FakePackages, fake_mac, toy_estimator

from snapbench.cli import main
from snapbench.latency.model_latency import ProfileTools
from snapbench.latency.table import LatencyTable, Settings
from snapbench.specs.stages import STAGES

TINY = ["--device", "iphone14pro", "--model", "sd15-tiny", "--latent", "16"]


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """Conversion, estimator and machine handed to the command (a Linux box: nothing measures here)."""
    pk = FakePackages(tmp_path / "packages")
    pk.tools = ProfileTools(packages=pk, estimator=toy_estimator(),
                            machine=fake_mac(tmp_path / "machine", platform="linux"))
    monkeypatch.chdir(tmp_path)
    return pk


def cli(fakes, argv: list[str]) -> int:
    return main(argv, obj=fakes.tools)


def run_json(fakes, capsys, *args: str) -> dict:
    assert cli(fakes, ["profile", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_document_shape(fakes, capsys, tmp_path):
    doc = run_json(fakes, capsys, *TINY, "--backend", "estimate")
    assert doc["device"] == {"id": "iphone14pro", "name": "iPhone 14 Pro", "chip": "A16"}
    assert doc["backend"] == "estimate" and doc["model"] == "sd15-tiny"
    assert doc["settings"] == Settings(latent=16).to_dict() and doc["settings"]["tokens"] == 77
    assert [s["stage"] for s in doc["stages"]] == list(STAGES)
    assert set(doc["stages"][0]) == {"stage", "ms", "ca_ms", "rb_ms", "aux_ms", "params", "macs"}
    ids = [b["id"] for b in doc["blocks"]]
    assert len(ids) == len(set(ids)) == 47
    assert set(doc["blocks"][0]) == {"id", "file_id", "stage", "kind", "status", "signature", "latency_ms",
                                     "p90_ms", "samples", "backend", "macs", "params", "first_load_ms",
                                     "warm_load_ms"}
    assert doc["measured_on"] is None and doc["load_ms"] == {}
    assert set(doc["components"]) == {"text_encoder", "unet", "vae_decoder"}
    assert set(doc["component_backends"].values()) == {"estimate"}
    assert doc["components"]["unet"] == pytest.approx(sum(s["ms"] for s in doc["stages"]), rel=1e-6)
    for s in doc["stages"]:
        assert s["ms"] == pytest.approx(s["ca_ms"] + s["rb_ms"] + s["aux_ms"], abs=1e-3)
    assert all(b["backend"] == "estimate" and b["samples"] == 0 for b in doc["blocks"])
    # the table landed where the default says, every row labelled
    table = LatencyTable.load(tmp_path / "latency_tables" / "iphone14pro" / "sd15-tiny.csv")
    assert {r.backend for r in table.rows()} == {"estimate"}
    unique = len({b["signature"] for b in doc["blocks"]})
    assert len(table) == unique + 2  # one row per signature, plus text encoder and VAE decoder
    assert doc["table"] == str(Path("latency_tables") / "iphone14pro" / "sd15-tiny.csv")


def test_second_run_reads_the_table(fakes, capsys, tmp_path):
    first = run_json(fakes, capsys, *TINY, "--backend", "estimate")
    path = tmp_path / "latency_tables" / "iphone14pro" / "sd15-tiny.csv"
    before = path.read_bytes()
    fakes.calls.clear()
    again = run_json(fakes, capsys, *TINY, "--backend", "estimate")
    assert fakes.calls == []  # nothing converted or estimated twice
    assert path.read_bytes() == before
    assert again["components"] == first["components"]


def test_human_summary(fakes, capsys):
    assert cli(fakes, ["profile", *TINY, "--backend", "estimate"]) == 0
    text = capsys.readouterr().out
    for word in ("Down-1", "Up-3", "CA ms", "RB ms", "text_encoder", "vae_decoder", "per image", "estimate"):
        assert word in text


def test_single_component(fakes, capsys):
    doc = run_json(fakes, capsys, *TINY, "--backend", "estimate", "--component", "vae_decoder")
    assert doc["components"].keys() == {"vae_decoder"} and doc["stages"] == [] and doc["blocks"] == []
    assert fakes.calls == [("component", "vae_decoder", 1)]


def test_auto_on_linux_says_it_estimates(fakes, capsys):
    assert cli(fakes, ["profile", *TINY, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["backend"] == "estimate"
    assert "backend auto -> estimate" in captured.err


def _write_import(path: Path, doc: dict, *, blocks: int | None = None, extra: str = "") -> None:
    lines = ["block,latency_ms,p90_ms,samples" + (",notes" if extra else "")]
    seen = set()
    for b in doc["blocks"]:
        if b["signature"] and b["signature"] not in seen:
            seen.add(b["signature"])
            lines.append(f"\"{b['id']}\",{b['latency_ms'] * 2},{b['latency_ms'] * 2.5},30" + (f",{extra}" if extra else ""))
    lines = lines[: (blocks + 1) if blocks else None]
    path.write_text("\n".join(lines) + "\n")


def test_import_round_trip(fakes, capsys, tmp_path):
    est = run_json(fakes, capsys, *TINY, "--backend", "estimate", "--table", str(tmp_path / "est.csv"))
    src = tmp_path / "measured.csv"
    _write_import(src, est, extra="typed from Xcode")
    with src.open("a") as f:
        f.write(f"text_encoder,3.5,,10,te\nvae_decoder,{1.5e2},160,10,vae\n")
    doc = run_json(fakes, capsys, *TINY, "--backend", "import", "--from", str(src))
    assert doc["backend"] == "import"
    by_sig = {b["signature"]: b for b in est["blocks"]}
    for b in doc["blocks"]:
        if b["signature"]:
            assert b["backend"] == "import" and b["samples"] == 30
            assert b["latency_ms"] == pytest.approx(by_sig[b["signature"]]["latency_ms"] * 2, abs=1e-4)
    assert doc["components"]["text_encoder"] == 3.5 and doc["components"]["vae_decoder"] == 150
    table = LatencyTable.load(tmp_path / "latency_tables" / "iphone14pro" / "sd15-tiny.csv")
    assert {r.backend for r in table.rows()} == {"import"}
    assert all("measured.csv" in r.source for r in table.rows())
    # JSON import of the same data gives the same table figures
    rows = [{"block": b["id"], "latency_ms": b["latency_ms"], "samples": 30} for b in doc["blocks"] if b["signature"]]
    (tmp_path / "m.json").write_text(json.dumps({"rows": rows}))
    doc2 = run_json(fakes, capsys, *TINY, "--backend", "import", "--from", str(tmp_path / "m.json"),
                    "--component", "unet", "--table", str(tmp_path / "j.csv"))
    assert [b["latency_ms"] for b in doc2["blocks"]] == [b["latency_ms"] for b in doc["blocks"]]


def test_partial_import_is_filled_with_labelled_estimates(fakes, capsys, tmp_path):
    est = run_json(fakes, capsys, *TINY, "--backend", "estimate", "--table", str(tmp_path / "est.csv"))
    src = tmp_path / "few.csv"
    _write_import(src, est, blocks=3)
    doc = run_json(fakes, capsys, *TINY, "--from", str(src))  # --from alone means --backend import
    assert doc["backend"] == "mixed"
    backends = [b["backend"] for b in doc["blocks"] if b["signature"]]
    assert "import" in backends and "estimate" in backends
    assert doc["component_backends"]["unet"] == "mixed"
    assert doc["component_backends"]["vae_decoder"] == "estimate"


def _corrupt(p: Path) -> None:
    text = LatencyTable.load(p).to_csv().splitlines()
    text[3] = text[3].replace(",fp16,", ",fp12,", 1)
    p.write_text("\n".join(text) + "\n")


BAD = {
    "unknown device": (["--device", "iphone99"], "unknown device 'iphone99'"),
    "iphone on linux": (["--backend", "iphone"], "--backend estimate"),
    "mac on linux": (["--backend", "mac"], "--backend estimate"),
    "unknown backend": (["--backend", "gpu"], "--backend 'gpu'"),
    "bad attention": (["--attention", "flash"], "--attention 'flash'"),
    "bad weight bits": (["--weight-bits", "5"], "weight_bits 5"),
    "import without --from": (["--backend", "import"], "needs --from"),
    "import missing column": (["--from", "{dir}/nolat.csv"], "missing column latency_ms"),
    "import without units": (["--from", "{dir}/nounit.csv"], "column latency has no unit"),
    "import bad number": (["--from", "{dir}/badnum.csv"], "line 2: latency_ms 'fast' is not a number"),
    "import unknown block": (["--from", "{dir}/unknown.csv"], "line 2: block 'CA[Up-9, 1]' is not in this model"),
    "import other settings": (["--from", "{dir}/batch1.csv"], "line 2: batch is '1' but this profile uses 2"),
    "import other device": (["--from", "{dir}/device.csv"], "device 'iPhone 14' is not --device iphone14pro"),
    "import missing file": (["--from", "{dir}/none.csv"], "no such import file"),
    "corrupt table": ([], "line 4: precision 'fp12'"),
    "packages of other settings": (["--packages", "{dir}/pk_batch1"], "packages were converted with batch 1, this profile uses 2"),
    "not a conversion folder": (["--packages", "{dir}"], "not a snapbench conversion folder"),
}


def _manifest(folder: Path, **options) -> None:
    folder.mkdir()
    opts = {"mode": "profile", "attention": "original", "weight_bits": 16, "precision": "fp16", "latent": 16,
            "batch": 2, "tokens": 77, **options}
    (folder / "manifest.json").write_text(json.dumps({
        "format": "snapbench.manifest/1", "content": "blocks", "model": "sd15-tiny", "spec": "sd15-tiny",
        "options": opts, "blocks": []}))


@pytest.fixture(scope="module")
def estimated_table(tmp_path_factory) -> Path:
    """A table written by a good `profile --backend estimate` run, made once: every bad-input case below
    starts from a copy of it (the cases differ only in the run that follows, which must leave it alone)."""
    root = tmp_path_factory.mktemp("estimated")
    pk = FakePackages(root / "packages")
    tools = ProfileTools(packages=pk, estimator=toy_estimator(), machine=fake_mac(root / "machine", platform="linux"))
    table = root / "t.csv"
    assert main(["profile", *TINY, "--backend", "estimate", "--table", str(table), "--json"], obj=tools) == 0
    return table


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_leaves_the_table(case, fakes, capsys, tmp_path, estimated_table):
    table = tmp_path / "t.csv"
    shutil.copyfile(estimated_table, table)
    if case == "corrupt table":
        _corrupt(table)
    before = table.read_bytes()
    (tmp_path / "nolat.csv").write_text("block,samples\n\"RB[Down-1, 1]\",3\n")
    (tmp_path / "nounit.csv").write_text("block,latency\n\"RB[Down-1, 1]\",3\n")
    (tmp_path / "badnum.csv").write_text("block,latency_ms\n\"RB[Down-1, 1]\",fast\n")
    (tmp_path / "unknown.csv").write_text("block,latency_ms\n\"CA[Up-9, 1]\",3\n")
    (tmp_path / "batch1.csv").write_text("block,latency_ms,batch\n\"RB[Down-1, 1]\",3,1\n")
    (tmp_path / "device.csv").write_text("block,latency_ms,device\n\"RB[Down-1, 1]\",3,iPhone 14\n")
    _manifest(tmp_path / "pk_batch1", batch=1)
    args, message = BAD[case]
    argv = ["profile", *TINY, "--table", str(table)]
    extra = [a.replace("{dir}", str(tmp_path)) for a in args]
    if "--device" in extra:  # replace the default device
        argv = ["profile", "--model", "sd15-tiny", "--latent", "16", "--table", str(table)]
    assert cli(fakes, argv + extra) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert table.read_bytes() == before


def test_packages_missing_a_signature_is_refused(tmp_path):
    from types import SimpleNamespace

    from snapbench.errors import SnapbenchError
    from snapbench.latency.packages import signature_packages

    m = SimpleNamespace(blocks=[SimpleNamespace(signature="RB|a", package="a.mlpackage")])
    assert signature_packages(m, tmp_path, {"RB|a"}) == {"RB|a": tmp_path / "a.mlpackage"}
    with pytest.raises(SnapbenchError, match="do not match this profile's settings or model"):
        signature_packages(m, tmp_path, {"RB|a", "CA|b"})


def on_a_mac_with_a_phone(fakes, tmp_path, **coreml):
    from profile_fakes import FakeCoreML

    from snapbench.profilers.coreml_api import CoreMLTools

    fake = FakeCoreML(**coreml)
    fakes.tools = ProfileTools(packages=fakes, estimator=toy_estimator(), coreml=CoreMLTools(fake.ct),
                               machine=fake_mac(tmp_path / "machine", team_id=None), sleep=lambda s: None)
    return fake


def test_profile_on_the_attached_phone_prints_load_times(fakes, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    fake = on_a_mac_with_a_phone(fakes, tmp_path)
    argv = ["profile", "--device", "auto", "--backend", "iphone", "--model", "sd15-tiny", "--latent", "16",
            "--team-id", "ABCDE12345", "--repeats", "3", "--warmup", "0"]
    assert cli(fakes, argv) == 0
    captured = capsys.readouterr()
    assert "--device auto -> iphone14pro: Test iPhone (iOS 18.1, build 22B83)" in captured.err
    assert "first load s" in captured.out and "measured on Test iPhone (iOS 18.1, build 22B83)" in captured.out
    table = LatencyTable.load(tmp_path / "latency_tables" / "iphone14pro" / "sd15-tiny.csv")
    assert {r.backend for r in table.rows()} == {"iphone"} and {r.os_build for r in table.rows()} == {"22B83"}
    assert fake.loaded == []
    creds = next(c[1] for c in fake.calls if c[0] == "prepare_for_model_debugging")
    assert creds.development_team == "ABCDE12345"
    fake.calls.clear()
    assert cli(fakes, argv + ["--json"]) == 0  # a rerun on the same phone and build measures nothing
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert "every figure came from the table" in captured.err and fake.calls == []
    assert doc["measured_on"]["os_build"] == "22B83" and doc["load_ms"]["unet"]["first"] > 0


def test_an_interrupted_phone_run_keeps_its_rows_and_resumes(fakes, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["profile", *TINY, "--backend", "iphone", "--team-id", "ABCDE12345", "--component", "unet",
            "--repeats", "2", "--warmup", "0"]
    est = run_json(fakes, capsys, *TINY, "--backend", "estimate", "--component", "unet", "--table",
                   str(tmp_path / "est.csv"))
    unique = len({b["signature"] for b in est["blocks"] if b["signature"]})
    victim = sorted(p.name for p in fakes.root.glob("*.mlpackage"))[4]
    on_a_mac_with_a_phone(fakes, tmp_path, interrupt_on=victim)
    assert cli(fakes, argv) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    path = tmp_path / "latency_tables" / "iphone14pro" / "sd15-tiny.csv"
    kept = len(LatencyTable.load(path))
    assert 0 < kept < unique
    fake = on_a_mac_with_a_phone(fakes, tmp_path)
    assert cli(fakes, argv) == 0
    assert len(LatencyTable.load(path)) == unique
    assert sum(c[0] == "retrieve_compute_plan" for c in fake.calls) == unique - kept  # only what was missing


def test_no_team_id_is_refused_before_anything_runs(fakes, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("SNAPBENCH_TEAM_ID", raising=False)
    fake = on_a_mac_with_a_phone(fakes, tmp_path)
    assert cli(fakes, ["profile", *TINY, "--backend", "iphone"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--team-id" in err and fake.calls == [] and fakes.calls == []
