"""Reading back what snapbench wrote, typed at the edge (issue 19, step 6): the JSON helpers, a training
config and an evolution price table round-tripped through JSON, and the refusals of documents we did not
write. All in memory: no model is built."""

from __future__ import annotations

import json

import pytest

from snapbench.errors import SnapbenchError
from snapbench.evolution.latency_costs import BlockPrices, BlockPriceTable
from snapbench.evolution.robust_training import SkipProbabilities, TrainConfig
from snapbench.json_types import dataclass_from_json, json_int


def test_json_int_reads_whole_numbers_only():
    doc = {"samples": 12, "flag": True, "ratio": 0.5, "name": "x"}
    assert json_int(doc, "samples") == 12
    assert json_int(doc, "missing") == 0 and json_int(doc, "missing", 7) == 7
    # a bool is not a count, nor a float or a string: the default, not a coerced value
    assert json_int(doc, "flag", -1) == -1 and json_int(doc, "ratio", -1) == -1 and json_int(doc, "name", -1) == -1


def test_dataclass_from_json_ignores_unknown_fields_and_checks_values():
    skip = dataclass_from_json(SkipProbabilities, {"ca": 0.2, "rb": 0.3, "from_a_later_version": 1})
    assert skip == SkipProbabilities(0.2, 0.3)
    config = dataclass_from_json(TrainConfig, {"steps": 5}, skip=skip)
    assert config.steps == 5 and config.skip is skip
    with pytest.raises(SnapbenchError, match="learning rate"):  # the dataclass's own check still runs
        dataclass_from_json(TrainConfig, {"learning_rate": -1.0})


def test_train_config_round_trips_through_json_and_refuses_a_foreign_one():
    config = TrainConfig(steps=7, skip=SkipProbabilities(0.05, 0.2), robust=True, variant_moves=("mqa",))
    back = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config and isinstance(back.skip, SkipProbabilities) and back.variant_moves == ("mqa",)
    with pytest.raises(SnapbenchError, match="not one snapbench wrote"):
        TrainConfig.from_dict({"skip": [0.1, 0.1]})


def _table() -> BlockPriceTable:
    kept = BlockPrices("CA[Up-1, 1]", "Up-1", "CA", 2.0, 0.0, 2.1, ("estimate", None, "estimate"))
    return BlockPriceTable("iphone14pro", 1.5, ("estimate",), {kept.block_id: kept}, "test",
                           {"attention": "original"}, {'{"kv_heads": 1}': {kept.block_id: kept}})


def test_price_table_round_trips_through_the_state_file():
    table = _table()
    back = BlockPriceTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert back == table
    assert back.blocks["CA[Up-1, 1]"].backends == ("estimate", None, "estimate")


def test_a_price_row_without_a_kept_backend_is_refused():
    doc = json.loads(json.dumps(_table().to_dict()))
    doc["blocks"][0]["backends"] = [None, None, "estimate"]
    with pytest.raises(SnapbenchError, match="only the removed state may be null"):
        BlockPriceTable.from_dict(doc)
