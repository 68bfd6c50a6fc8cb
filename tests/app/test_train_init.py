"""The Train page's init field: a text field with a "…" file chooser, passed to the engine
as --init (and left out when empty)."""

import pytest

pytest.importorskip("PySide6")

from app.pages import train_page
from app.pages.train_page import TrainPage
from engine.cli.args import given
from engine.cli.main import build_parser
from engine.config.train_config import TrainConfig


def test_the_init_field_chooses_a_file_and_reaches_the_engine(qtbot, tmp_path, monkeypatch):
    page = TrainPage(tmp_path / "runs", tmp_path / "cache")
    qtbot.addWidget(page)
    assert page.form.is_shown("init") and page.form.values().init == ""
    args = page._settings_arguments(page.form.values())
    assert "--init" not in args  # random init: no flag

    chosen = tmp_path / "weights" / "start.pth"
    asked = []
    monkeypatch.setattr(train_page.QFileDialog, "getOpenFileName",
                        lambda *a, **k: asked.append(a) or (str(chosen), ""))
    button = next(b for b in page.form.findChildren(train_page.QPushButton)
                  if b.text() == "…")
    button.click()
    assert asked and page.form.values().init == str(chosen)
    args = page._settings_arguments(page.form.values())
    assert args[args.index("--init") + 1] == str(chosen)
    parsed = build_parser().parse_args(["train", "--data", str(tmp_path), *args])
    assert given(parsed, TrainConfig)["init"] == str(chosen)

    page.form.set_value("init", "imagenet")  # typed by hand
    assert page.form.values().init == "imagenet"
    page.form.set_shown("init", False)  # the row (field and button) hides as one
    assert not page.form.is_shown("init") and not button.isVisibleTo(page)
