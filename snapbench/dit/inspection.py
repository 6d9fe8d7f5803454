"""A DiT block by block and stage by stage: ids, shapes, params, MACs, signatures, and the parameter count
set against the published one."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from snapbench.dit.cut import DitBlock, DitShapes, cut_dit, stage_names
from snapbench.dit.source import DitSource, resolve_dit


@dataclass
class DitInspection:
    source: DitSource
    shapes: DitShapes
    blocks: list[DitBlock]

    @property
    def name(self) -> str:
        return self.source.spec.name

    def block_rows(self) -> list[dict[str, Any]]:
        return [{
            "id": b.block_id, "file_id": b.unit.file_id, "stage": b.stage, "kind": b.kind, "status": b.unit.status,
            "module": b.unit.module_path, "inputs": {n: list(s) for n, s in b.inputs},
            "outputs": {n: list(s) for n, s in b.outputs}, "params": b.params, "macs": b.macs,
            "macs_no_attention": b.macs - b.attention_macs, "signature": b.signature.key(),
            "signature_digest": b.signature.digest(),
        } for b in self.blocks]

    def stage_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.block_rows())
        rows = []
        for stage in stage_names(self.source.spec.num_layers):
            s = df[df["stage"] == stage]
            rows.append({"stage": stage, "TB_count": int((s["kind"] == "TB").sum()),
                         "aux_count": int((s["kind"] == "aux").sum()), "params": int(s["params"].sum()),
                         "macs": int(s["macs"].sum()), "macs_no_attention": int(s["macs_no_attention"].sum()),
                         "signatures": int(s["signature"].nunique())})
        return pd.DataFrame(rows)

    def totals(self) -> dict[str, Any]:
        df = pd.DataFrame(self.block_rows())
        return {"params": int(df["params"].sum()), "macs": int(df["macs"].sum()),
                "macs_no_attention": int(df["macs_no_attention"].sum()), "blocks": len(df),
                "TB": int((df["kind"] == "TB").sum()), "signatures": int(df["signature"].nunique())}

    def published(self) -> dict[str, Any] | None:
        notes = self.source.spec.notes
        if "published_params" not in notes:
            return None
        pub = int(notes["published_params"])
        ours = self.totals()["params"]
        return {"params": pub, "label": notes.get("published_params_label", f"{pub:,}"),
                "source": notes.get("published_params_source"), "difference": (ours - pub) / pub}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "backbone": "dit", "class": self.source.spec.class_name,
                "source": self.source.ref, "description": self.source.spec.description,
                "weights": str(self.source.weights_dir) if self.source.weights_dir else None,
                "shapes": asdict(self.shapes), "totals": self.totals(), "published": self.published(),
                "stages": self.stage_frame().to_dict(orient="records"), "blocks": self.block_rows(),
                "notes": dict(self.source.spec.notes)}


def dit_shapes(source: DitSource, *, latent: int | None = None, batch: int = 2, tokens: int | None = None) -> DitShapes:
    """The shapes to cut at: the user's, else the model's own (its config's sample_size, its text length)."""
    spec = source.spec
    size = latent if latent is not None else int(spec.family.setting(spec.config, "sample_size"))
    return DitShapes(latent=size, batch=batch, tokens=tokens if tokens is not None else spec.text_tokens())


def inspect_dit(model: str | DitSource, *, latent: int | None = None, batch: int = 2, tokens: int | None = None,
                variant: str | None = None) -> DitInspection:
    source = model if isinstance(model, DitSource) else resolve_dit(model, variant=variant)
    shapes = dit_shapes(source, latent=latent, batch=batch, tokens=tokens)
    return DitInspection(source, shapes, cut_dit(source.spec, shapes))
