"""`cache clean` never deletes under a running snapbench: every run holds a shared lock on the cache folder,
and clean refuses while one does (real flock(2) across real processes)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from snapbench.cache_folder import cache_entries, clean_cache
from snapbench.errors import SnapbenchError
from snapbench.locks import CACHE_IN_USE

HOLD = """
import sys, time
from pathlib import Path
from snapbench.locks import cache_in_use
with cache_in_use(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_clean_refuses_while_a_run_uses_the_cache_and_cleans_after(tmp_path):
    (tmp_path / "packages" / "m").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(SnapbenchError, match="another snapbench run is using the cache"):
            clean_cache(tmp_path)
        assert (tmp_path / "packages" / "m").is_dir()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert [e.name for e in clean_cache(tmp_path)] == ["packages"]
    assert not (tmp_path / CACHE_IN_USE).exists() and cache_entries(tmp_path) == []  # it goes with the clean
    (tmp_path / CACHE_IN_USE).touch()
    assert cache_entries(tmp_path) == []  # and is never listed as content
