"""Evolution's swap moves (`evolve --moves`): a block swapped for a cheaper SnapGen-style variant, priced
from the latency table when first met, weighed against removals by quality lost per ms saved."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

import pytest
import torch
from evolution_helpers import CA_MS, KindSource, PenaltyEval, toy_folder  # noqa: F401  (fixtures)

from snapbench.backbones import resolve_model
from snapbench.cli import main
from snapbench.errors import SnapbenchError
from snapbench.evolution.actions import Action, parse_action, shrinking_actions, swap_actions
from snapbench.evolution.batching import union_spec, variant_groups
from snapbench.evolution.evaluators import Quality
from snapbench.evolution.latency_costs import BlockPriceTable, costs_from_source
from snapbench.evolution.moves import MOVE_NAMES, check_moves_apply, parse_moves
from snapbench.specs.arch_spec import ArchSpec

# What each variant field does to a block's price under VariantSource (made-up, known in advance).
SCALE = {"separable=2": 0.6, "kv_heads=1": 0.9, "ff_mult=3": 0.85, "self_attn=0": 0.7}


class VariantSource(KindSource):
    """KindSource's prices, scaled down for every variant field a signature carries."""

    def ms(self, signature_key: str) -> tuple[float, str]:
        ms, backend = super().ms(signature_key)
        for field, scale in SCALE.items():
            if field in signature_key:
                ms *= scale
        return ms, backend


_COSTS: dict = {}


def variant_costs(spec: ArchSpec) -> BlockPriceTable:
    key = json.dumps(spec.to_dict()["stages"], sort_keys=True) + json.dumps(dict(spec.base_config), sort_keys=True)
    if key not in _COSTS:
        _COSTS[key] = costs_from_source(spec, VariantSource(), device="iphone14pro", tokens=3)
    return _COSTS[key]


@dataclass(frozen=True)
class SwapPenaltyEval(PenaltyEval):
    """PenaltyEval, minus `swap_penalty` per block that runs as a variant."""

    swap_penalty: float = 0.01

    def _quality(self, model, disabled: Collection[str]) -> float:
        swapped = sum(1 for u in model.elastic_units()
                      if not u.instance and u.file_id in model.variants and not (u.removed or u.block_id in disabled))
        return super()._quality(model, disabled) - self.swap_penalty * swapped

    def evaluate(self, bundle, model, disabled: Collection[str] = ()) -> Quality:
        return Quality(self._quality(model, disabled), {})


def test_moves_parse_and_unknown_names_are_one_line():
    assert parse_moves("mqa, remove") == ("remove", "mqa")
    assert parse_moves(None) == ("remove", "copy")
    with pytest.raises(SnapbenchError, match="unknown move 'shrink'.*remove, copy, separable, mqa, ffn, drop-self-attn"):
        parse_moves("remove,shrink")
    assert set(MOVE_NAMES) == {"remove", "copy", "separable", "mqa", "ffn", "drop-self-attn"}


def test_swap_actions_apply_round_trip_and_refuse_what_cannot_apply():
    spec = resolve_model("toy-digits-xl").spec
    acts = swap_actions(spec, ("separable", "mqa", "ffn", "drop-self-attn"))
    rb = sum(1 for a in acts if a.move == "separable")
    assert rb == 2 + 2 + 2 + 2 + 3 + 3 + 3  # every ResNet (Down-1..3, Mid, Up-1..3)
    # mqa only where a block has more than one head: toy-digits-xl has 2 and 4 heads at levels 2 and 3
    assert {a.move for a in acts if a.kind == "CA"} == {"mqa", "ffn", "drop-self-attn"}
    a = Action("S", "Up-1", "CA2", "mqa")
    assert a.label == "S:mqa CA[Up-1, 2]" and parse_action(a.label) == a
    swapped = a.apply(spec)
    assert swapped.stages["Up-1"][3].variant.kv_heads == 1 and swapped.stages["Up-1"][3].keep
    with pytest.raises(SnapbenchError, match="already has kv_heads=1"):
        a.apply(swapped)
    assert a not in shrinking_actions(swapped, ("remove", "mqa"))
    removed = Action("-", "Up-1", "CA2").apply(spec)
    with pytest.raises(SnapbenchError, match="removed"):
        a.apply(removed)
    # a swapped block can still be removed, and its removal is priced like any
    assert Action("-", "Up-1", "CA2") in shrinking_actions(swapped, ("remove", "mqa"))


def test_a_swap_that_applies_to_no_block_is_one_line():
    d = resolve_model("toy-digits-xl").spec.to_dict()
    d["base_config"]["attention_head_dim"] = 1
    one_head = ArchSpec.from_dict(d)
    from snapbench.backbones import backbone_for

    with pytest.raises(SnapbenchError, match="--moves mqa: applies to no block.*1 attention head"):
        check_moves_apply(("remove", "mqa"), one_head, backbone_for(one_head).removable(one_head))
    sd = resolve_model("toy-digits").spec
    check_moves_apply(("mqa", "separable"), sd, backbone_for(sd).removable(sd))


@pytest.mark.slow
def test_variants_are_priced_on_demand_and_round_trip():
    spec = resolve_model("toy-digits").spec
    prices = variant_costs(spec)
    swapped = Action("S", "Mid", "CA1", "ffn").apply(Action("S", "Mid", "CA1", "mqa").apply(spec))
    with pytest.raises(SnapbenchError, match="not priced"):
        prices.latency(swapped)
    assert [v.to_dict() for _, v in prices.missing_variants(swapped)] == [{"kv_heads": 1, "ff_mult": 3}]
    both = prices.with_variants(swapped, variant_costs)
    saved = prices.latency(spec) - both.latency(swapped)
    assert saved == pytest.approx(CA_MS * (1 - 0.9 * 0.85))
    assert both.with_variants(swapped, lambda s: pytest.fail("priced twice")) is both
    again = BlockPriceTable.from_dict(json.loads(json.dumps(both.to_dict())))
    assert again.latency(swapped) == pytest.approx(both.latency(swapped))
    # a spec that already runs variants (snapgen-style) is priced as it runs, not as its base blocks
    assert variant_costs(swapped).latency(swapped) == pytest.approx(both.latency(swapped))


def test_candidates_with_different_variants_batch_apart():
    spec = resolve_model("toy-digits").spec
    a = Action("S", "Mid", "CA1", "mqa").apply(spec)
    b = Action("-", "Up-1", "CA2").apply(spec)
    c = Action("-", "Up-1", "CA3").apply(a)  # toy-digits: Mid has RB1..RB7 and one CA
    assert variant_groups([spec, a, b, c]) == [[0, 2], [1, 3]]
    union, off = union_spec([a, c])
    assert union.stages["Mid"][3].variant.kv_heads == 1 and off == [frozenset(), frozenset({"CA[Up-1, 3]"})]


@pytest.mark.slow
def test_evolution_swaps_where_it_loses_less_per_ms_and_resumes(tmp_path, toy_folder):
    from snapbench.evolution.evolve import EvolveConfig, evolve
    from snapbench.evolution.executors import SerialExecutor

    torch.set_num_threads(1)
    spec = resolve_model(str(toy_folder)).spec
    full = variant_costs(spec).latency(spec)
    ev = SwapPenaltyEval((), default_penalty=0.5, swap_penalty=0.01)
    config = EvolveConfig(target_ms=full - 0.25, max_iterations=3, add_phase=False, moves=("remove", "mqa"))
    kills = []

    def kill_once(state):
        if not kills:
            kills.append(state.iteration)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evolve(toy_folder, tmp_path / "evo", config, evaluator=ev, costs=variant_costs, executor=SerialExecutor(),
               progress=False, after_iteration=kill_once)
    r = evolve(toy_folder, tmp_path / "evo", config, evaluator=ev, costs=variant_costs, executor=SerialExecutor(),
               progress=False)
    moves = [row["action"] for row in r.trajectory if row["phase"] == "remove"]
    # a swap saves 0.1 ms for 0.01 quality (0.1 per ms); a removal 1.0 ms for 0.5: swaps go first
    assert moves and set(moves) == {"S:mqa"} and len(moves) == 3
    assert r.final_latency_ms == pytest.approx(full - 3 * 0.1 * CA_MS)
    out = resolve_model(str(tmp_path / "evo")).spec
    assert sum(1 for cs in out.stages.values() for c in cs if c.variant.kv_heads == 1) == 3
    assert (tmp_path / "evo" / "variants.safetensors").is_file()
    state = json.loads((tmp_path / "evo" / ".evolve" / "state.json").read_text())
    assert state["costs"]["variant_blocks"]  # priced once, kept for a resumed run


def test_cli_unknown_move_is_one_line_exit_2(tmp_path, toy_folder, capsys):
    code = main(["evolve", "--model", str(toy_folder), "--out", str(tmp_path / "e"), "--target-fraction", "0.8",
                 "--moves", "remove,prune"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown move 'prune'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()


def test_separable_starts_from_the_dense_kernel():
    from torch import nn

    from snapbench.model.variants import ExpandedSeparableConv

    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    exact = ExpandedSeparableConv(4, 6, 9).init_from_dense(conv)  # 9 taps x 4 channels: every term fits
    x = torch.randn(2, 4, 8, 8)
    assert torch.allclose(exact(x), conv(x), atol=1e-5)
    fitted = ExpandedSeparableConv(4, 6, 2).init_from_dense(conv)
    fresh = ExpandedSeparableConv(4, 6, 2)
    assert (fitted(x) - conv(x)).norm() < (fresh(x) - conv(x)).norm()


def test_a_swapped_up_stage_resnet_can_be_copied():
    """An up-stage ResNet changes channels (its copy is rebuilt C_out -> C_out): a separable one too."""
    from snapbench.model.loading import ModelSource, build_unet

    spec = resolve_model("toy-digits").spec
    sep = Action("S", "Up-1", "RB1", "separable").apply(spec)
    copied = Action("+", "Up-1", "RB1").apply(sep)
    model = build_unet(ModelSource("t", copied), device="cpu")
    dup = model.copies["up1_rb1_copy1"]
    assert type(dup.conv1).__name__ == "ExpandedSeparableConv" and dup.conv1.in_channels == dup.conv2.out_channels
    out = model(torch.randn(1, 1, 8, 8), 5, torch.randn(1, 3, 32))
    assert out.shape == (1, 1, 8, 8)


def test_removing_or_copying_a_swapped_block_keeps_its_variant():
    spec = Action("S", "Mid", "CA1", "mqa").apply(resolve_model("toy-digits").spec)
    for a in (Action("-", "Mid", "CA1"), Action("+", "Mid", "CA1")):
        c = next(c for c in a.apply(spec).stages["Mid"] if c.block == "CA1")
        assert c.variant.kv_heads == 1
    back = Action("+", "Mid", "CA1").apply(Action("-", "Mid", "CA1").apply(spec))
    assert back.to_dict() == spec.to_dict()
