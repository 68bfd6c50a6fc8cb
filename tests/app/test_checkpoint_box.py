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
    # last.pt holds the step of epoch-0002.pt (the run ended after epoch 2): one entry.
    assert [box.itemData(i) for i in range(box.count())] == ["last", "random"]
    assert box.itemText(0) == "epoch 2 (last)"
    assert box.itemText(1) == RANDOM_LABEL and box.checkpoint() == "last"
    with qtbot.waitSignal(box.currentIndexChanged):  # the name changed: listeners hear it
        box.set_checkpoint("epoch-0002")  # the same entry, under the file's own name
    assert box.currentIndex() == 0 and box.checkpoint() == "epoch-0002"
    box.set_run(run_dir)
    assert box.checkpoint() == "epoch-0002"
    box.set_checkpoint("random")
    (run_dir / "checkpoints" / "epoch-0002.pt").unlink()
    box.set_run(run_dir)
    assert box.count() == 2 and box.checkpoint() == "random"
    assert box.itemText(0).startswith("last")
    with pytest.raises(ValueError, match="no checkpoint 'epoch-0009'"):
        box.set_checkpoint("epoch-0009")


def test_last_newer_than_the_newest_epoch_is_its_own_entry(qtbot, trained_run):
    """A run stopped mid-epoch: last.pt (step 13) is newer than epoch-0002.pt (step 12)."""
    import json

    run_dir, _ = trained_run
    events = run_dir / "events.jsonl"
    last = str(run_dir / "checkpoints" / "last.pt")
    with events.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"v": 1, "type": "checkpoint", "path": last, "epoch": 2,
                            "step": 10**6}) + "\n")
    box = CheckpointBox()
    qtbot.addWidget(box)
    box.set_run(run_dir)
    assert [box.itemData(i) for i in range(box.count())] == ["last", "epoch-0002", "random"]
    assert box.itemText(0) == f"last (step {10**6})" and box.itemText(1) == "epoch 2"


def test_refresh_lists_new_checkpoints_and_picks_the_first_one(qtbot, tmp_path):
    """Selected before its first checkpoint, a run's box offers only the baseline; once
    checkpoints are written, refresh lists them and chooses the newest (then keeps the
    person's choice), signalling only when the choice changes."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    box = CheckpointBox()
    qtbot.addWidget(box)
    box.set_run(run_dir)
    assert [box.itemData(i) for i in range(box.count())] == ["random"]
    changes = []
    box.currentIndexChanged.connect(changes.append)
    assert box.refresh() is False and changes == []  # nothing new
    (run_dir / "checkpoints" / "epoch-0001.pt").write_bytes(b"x")
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
    assert box.refresh() is True and box.checkpoint() == "last" and len(changes) == 1
    assert box.itemText(box.count() - 1) == RANDOM_LABEL
    box.set_checkpoint("epoch-0001")
    changes.clear()
    (run_dir / "checkpoints" / "epoch-0002.pt").write_bytes(b"x")
    assert box.refresh() is False and box.checkpoint() == "epoch-0001" and changes == []
    assert [box.itemData(i) for i in range(box.count())] == [
        "last", "epoch-0002", "epoch-0001", "random"]
