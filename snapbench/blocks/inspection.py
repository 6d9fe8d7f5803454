"""An exact block-by-block, stage-by-stage account of a UNet: ids, shapes, params, MACs, signatures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NotRequired, TypedDict

import pandas as pd

from snapbench.blocks.cut import CutBlock, InputShapes
from snapbench.json_types import JSONObject
from snapbench.model.loading import ModelSource
from snapbench.specs.stages import STAGES


class BlockRow(TypedDict):
    """One block as `inspect --json` lists it (and the report and the block tables read it)."""

    id: str
    file_id: str
    stage: str
    kind: str
    status: str
    module: str
    inputs: dict[str, list[int]]
    output: list[int]
    params: int
    macs: int
    macs_no_attention: int
    signature: str | None
    outputs: NotRequired[dict[str, list[int]]]  # a DiT block's named outputs
    variant: NotRequired[JSONObject]  # the cheaper variant it runs as (Variant.to_dict), when it is one


@dataclass
class Inspection:
    source: ModelSource
    shapes: InputShapes
    blocks: list[CutBlock]
    stages: tuple[str, ...] = field(default=STAGES)  # the backbone's stages, in execution order

    @property
    def name(self) -> str:
        return self.source.spec.name

    def block_rows(self) -> list[BlockRow]:
        rows: list[BlockRow] = []
        for b in self.blocks:
            u = b.unit
            row: BlockRow = {
                "id": u.block_id,
                "file_id": u.file_id,
                "stage": u.slot.stage,
                "kind": b.kind,
                "status": u.status,
                "module": u.slot.module_path,
                "inputs": {n: list(s) for n, s in b.inputs},
                "output": list(b.output),
                "params": b.params,
                "macs": b.macs,
                "macs_no_attention": b.macs - b.attention_macs,
                "signature": b.signature.key() if b.signature else None,
            }
            if b.outputs is not None:
                row["outputs"] = {n: list(sh) for n, sh in b.outputs}
            variant = self.source.spec.choice(u.slot).variant if u.slot.kind != "aux" else None
            if variant is not None and not variant.is_default:  # only then: other models' rows stay as they were
                row["variant"] = variant.to_dict()
            rows.append(row)
        return rows

    def blocks_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.block_rows())

    def stage_frame(self) -> pd.DataFrame:
        """Per paper stage: counts, params and MACs of CA, RB and auxiliary blocks (blocks that run)."""
        df = self.blocks_frame()
        runs = df[df["status"] != "removed"]
        rows = []
        for stage in self.stages:
            s = df[df["stage"] == stage]
            r = runs[runs["stage"] == stage]
            row: dict[str, str | int] = {"stage": stage}
            for kind in self.kinds():
                k = s[s["kind"] == kind]
                row[f"{kind}_count"] = int((r["kind"] == kind).sum())
                row[f"{kind}_params"] = int(k["params"].sum())
                row[f"{kind}_macs"] = int(k["macs"].sum())
            row["params"] = int(s["params"].sum())
            row["macs"] = int(s["macs"].sum())
            row["macs_no_attention"] = int(s["macs_no_attention"].sum())
            rows.append(row)
        return pd.DataFrame(rows)

    def kinds(self) -> tuple[str, ...]:
        """The block kinds counted per stage: a UNet's CA, RB and aux; a DiT's transformer blocks (TB) and aux."""
        present = {b.kind for b in self.blocks}
        return tuple(k for k in ("CA", "RB", "TB", "aux") if k in present or (k != "TB" and "TB" not in present))

    def totals(self) -> dict[str, int]:
        df = self.blocks_frame()
        out = {
            "params": int(df["params"].sum()),
            "macs": int(df["macs"].sum()),
            "macs_no_attention": int(df["macs_no_attention"].sum()),
            "blocks": int((df["status"] != "removed").sum()),
        }
        for kind in self.kinds():
            if kind != "aux":
                out[kind] = int(((df["kind"] == kind) & (df["status"] != "removed")).sum())
        out["signatures"] = int(df["signature"].nunique())
        return out

    def to_dict(self) -> dict[str, object]:  # written as JSON (inspect --json): values passed through
        return {
            "model": self.name,
            "source": self.source.ref,
            "description": self.source.spec.description,
            "weights": str(self.source.weights_dir) if self.source.weights_dir else None,
            "shapes": asdict(self.shapes),
            "totals": self.totals(),
            "stages": self.stage_frame().to_dict(orient="records"),
            "blocks": self.block_rows(),
            "notes": dict(self.source.spec.notes),
        }
