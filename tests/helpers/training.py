"""Short training runs in the test process, and their events."""

from pathlib import Path

from engine.config.train_config import TrainConfig
from engine.run.events import EventWriter, read_events
from engine.training.loop import train
from tests.helpers.settings import TINY


def run(cfg_values, tmp_path, stream=None, **kwargs):
    """train() with TINY and ``cfg_values``, its runs and cache under ``tmp_path``."""
    cfg = TrainConfig.from_dict({**TINY, **cfg_values})
    return train(cfg, runs_root=tmp_path / "runs", cache_dir=tmp_path / "cache",
                 events=EventWriter(stream), **kwargs)


def events_of(run_dir: Path):
    return list(read_events(run_dir / "events.jsonl"))
