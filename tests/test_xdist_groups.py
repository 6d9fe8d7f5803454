"""`make test` keeps the tests of one shared conversion on one worker (`--dist loadgroup`, the groups named in
tests/conftest.py). When the installed pytest and pytest-xdist stop agreeing on where a test's id lives, nothing
is grouped: every worker converts every shared fixture itself, and the copies race in one cache folder."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("grouping-check")
def test_a_grouped_test_is_scheduled_by_its_group(request):
    if not request.config.getoption("loadgroup", False):
        pytest.skip("checks `make test`'s --dist loadgroup (under pytest-xdist)")
    import xdist

    # pytest-xdist schedules by the group it appends to the id; pytest 9.2 keeps the id where xdist 3.8 does not
    # write it (pyproject.toml pins pytest below 9.2 for that)
    assert request.node.nodeid.endswith("@grouping-check"), (
        f"pytest {pytest.__version__} with pytest-xdist {xdist.__version__} does not group tests: "
        f"{request.node.nodeid}")
