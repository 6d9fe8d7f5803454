"""The small helpers that replaced copies: one first-line, one count format, one choice check, one
end-to-end budget."""

from __future__ import annotations

import pytest

from snapbench.choices import PRECISIONS, check_choice
from snapbench.errors import SnapbenchError, first_line
from snapbench.formatting import fmt_count
from snapbench.latency.end_to_end import image_budget


def test_first_line():
    assert first_line(ValueError("bad shape\n  long trace\n")) == "bad shape"
    assert first_line(ValueError(""), default="ValueError") == "ValueError"


def test_fmt_count():
    assert fmt_count(1_234_567) == "1.23M" and fmt_count(4100, "B") == "4.10kB" and fmt_count(12) == "12"
    assert fmt_count(None) == "-" and fmt_count(None, missing="—") == "—"


def test_check_choice_one_line_for_every_caller():
    assert check_choice("--precision", "fp16", PRECISIONS) == "fp16"
    with pytest.raises(SnapbenchError, match=r"--precision 'fp8' is not one of fp16, fp32"):
        check_choice("--precision", "fp8", PRECISIONS)
    with pytest.raises(SnapbenchError, match="--weight-bits True"):
        check_choice("--weight-bits", True, (16, 8, 1))  # True == 1, but a flag is not a bit width
    from snapbench.converters.options import ConvertOptions
    from snapbench.latency.table import Settings

    for make in (lambda: ConvertOptions(precision="fp8"), lambda: Settings(precision="fp8")):
        with pytest.raises(SnapbenchError, match="'fp8' is not one of fp16, fp32"):
            make()


def test_image_budget_is_the_papers_sum():
    b = image_budget(4.0, 200.0, 100.0, steps=8)
    assert (b.text_encoder_ms, b.unet_ms, b.total_ms, b.total_s) == (8.0, 1600.0, 1708.0, 1.708)


def test_checking_a_package_does_not_import_converting_one():
    """converters/checks.py and convert_package.py used to import each other; both now share package_io.py."""
    import subprocess
    import sys

    code = ("import sys, snapbench.converters.checks as c; c.PackageIO if hasattr(c, 'PackageIO') else None; "
            "print('snapbench.converters.convert_package' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
