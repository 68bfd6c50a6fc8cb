"""The settings form accepts and refuses exactly what the engine does."""

import pytest

pytest.importorskip("PySide6")

from app.widgets.settings_form import SettingsForm
from engine.config.settings import ConfigError
from engine.config.train_config import AugmentConfig, TrainConfig


def test_values_are_checked_as_typed_with_the_engines_rules(qtbot):
    form = SettingsForm(TrainConfig())
    qtbot.addWidget(form)
    with qtbot.waitSignal(form.validity_changed) as became:
        form.set_value("batch_size", "0")
    assert became.args == [False]
    with pytest.raises(ConfigError) as engine_says:
        TrainConfig.from_dict({"batch_size": "0"})
    assert form.errors()["batch_size"] == str(engine_says.value)
    assert "batch_size must be an integer from 2" in form._editors["batch_size"].toolTip()
    with qtbot.waitSignal(form.validity_changed) as became:
        form.set_value("batch_size", "128")
    assert became.args == [True] and form.values().batch_size == 128
    form.set_value("batch_size", "")  # blank means auto
    assert form.values().batch_size is None and form.is_valid()


def test_choices_booleans_and_auto(qtbot):
    form = SettingsForm(TrainConfig())
    qtbot.addWidget(form)
    form.set_value("method", "moco")
    form.set_value("small_stem", True)
    form.set_value("compile", True)
    form.set_value("backbone", "resnet34")
    values = form.values()
    assert (values.method, values.small_stem, values.compile, values.backbone) == (
        "moco", True, True, "resnet34")
    form.set_value("backbone", None)
    assert form.values().backbone is None


def test_relations_between_fields_are_refused(qtbot):
    form = SettingsForm(AugmentConfig())
    qtbot.addWidget(form)
    form.set_value("crop_scale_min", "0.9")
    form.set_value("crop_scale_max", "0.5")
    assert "crop_scale_min (0.9) must not exceed crop_scale_max" in form.errors()[
        "crop_scale_max"]
    assert form.values().crop_scale_max == 1.0  # the last valid value is kept
    form.set_value("crop_scale_max", "0.95")
    assert form.is_valid() and form.values().crop_scale_max == 0.95


def test_train_page_shows_each_methods_own_settings_only_for_it(qtbot, tmp_path):
    from app.pages.train_page import TrainPage
    from engine.methods import METHODS

    page = TrainPage(tmp_path / "runs")
    qtbot.addWidget(page)
    own = {name: set(spec.settings) for name, spec in METHODS.items()}
    assert own["moco"] >= {"queue_size", "moco_momentum"}  # the registry names them
    for method in METHODS:
        page.form.set_value("method", method)
        assert page.form.values().method == method
        for names in own.values():
            for name in names:
                assert page.form.is_shown(name) == (name in own[method]), (method, name)
    page.form.set_value("method", "moco")
    page.form.set_value("queue_size", "512")
    page.form.set_value("method", "simclr")  # hidden, not forgotten
    assert page.form.values().queue_size == 512 and not page.form.is_shown("queue_size")


def test_placeholders_fit_their_fields_and_the_auto_rule_is_in_the_tooltip(qtbot):
    from PySide6.QtWidgets import QLineEdit

    form = SettingsForm(TrainConfig())
    qtbot.addWidget(form)
    form.resize(form.sizeHint())
    form.show()
    qtbot.waitExposed(form)
    edits = {n: e for n, e in form._editors.items() if isinstance(e, QLineEdit)}
    shown = [e for e in edits.values() if e.placeholderText()]
    assert shown
    for edit in shown:
        margins = edit.textMargins().left() + edit.textMargins().right() + 8
        assert edit.fontMetrics().horizontalAdvance(edit.placeholderText()) + margins \
            <= edit.width(), edit.placeholderText()
    assert edits["cache_size"].placeholderText() == "auto"
    assert "auto (8/7 of image_size" in edits["cache_size"].toolTip()
