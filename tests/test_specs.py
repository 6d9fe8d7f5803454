import json

import pytest

from snapbench.errors import SnapbenchError
from snapbench.specs.arch_spec import ArchSpec, BlockChoice, load_spec, save_spec
from snapbench.specs.presets import load_preset, preset_names
from snapbench.specs.stages import STAGES

# Paper Table 3: (CA, RB) per stage, SD-v1.5 -> SnapFusion
TABLE3 = {
    "Down-1": ((2, 2), (0, 2)),
    "Down-2": ((2, 2), (2, 2)),
    "Down-3": ((2, 2), (2, 1)),
    "Mid": ((1, 7), (1, 4)),
    "Up-1": ((3, 3), (6, 2)),
    "Up-2": ((3, 3), (3, 3)),
    "Up-3": ((3, 3), (0, 3)),
}


def test_all_presets_parse_and_round_trip(tmp_path):
    names = preset_names()
    for required in ("sd15", "sd21base", "snapfusion", "bk-sdm-base", "bk-sdm-small", "bk-sdm-tiny"):
        assert required in names
    for name in names:
        spec = load_preset(name)
        path = save_spec(spec, tmp_path / f"{name}.json")
        again = load_spec(path)
        assert again.to_dict() == spec.to_dict()


@pytest.mark.parametrize("preset,column", [("sd15", 0), ("snapfusion", 1), ("sd15-tiny", 0), ("snapfusion-tiny", 1)])
def test_stage_counts_match_paper_table3(preset, column):
    counts = load_preset(preset).counts()
    for stage in STAGES:
        ca, rb = TABLE3[stage][column]
        assert counts[stage] == {"CA": ca, "RB": rb}, stage


def test_snapfusion_description_states_the_placement():
    spec = load_preset("snapfusion")
    assert "does not say which blocks" in spec.description
    assert spec.notes["paper_claimed_params"] == 848_000_000


def _spec_dict():
    return load_preset("sd15-tiny").to_dict()


@pytest.mark.parametrize("mutate,fragment", [
    (lambda d: d.pop("base_config"), "base_config: missing"),
    (lambda d: d["stages"].__setitem__("Down-9", []), "stages.Down-9: unknown stage"),
    (lambda d: d["stages"]["Down-1"].pop(), "stages.Down-1: missing ['CA2']"),
    (lambda d: d["stages"]["Down-1"][0].__setitem__("copies", -1), "stages.Down-1[0].copies"),
    (lambda d: d["stages"]["Down-1"][0].__setitem__("keep", "no"), "stages.Down-1[0].keep"),
    (lambda d: d["stages"]["Up-1"][0].__setitem__("colour", 1), "unknown field"),
    (lambda d: d["base_config"].__setitem__("down_block_types", ["AttnDownBlock2D"] * 4), "base_config"),
    (lambda d: d["stages"]["Down-1"].reverse(), "out of execution order"),
])
def test_malformed_spec_names_file_and_field(tmp_path, mutate, fragment):
    d = _spec_dict()
    mutate(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(SnapbenchError) as e:
        load_spec(p)
    assert str(p) in str(e.value) and fragment in str(e.value)


def test_invalid_json_reports_line(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{\n  "name": "x",\n  oops\n}')
    with pytest.raises(SnapbenchError, match=r"line 3"):
        load_spec(p)


def test_with_choices_makes_new_spec():
    spec = load_preset("sd15-tiny")
    new = spec.with_choices("x", {("Up-1", "CA1"): BlockChoice("CA1", copies=2)})
    assert new.counts()["Up-1"]["CA"] == 5 and spec.counts()["Up-1"]["CA"] == 3
    assert isinstance(ArchSpec.from_dict(new.to_dict()), ArchSpec)
