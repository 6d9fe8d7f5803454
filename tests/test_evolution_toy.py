"""The toy-digits demo: prompts, the judge, the toy evaluator, ablation."""

from __future__ import annotations

import json

import pytest
import torch
from evolution_helpers import TINY_EVAL, fixed_table_csv, toy_folder  # noqa: F401  (fixtures)

from snapbench.cli import main
from snapbench.errors import SnapbenchError
from snapbench.training.checkpoints import load_bundle
from snapbench.training.toy_digits import digit_images, load_classifier, tokenize


def test_prompts_tokenize_and_refuse_unknown_words():
    assert tokenize(["digit 7", ""]).tolist() == [[1, 2, 10], [1, 0, 0]]
    with pytest.raises(SnapbenchError, match="digit 0"):
        tokenize(["a photo of a cat"])


def test_classifier_is_cached_and_good(tmp_path):
    clf = load_classifier(tmp_path)
    assert clf.holdout_accuracy > 0.9
    assert list(tmp_path.glob("toy-digits-classifier-v*.npz"))
    again = load_classifier(tmp_path)  # read back from the npz
    x, y = digit_images()
    assert torch.equal(clf.probs(x[:50]).argmax(1), again.probs(x[:50]).argmax(1))
    assert (clf.probs(x).argmax(1) == y).float().mean() > 0.95


def test_toy_evaluator_is_deterministic_and_sees_removed_blocks(toy_folder):
    torch.set_num_threads(1)
    bundle = load_bundle(toy_folder)
    ev = TINY_EVAL.build()
    a, b = ev.evaluate(bundle, bundle.model), ev.evaluate(bundle, bundle.model)
    assert a == b and 0.0 <= a.quality <= 1.0
    assert a.details["images"] == 10 and len(a.details["per_digit"]) == 10
    c = ev.evaluate(bundle, bundle.model, disabled=("CA[Up-3, 1]",))
    assert c.quality != a.quality
    with pytest.raises(SnapbenchError, match="toy-digits"):
        TINY_EVAL.check(load_bundle("sd15-tiny").spec)


def test_ablate_cli_json(toy_folder, fixed_table_csv, capsys):
    assert main(["ablate", "--model", str(toy_folder), "--fixed-table", str(fixed_table_csv), "--block", "CA[Up-3, 1]",
                 "--block", "mid_rb2", "--samples-per-prompt", "1", "--eval-steps", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == ["RB[Mid, 2]", "CA[Up-3, 1]"]
    for r in rows:
        assert {"id", "stage", "kind", "latency_saved_ms", "quality_drop"} <= set(r)
        assert r["quality_drop"] == pytest.approx(r["full_quality"] - r["quality"])
    assert rows[1]["latency_saved_ms"] == pytest.approx(1.0) and rows[1]["kind"] == "CA"
