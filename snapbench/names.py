"""File names made from names a user controls (a spec's `name`, a model argument): never a path.

A spec named `../../x` or `<script>` must not reach outside the folder it is placed in, nor create odd
files; names that had to be changed get a short hash of the original so two of them cannot collide.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME = 80


def safe_file_name(name: str, fallback: str = "model") -> str:
    """`name` itself when it is already a plain file name, else a cleaned name plus a hash of the original."""
    cleaned = _UNSAFE.sub("-", str(name)).strip("-.")[:MAX_NAME] or fallback
    if cleaned == name:
        return cleaned
    return f"{cleaned}-{hashlib.sha1(str(name).encode()).hexdigest()[:8]}"
