"""Training on several processes (GPUs or machines) with PyTorch's own launcher, torchrun.

``torchrun --nproc-per-node N -m engine train ...`` starts N copies of the engine with
RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/MASTER_PORT in their environment. Each copy
then trains with DistributedDataParallel on its own device (cuda:LOCAL_RANK, or the CPU
with gloo) and one share of every global batch; only rank 0 reports events and writes the
run folder, the decoded-image cache and the checkpoints (the other processes read the
cache once it is complete; on other machines, unless --cache-dir is shared, one process
per machine decodes a copy first). Without those variables (or with one process)
everything here is a no-op and the engine trains as a single process.

Collectives used outside the model (the stop request, set-up barriers, sending rank 0's
settings and checkpoint to the others) go through a separate gloo group with a long
timeout, so that rank 0 may decode a large folder for hours while the others wait; a
process that dies is noticed by torchrun, which then stops the others. The collectives
inside the model (gathers, synchronised batch norm) are engine.training.collectives', also
importable from here.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from engine.config.settings import ConfigError
from engine.run.events import EventWriter
from engine.training.collectives import (  # noqa: F401 - part of this module's interface
    CpuSyncBatchNorm,
    convert_sync_batchnorm,
    gather,
    gather_with_grad,
    rank,
    world_size,
)

T = TypeVar("T")

# Rank 0 may scan, hash and decode a whole folder while the others wait at a barrier.
CONTROL_TIMEOUT = timedelta(hours=24)


def env_rank() -> int:
    """This process's global rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


@dataclass
class DistContext:
    """Where this process stands among those training together (world_size 1: alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    control: Any = None  # the gloo group for set-up and control messages

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))

    def run_on_main(self, fn: Callable[[], T], *, keep: Callable[[T], Any] = lambda r: r
                    ) -> T | Any:
        """``fn()`` on rank 0 only; the other ranks get ``keep(result)`` (which must be
        picklable), or raise the exception rank 0 raised, so every rank fails alike."""
        if not self.enabled:
            return fn()
        box: list[Any] = [None]
        error: BaseException | None = None
        result: Any = None
        if self.is_main:
            try:
                result = fn()
                box[0] = (True, keep(result))
            except Exception as exc:
                error = exc
                box[0] = (False, _picklable(exc))
        dist.broadcast_object_list(box, src=0, group=self.control)
        if self.is_main:
            if error is not None:
                raise error
            return result
        ok, payload = box[0]
        if not ok:
            raise payload
        return payload

    def raise_if_any(self, error: BaseException | None) -> None:
        """Collective: if any rank passes an exception, every rank raises (its own, or the
        lowest failing rank's)."""
        if not self.enabled:
            if error is not None:
                raise error
            return
        errors: list[Any] = [None] * self.world_size
        dist.all_gather_object(errors, None if error is None else _picklable(error),
                               group=self.control)
        if error is not None:
            raise error
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def local_leaders_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on each machine's local rank 0 first, then (after they all finish) on
        the other ranks: the first call on a machine builds what the others then reuse, and
        no two processes build it at once. If it fails anywhere, it raises everywhere."""
        if not self.enabled:
            return fn()
        result: Any = None
        for leaders in (True, False):
            error = None
            if (self.local_rank == 0) == leaders:
                try:
                    result = fn()
                except Exception as exc:
                    error = exc
            self.raise_if_any(error)
        return result

    def gather_objects(self, value: Any) -> list[Any]:
        """``value`` of every rank, in rank order (collective)."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value, group=self.control)
        return out

    def gather_to_main(self, value: Any) -> list[Any] | None:
        """``value`` of every rank, in rank order, on rank 0 only (None elsewhere;
        collective). Unlike :meth:`gather_objects`, only rank 0 receives the others'
        values: for large results such as a shard of embeddings."""
        if not self.enabled:
            return [value]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, out, dst=0, group=self.control)
        return out

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (collective; a CPU message, so it never
        waits for a GPU)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return bool(t.item())

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over the ranks (collective; on ``t``'s device)."""
        if not self.enabled:
            return t
        t = t.detach().clone()
        dist.all_reduce(t)  # SUM: gloo has no AVG
        return t / self.world_size


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer (it is "
                          "set by torchrun)") from None


def from_env() -> DistContext:
    """The DistContext of this process, starting the process group when torchrun launched
    two or more processes (RANK and WORLD_SIZE set; MASTER_ADDR and MASTER_PORT tell where
    rank 0 listens). A process group already started by the caller is used as it is."""
    size = _env_int("WORLD_SIZE", 1)
    if dist.is_available() and dist.is_initialized():
        size = dist.get_world_size()
    if size <= 1:
        return DistContext()
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed: train with one "
                          "process (plain `contrastive-engine train`)")
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
            if not os.environ.get(name):
                raise ConfigError(f"WORLD_SIZE={size} but {name} is not set: start several "
                                  "processes with torchrun (--nproc-per-node), which sets "
                                  "RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT")
        # NCCL moves CUDA tensors, gloo CPU tensors (a CPU run, and the messages below).
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    local_rank = _env_int("LOCAL_RANK", dist.get_rank())
    ctx = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                      local_rank=local_rank,
                      local_world_size=_env_int("LOCAL_WORLD_SIZE", dist.get_world_size()))
    ctx.control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    return ctx


def local_device(requested: str, ctx: DistContext) -> str:
    """The device this process trains on: ``requested`` when alone; with several processes
    the CPU stays the CPU and a GPU is the local rank's own (cuda:LOCAL_RANK), made current
    so that NCCL uses it."""
    if not ctx.enabled or requested == "cpu":
        return requested
    if requested == "mps":
        raise ConfigError("training on several processes needs CUDA GPUs or the CPU; "
                          "use --device cuda (or cpu) with torchrun")
    if not torch.cuda.is_available():
        return "cpu" if requested == "auto" else requested  # resolve_device says why not
    count = torch.cuda.device_count()
    if ctx.local_rank < count:
        index = ctx.local_rank
    elif count == 1:  # each process sees only its own GPU (CUDA_VISIBLE_DEVICES per task)
        index = 0
    else:
        raise ConfigError(f"{ctx.local_world_size} processes on this machine but only {count} "
                          "GPU(s): start at most one process per GPU "
                          f"(--nproc-per-node {count})")
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel (gradients averaged over the ranks
    during backward). Buffers are synchronised once, at the start, but not before every
    step: with synchronised batch norm they agree anyway, MoCo's queue is identical on every
    rank by construction, and sending a 65536-key queue every step would cost more than
    the step."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


class SilentEvents(EventWriter):
    """The event writer of ranks other than 0: it writes nothing anywhere."""

    def __init__(self) -> None:
        super().__init__(None)

    def attach(self, events_path: Any) -> None:
        return None

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        return {"type": type}


def shutdown() -> None:
    """End the process group, if one is running (at the end of a torchrun process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

