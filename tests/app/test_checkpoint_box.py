"""The checkpoint drop-down lists a run's checkpoints newest first, then the baseline."""

import pytest

pytest.importorskip("PySide6")

from app.widgets.checkpoint_box import RANDOM_LABEL, CheckpointBox


def test_lists_checkpoints_and_keeps_the_choice(qtbot, trained_run):
    run_dir, _ = trained_run
    box = CheckpointBox()
    qtbot.addWidget(box)
    assert box.checkpoint() is None
    box.set_run(run_dir)
    assert [box.itemData(i) for i in range(box.count())] == ["last", "epoch-0002", "random"]
    assert box.itemText(2) == RANDOM_LABEL and box.checkpoint() == "last"
    box.set_checkpoint("random")
    (run_dir / "checkpoints" / "epoch-0002.pt").unlink()
    box.set_run(run_dir)
    assert box.count() == 2 and box.checkpoint() == "random"
    with pytest.raises(ValueError, match="no checkpoint 'epoch-0009'"):
        box.set_checkpoint("epoch-0009")
