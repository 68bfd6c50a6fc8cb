"""The h / z chooser and the map settings give the engine's names for what is shown."""

import pytest

pytest.importorskip("PySide6")

from app.widgets.map_settings import MapSettings
from app.widgets.space_chooser import SpaceChooser


def test_space_chooser_offers_h_then_z(qtbot):
    box = SpaceChooser()
    qtbot.addWidget(box)
    assert [box.itemData(i) for i in range(box.count())] == ["h", "z"]
    assert box.space() == "h" and "projection head" in box.toolTip()
    with qtbot.waitSignal(box.currentIndexChanged):
        box.set_space("z")
    assert box.space() == "z" and box.currentText() == "z (projection)"
    with pytest.raises(ValueError, match="no embedding space 'q'"):
        box.set_space("q")
    assert box.space() == "z"


def test_map_settings_enable_umaps_parameters_only_for_umap(qtbot):
    settings = MapSettings()
    qtbot.addWidget(settings)
    assert settings.method() == "umap" and settings.neighbors_box.isEnabled()
    settings.set_method("pca")
    assert not settings.neighbors_box.isEnabled() and not settings.min_dist_box.isEnabled()
    assert settings.params().method == "pca"
    settings.set_method("umap")
    settings.neighbors_box.setValue(7)
    settings.min_dist_box.setValue(0.25)
    params = settings.params()
    assert (params.method, params.n_neighbors, params.min_dist) == ("umap", 7, 0.25)
    with pytest.raises(ValueError, match="no map method"):
        settings.set_method("tsne")
