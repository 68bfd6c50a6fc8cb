"""The command line in a terminal: human output only (a progress bar, a line per epoch, a
summary with the next commands), JSON lines on a pipe or with --json, and bad input refused
before torch is imported."""

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli.terminal import TerminalReport
from engine.cli.text import clock, duration
from engine.run.events import EventWriter
from tests.helpers.folders import make_folder
from tests.helpers.settings import TINY

ROOT = Path(__file__).resolve().parents[2]


class FakeTty(io.StringIO):
    encoding = "utf-8"

    def isatty(self):
        return True


def plain(text):
    """``text`` without its colours and line erasing (what a person reads)."""
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def python(code, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, **kwargs)


def test_the_cli_and_the_settings_import_no_torch():
    proc = python("import engine.cli.main, engine.config.train_config, engine.methods, sys; "
                  "assert 'torch' not in sys.modules, 'torch imported'")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("flags, says", [
    (["--data", "/nonexistent"], "image folder not found: /nonexistent"),
    (["--data", ".", "--batch-size", "0"], "batch_size must be an integer from 2"),
    (["--data", ".", "--method", "no-such-method"], "method must be one of simclr, moco"),
])
def test_bad_input_is_refused_before_torch_loads(flags, says):
    code = ("import sys; from engine.cli.main import main; rc = main(['train', *sys.argv[1:]]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, *flags], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert "torch imported" not in proc.stderr
    # stdout is a pipe: the refusal is its one JSON event, as the app expects
    (event,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert event["type"] == "run_end" and event["status"] == "failed"
    assert time.monotonic() - start < 30  # (torch alone takes seconds; generous when busy)


def test_the_explore_verbs_still_parse_their_own_flags():
    from engine.cli.main import build_parser

    args = build_parser("knn").parse_args(["knn", "--run", "r", "-k", "5", "--json"])
    assert args.k == 5 and args.json
    args = build_parser("train").parse_args(["train", "--data", "d", "--json"])
    assert args.json and args.data == "d"
    help_text = build_parser("train").format_help()  # every verb is still listed
    assert all(verb in help_text for verb in ("embed", "map", "knn", "probe", "export"))


def test_durations_and_clocks_read_as_people_write_them():
    assert duration(42) == "42 s" and duration(192) == "3 min 12 s"
    assert duration(7500) == "2 h 05 min"
    assert clock(42) == "0:42" and clock(725) == "12:05" and clock(3723) == "1:02:03"


def events_of_a_run(run_dir="/runs/20261201-simclr-shapes"):
    """What train() emits for a labelled folder: two epochs of four steps."""
    t = 1000.0
    cfg = {"method": "simclr", "backbone": "resnet18", "image_size": 32, "batch_size": 8,
           "epochs": 2, "data": "/data/shapes"}
    out = [
        ("progress", 0.0, {"phase": "scan", "done": 0, "total": 24}),
        ("progress", 1.0, {"phase": "scan", "done": 12, "total": 24}),
        ("progress", 2.0, {"phase": "scan", "done": 24, "total": 24}),
        ("progress", 2.5, {"phase": "decode", "done": 24, "total": 24,
                           "message": "decoded 24 of 24 images"}),
        ("warning", 2.6, {"message": "1 file(s) skipped; see manifest.json."}),
        ("run_start", 3.0, {"run_dir": run_dir, "resumed": False, "config": cfg,
                            "dataset": {"root": "/data/shapes", "images": 24,
                                        "classes": ["circles", "squares"], "skipped": 1},
                            "device": {"name": "x86_64 (2 threads)"}, "steps_per_epoch": 4,
                            "total_steps": 8, "start_step": 0}),
    ]
    for step in range(1, 9):
        out.append(("step", 3.0 + 2 * step, {"step": step, "epoch": (step - 1) // 4,
                                             "loss": 5.0 - 0.1 * step, "pairs_per_s": 4.0}))
        if step % 4 == 0:
            epoch = step // 4
            out.append(("epoch_end", 3.1 + 2 * step, {"epoch": epoch - 1, "step": step,
                                                      "loss": 5.0 - 0.1 * step,
                                                      "seconds": 8.0}))
            out.append(("checkpoint", 3.2 + 2 * step, {"path": f"{run_dir}/last.pt",
                                                       "step": step}))
            out.append(("eval", 3.5 + 2 * step, {"epoch": epoch, "step": step,
                                                 "knn_top1": 0.6 + 0.2 * (epoch - 1)}))
    out.append(("run_end", 20.0, {"status": "finished", "reason": "trained 8 steps",
                                  "step": 8, "epoch": 2, "run_dir": run_dir}))
    return [{"v": 1, "type": kind, "time": t + dt, **fields} for kind, dt, fields in out]


def test_a_run_reads_as_a_bar_epoch_lines_and_a_summary():
    screen = FakeTty()
    report = TerminalReport(screen, width=100, tick=None)
    seen = []
    for event in events_of_a_run():
        report(event)
        if event["type"] == "step" and event["step"] == 2:
            seen.append(plain(screen.getvalue().rsplit("\r", 1)[-1]))
    report.close()
    text = plain(screen.getvalue())
    assert '{"v"' not in text  # people only
    # the progress line: count, percentage, rate, time left, redrawn in place
    (bar,) = seen
    assert "epoch 1/2" in bar and "2/8 steps" in bar and " 25%" in bar
    assert "4.0 pairs/s" in bar and "loss 4.8000" in bar and "0:12 left" in bar
    assert "█" in bar and "░" in bar
    assert "\n" not in bar and len(bar.rstrip()) < 100  # one row, never wrapped
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    assert "Scanned 24 files in 2 s" in lines
    assert "Decoded 24 of 24 images" in lines
    assert any(line.startswith("warning: 1 file(s) skipped") for line in lines)
    # an epoch line each, with its loss and kNN accuracy
    assert "epoch 1/2  loss 4.6000  kNN 60.0%  8 s" in lines
    assert "epoch 2/2  loss 4.2000  kNN 80.0% (best so far)  8 s" in lines
    # the summary: what, where, how long, the best kNN, the next commands
    end = text[text.index("Finished"):]
    assert "Finished in 20 s: SimCLR, resnet18, 32 px, 24 images" in end
    assert "8 steps, 2 of 2 epochs, loss 4.6000 -> 4.2000" in end
    assert "best kNN 80.0% at epoch 2 (epoch 1: 60.0%)" in end
    assert "/runs/20261201-simclr-shapes" in end
    for command in ("contrastive-engine map --run /runs/20261201-simclr-shapes",
                    "contrastive-engine knn --run /runs/20261201-simclr-shapes --baseline",
                    "contrastive-engine probe --run", "contrastive-engine export --run",
                    "contrastive-explorer --runs-root /runs"):
        assert command in end
    assert "--resume" not in end


def test_a_stopped_run_says_how_to_go_on():
    screen = FakeTty()
    report = TerminalReport(screen, width=100, tick=None)
    events = events_of_a_run()
    cut = next(i for i, e in enumerate(events) if e["type"] == "step" and e["step"] == 5)
    for event in events[:cut]:
        report(event)
    report.stopping()
    report({"v": 1, "type": "step", "time": 1014.0, "step": 5, "epoch": 1, "loss": 4.5})
    assert "stopping: saving a checkpoint" in screen.getvalue().rsplit("\r", 1)[-1]
    report({"v": 1, "type": "run_end", "time": 1015.0, "status": "stopped", "step": 5,
            "epoch": 1, "run_dir": "/runs/r", "reason": "stop requested"})
    text = screen.getvalue()
    assert "Stopped at step 5 of 8 after 15 s (checkpoint saved)" in text
    assert "contrastive-engine train --resume /runs/r" in text


def test_a_run_refused_before_it_starts_leaves_the_message_to_the_cli():
    screen = FakeTty()
    report = TerminalReport(screen, width=80, tick=None)
    report({"v": 1, "type": "run_end", "time": 1.0, "status": "failed", "reason": "no"})
    report.close()
    assert screen.getvalue() == ""


def test_the_writer_hands_every_event_to_its_subscribers_and_survives_a_broken_one(capsys):
    got = []
    writer = EventWriter(None, strict=False)
    writer.subscribe(got.append)
    writer.subscribe(lambda e: 1 / 0)
    writer.emit("warning", message="a")
    writer.emit("warning", message="b")
    assert [e["message"] for e in got] == ["a", "b"]
    assert capsys.readouterr().err.count("the event display failed") == 1
    strict = EventWriter(None, strict=True)
    strict.subscribe(lambda e: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        strict.emit("warning", message="c")


def test_a_pipe_gets_progress_lines_only_when_they_end():
    err = io.StringIO()  # not a terminal: no \r redrawing, only the lasting lines
    report = TerminalReport(err, tick=None)
    for done in (0, 5, 10):
        report({"v": 1, "type": "progress", "time": float(done), "phase": "embed",
                "done": done, "total": 10})
    assert err.getvalue() == "Embedded 10 images in 10 s\n"


# --- the real CLI, in a pseudo-terminal and on a pipe


@pytest.fixture(scope="module")
def flags(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    folder = make_folder(tmp / "shapes")
    out = ["train", "--data", str(folder), "--runs-root", str(tmp / "runs"),
           "--cache-dir", str(tmp / "cache")]
    for k, v in {**TINY, "epochs": 1}.items():
        out += ["--" + k.replace("_", "-"), str(v)]
    return out


def run_in_terminal(args, timeout=240):
    """Run the CLI with stdout and stderr on a pseudo-terminal; what it showed."""
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "engine", *args], stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=30)
    finally:
        proc.kill()
        os.close(leader)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_training_in_a_terminal_shows_people_output_only(flags):
    rc, shown = run_in_terminal(flags)
    assert rc == 0, shown
    assert '{"v"' not in shown and '"type"' not in shown  # no JSON on the screen
    assert "\r" in shown and "steps" in shown and "%" in shown  # the progress bar
    # (the time left shows after a few seconds of steps: tests/engine/test_progress.py)
    assert "pairs/s" in shown
    assert "epoch 1/1  loss " in shown and "kNN " in shown  # the epoch line
    assert "Finished in " in shown and "best kNN " in shown
    assert "contrastive-engine map --run " in shown
    # the step log lines of stderr are not drawn over the bar
    assert "lr " not in shown and "run finished" not in shown
    # events.jsonl is written as always
    run_dir = Path(shown.split("contrastive-engine map --run ", 1)[1].split()[0])
    types = [json.loads(line)["type"] for line in (run_dir / "events.jsonl").open()]
    assert types[-1] == "run_end" and "step" in types and "eval" in types


def test_training_on_a_pipe_or_with_json_writes_json_lines_only(flags):
    proc = subprocess.run([sys.executable, "-m", "engine", *flags], capture_output=True,
                          text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # nothing else
    assert events[-1]["type"] == "run_end" and events[-1]["status"] == "finished"
    assert "step 1/" in proc.stderr  # the log for people stays on stderr
    rc, shown = run_in_terminal(flags + ["--json"])  # --json in a terminal: JSON too
    assert rc == 0
    lines = [line for line in shown.replace("\r", "").splitlines() if line.startswith("{")]
    assert lines and json.loads(lines[-1])["type"] == "run_end"
    assert "Finished in" not in shown


def test_log_lines_and_warnings_go_through_the_report_not_across_the_bar():
    import warnings

    from engine.training.setup import log, log_to

    screen = FakeTty()
    report = TerminalReport(screen, width=100, color=False, tick=None)
    report.status("Loading PyTorch...")
    with log_to(report.log), report.routing_warnings():
        log("step 5/28 epoch 1/1 loss 4.8 lr 0.1 5.3 pairs/s")  # repeats a step event
        log("kNN accuracy per epoch on a fixed sample of 1000 images", notice=True)
        warnings.warn("something torch says", UserWarning, stacklevel=1)
    text = screen.getvalue()
    assert "step 5/28" not in text
    lines = [line.rsplit("\r", 1)[-1].strip() for line in text.split("\n")]
    assert "kNN accuracy per epoch on a fixed sample of 1000 images" in lines
    assert any(line.startswith("warning: something torch says (UserWarning") for line in lines)
    assert text.rstrip().endswith("Loading PyTorch...")  # the passing line, drawn again below


def test_a_terminal_without_unicode_gets_plain_characters():
    class AsciiTty(FakeTty):
        encoding = "ascii"

    screen = AsciiTty()
    report = TerminalReport(screen, width=100, color=False, tick=None)
    for event in events_of_a_run()[:8]:
        report(event)
    bar = screen.getvalue().rsplit("\r", 1)[-1]
    assert "#" in bar and "-" in bar and " | " in bar
    screen.getvalue().encode("ascii")  # nothing a latin terminal cannot show
