"""Cache keys: a package is re-made only when what produced it changed.

- profile mode: key = block signature (with precision / attention) + options + tool versions. Weights do
  not matter (latency does not depend on their values), so equal signatures share one package.
- deploy mode: key = the same + the block's weights hash.
- whole models: key = the model's config + weights fingerprint + options + versions.
Bump CONVERTER_FORMAT when the conversion code changes what it writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from snapbench.converters.options import ConvertOptions

CONVERTER_FORMAT = 1


def _digest(payload: object, size: int = 16) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def cache_key(what: Mapping[str, object], opts: ConvertOptions, versions: Mapping[str, str]) -> str:
    return _digest({"format": CONVERTER_FORMAT, "what": dict(what), "options": opts.cache_fields(),
                    "versions": dict(versions)})


def weights_hash(module: torch.nn.Module) -> str:
    """Content hash of a module's parameters and buffers (names, dtypes, shapes, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))  # no copy of the bytes
    return h.hexdigest()


def file_stat_fingerprint(paths: list[Path]) -> list[list[str | int]]:
    out: list[list[str | int]] = []
    for p in sorted(paths):
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out


def source_fingerprint(spec: Mapping[str, object], weight_files: list[Path], seed: int, torch_version: str) -> str:
    """Identifies a model's weights without reading them: the spec, and either the checkpoint files'
    (path, size, mtime) or, for seeded random weights, the seed and torch version that drew them.
    A deploy-mode re-run with the same fingerprint reuses the per-block weights hashes in the manifest
    instead of building the model to hash it again (seconds for SD-v1.5)."""
    weights: list[list[str | int]] | dict[str, int | str] = (
        file_stat_fingerprint(weight_files) if weight_files else {"random_seed": seed, "torch": torch_version})
    return _digest({"spec": dict(spec), "weights": weights})
