"""Reading files a user named: a missing or unreadable file is one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path

from snapbench.errors import SnapbenchError


def read_user_text(path: str | Path, what: str) -> str:
    """The text of `path`; `what` names the file's role in the message ("latency table", "import file")."""
    p = Path(path)
    if p.is_dir():
        raise SnapbenchError(f"{p}: is a folder; give the {what} file")
    try:
        return p.read_text()
    except FileNotFoundError:
        raise SnapbenchError(f"{p}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SnapbenchError(f"{p}: cannot read {what} ({e})") from None
