"""Evolution's small types: priced blocks know the block they copy, trajectory rows compute their value."""

from __future__ import annotations

from types import SimpleNamespace

from snapbench.evolution.latency_costs import BlockPriceTable, FixedTable, Priced, _assemble, _priced
from snapbench.evolution.trajectory import TRAJECTORY_COLUMNS, TrajectoryRow, trajectory_csv


def _b(id_, status, ms, kind="CA", stage="Up-1", backend="estimate"):
    return SimpleNamespace(id=id_, status=status, latency_ms=ms, backend=backend, kind=kind, stage=stage)


def test_a_copy_is_priced_as_the_block_it_follows():
    rows = _priced([_b("ConvIn", "kept", 1.0, kind="aux", stage="Down-1"), _b("CA[Up-1, 1]", "kept", 5.0),
                    _b("CA[Up-1, 1] (copy 1)", "copy", 4.0), _b("RB[Up-1, 2]", "kept", 3.0, kind="RB"),
                    _b("RB[Up-1, 2] (copy 1)", "copy", 2.5, kind="RB")])
    assert [r.original_id for r in rows] == ["ConvIn", "CA[Up-1, 1]", "CA[Up-1, 1]", "RB[Up-1, 2]", "RB[Up-1, 2]"]
    variants = {
        "kept": [rows[0], rows[1], rows[3]],
        "removed": [Priced("CA[Up-1, 1]", "CA[Up-1, 1]", "removed", 0.0, None, "CA", "Up-1"),
                    Priced("RB[Up-1, 2]", "RB[Up-1, 2]", "removed", 0.5, "estimate", "RB", "Up-1")],
        "copied": [rows[2], rows[4]],
    }
    table = _assemble("iphone14pro", variants, "test", {})
    assert isinstance(table, BlockPriceTable) and table.aux_ms == 1.0
    assert table.blocks["CA[Up-1, 1]"].copy_ms == 4.0 and table.blocks["RB[Up-1, 2]"].removed_ms == 0.5
    assert BlockPriceTable.from_dict(table.to_dict()) == table


def test_fixed_table_names_a_missing_signature():
    import pytest

    from snapbench.errors import SnapbenchError

    with pytest.raises(SnapbenchError, match="no latency for signature x"):
        FixedTable({}).ms("x")


def test_trajectory_row_value_and_columns():
    row = TrajectoryRow.of(3, "remove", "A-", "CA[Up-3, 1]", 7.5, "estimate", 0.7, -0.01, -0.5, 0)
    assert row.value == -0.01 / -0.5
    assert TrajectoryRow.of(0, "train", "train", "", 7.5, "estimate", 0.7, 0.02, None, 10).value is None
    assert tuple(row.to_dict()) == TRAJECTORY_COLUMNS
    text = trajectory_csv([row.to_dict()])
    assert text.splitlines()[0] == ",".join(TRAJECTORY_COLUMNS) and text.splitlines()[1].startswith("3,remove,A-")
