"""One process of a two-process (gloo, CPU) test: join the process group as torchrun would."""

import os

import torch

from engine.training import distributed
from engine.training.distributed import DistContext


def join_gloo(rank: int, port: int, world: int) -> DistContext:
    """Set torchrun's environment for ``rank`` of ``world`` processes on this machine, one
    thread each, and join the group (engine.training.distributed.from_env)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    return distributed.from_env()
