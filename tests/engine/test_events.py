"""The event schema: one description that the writer, the app's reader and the README share."""

import io
import json
from pathlib import Path

import pytest

from engine.cli import main as cli_main
from engine.run import schema
from engine.run.events import STRICT_ENV, EventSchemaError, EventWriter, read_events

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_table() -> dict[str, list[tuple[str, str, bool]]]:
    """The README's event table as {type: [(field, kind, required)]}."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Event stream"):]
    section = section[:section.index("\n## ", 1)]
    table: dict[str, list[tuple[str, str, bool]]] = {}
    current = None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 5 or cells[0] == "type" or "---" in line:
            continue
        kind, field = cells[0].strip("`"), cells[1].strip("`")
        if kind:
            current = kind
            table[current] = []
        else:
            assert current is not None, line
            table[current].append((field, cells[2], cells[3] == "yes"))
    return table


def test_the_readme_table_is_the_schema():
    expected = {t.name: [(f.name, f.kind, f.required) for f in t.fields]
                for t in schema.EVENTS.values()}
    assert readme_table() == expected, ("README's event table differs from engine.run.schema;"
                                        " print it with `python -m engine.run.schema`")
    assert schema.markdown_table() in README.read_text(encoding="utf-8")


def test_every_field_has_a_known_kind_and_a_meaning():
    for t in schema.EVENTS.values():
        assert t.meaning and len({f.name for f in t.fields}) == len(t.fields), t.name
        for f in t.fields:
            assert f.kind in schema.KINDS and f.meaning and "|" not in f.meaning, (t.name, f)


def test_validate_event_names_what_the_schema_does_not_describe():
    good = {"v": 1, "type": "step", "time": 1.5, "step": 3, "epoch": 0, "loss": 1.2,
            "lr": None, "momentum": 0.99}
    assert schema.validate_event(good) == []
    assert schema.validate_event({**good, "gradient_norm": 3.0}) == [
        "step event: field 'gradient_norm' is not in the schema (engine.run.schema)"]
    assert schema.validate_event({"v": 1, "type": "step", "time": 1.0, "step": 2}) == [
        "step event: loss is missing"]
    assert schema.validate_event({"v": 1, "type": "step", "time": 1.0, "step": 2},
                                 partial=True) == []
    assert schema.validate_event({"v": 2, "type": "step", "step": True, "loss": 1}) == [
        "step event: time is missing", "step event: v is 2, not 1",
        "step event: step is true/false, not an integer"]
    assert schema.validate_event({"v": 1, "type": "histogram", "time": 1.0}) == [
        "event type 'histogram' is not in the schema (engine.run.schema)"]
    assert schema.validate_event({"v": 1, "type": "result", "time": 1.0, "top1": 0.5,
                                  "anything": [1]}) == []  # a verb's result is its own
    assert schema.validate_event({"v": 1, "type": "run_start", "time": 1.0, "run_dir": "r",
                                  "resumed": 1}) == [
        "run_start event: resumed is an integer, not true/false"]


def test_the_writer_stamps_version_type_and_time():
    stream = io.StringIO()
    event = EventWriter(stream, strict=True).emit("warning", message="careful")
    assert json.loads(stream.getvalue()) == event
    assert event["v"] == schema.SCHEMA_VERSION and event["type"] == "warning"
    assert schema.validate_event(event) == []


def test_strict_mode_refuses_an_event_the_schema_does_not_describe():
    stream = io.StringIO()
    writer = EventWriter(stream, strict=True)
    with pytest.raises(EventSchemaError, match="'new_field' is not in the schema"):
        writer.emit("step", step=1, loss=1.0, new_field=2)
    with pytest.raises(EventSchemaError, match="'histogram' is not in the schema"):
        writer.emit("histogram", bins=[1])
    with pytest.raises(EventSchemaError, match="lr is text, not a number"):
        writer.emit("step", step=1, loss=1.0, lr="fast")
    writer.emit("step", step=1)  # fields left out are for readers to mind
    assert [json.loads(line)["type"] for line in stream.getvalue().splitlines()] == ["step"]
    loose = EventWriter(io.StringIO(), strict=False)
    assert loose.emit("histogram", bins=[1])["bins"] == [1]


def test_the_tests_run_in_strict_mode(monkeypatch):
    assert EventWriter(None).strict  # tests/engine/conftest.py
    monkeypatch.setenv(STRICT_ENV, "0")
    assert not EventWriter(None).strict


def test_error_and_bench_result_go_through_the_writer(tmp_path, capsys, monkeypatch):
    code = cli_main.main(["knn", "--run", str(tmp_path / "no-run"), "--json"])
    assert code == cli_main.EXIT_USAGE
    (error,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert error["type"] == "error" and error["message"]
    assert schema.validate_event(error) == []

    from engine.training import bench

    monkeypatch.setattr(bench, "run_bench", lambda device, seconds, report, method: [])
    assert cli_main.main(["bench", "--json", "--device", "cpu"]) == cli_main.EXIT_OK
    (result,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert result["type"] == "result" and result["results"] == []
    assert schema.validate_event(result) == []


def test_a_training_run_writes_only_complete_events_of_the_schema(tmp_path):
    from tests.engine.test_train import make_folder, run

    folder = make_folder(tmp_path / "shapes")
    result = run({"data": str(folder), "method": "moco", "epochs": 1, "knn_every": 1},
                 tmp_path)
    assert result.status == "finished", result.reason
    events = list(read_events(result.run_dir / "events.jsonl"))
    assert {"run_start", "step", "epoch_end", "eval", "checkpoint", "run_end"} <= {
        e["type"] for e in events}
    assert [p for e in events for p in schema.validate_event(e)] == []
    assert all("momentum" in e for e in events if e["type"] == "step")
