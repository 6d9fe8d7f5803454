"""Everything the `iphone` and `mac` backends need from this machine, checked one by one with the fix.

`snapbench doctor` prints these checks; `snapbench profile --backend iphone|mac` runs the quick ones
before converting anything and stops at the first that fails, with its fix, in one line.

What coremltools 9 needs (read from its source): macOS with Core ML's native library (only the macOS
wheel ships `libcoremlpython`); for a phone, the model-runner Xcode project (only the macOS wheel ships
`coremltools/modelrunner/`), full Xcode (it runs `xcodebuild -workspace`, which the Command Line Tools'
stub cannot), `devicectl` callable by its bare name (it runs `devicectl device copy ...`, not `xcrun
devicectl`), a signing team (the project pins Apple's own), and an unlocked, trusting phone in Developer
Mode with iOS 17.4 or later.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from snapbench.errors import SnapbenchError
from snapbench.profilers.phones import Shell, SystemShell, iphones, list_attached, os_tuple
from snapbench.settings import MEASURING

MIN_MACOS = (14, 4)  # MLComputePlan (op placement) needs macOS 14.4
MIN_XCODE = 16
MIN_COREMLTOOLS = (9, 0)
# coremltools 9.0 publishes macOS arm64 wheels for CPython 3.10-3.13 (its files on PyPI); on any other
# Python pip builds the sdist, which lacks the native library (no prediction, no compute plan, no phone).
WHEEL_PYTHONS = ((3, 10), (3, 13))
MIN_FREE_GB = 20  # an SD-v1.5 conversion cache in fp16 plus the runner app's build
TEAM_ID_ENV = "SNAPBENCH_TEAM_ID"
_TEAM_ID = re.compile(r"^[A-Z0-9]{10}$")
EVERYWHERE = ("estimate", "import")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not checked (an earlier check it depends on failed, or not relevant here)
    detail: str  # what was found
    fix: str = ""  # what to do when not ok
    needed_for: tuple[str, ...] = MEASURING

    def line(self) -> str:
        return f"{self.name}: {self.detail}" + (f"; fix: {self.fix}" if self.fix and not self.ok else "")


@dataclass
class Machine:
    """What the checks look at; tests fill it by hand, `Machine.this()` reads this computer."""

    platform: str = sys.platform
    macos_version: str = ""
    shell: Shell = field(default_factory=SystemShell)
    coremltools_dir: Path | None = None
    coremltools_version: str = ""
    team_id: str | None = None
    cache_dir: Path = Path(".")
    free_bytes: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free
    python: tuple[int, int] = (sys.version_info.major, sys.version_info.minor)

    @staticmethod
    def this(team_id: str | None = None, cache_dir: Path | None = None) -> Machine:
        spec = importlib.util.find_spec("coremltools")  # located, not imported (importing takes seconds)
        ct_dir = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
        version = ""
        if ct_dir is not None and (ct_dir / "version.py").is_file():
            m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", (ct_dir / "version.py").read_text())
            version = m.group(1) if m else ""
        from snapbench.paths import cache_root

        return Machine(platform=sys.platform, macos_version=platform.mac_ver()[0], coremltools_dir=ct_dir,
                       coremltools_version=version, team_id=team_id or os.environ.get(TEAM_ID_ENV) or None,
                       cache_dir=cache_dir or cache_root())


def _not_here(m: Machine) -> str:
    return f"this machine runs {m.platform}; the iphone and mac backends need a Mac"


def check_macos(m: Machine) -> Check:
    if m.platform != "darwin":
        return Check("macOS", False, _not_here(m), "run `snapbench profile` on an Apple-silicon Mac with macOS "
                     f"{'.'.join(map(str, MIN_MACOS))}+ (here: --backend estimate or --backend import)")
    if os_tuple(m.macos_version) < MIN_MACOS:
        return Check("macOS", False, f"macOS {m.macos_version or '?'}",
                     f"update to macOS {'.'.join(map(str, MIN_MACOS))} or later (compute plans need it)")
    return Check("macOS", True, f"macOS {m.macos_version}")


def _pythons() -> str:
    lo, hi = WHEEL_PYTHONS
    return f"{lo[0]}.{lo[1]}-{hi[0]}.{hi[1]}"


def python_has_wheel(m: Machine) -> bool:
    lo, hi = WHEEL_PYTHONS
    return lo <= m.python <= hi


def check_python(m: Machine) -> Check:
    here = f"Python {m.python[0]}.{m.python[1]}"
    if python_has_wheel(m):
        return Check("Python", True, f"{here} (coremltools 9.0 has a macOS wheel for it)")
    lo, hi = WHEEL_PYTHONS
    return Check("Python", False, f"{here}: coremltools 9.0 ships macOS wheels for CPython {_pythons()} only; "
                 "pip builds it from source here, without Core ML's native library",
                 f"create the environment with Python {hi[0]}.{hi[1]} (`python{hi[0]}.{hi[1]} -m venv .venv` or "
                 f"`uv venv -p {hi[0]}.{hi[1]}`) and install snapbench there")


def check_coremltools(m: Machine) -> list[Check]:
    if m.coremltools_dir is None:
        return [Check("coremltools", False, "not installed", "pip install 'coremltools>=9.0'")]
    if os_tuple(m.coremltools_version) < MIN_COREMLTOOLS:
        return [Check("coremltools", False, f"coremltools {m.coremltools_version}",
                      "pip install -U 'coremltools>=9.0' (the remote-device API is new in 9.0)")]
    native = any(m.coremltools_dir.glob("libcoremlpython*"))
    wheel = "the macOS wheel" if native else "a wheel without Core ML's native library (not the macOS one)"
    fix = ("on the Mac: pip install --force-reinstall --no-cache-dir 'coremltools>=9.0' (a copied Linux "
           "environment lacks libcoremlpython)" if python_has_wheel(m) else
           f"reinstalling cannot help on Python {m.python[0]}.{m.python[1]}: use Python {_pythons()} (see the "
           "Python check)")
    checks = [Check("coremltools native library", native, f"coremltools {m.coremltools_version}, {wheel}", fix)]
    runner = m.coremltools_dir / "modelrunner" / "ModelRunner.xcworkspace"
    checks.append(Check("model-runner project", runner.is_dir(),
                        str(runner) if runner.is_dir() else f"{runner} is missing",
                        "install coremltools from its macOS wheel (only it ships modelrunner/)", ("iphone",)))
    return checks


def check_xcode(m: Machine) -> Check:
    code, path, _ = m.shell.run(["xcode-select", "-p"])
    path = path.strip()
    fix = (f"install Xcode {MIN_XCODE} or later from the App Store, then "
           "`sudo xcode-select -s /Applications/Xcode.app`")
    if code != 0 or not path:
        return Check("Xcode", False, "no developer directory selected", fix, ("iphone",))
    if ".app/" not in path + "/":
        return Check("Xcode", False, f"only the Command Line Tools are selected ({path}); coremltools "
                     "builds its runner app with full Xcode", fix, ("iphone",))
    code, text, stderr = m.shell.run(["xcodebuild", "-version"])
    found = re.search(r"Xcode\s+(\d+)(\.\d+)*", text)
    if code != 0 or not found:
        first = (stderr.strip().splitlines() or ["no version"])[0]
        return Check("Xcode", False, f"`xcodebuild -version` failed ({first})",
                     "open Xcode once to accept its license and install its components "
                     "(`sudo xcodebuild -runFirstLaunch`)", ("iphone",))
    if int(found.group(1)) < MIN_XCODE:
        return Check("Xcode", False, f"{found.group(0)} at {path}", fix, ("iphone",))
    return Check("Xcode", True, f"{found.group(0)} at {path}", needed_for=("iphone",))


def devicectl_dir(m: Machine) -> str | None:
    """The folder holding devicectl when it is not on PATH (full Xcode keeps it out of PATH)."""
    code, found, _ = m.shell.run(["xcrun", "--find", "devicectl"])
    return str(Path(found.strip()).parent) if code == 0 and found.strip() else None


def check_devicectl(m: Machine) -> Check:
    if m.shell.which("devicectl"):
        return Check("devicectl", True, f"on PATH ({m.shell.which('devicectl')})", needed_for=("iphone",))
    folder = devicectl_dir(m)
    if folder:
        # coremltools runs the bare name; `snapbench profile` puts this folder on PATH for its own run.
        return Check("devicectl", True, f"in {folder}, not on PATH: snapbench adds it for its own runs "
                     f"(for coremltools alone: export PATH=\"{folder}:$PATH\")", needed_for=("iphone",))
    return Check("devicectl", False, "not found (neither on PATH nor through xcrun)",
                 f"install Xcode {MIN_XCODE}+ (it ships devicectl) and select it with xcode-select",
                 ("iphone",))


def check_team(m: Machine) -> Check:
    fix = (f"pass --team-id (or set {TEAM_ID_ENV}) to your Apple Developer team id: Xcode > Settings > "
           "Accounts, or developer.apple.com > Membership; a free personal team works")
    if not m.team_id:
        return Check("signing team", False, "no team id", fix, ("iphone",))
    if not _TEAM_ID.match(m.team_id):
        return Check("signing team", False, f"{m.team_id!r} is not a team id (10 capital letters and digits)",
                     fix, ("iphone",))
    return Check("signing team", True, m.team_id, needed_for=("iphone",))


def check_phone(m: Machine) -> Check:
    try:
        phones = iphones(list_attached(m.shell))
    except SnapbenchError as e:
        return Check("iPhone", False, str(e), "run `xcrun devicectl list devices` to see what Xcode sees",
                     ("iphone",))
    if not phones:
        return Check("iPhone", False, "none attached", "plug the iPhone in with a cable, unlock it, tap Trust",
                     ("iphone",))
    problems = [p.problem() for p in phones]
    ready = [p for p, why in zip(phones, problems) if why is None]
    if not ready:
        why = problems[0] or ""
        what, _, fix = why.partition(": ")
        return Check("iPhone", False, what, fix, ("iphone",))
    p = ready[0]
    return Check("iPhone", True, f"{p.name} ({p.marketing_name or p.product_type}), iOS {p.os_version} "
                 f"({p.os_build}), Developer Mode on" + (f"; {len(ready) - 1} more" if len(ready) > 1 else ""),
                 needed_for=("iphone",))


def check_disk(m: Machine) -> Check:
    where = m.cache_dir if m.cache_dir.exists() else Path(".")
    free = m.free_bytes(where) / 1e9
    ok = free >= MIN_FREE_GB
    return Check("free disk", ok, f"{free:.0f} GB free at {where.resolve()}",
                 f"free {MIN_FREE_GB} GB or point SNAPBENCH_CACHE at a larger disk")


def run_checks(m: Machine, *, with_phone: bool = True) -> list[Check]:
    """Every check, in the order a person fixes them; later ones are skipped (ok None) once macOS fails."""
    mac = check_macos(m)
    checks = [mac]
    ct = check_coremltools(m)
    if mac.ok:
        checks += [check_python(m), *ct]
        xcode = check_xcode(m)
        checks += [xcode, check_devicectl(m), check_team(m)]
        if with_phone:
            checks.append(check_phone(m) if xcode.ok else
                          Check("iPhone", None, "not checked (needs Xcode)", needed_for=("iphone",)))
    else:
        checks += [Check(c.name, None, "not checked here", needed_for=c.needed_for)
                   for c in [check_python(m), *ct]]
        checks += [Check(n, None, "not checked here", needed_for=("iphone",))
                   for n in ("Xcode", "devicectl", "signing team", "iPhone")]
    checks.append(check_disk(m))
    return checks


def runnable(checks: list[Check]) -> dict[str, str | None]:
    """backend -> None when it can run here, else the first failing check's line."""
    out: dict[str, str | None] = {b: None for b in EVERYWHERE}
    for backend in MEASURING:
        failing = [c for c in checks if backend in c.needed_for and c.ok is False]
        out[backend] = failing[0].line() if failing else None
    return out


def blocking_check(m: Machine, backend: str) -> Check | None:
    """The first quick check (no phone) that stops `backend` here; None if none."""
    for c in run_checks(m, with_phone=False):
        if backend in c.needed_for and c.ok is False and c.name != "free disk":
            return c
    return None


def blocker(m: Machine, backend: str) -> str | None:
    """`blocking_check` as one line with its fix."""
    c = blocking_check(m, backend)
    return c.line() if c else None


def put_devicectl_on_path(m: Machine) -> str | None:
    """coremltools runs `devicectl` by its bare name; full Xcode keeps it out of PATH. Add its folder to
    this process's PATH (children inherit it) and return the folder, or None if nothing was needed."""
    if m.shell.which("devicectl"):
        return None
    folder = devicectl_dir(m)
    if folder:
        os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
    return folder
