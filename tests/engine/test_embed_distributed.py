"""Embedding under torchrun: two CPU processes (gloo) each embed a shard, rank 0 writes one
result, and it equals the embeddings one process makes."""

import shutil
import socket

import numpy as np
import pytest
import torch.multiprocessing as mp

from engine.evaluate.embed import embed_run, load_embeddings
from engine.run.layout import RunDir
from tests.helpers.folders import make_folder
from tests.helpers.ranks import join_gloo
from tests.helpers.training import run

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, run_dir: str, cache: str) -> None:
    from engine.training import distributed

    ctx = join_gloo(rank, port, WORLD)
    emb = embed_run(run_dir, "last", device="cpu", cache_dir=cache, ctx=ctx, batch_size=5)
    assert len(emb.paths) == 23  # every rank returns the whole result
    distributed.shutdown()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embed-ranks")
    folder = make_folder(tmp / "shapes", per_class=12)
    (folder / "squares" / "squares-0.png").unlink(missing_ok=True)
    for p in sorted((folder / "squares").iterdir())[:1]:
        p.unlink()  # 23 images: the shards are unequal
    result = run({"data": str(folder), "max_steps": 1, "knn_every": 0}, tmp)
    return result.run_dir, tmp / "cache"


def test_two_processes_embed_what_one_does(trained, tmp_path):
    run_dir, cache = trained
    alone = tmp_path / "alone"
    shutil.copytree(run_dir, alone)
    one = embed_run(alone, "last", device="cpu", cache_dir=cache)
    together = tmp_path / "together"
    shutil.copytree(run_dir, together)
    mp.start_processes(_rank_main, args=(_free_port(), str(together), str(cache)),
                       nprocs=WORLD, start_method="spawn", join=True)
    two = load_embeddings(RunDir(together).embedding("last").path)
    assert two.paths == one.paths and two.labels.tolist() == one.labels.tolist()
    np.testing.assert_allclose(two.features, one.features, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(two.projections, one.projections, rtol=1e-4, atol=1e-5)
    import json

    index = json.loads(RunDir(together).embedding("last").index.read_text())
    assert index["processes"] == WORLD
