"""Hostile settings, through TrainConfig.from_dict and the command line (engine/cli.py):
every setting (numbers, choices, text, switches, tuples, paths), unknown names and wrong
types is refused before training with the setting named, or accepted within its declared
range. The totals tried are in HOSTILE_SETTINGS_TRIED (hypothesis examples).

Settings refused only once the data is known: the end of this file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import typing

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli.main import build_parser, config_from_args
from engine.config.settings import ConfigError, field_types
from engine.config.train_config import AugmentConfig, TrainConfig
from engine.data.scan import DataError
from tests.helpers import faults
from tests.helpers.faults import run


def _settings() -> list[tuple[str, bool, typing.Any, dict]]:
    out = []
    for cls, nested in ((TrainConfig, False), (AugmentConfig, True)):
        types = field_types(cls)
        for f in dataclasses.fields(cls):
            if f.metadata:
                out.append((f.name, nested, types[f.name], dict(f.metadata)))
    return out


SETTINGS = _settings()
BY_NAME = {name: (nested, tp, meta) for name, nested, tp, meta in SETTINGS}
DEVICE = re.compile(r"auto|cpu|cuda|mps|cuda:(0|[1-9][0-9]*)")
SPECIAL = {"device": ["cuda:²", "cuda:٣", "cuda:01", "cuda:99999999999999999999", "cuda:0",
                      "cuda:12", "cuda:-1", "cuda:", "CUDA", "cuda:0 ", "gpu", "mps"],
           "data": ["", "~", "a\x00b", "/nonexistent", "dossier d'images/été"]}
TRICKY_TEXT = ["", " ", "auto", "AUTO", " auto ", "none", "null", "None", "1e3", "0x10",
               "1_000", "nan", "inf", "-inf", "-1", "--1", "-", "--", "true", "no", "yes",
               "١٢", "²", "cuda:²", "cuda:٣", "cuda:-1", "cuda:", "cuda:0", "cpu ", "CPU", "mps",
               "simclr", "SimCLR", "moco", "resnet18", "vit", "fp32", "bf16", "lars", "sqrt",
               "../../etc/passwd", "a\x00b", "0.5,0.5", "1 2 3", "[1, 2, 3]", "é" * 40]
hostile = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
    st.text(max_size=12), st.sampled_from(TRICKY_TEXT),
    st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def setting_and_value(draw, text_only: bool = False):
    name = draw(st.sampled_from([s[0] for s in SETTINGS]))
    _, tp, meta = BY_NAME[name]
    near = []
    for bound in (meta["min"], meta["max"]):
        if bound is not None:
            near += [bound, bound - 1, bound + 1, bound - 1e-9, bound + 1e-9,
                     type(bound)(bound) * 10]
    choices = list(meta["choices"] or []) + SPECIAL.get(name, [])
    value = draw(st.one_of(hostile, st.sampled_from(near or [0]),
                           st.sampled_from(choices or [None])))
    if text_only:
        value = value if isinstance(value, str) else json.dumps(value) if isinstance(
            value, (list, dict)) else str(value)
    return name, value


def assert_accepted_value_is_allowed(cfg: TrainConfig) -> None:
    """Every setting of an accepted configuration has its declared type and range."""
    for name, nested, tp, meta in SETTINGS:
        value = getattr(cfg.augment if nested else cfg, name)
        if value is None:
            assert meta["auto"] is not None, name
            continue
        if typing.get_origin(tp) is tuple:
            assert isinstance(value, tuple) and len(value) == 3, name
            assert all(isinstance(v, float) and np.isfinite(v) for v in value), name
            continue
        assert type(value) is tp, (name, value)
        if meta["choices"] is not None:
            assert value in meta["choices"], (name, value)
        if tp in (int, float):
            assert np.isfinite(value), name
            if meta["min"] is not None:
                assert value > meta["min"] if meta["min_exclusive"] else value >= meta["min"]
            if meta["max"] is not None:
                assert value <= meta["max"], (name, value)
    assert DEVICE.fullmatch(cfg.device), cfg.device
    if cfg.device != "auto":
        torch.device(cfg.device)  # parses: no internal error when the run starts
    # An accepted configuration survives its own JSON (what config.json holds).
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def nest(name: str, value: typing.Any) -> dict:
    return {"augment": {name: value}} if BY_NAME[name][0] else {name: value}


FROM_DICT_EXAMPLES = 1500
UNKNOWN_KEY_EXAMPLES = 150
MANY_AT_ONCE_EXAMPLES = 300
CLI_EXAMPLES = 800
CLI_UNKNOWN_FLAG_EXAMPLES = 150


@settings(max_examples=FROM_DICT_EXAMPLES, deadline=None)
@given(setting_and_value())
def test_every_setting_refuses_hostile_values_by_name_or_accepts_them_in_range(case):
    name, value = case
    try:
        cfg = TrainConfig.from_dict(nest(name, value))
    except ConfigError as exc:
        assert name in str(exc), (name, value, str(exc))
        return
    assert_accepted_value_is_allowed(cfg)


@settings(max_examples=UNKNOWN_KEY_EXAMPLES, deadline=None)
@given(key=st.text(min_size=0, max_size=16), nested=st.booleans(), value=hostile)
def test_unknown_settings_are_refused_by_name(key, nested, value):
    known = {s[0] for s in SETTINGS if s[1] == nested} | ({"augment"} if not nested else set())
    if key in known:
        return
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"augment": {key: value}} if nested else {key: value})
    assert "unknown setting" in str(err.value) and key in str(err.value)


@settings(max_examples=MANY_AT_ONCE_EXAMPLES, deadline=None)
@given(st.lists(setting_and_value(), min_size=2, max_size=8))
def test_many_hostile_settings_at_once(cases):
    values: dict = {}
    for name, value in cases:
        target = values.setdefault("augment", {}) if BY_NAME[name][0] else values
        target[name] = value
    try:
        cfg = TrainConfig.from_dict(values)
    except ConfigError as exc:
        assert any(name in str(exc) for name, _ in cases), str(exc)
        return
    assert_accepted_value_is_allowed(cfg)


PARSER = build_parser()
CLI_SETTINGS = [s for s in SETTINGS if s[3]["cli"]]
SWITCHES = {name for name, _, tp, meta in CLI_SETTINGS if tp is bool and meta["auto"] is None}


def parse(argv: list[str]) -> tuple[TrainConfig | None, int | None, str]:
    """(config, None, "") or (None, argparse's exit status, its message)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = PARSER.parse_args(argv)
    except SystemExit as exc:
        return None, int(exc.code or 0), err.getvalue()
    return config_from_args(args), None, ""


@settings(max_examples=CLI_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.filter_too_much])
@given(case=setting_and_value(text_only=True), joined=st.booleans())
def test_command_line_refuses_hostile_values_by_name_or_accepts_them_in_range(case, joined):
    name, text = case
    if not BY_NAME[name][2]["cli"]:
        return  # data, normalize_mean and normalize_std come from --data or a config file
    flag = "--" + name.replace("_", "-")
    base = ["train", "--data", "/some/folder"]
    if name in SWITCHES:  # --compile / --no-compile: a value is refused by argparse
        argv = base + [f"{flag}={text}"]
        cfg, status, message = parse(argv)
        assert status == 2 and flag in message, (argv, message)
        return
    argv = base + ([f"{flag}={text}"] if joined else [flag, text])
    try:
        cfg, status, message = parse(argv)
    except ConfigError as exc:
        assert name in str(exc), (argv, str(exc))
        with pytest.raises(ConfigError):  # the same rules as a config file
            TrainConfig.from_dict({**nest(name, text), "data": "/some/folder"})
        return
    if status is not None:  # argparse: a value that looks like a flag ("-", "--x")
        assert status == 2 and flag in message and text.startswith("-"), (argv, message)
        return
    assert_accepted_value_is_allowed(cfg)
    assert cfg == TrainConfig.from_dict({**nest(name, text), "data": "/some/folder"})


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_command_line_switches(name):
    flag = "--" + name.replace("_", "-")
    for argv, expected in (([flag], True), (["--no-" + flag[2:]], False)):
        cfg, status, _ = parse(["train", "--data", "/d", *argv])
        assert status is None and getattr(cfg, name) is expected


@settings(max_examples=CLI_UNKNOWN_FLAG_EXAMPLES, deadline=None)
@given(word=st.from_regex(r"[a-z][a-z0-9-]{0,14}", fullmatch=True))
def test_command_line_refuses_unknown_flags_by_name(word):
    flags = {"--" + s[0].replace("_", "-") for s in CLI_SETTINGS}
    flags |= {"--" + a for a in ("data", "config", "run-dir", "resume", "runs-root",
                                 "cache-dir", "help")} | {"--no-" + s.replace("_", "-")
                                                          for s in SWITCHES}
    flag = "--" + word
    prefixes = [f for f in flags if f.startswith(flag)]
    if flag in flags or len(prefixes) == 1:
        return  # a flag, or argparse's unambiguous abbreviation of one
    cfg, status, message = parse(["train", "--data", "/d", flag, "1"])
    assert status == 2 and flag in message, (flag, message)


@pytest.mark.parametrize("device", ["cuda:²", "cuda:٣", "cuda:01", "cuda:99999999999999999999",
                                    "cuda:-1", "cuda:", "CUDA", "cuda:0 ", "gpu"])
def test_device_names_torch_cannot_parse_are_refused(device):
    with pytest.raises(ConfigError, match=f"device must be .*; got {re.escape(repr(device))}"):
        TrainConfig.from_dict({"device": device})


def test_refused_settings_stop_the_command_line_before_anything_runs(tmp_path, capsys):
    from engine.cli.main import main

    folder = tmp_path / "empty"
    folder.mkdir()
    for flags in (["--batch-size=0"], ["--method", "no-such-method"], ["--lr", "nan"],
                  ["--device", "cuda:²"], ["--crop-scale-min", "0.9", "--crop-scale-max", "0.5"],
                  ["--small-stem", "maybe"]):
        # Refused by the settings themselves: main() must not get as far as training
        # (which would install its signal handlers in this process).
        with pytest.raises(ConfigError):
            parse(["train", "--data", str(folder), *flags])
        code = main(["train", "--data", str(folder), "--runs-root", str(tmp_path / "runs"),
                     "--cache-dir", str(tmp_path / "cache"), *flags])
        out = capsys.readouterr()
        assert code == 2, flags
        (event,) = [json.loads(line) for line in out.out.splitlines()]
        assert event["type"] == "run_end" and event["status"] == "failed"
        assert event["reason"] in out.err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


HOSTILE_SETTINGS_TRIED = (FROM_DICT_EXAMPLES + UNKNOWN_KEY_EXAMPLES + MANY_AT_ONCE_EXAMPLES
                          + CLI_EXAMPLES + CLI_UNKNOWN_FLAG_EXAMPLES)


# --- settings refused at the start of a run, once the data is known ------------------------

# Fixtures shared with the other fault tests (tests/helpers/faults.py).
_keep_torch_threads = faults.keep_torch_threads
folder = faults.folder


@pytest.mark.parametrize("values,message", [
    ({"batch_size": 64}, "batch_size 64 is larger than the 48 usable"),
    ({"precision": "fp16"}, "precision fp16 needs a GPU"),
    ({"method": "moco", "batch_size": 32}, "MoCo needs more images"),
    ({"data": "folder\x00with a nul"}, "image folder not found"),
])
def test_settings_refused_at_start_leave_no_run_folder(folder, tmp_path, values, message):
    values = {"data": str(folder), **values}
    with pytest.raises((ConfigError, DataError), match=re.escape(message)):
        run(values, tmp_path)
    assert not (tmp_path / "runs").exists()


