"""The saved results and the training kNN the Probe page lists, as plain Python."""

import json

from app.model.probe_records import comparison, load_records, training_records


def write_events(run_dir, events):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def test_training_rows_are_first_best_and_last(tmp_path):
    run = tmp_path / "run"
    write_events(run, [{"type": "step", "step": 1, "loss": 1.0}] + [
        {"type": "eval", "epoch": e, "step": 10 * e, "knn_top1": a, "images": 500}
        for e, a in ((1, 0.806), (2, 0.9), (3, 0.872))] + ['{"type": "eval", "ep'])
    rows, summary = training_records(run)
    assert [r.checkpoint for r in rows] == ["epoch 1 (first)", "epoch 2 (best)",
                                            "epoch 3 (last)"]
    assert [r.result["top1"] for r in rows] == [0.806, 0.9, 0.872]
    assert all(r.kind == "kNN (training)" and r.from_training for r in rows)
    assert summary.first == 0.806 and summary.test == 100
    write_events(run, [{"type": "eval", "epoch": 1, "step": 5, "knn_top1": 0.7}])
    rows, _ = training_records(run)
    assert [r.checkpoint for r in rows] == ["epoch 1 (first, best, last)"]
    assert training_records(tmp_path / "none") == ([], None)


def test_the_comparison_pairs_results_measured_the_same_way(tmp_path):
    probes = tmp_path / "run" / "probes"
    probes.mkdir(parents=True)
    files = [  # oldest first
        ("probe-random-h-labels1", {"kind": "linear-probe", "checkpoint": "random",
                                    "top1": 0.95, "space": "h", "seed": 0, "test": 525}),
        ("probe-random-z-labels1", {"kind": "linear-probe", "checkpoint": "random",
                                    "top1": 0.70, "space": "z", "seed": 0, "test": 525}),
        ("probe-last-h-labels1", {"kind": "linear-probe", "checkpoint": "last",
                                  "top1": 0.947, "space": "h", "seed": 0, "test": 525}),
        ("knn-last-h", {"kind": "knn", "checkpoint": "last", "top1": 0.87, "space": "h"}),
    ]
    import os
    for i, (name, result) in enumerate(files):
        path = probes / f"{name}.json"
        path.write_text(json.dumps(result))
        os.utime(path, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
    records, damaged = load_records(tmp_path / "run")
    found = comparison(records)
    assert damaged == [] and found["probe"]["top1"] == 0.947
    assert found["probe_random"]["top1"] == 0.95  # the h-space one, not z
    assert found["knn"]["top1"] == 0.87 and found["knn_random"] is None
    assert comparison([]) == dict.fromkeys(("probe", "probe_random", "knn", "knn_random"))
