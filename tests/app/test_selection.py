"""The shared selection: combining modes and the description of where it came from."""

import numpy as np
import pytest

from app.model.selection import ADD, INTERSECT, REMOVE, Selection, as_indices, combine


def test_as_indices_sorts_and_dedupes():
    assert as_indices([5, 1, 5, 3]).tolist() == [1, 3, 5]
    assert as_indices(np.array([[2, 2], [0, 1]])).dtype == np.int64


@pytest.mark.parametrize("mode,expected", [("replace", [4, 5]), (ADD, [1, 2, 3, 4, 5]),
                                           (REMOVE, [1, 2, 3]), (INTERSECT, [])])
def test_combine_matches_python_sets(mode, expected):
    current, new = as_indices([1, 2, 3]), as_indices([4, 5])
    assert combine(current, new, mode).tolist() == expected
    current2 = as_indices([1, 2, 3, 4])
    want = {"replace": {4, 5}, ADD: {1, 2, 3, 4, 5}, REMOVE: {1, 2, 3}, INTERSECT: {4}}[mode]
    assert set(combine(current2, new, mode).tolist()) == want


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="lasso-ish"):
        combine(as_indices([1]), as_indices([2]), "lasso-ish")


def test_selection_signals_only_on_change(qtbot):
    sel = Selection()
    seen = []
    sel.changed.connect(lambda: seen.append(sel.indices.tolist()))
    sel.set([3, 1], source="lasso")
    sel.set([1, 3], source="lasso")  # same set, same source: no signal
    sel.set([7], ADD, "class cat")
    sel.set([1], REMOVE, "tag blurry")
    assert seen == [[1, 3], [1, 3, 7], [3, 7]]
    assert sel.source == "lasso + class cat - tag blurry"
    assert 7 in sel and 1 not in sel
    assert sel.mask(5).tolist() == [False, False, False, True, False]
    sel.clear()
    assert len(sel) == 0 and sel.source == ""
