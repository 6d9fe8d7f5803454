"""Compare two folders written by golden_outputs.sh: every JSON equal, key order included, once timestamps,
versions, the command line and the folders' own paths are set aside. Exit status: the number of files that differ."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

VOLATILE = {"created_at", "profile_created_at", "versions", "command"}


def clean(x: Any, root: str) -> Any:
    if isinstance(x, dict):
        return {k: clean(v, root) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [clean(v, root) for v in x]
    if isinstance(x, str):
        return re.sub(re.escape(root) + r"(\.tables|\.cache)?", "<OUT>", x)
    return x


def main(before: Path, after: Path) -> int:
    bad = 0
    for f in sorted(before.glob("*.json")):
        g = after / f.name
        if not g.exists():
            print("missing ", f.name)
            bad += 1
            continue
        # compared as text: dict equality would miss a change in key order, which changes the bytes
        same = (json.dumps(clean(json.loads(f.read_text()), str(before)))
                == json.dumps(clean(json.loads(g.read_text()), str(after))))
        identical = f.read_bytes() == g.read_bytes()
        print("same    " if same else "DIFFERS ", f.name, "(byte-identical)" if identical else "")
        bad += not same
    return bad


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
