"""From command-line values to the objects the evolution functions take (shared by train / ablate /
evolve): evaluator configs, executors and cost models. Validation that needs no heavy work lives here so
bad input fails before any run state is touched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from snapbench.devices.catalog import Device
from snapbench.errors import SnapbenchError
from snapbench.evolution.budget import DEFAULT_TIE_MARGIN, EvalBudget
from snapbench.evolution.evaluators import ClipEvalConfig, EvalConfig, ToyEvalConfig, read_prompts
from snapbench.evolution.latency_costs import BlockPriceTable, FixedTable, costs_from_source, costs_from_table
from snapbench.json_types import JSONObject
from snapbench.specs.arch_spec import ArchSpec
from snapbench.training.toy_digits import CONTEXT_TOKENS, cache_dir, is_toy


def evaluator_config(name: str, *, prompts: str | None = None, clip_weights: str | None = None,
                     pipeline: str | None = None, samples_per_prompt: int | None = None, steps: int | None = None,
                     guidance: float | None = None, seed: int = 0) -> EvalConfig:
    if name == "toy":
        d = ToyEvalConfig()
        return ToyEvalConfig(samples_per_prompt or d.samples_per_prompt, steps or d.steps,
                             d.guidance if guidance is None else guidance, seed)
    if name == "clip":
        if prompts is None:
            raise SnapbenchError("--evaluator clip needs --prompts FILE (one prompt per line)")
        return ClipEvalConfig(read_prompts(prompts), clip_weights, pipeline, steps or 50,
                              7.5 if guidance is None else guidance, seed, samples_per_prompt or 1)
    raise SnapbenchError(f"unknown evaluator {name!r}; choose toy or clip")


def eval_budget(text: str, confidence: float, evaluator: EvalConfig,
                tie_margin: float = DEFAULT_TIE_MARGIN) -> EvalBudget:
    """--eval-budget / --eval-confidence / --eval-tie-margin, checked against the evaluator's samples before
    any run state."""
    budget = EvalBudget.parse(text, confidence, tie_margin)
    budget.rounds(evaluator.sample_count(), f" ({evaluator.describe_samples()})")
    return budget


def default_tokens(spec: ArchSpec) -> int:
    """The text length a model is priced at: the toy's 3 tokens, a DiT's own (its spec's), else CLIP's 77."""
    if is_toy(spec):
        return CONTEXT_TOKENS
    if "_class_name" in spec.base_config and spec.base_config["_class_name"] != "UNet2DConditionModel":
        from snapbench.dit.source import dit_spec

        return dit_spec(spec).text_tokens()
    return 77


def cost_builder(*, device: Device, table: str | None = None, fixed_table: str | None = None,
                 attention: str = "original", progress: bool = False,
                 say: Callable[[str], None] | None = None) -> Callable[[ArchSpec], BlockPriceTable]:
    """A function spec -> BlockPriceTable: from a fixed signature table (exact, nothing estimated) or from the
    latency table for `device` with labelled estimates for what it lacks
    (cached in the cache folder, snapbench.paths)."""
    if fixed_table is not None:
        src = FixedTable.from_csv(fixed_table)
        return lambda spec: costs_from_source(spec, src, device=device.id, tokens=default_tokens(spec),
                                              name=str(fixed_table))
    if table is not None and not Path(table).is_file():
        raise SnapbenchError(f"{table}: no such latency table")
    return lambda spec: costs_from_table(spec, device, table=table, tokens=default_tokens(spec), attention=attention,
                                         cache=cache_dir() / "latency", progress=progress, say=say)


def latency_settings(device: Device, table: str | None, fixed_table: str | None, attention: str) -> JSONObject:
    """What must stay the same for an evolution run to resume (the device by its catalog id, so another
    spelling of the same device resumes)."""
    return {"device": device.id, "table": table, "fixed_table": fixed_table, "attention": attention}
