"""Reading files a user named: a missing, unreadable, endless or absurdly nested file is one clear line,
never a traceback (or a process the kernel kills after reading /dev/zero for minutes)."""

from __future__ import annotations

import json
import os
import select
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snapbench.errors import SnapbenchError

if TYPE_CHECKING:  # loaded when a file is read
    import torch
    from safetensors import safe_open

# Far above any real input (an SD arch spec is ~5 KB, a big latency table a few MB); override with
# $SNAPBENCH_MAX_INPUT_MB for an unusual one.
MAX_INPUT_BYTES = 64 * 1024 * 1024
# Specs nest about 5 levels; json and everything that walks the result recurse per level.
MAX_JSON_DEPTH = 64


def max_input_bytes() -> int:
    mb = os.environ.get("SNAPBENCH_MAX_INPUT_MB")
    try:
        return int(float(mb) * 1024 * 1024) if mb else MAX_INPUT_BYTES
    except ValueError:
        raise SnapbenchError(f"$SNAPBENCH_MAX_INPUT_MB={mb!r}: expected a number of megabytes") from None


def read_user_bytes(path: str | Path, what: str) -> bytes:
    """At most `max_input_bytes()` of `path` (a link to /dev/zero or a pipe that never ends stops there)."""
    p = Path(path)
    if p.is_dir():
        raise SnapbenchError(f"{p}: is a folder; give the {what} file")
    limit = max_input_bytes()
    try:
        if stat.S_ISFIFO(p.stat().st_mode):
            data = _read_pipe(p, what, limit)
        else:
            with open(p, "rb") as f:
                data = f.read(limit + 1)
    except FileNotFoundError:
        raise SnapbenchError(f"{p}: no such {what}") from None
    except OSError as e:
        raise SnapbenchError(f"{p}: cannot read {what} ({e.strerror or e})") from None
    if len(data) > limit:
        size = f"{limit / (1024 * 1024):.0f} MB" if limit >= 1024 * 1024 else f"{limit} bytes"
        raise SnapbenchError(f"{p}: larger than {size}, more than any {what} holds "
                             "(is it the right file? raise $SNAPBENCH_MAX_INPUT_MB if it is)")
    return data


# A named pipe nobody writes to would block a plain open() forever.
PIPE_WAIT_S = 5.0


def _read_pipe(p: Path, what: str, limit: int) -> bytes:
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # returns at once, writer or not
    try:
        ready, _, _ = select.select([fd], [], [], PIPE_WAIT_S)
        if not ready:
            raise SnapbenchError(f"{p}: a named pipe (FIFO) with nothing written to it for {PIPE_WAIT_S:.0f} s; "
                                 f"give the {what} as a file")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_user_text(path: str | Path, what: str) -> str:
    """The text of `path`; `what` names the file's role in the message ("latency table", "import file")."""
    data = read_user_bytes(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SnapbenchError(f"{path}: cannot read {what} (not UTF-8 text: {e.reason} at byte {e.start})") from None


def parse_user_json(text: str, source: str) -> Any:
    """json.loads with a one-line error for bad JSON and for nesting deeper than MAX_JSON_DEPTH."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SnapbenchError(f"{source}: line {e.lineno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        data = None
        too_deep = True
    else:
        too_deep = json_depth(data) > MAX_JSON_DEPTH
    if too_deep:
        raise SnapbenchError(f"{source}: JSON nested more than {MAX_JSON_DEPTH} levels deep; "
                             "not a snapbench file (check that it is the right one)")
    return data


def read_user_json(path: str | Path, what: str) -> Any:
    return parse_user_json(read_user_text(path, what), str(path))


def json_depth(data: object) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def _unreadable(path: str | Path, what: str, e: BaseException, fix: str) -> SnapbenchError:
    from snapbench.errors import first_line

    return SnapbenchError(f"{path}: not a readable {what} ({type(e).__name__}: "
                          f"{first_line(e, default='unreadable')[:160]}); {fix}")


_SAFETENSORS_FIX = "it is truncated or not safetensors; save it again (diffusers save_pretrained(safe_serialization=True))"


def load_safetensors(path: str | Path, what: str = "safetensors weights file") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a truncated file or one with a lying header is one line."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise SnapbenchError(f"{path}: no such {what}") from None
    except Exception as e:  # safetensors raises SafetensorError (HeaderTooLarge, InvalidHeader...), OSError
        raise _unreadable(path, what, e, _SAFETENSORS_FIX) from None


def open_safetensors(path: str | Path, what: str = "safetensors weights file") -> safe_open:
    """A lazy safetensors handle (`keys()`, `get_slice`, `get_tensor`), opened with errors as one line."""
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise SnapbenchError(f"{path}: no such {what}") from None
    except Exception as e:
        raise _unreadable(path, what, e, _SAFETENSORS_FIX) from None


def load_torch_state(path: str | Path, what: str, fix: str) -> Any:
    """A state dict torch saved, read with weights_only=True (never an arbitrary pickle): a truncated or
    hostile file is one line saying `fix`, never a traceback."""
    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise SnapbenchError(f"{path}: no such {what}") from None
    except Exception as e:  # UnpicklingError (refused globals), EOFError / RuntimeError (truncated zip)
        raise _unreadable(path, what, e, fix) from None
