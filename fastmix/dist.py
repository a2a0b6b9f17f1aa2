"""Distributed helpers (used by the trainer, the methods and the evaluation suite): start
from torchrun's environment, reduce, gather.

``init()`` reads ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (set by ``torchrun``); with more
than one process it starts a process group (``nccl`` on GPUs, ``gloo`` on CPUs). Every
helper is a no-op in a single process, so the trainer and the methods call them freely.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import Tensor


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False  # we created the process group (and destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init(device_type: str) -> DistInfo:
    """Join the torchrun process group if there is one (``device_type`` picks the backend)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    started = False
    if not tdist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local)
        tdist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        started = True
    return DistInfo(rank, world, local, started)


def shutdown(info: DistInfo) -> None:
    if info.started_here and tdist.is_initialized():
        tdist.destroy_process_group()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over ranks (a new tensor; ``t`` itself single-process)."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return t
    t = t.clone()
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenate ``t`` (``(n_r, ...)``, any n_r per rank) from every rank along dim 0, in rank order."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return t
    world = tdist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    tdist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    pad = t.new_zeros((max(sizes),) + tuple(t.shape[1:]))
    pad[: t.shape[0]] = t
    out = [torch.empty_like(pad) for _ in range(world)]
    tdist.all_gather(out, pad)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


def all_gather_object(obj) -> list:
    if not (tdist.is_available() and tdist.is_initialized()):
        return [obj]
    out = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
