"""What every conversion hands back, whatever it converted: one `ConvertResult`.

Blocks of a UNet or a DiT, one whole model or pipeline part, or the app pipeline all end as a folder of
packages and its manifest; the result says which blocks (or parts) this run converted, took from the
cache or failed on, and, for the app pipeline, which parts the model folder lacked, which packages were
compiled and what the user should know (notes). Empty lists where a kind has nothing to say.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from snapbench.converters.manifest import Manifest
from snapbench.json_types import JSONObject


@dataclass
class ConvertResult:
    manifest: Manifest
    converted: list[str] = field(default_factory=list)  # block ids whose package was made in this run
    reused: list[str] = field(default_factory=list)  # block ids whose package came from the cache
    failed: list[tuple[str, str]] = field(default_factory=list)  # (block id, error)
    missing: list[str] = field(default_factory=list)  # parts the model folder lacks (converted: the rest)
    compiled: list[str] = field(default_factory=list)  # .mlmodelc folders written (the app pipeline)
    notes: list[str] = field(default_factory=list)  # for the user, one line each (stderr)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def packages(self) -> int:
        """Packages in the folder (profile mode shares one package between blocks of one signature)."""
        return len({b.package for b in self.manifest.blocks if b.package})

    def to_dict(self) -> JSONObject:
        return {"converted": list(self.converted), "reused": list(self.reused), "packages": self.packages,
                "failed": [{"block": b, "error": e} for b, e in self.failed], "manifest": self.manifest.to_dict(),
                "missing": list(self.missing), "compiled": list(self.compiled), "notes": list(self.notes)}
