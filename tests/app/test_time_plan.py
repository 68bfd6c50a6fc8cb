"""The Train page's planner: the engine's plan verb for the folder and settings shown, its
choice in words, and Apply putting the choice in the form."""

import pytest

pytest.importorskip("PySide6")

from app.pages.train_page import TrainPage
from tests.helpers.folders import make_folder

CHILD_MS = 180_000


def test_plan_for_the_time_given_and_apply(qtbot, tmp_path):
    folder = make_folder(tmp_path / "shapes", per_class=8)
    page = TrainPage(tmp_path / "runs", tmp_path / "cache")
    qtbot.addWidget(page)
    plan = page.time_plan
    plan.plan_button.click()
    assert "Choose an image folder" in plan.answer.text()
    page.set_folder(folder)
    for name, value in {"backbone": "resnet18", "image_size": 16, "batch_size": 8,
                        "proj_hidden_dim": 32, "proj_out_dim": 16}.items():
        page.form.set_value(name, value)
    plan.minutes.setValue(30)
    with qtbot.waitSignal(plan.planned, timeout=CHILD_MS) as planned:
        assert plan.plan()
    result = planned.args[0]
    assert result["images"] == 16 and result["settings"]["image_size"] == 16
    choice = result["budget"]["choice"]
    # the backbone and image size set in the form stay: only the epochs are planned
    assert (choice["backbone"], choice["image_size"]) == ("resnet18", 16)
    assert choice["epochs"] == result["budget"]["options"][0]["epochs"] > 0
    assert f"{choice['epochs']} epochs" in plan.answer.text()
    assert "• epochs:" in plan.answer.text()
    plan.apply_button.click()
    assert page.form.values().epochs == choice["epochs"]
    assert page.form.values().batch_size == choice["batch_size"]


def test_the_answer_shows_the_cache_format_and_each_format_size(qtbot, tmp_path):
    from app.widgets.time_plan import TimePlan

    plan = TimePlan(None, lambda: [])  # type: ignore[arg-type]  # no engine: a result is given
    qtbot.addWidget(plan)
    plan._on_result({"images": 1000, "epoch_seconds": 60.0, "run_seconds": 600.0,
                     "cache": {"message": "JPEG cache: ...", "format": "jpeg", "formats": {
                         "raw": {"bytes": 3_000_000_000, "fits": False},
                         "jpeg": {"bytes": 250_000_000, "fits": True, "estimated_from": 200},
                         "none": {"bytes": 0, "fits": True}}}})
    text = plan.answer.text()
    assert "Cache format: jpeg (raw 3.00 GB (does not fit), jpeg 0.25 GB;" in text
