"""Checks of the CLI's promise for bad input, shared by test modules: one line, exit 2, no traceback."""

from __future__ import annotations

from snapbench.cli import main


def one_error_line(capsys, argv: list[str]) -> str:
    """Run the CLI in-process on argv; assert it refused in one line with exit 2 and return that line."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and "Traceback" not in err[0]
    return err[0]
