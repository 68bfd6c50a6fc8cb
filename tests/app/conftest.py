"""Shared fixtures of the app tests: one short trained run, copied for each test that
writes into it (maps, probes, exports), and a shown Data page."""

import shutil

import pytest

from engine.config.train_config import TrainConfig
from engine.run.events import EventWriter
from engine.training.loop import train
from tests.helpers.folders import make_folder
from tests.helpers.settings import TINY


@pytest.fixture(scope="session")
def trained_run_template(tmp_path_factory):
    """A finished 2-epoch SimCLR run on a tiny labelled folder (2 classes x 12 images)."""
    tmp = tmp_path_factory.mktemp("trained")
    folder = make_folder(tmp / "shapes")
    cfg = TrainConfig.from_dict({**TINY, "data": str(folder), "epochs": 2})
    result = train(cfg, runs_root=tmp / "runs", cache_dir=tmp / "cache",
                   events=EventWriter(None))
    assert result.status == "finished"
    return result.run_dir, tmp / "cache"


@pytest.fixture
def trained_run(trained_run_template, tmp_path):
    """(run_dir, cache_dir): a private copy of the trained run, free to write into."""
    run_dir, cache = trained_run_template
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy, cache


@pytest.fixture
def data_page(qtbot):
    """A Data page, shown at 900 x 600; its worker threads are stopped afterwards."""
    from app.pages.data_page import DataPage

    page = DataPage()
    qtbot.addWidget(page)
    page.resize(900, 600)
    page.show()
    yield page
    page.shutdown()
