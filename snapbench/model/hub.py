"""Hugging Face hub ids (`runwayml/stable-diffusion-v1-5`) resolved through the local Hugging Face cache.

Nothing is downloaded: a snapshot must already be in the cache ($HF_HUB_CACHE, $HF_HOME/hub, or
~/.cache/huggingface/hub), put there by `huggingface-cli download` or any `from_pretrained` on a machine
with network. A missing snapshot is one line saying how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path

from snapbench.errors import SnapbenchError


def hub_cache() -> Path:
    """The Hugging Face cache folder, read from the environment now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def local_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The folder of `repo_id`'s snapshot (`revision`: a branch, tag or commit; default main)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache()
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        at = f" at revision {revision}" if revision else ""
        raise SnapbenchError(
            f"{repo_id}: no such local folder, and no snapshot{at} in the local Hugging Face cache "
            f"({cache}); on a machine with network run `huggingface-cli download {repo_id}"
            f"{' --revision ' + revision if revision else ''} --include 'unet/*'` (or set HF_HUB_CACHE)") from None
    return Path(str(folder))
