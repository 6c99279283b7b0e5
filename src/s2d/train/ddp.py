"""torch.distributed plumbing for ``torchrun --nproc-per-node N -m s2d train ...``.

:func:`init_distributed` reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by torchrun, or by a test
harness with ``MASTER_ADDR``/``MASTER_PORT``) and initialises the default process group — gloo on CPU, nccl on
CUDA — when ``WORLD_SIZE > 1``. Clip sampling is sharded by rank (each rank draws different sample indices,
see :mod:`s2d.train.loop`); the dense labelset is labelled in shards, every rank a share of the videos, and
joined by rank 0 (:mod:`s2d.train.dense`); only rank 0 writes checkpoints, metrics and the joined labelset.

The process group's timeout (how long a collective may wait for the slowest rank before the job fails) is set
explicitly: :data:`DEFAULT_TIMEOUT_S` (2 hours), or ``S2D_DDP_TIMEOUT`` seconds from the environment: ranks wait
at barriers for the slowest rank's share of the dense labelset, which takes long on large data.
"""

from __future__ import annotations

import atexit
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import torch
import torch.distributed as dist
from torch import nn


from s2d.device import AUTO, resolve_device
from s2d.errors import SettingError

if TYPE_CHECKING:
    import datetime

__all__ = ["DEFAULT_TIMEOUT_S", "DistEnv", "init_distributed", "is_main_process", "wrap_ddp", "barrier",
           "all_reduce_mean", "any_true", "cleanup", "process_group_timeout"]

#: seconds a collective may wait for the other ranks (``S2D_DDP_TIMEOUT`` overrides it)
DEFAULT_TIMEOUT_S = 7200


def process_group_timeout() -> "datetime.timedelta":
    """The process group's timeout: ``S2D_DDP_TIMEOUT`` seconds when set (a positive number), else
    :data:`DEFAULT_TIMEOUT_S`."""
    import datetime

    from s2d.errors import SettingError

    raw = os.environ.get("S2D_DDP_TIMEOUT", "").strip()
    if not raw:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise SettingError(f"S2D_DDP_TIMEOUT must be a number of seconds > 0, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: Union[str, torch.device, None] = None) -> DistEnv:
    """Initialise the process group if launched distributed; returns this process's :class:`DistEnv`.

    ``device`` ``None`` picks ``cuda:LOCAL_RANK`` when CUDA is available, else CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device is None or device == AUTO:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    resolve_device(device)  # a bad name or a missing GPU: one line
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local if world > 1 else 0)
    here = False
    if world > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=process_group_timeout())
        here = True
        # destroyed at interpreter exit, not after each train() call: re-initialising on the same
        # MASTER_PORT within one process can hang, so the group lives as long as the process
        atexit.register(_destroy)
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistEnv(rank, world, local, dev, here)


def is_main_process() -> bool:
    """True unless this process is a rank other than 0 of a live process group (the group outlives
    :func:`s2d.train.train`, see :func:`init_distributed`), so callers can tell after training who reports."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def wrap_ddp(model: nn.Module, env: DistEnv, find_unused_parameters: bool = False) -> nn.Module:
    """DDP-wrap ``model`` when distributed (else return it). ``find_unused_parameters`` is needed when a head
    gets no gradient (objectness loss weight 0, as the reference S2D configs)."""
    if not env.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [env.device.index] if env.device.type == "cuda" else None
    with warnings.catch_warnings():
        # recent torch deprecates broadcast_buffers but tells callers that rely on buffers not being synced
        # (ours were set up this way on purpose) to keep it until its replacement can skip the initial sync
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        return DDP(model, device_ids=ids, find_unused_parameters=find_unused_parameters,
                   broadcast_buffers=False)


def barrier(env: Optional[DistEnv] = None) -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on some rank."""
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)
    return flag


def agree(flag: bool, device: torch.device, what: str) -> bool:
    """``flag`` when every rank holds the same value; otherwise a :class:`SettingError` on every rank (so no
    rank goes on alone and the others wait at a barrier). ``what`` names the decision in the message, e.g.
    ``"RUN/distill/last.pt exists"``: ranks that see different run folders disagree on what to resume."""
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([1.0 if flag else 0.0, 0.0 if flag else 1.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if bool(t[0] > 0) and bool(t[1] > 0):
            raise SettingError(f"the ranks disagree on whether {what} (rank {dist.get_rank()} says "
                               f"{'yes' if flag else 'no'}): put the run folder on storage every rank shares")
    return flag


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cleanup(env: DistEnv) -> None:
    """Destroy the process group if :func:`init_distributed` created it (also done at exit)."""
    if env.initialized_here:
        _destroy()
