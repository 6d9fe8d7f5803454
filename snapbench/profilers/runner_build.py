"""When coremltools' model-runner app must be built again.

coremltools reuses any `*.app` under its build folder unless it is asked for a clean build
(`_AppBuilder.build`: `next(build_path.rglob("*.app"))`), so a half-signed build, an app signed by another
team, or a free team's app whose provisioning profile expired (free profiles last 7 days) would be
installed again and again. snapbench writes what it built the app with next to it (`snapbench-runner.json`)
and asks for a clean build when any of it changed, when the app's embedded profile has expired, or when
the user passes `--rebuild-runner`.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from snapbench.atomic import atomic_write_text

if TYPE_CHECKING:
    from snapbench.profilers.phones import Shell

STAMP = "snapbench-runner.json"
_EXPIRY = re.compile(rb"<key>ExpirationDate</key>\s*<date>([^<]+)</date>")


@dataclass(frozen=True)
class RunnerStamp:
    """What the runner app in a build folder was built with."""

    team_id: str
    bundle_id: str
    xcode: str  # "Xcode 16.1"
    coremltools: str  # "9.0"


def read_stamp(folder: Path) -> RunnerStamp | None:
    try:
        return RunnerStamp(**json.loads((folder / STAMP).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_stamp(folder: Path, stamp: RunnerStamp) -> None:
    atomic_write_text(folder / STAMP, json.dumps(asdict(stamp), indent=1) + "\n")


def profile_expiry(folder: Path) -> _dt.datetime | None:
    """The expiry date of the provisioning profile embedded in the built app (a signed plist: its XML is
    readable in the signed blob), or None when there is none."""
    for profile in folder.rglob("*.app/embedded.mobileprovision"):
        m = _EXPIRY.search(profile.read_bytes())
        if m:
            try:
                return _dt.datetime.fromisoformat(m.group(1).decode().replace("Z", "+00:00"))
            except ValueError:
                return None
    return None


def rebuild_reason(folder: Path, want: RunnerStamp, now: _dt.datetime | None = None) -> str | None:
    """Why the app built in `folder` must not be reused; None when it may be (or nothing is built yet)."""
    if not folder.is_dir() or next(folder.rglob("*.app"), None) is None:
        return None  # coremltools builds it anyway
    have = read_stamp(folder)
    if have is None:
        return "no record of what it was built with"
    for name, label in (("team_id", "signing team"), ("bundle_id", "bundle id"), ("xcode", "Xcode"),
                        ("coremltools", "coremltools")):
        old, new = getattr(have, name), getattr(want, name)
        if old != new:
            return f"the {label} changed ({old} -> {new})"
    expiry = profile_expiry(folder)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if expiry is not None and expiry <= now:
        return f"its provisioning profile expired on {expiry.date().isoformat()}"
    return None


def built_bundle_ids(root: Path) -> list[str]:
    """Bundle ids of the runner apps built under `root` (the cache's `modelrunner/` folder)."""
    ids = {s.bundle_id for s in (read_stamp(f) for f in sorted(root.glob("*")) if f.is_dir()) if s is not None}
    return sorted(ids)


def remove_from_phone(shell: Shell, udid: str, bundle_id: str) -> str | None:
    """Uninstall the runner app from one phone: iOS deletes its container (every model and input copied
    there) with it. None on success, else devicectl's reason. A free team's next run asks for the trust again."""
    code, _, err = shell.run(["xcrun", "devicectl", "device", "uninstall", "app", "--device", udid, bundle_id],
                             timeout_s=120)
    if code == 0:
        return None
    return (err.strip().splitlines() or [f"exit code {code}"])[-1]
