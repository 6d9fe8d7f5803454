"""Hostile and careless input against the installed `snapbench` console script (issue 24's cases, and the ones
that already held, so they keep holding).

Each case runs in a child process with its address space capped (RLIMIT_AS, set in preexec_fn), so a
regression that tries to build a trillion-parameter network fails the test instead of taking the machine
down, and the cap itself is the claim: refusing a bad model never needs more than 2 GB. Each runs in its own
folder with the cache, HOME and XDG_CACHE_HOME inside it. Bad input ends with one `error:` line and exit 2.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pytest
from cli_server import CliServer

SNAPBENCH = Path(sys.executable).with_name("snapbench")  # the console script installed beside this Python
GB = 1024**3
REFUSE_LIMIT = 2 * GB  # what refusing a bad model may take, at most (issue 24)
RUN_LIMIT = 6 * GB  # a case that really converts or prices a tiny model
TINY = ["--latent", "8", "--tokens", "4"]
IMPORT = ["profile", "--device", "iphone14pro", "--model", "sd15-tiny", *TINY, "--backend", "import",
          "--component", "unet", "--from"]


def _tiny_spec(name: str = "tiny", **config) -> dict:
    d = json.loads((resources.files("snapbench.specs") / "presets" / "sd15-tiny.json").read_text())
    d["name"] = name
    d["base_config"].update(config)
    if config:
        d.pop("stages", None)
    return d


def _spec_file(file: str, name: str = "tiny", **config) -> Callable[[Path], None]:
    return lambda work: (work / file).write_text(json.dumps(_tiny_spec(name, **config)))


def _write(name: str, data: str | bytes) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        p = work / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def _dev_zero(name: str) -> Callable[[Path], None]:
    return lambda work: (work / name).symlink_to("/dev/zero")


@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    words: str  # in the last stderr line (code 2), or in stdout (code 0)
    setup: Callable[[Path], None] = lambda work: None
    memory: int = REFUSE_LIMIT
    timeout: float = 240
    marks: list = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    file_size: int | None = None  # RLIMIT_FSIZE: writes past it fail as on a full disk (EFBIG)


MARKUP = "[/bold] x"

CASES = [
    # 1. the size of a network built from user input is bounded before anything is allocated
    Case("hf-billion-layers", ["profile", "--model", 'hf:BertConfig:{"num_hidden_layers":1000000000}',
                               "--device", "iphone14pro", "--input", "1x8"], 2, "more than 20,000,000,000 parameters",
         marks=[pytest.mark.slow]),  # builds ~3,000 meta layers before the bound stops it (about 10 s)
    Case("spec-million-layers", ["inspect", "--model", "s.json"], 2, "blocks, far more than any real UNet",
         _spec_file("s.json", layers_per_block=1_000_000)),
    Case("spec-32m-channels", ["inspect", "--model", "s.json"], 2, "parameters, far more than any real network",
         _spec_file("s.json", block_out_channels=[32_000_000] * 4)),
    Case("spec-sample-size-1e6", ["inspect", "--model", "s.json"], 2, "one activation would hold",
         _spec_file("s.json", sample_size=1_000_000)),
    Case("convert-sample-size-1e6", ["convert", "--model", "s.json", "--out", "out"], 2, "one activation would hold",
         _spec_file("s.json", sample_size=1_000_000)),
    Case("synthetic-huge-conv", ["profile", "--model", "synthetic:conv-f100000-k3-l2", "--device", "iphone14pro",
                                 "--input", "1x3x64x64"], 2, "parameters, far more than any real network"),
    Case("no-size-limit-anywhere", ["inspect", "--model", "sd15-tiny", "--no-blocks", "--no-size-limit"], 0,
         "sd15-tiny", memory=RUN_LIMIT),
    Case("sd15-passes", ["inspect", "--model", "sd15", "--no-blocks"], 0, "859,520,964", memory=RUN_LIMIT),
    # 4. bad base_config values and keyword overrides: one line naming the field
    Case("negative-channels", ["inspect", "--model", "s.json"], 2, "block_out_channels is [-8, 16, 32, 32]",
         _spec_file("s.json", block_out_channels=[-8, 16, 32, 32])),
    Case("channels-not-divisible-by-groups", ["inspect", "--model", "s.json"], 2, "not divisible by norm_num_groups",
         _spec_file("s.json", block_out_channels=[10, 16, 32, 32])),
    Case("channels-as-string", ["inspect", "--model", "s.json"], 2, "block_out_channels is ['x', 16, 32, 32]",
         _spec_file("s.json", block_out_channels=["x", 16, 32, 32])),
    Case("sample-size-string", ["inspect", "--model", "s.json"], 2, "sample_size is 'big'",
         _spec_file("s.json", sample_size="big")),
    Case("hf-class-override", ["profile", "--model", 'hf:BertConfig:{"__class__":1}', "--device", "iphone14pro",
                               "--input", "1x8"], 2, "BertConfig refuses these options"),
    Case("hf-negative-width", ["profile", "--model", 'hf:BertConfig:{"hidden_size":-5}', "--device", "iphone14pro",
                               "--input", "1x8"], 2, "the options do not build a network"),
    Case("torchvision-classes-string", ["profile", "--model", 'torchvision:mobilenet_v2:{"num_classes":"x"}',
                                        "--device", "iphone14pro", "--input", "1x3x64x64"], 2,
         "the options do not build a network"),
    # 3. names are printed as written, never read as rich markup
    Case("markup-name-inspect", ["inspect", "--model", "m.json", *TINY], 0, MARKUP, _spec_file("m.json", MARKUP),
         memory=RUN_LIMIT),
    Case("markup-name-profile", ["profile", "--model", "m.json", "--device", "iphone14pro", *TINY], 0, MARKUP,
         _spec_file("m.json", MARKUP), memory=RUN_LIMIT, marks=[pytest.mark.slow]),
    Case("markup-name-convert", ["convert", "--model", "m.json", *TINY, "--out", "out"], 0, "packages for",
         _spec_file("m.json", MARKUP), memory=RUN_LIMIT, marks=[pytest.mark.slow]),
    # 4. broken files and a machine that refuses to write: one line, exit 2
    Case("truncated-safetensors", ["inspect", "--model", "sd15-tiny", "--weights", "w"], 2,
         "not a readable safetensors weights file", lambda work: _weights_folder(work, _truncated_safetensors())),
    Case("safetensors-huge-header", ["inspect", "--model", "sd15-tiny", "--weights", "w"], 2,
         "not a readable safetensors weights file",
         lambda work: _weights_folder(work, (2**62).to_bytes(8, "little") + b"{}")),
    Case("read-only-tables", ["profile", "--model", "sd15-tiny", *TINY, "--device", "iphone14pro", "--tables",
                              "/sys/snapbench-tables"], 2, "choose a writable folder", memory=RUN_LIMIT),  # before converting
    Case("read-only-cache", ["profile", "--model", "sd15-tiny", *TINY, "--device", "iphone14pro"], 2,
         "set $SNAPBENCH_CACHE to a writable folder", memory=RUN_LIMIT, env={"SNAPBENCH_CACHE": "/sys/snapbench-cache"}),
    Case("disk-full-convert", ["convert", "--model", "sd15-tiny", *TINY, "--out", "out"], 2, "file size limit",
         memory=RUN_LIMIT, file_size=16 * 1024, marks=[pytest.mark.slow]),
    # 7. import files as spreadsheets write them, and the mistakes that used to pass
    Case("import-unquoted-block-id", [*IMPORT, "m.csv"], 2, 'quote it ("CA[Down-1, 1]")',
         _write("m.csv", "block,latency_ms\nCA[Down-1, 1],61.2\n")),
    Case("import-byte-order-mark-then-1e308", [*IMPORT, "m.csv"], 2, "over an hour for one prediction",
         _write("m.csv", b"\xef\xbb\xbfblock,latency_ms\nup1_ca2,1e308\n")),
    Case("import-p90-below-median", [*IMPORT, "m.csv"], 2, "below the median",
         _write("m.csv", "block,latency_ms,p90_ms\nup1_ca2,60,50\n")),
    Case("import-two-units", [*IMPORT, "m.csv"], 2, "both give the latency",
         _write("m.csv", "block,latency_ms,latency_us\nup1_ca2,60,\n")),
    # 8. special files: a FIFO nobody writes to, /dev/zero behind every file option
    Case("fifo-spec", ["inspect", "--model", "fifo.json"], 2, "named pipe (FIFO) with nothing written",
         lambda work: os.mkfifo(work / "fifo.json")),
    Case("dev-zero-corpus", ["validate", "--corpus", "z.csv"], 2, "larger than 64 MB", _dev_zero("z.csv")),
    Case("dev-zero-measured", ["calibrate", "--measured", "z.csv"], 2, "larger than 64 MB", _dev_zero("z.csv")),
    Case("dev-zero-table", ["report", "--baseline", "sd15-tiny", "--device", "iphone14pro", "--table", "z.csv"], 2,
         "larger than 64 MB", _dev_zero("z.csv")),
    # 8. help says what it means
    Case("help-defaults-unescaped", ["profile", "--help"], 0, "[default: the plain file"),
    # already good in round 3; kept so they stay good
    Case("unknown-preset", ["inspect", "--model", "nope"], 2, "unknown model preset"),
    Case("deep-json-spec", ["inspect", "--model", "deep.json"], 2, "nested more than",
         _write("deep.json", "[" * 100_000 + "]" * 100_000)),
    Case("dev-zero-spec", ["inspect", "--model", "zero.json"], 2, "larger than 64 MB",
         _dev_zero("zero.json")),
    Case("pickle-weights-never-opened", ["inspect", "--model", "sd15-tiny", "--weights", "w"], 2,
         "never unpickles", _write("w/config.json", "{}")),
    Case("huge-input-shape", ["profile", "--model", "synthetic:conv-f8-k3-l1", "--device", "iphone14pro",
                              "--input", "1x3x100000x100000"], 2, "elements, above the"),
]


def _truncated_safetensors() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"w": torch.zeros(64, 64)})[:200]


def _weights_folder(work: Path, weights: bytes) -> None:
    (work / "w").mkdir()
    (work / "w" / "config.json").write_text(json.dumps(_tiny_spec()["base_config"]))
    (work / "w" / "diffusion_pytorch_model.safetensors").write_bytes(weights)


def _pickle_weights(case: Case) -> Case:
    base = case.setup

    def setup(work: Path) -> None:
        base(work)
        (work / "w" / "config.json").write_text(json.dumps(_tiny_spec()["base_config"]))
        (work / "w" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    case.setup = setup
    return case


CASES = [_pickle_weights(c) if c.id == "pickle-weights-never-opened" else c for c in CASES]


def _env(root: Path, env: dict[str, str] | None) -> dict[str, str]:
    full_env = dict(os.environ)
    full_env.update(SNAPBENCH_CACHE=str(root / "cache"), HOME=str(root / "home"), XDG_CACHE_HOME=str(root / "xdg"),
                    PYTHONWARNINGS="ignore", COLUMNS="200")
    full_env.update(env or {})
    return full_env


def run_cli(server: CliServer, args: list[str], work: Path, *, memory: int = REFUSE_LIMIT, timeout: float = 240,
            env: dict[str, str] | None = None, file_size: int | None = None) -> subprocess.CompletedProcess:
    """`snapbench ARGS` in a child process in `work` (forked from the session's CLI server, which imported
    torch once), its address space capped at `memory` bytes (and its files at `file_size`)."""
    return server.run(args, cwd=work, env=_env(work.parent, env), memory=memory, file_size=file_size,
                      timeout=timeout)


def run_console_script(args: list[str], work: Path, *, memory: int = REFUSE_LIMIT,
                       env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed console script itself in a fresh process (what a user starts), capped as run_cli's."""
    return subprocess.run([str(SNAPBENCH), *args], cwd=work, env=_env(work.parent, env), capture_output=True,
                          text=True, timeout=240,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (memory, memory)))


def check(r: subprocess.CompletedProcess, code: int, words: str) -> None:
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == code, r.stderr[-3000:]
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    if code == 2:
        # progress lines may come first when the fault comes late (a full disk); the last line says it all
        assert lines and lines[-1].startswith("error:"), r.stderr[-3000:]
        assert sum(line.startswith("error:") for line in lines) == 1, r.stderr[-3000:]
        assert words in lines[-1], lines[-1]
    elif code == 0:
        assert words in r.stdout, r.stdout[-3000:]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_hostile_input(tmp_path, case: Case, cli_server):
    work = tmp_path / "work"
    work.mkdir()
    case.setup(work)
    r = run_cli(cli_server, case.args, work, memory=case.memory, timeout=case.timeout, env=case.env, file_size=case.file_size)
    check(r, case.code, case.words)
    assert not list(tmp_path.rglob("*.lock")), "a lock left behind"


def test_cache_clean_refuses_while_a_run_uses_the_cache(tmp_path, cli_server):
    """6. A running snapbench (here a long train) holds the cache; `cache clean` refuses instead of deleting
    the packages under it, and cleans once the run is gone."""
    import time

    work = tmp_path / "work"
    work.mkdir()
    packages = tmp_path / "cache" / "packages" / "in-use"
    packages.mkdir(parents=True)
    env = dict(os.environ, SNAPBENCH_CACHE=str(tmp_path / "cache"), HOME=str(tmp_path / "home"),
               PYTHONWARNINGS="ignore")
    run = subprocess.Popen([str(SNAPBENCH), "train", "--model", "toy-digits", "--out", "run", "--steps", "100000"],
                           cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "cache" / ".snapbench-in-use.lock").exists():
            assert run.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        r = run_cli(cli_server, ["cache", "clean"], work, memory=RUN_LIMIT)
        check(r, 2, "another snapbench run is using the cache")
        assert packages.is_dir()
    finally:
        run.kill()
        run.wait()
    check(run_cli(cli_server, ["cache", "clean"], work, memory=RUN_LIMIT), 0, "removed")
    assert not packages.exists()


class _Evil:
    """Unpickles to a call of os.system: what a planted optimizer.pt would hold."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.slow
def test_a_run_folder_with_a_hostile_or_truncated_optimizer_state(tmp_path, cli_server):
    """4. A resumed train whose optimizer.pt is a planted pickle or a truncated file: one line, exit 2, and the
    pickle never runs. 4/8. `sample --out` into a read-only place: one line."""
    import pickle

    work = tmp_path / "work"
    work.mkdir()
    train = ["train", "--model", "toy-digits", "--out", "run", "--steps", "2", "--batch-size", "8", "--save-every", "1"]
    check(run_cli(cli_server, train, work, memory=RUN_LIMIT, timeout=600), 0, "")
    optimizer = work / "run" / "optimizer.pt"
    assert optimizer.is_file()
    resume = [*train[:5], "--steps", "4", *train[7:]]
    optimizer.write_bytes(pickle.dumps(_Evil()))
    check(run_cli(cli_server, resume, work, memory=RUN_LIMIT, timeout=600), 2, "not a readable optimizer state")
    assert not (work / "pwned").exists()
    optimizer.write_bytes(b"PK\x03\x04truncated")
    check(run_cli(cli_server, resume, work, memory=RUN_LIMIT, timeout=600), 2, "not a readable optimizer state")
    r = run_cli(cli_server, ["sample", "--model", "run", "--out", "/sys/snapbench-sample.png", "--prompt", "digit 3", "--per-prompt",
                 "1", "--steps", "2"], work, memory=RUN_LIMIT, timeout=600)
    check(r, 2, "choose a writable folder")
    assert not list(tmp_path.rglob("*.lock"))


def test_profile_names_the_shipped_table_where_it_is(tmp_path, cli_server):
    """8. From a folder with no tables, profile's figures come from the table shipped in the package; the
    path it prints (and puts in --json) is that file, not a relative path that does not exist here."""
    work = tmp_path / "work"
    work.mkdir()
    r = run_cli(cli_server, ["profile", "--model", "sd15", "--device", "iphone14pro", "--json"], work, memory=RUN_LIMIT)
    check(r, 0, '"table"')
    said = r.stderr.strip().splitlines()[-1]
    assert said.endswith(": every figure came from the table; nothing to write"), said
    shown = Path(said.split(": every figure")[0])
    assert shown.is_absolute() and shown.is_file(), said
    assert Path(json.loads(r.stdout)["table"]) == shown


def test_help_shows_defaults_and_flags_as_written(tmp_path):
    """8. Shared options' help is escaped once (it showed "\\[default: ...]"); a flag shows no "<bool>"."""
    work = tmp_path / "work"
    work.mkdir()
    r = run_console_script(["inspect", "--help"], work, env={"COLUMNS": "200"})
    check(r, 0, "[default: the plain file")
    assert "\\[" not in r.stdout
    flag_lines = [line for line in r.stdout.splitlines() if "--json" in line or "--no-blocks" in line]
    assert flag_lines and not any("<bool>" in line for line in flag_lines), flag_lines
