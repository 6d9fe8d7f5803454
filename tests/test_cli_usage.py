"""The command line as a new user meets it: every command's --help and a tiny real run in a fresh process,
usage mistakes as a usage line and one error line (exit 2), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from snapbench.cli import USAGE_ERRORS, app, main


def _command_paths() -> list[list[str]]:
    """Every command and sub-command registered on the app, as argv prefixes."""
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd, prefix: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if not subs:
            paths.append(prefix)
            return
        for name, sub in subs.items():
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


def _run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snapbench.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_every_command_has_help_without_a_traceback(cli_server, tmp_path):
    """Each command's --help in its own child process (forked from the session's CLI server)."""
    paths = _command_paths()
    assert ["inspect"] in paths and ["cache", "info"] in paths and ["cache", "clean"] in paths
    results = [cli_server.run([*p, "--help"], cwd=tmp_path, env=dict(os.environ)) for p in paths]
    for path, r in zip(paths, results):
        assert r.returncode == 0, (path, r.stderr)
        assert "Traceback" not in r.stderr, (path, r.stderr)
        assert "Usage:" in r.stdout, path


@pytest.mark.slow
def test_tiny_real_invocations_from_another_folder(tmp_path, cli_server):
    """Run from a folder that is not the checkout: shipped data must be found through the package. Each run is
    a child process forked from the session's CLI server."""
    env = {**os.environ, "SNAPBENCH_CACHE": str(tmp_path / "cache")}
    runs = {
        "inspect": ["inspect", "--model", "sd15-tiny", "--latent", "8", "--no-blocks", "--json"],
        "devices": ["devices", "--json"],
        "cache": ["cache", "info", "--json"],
        "train": ["train", "--model", "toy-digits", "--steps", "1", "--batch-size", "4", "--out",
                  str(tmp_path / "toy"), "--json"],
    }
    results = {name: cli_server.run(args, cwd=tmp_path, env=env) for name, args in runs.items()}
    for name, r in results.items():
        assert r.returncode == 0, (name, r.stderr)
        assert "Traceback" not in r.stderr, (name, r.stderr)
        json.loads(r.stdout)  # results on stdout are the JSON document alone
    assert json.loads(results["cache"].stdout)["path"] == str(tmp_path / "cache")
    assert json.loads(results["train"].stdout)["step"] == 1


@pytest.mark.parametrize("argv, says", [
    (["profil"], "Did you mean 'profile'?"),
    (["profile", "--device", "iphone14pro", "--modle", "sd15"], "--model"),
    (["train", "--out", "x"], "Missing option '--model'"),
    (["inspect", "--batch", "two"], "Invalid value for '--batch'"),
    (["convert", "--out"], "requires an argument"),
    (["cache", "inf"], "Did you mean 'info'?"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and says in error_lines[0], err
    assert "--help" in error_lines[0]


def test_usage_errors_print_the_usage_line_in_a_real_process():
    r = _run(["profile", "--device", "iphone14pro", "--modle", "sd15"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0].startswith("Usage: snapbench profile")


def test_both_click_copies_are_caught(monkeypatch, capsys):
    """typer >= 0.22 raises its bundled click's exceptions; older typer raised click's. Both are usage errors."""
    import typer._click.exceptions as bundled

    import snapbench.commands.devices as devices

    classes = [bundled.UsageError]
    try:
        import click

        classes.append(click.UsageError)
    except ImportError:
        pass
    for cls in classes:
        assert cls in USAGE_ERRORS

        def boom(cls=cls):
            raise cls("something off")

        monkeypatch.setattr(devices, "list_devices", boom)
        assert main(["devices"]) == 2
        assert "error: something off" in capsys.readouterr().err


def test_json_output_has_no_float_noise(capsys):
    from snapbench.commands.common import print_json

    print_json({"a": 0.05170000000000001, "b": [1 / 3, 2.5, 7], "c": {"d": 1e-20 + 0.1}, "e": float("inf")})
    text = capsys.readouterr().out
    assert '"a": 0.0517' in text and "0.05170000000000001" not in text
    assert '0.333333333333' in text and '"d": 0.1' in text and "2.5" in text


def test_inspect_table_has_the_signature_column_its_help_promises(capsys):
    import hashlib

    assert main(["inspect", "--model", "sd15-tiny", "--latent", "8"]) == 0
    text = capsys.readouterr().out
    assert main(["inspect", "--model", "sd15-tiny", "--latent", "8", "--json"]) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    digests = {hashlib.sha1(b["signature"].encode()).hexdigest()[:12] for b in blocks if b["signature"]}
    assert "signature" in text and all(d in text for d in digests)
    assert len(digests) < len(blocks)  # blocks with one signature show one digest


@pytest.mark.parametrize("command, words", [
    ("profile", ("Import format", "latency_ms", "block", "signature")),
    ("calibrate", ("Measured format", "latency_ms", "component", "package")),
])
def test_input_formats_are_in_the_help(command, words, capsys):
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for w in words:
        assert w in text, w


@pytest.mark.parametrize("command, text", [("train", "[default: 1e-3 toy, 1e-5 else]"),
                                           ("ablate", "[toy: 8, clip: 1]"), ("inspect", "[default: main]")])
def test_bracketed_help_text_is_shown_not_eaten_as_markup(command, text, capsys, monkeypatch):
    from snapbench.cli import main

    monkeypatch.setenv("COLUMNS", "400")
    assert main([command, "--help"]) == 0
    assert text in capsys.readouterr().out


def test_no_help_shows_a_type_beside_a_flag(capsys, monkeypatch):
    """A flag takes no value: typer's "<bool>" must not stand beside any, in any command's help, the root's
    (--version, --help) and the groups' (cache, farm) included."""
    monkeypatch.setenv("COLUMNS", "400")
    shown = []
    for path in [[], *{tuple(p[:1]) for p in _command_paths() if len(p) > 1}, *_command_paths()]:
        assert main([*path, "--help"]) == 0, path
        text = capsys.readouterr().out
        assert "--help" in text, path
        shown += [(path, line) for line in text.splitlines() if "<bool>" in line]
    assert not shown, shown[:3]
    assert main(["evolve", "--help"]) == 0  # the non-flag types stay: a value's type is worth showing
    assert "<float>" in capsys.readouterr().out
