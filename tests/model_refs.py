"""Model references only the tests use.

SDXL_SHALLOW: sdxl-tiny with its ten-layer transformer blocks two layers deep (tests/sdxl-shallow.json; the
rest of the file is sdxl-tiny's preset, which tests/test_sdxl.py checks). Converting a whole SDXL-class UNet
is most of the suite's slowest tests, and nine of its ten transformer layers per block repeat what the first
does; tests whose subject is not depth (added inputs, recipes, fp16 folding, in-place rewrites, the app
interface) use this twin, a third of the CPU time. sdxl-tiny itself stays under test where depth is the
subject or costs little (cutting, inspect, elastic equality, its whole UNet once, `selftest`'s profile).
"""

from __future__ import annotations

from pathlib import Path

SDXL_SHALLOW = str(Path(__file__).with_name("sdxl-shallow.json"))
SDXL_SHALLOW_NAME = "sdxl-shallow"  # its spec's name: what recipes, tables and file names say
