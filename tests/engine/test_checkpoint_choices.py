"""The run folder offers last.pt and the newest epoch file as one checkpoint when they hold
the same step (as their checkpoint events say), and as two when they do not."""

import json

from engine.run.layout import RunDir


def make_run(tmp_path, steps):
    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    events = []
    for name, step in steps:
        run.checkpoint(name).write_bytes(b"x")
        events.append({"v": 1, "type": "checkpoint", "path": str(run.checkpoint(name)),
                       "epoch": 1, "step": step})
    run.events.write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def test_last_and_the_newest_epoch_file_are_one_choice_when_the_same(tmp_path):
    run = make_run(tmp_path, [("epoch-0001", 6), ("last", 6), ("epoch-0002", 12), ("last", 12)])
    assert run.checkpoint_steps() == {"epoch-0001": 6, "epoch-0002": 12, "last": 12}
    assert run.checkpoint_choices() == [("last", "epoch 2 (last)"), ("epoch-0001", "epoch 1")]
    assert run.checkpoint_names() == ["epoch-0001", "epoch-0002", "last"]  # files unchanged


def test_a_later_last_is_its_own_choice(tmp_path):
    run = make_run(tmp_path, [("epoch-0001", 6), ("last", 9)])
    assert run.checkpoint_choices() == [("last", "last (step 9)"), ("epoch-0001", "epoch 1")]
    run.events.unlink()  # no events: nothing is merged on a guess
    assert run.checkpoint_choices() == [("last", "last"), ("epoch-0001", "epoch 1")]
