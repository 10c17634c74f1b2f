"""Data-parallel plumbing: torchrun environment, gradient averaging, rank-0 helpers.

Shared by ``face3dkit train-rnet`` and ``fer train`` (``fer.train.distributed``
re-exports it). Launching with ``torchrun --nproc_per_node N ... <command> ...`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; :func:`setup` then initialises the default process group (NCCL on CUDA, Gloo on
CPU) and pins each process to its GPU. Without those variables everything runs in one process.

Gradients are averaged explicitly after each backward pass (:func:`average_gradients`, bucketed
all-reduce) rather than through ``DistributedDataParallel`` hooks: GAN steps back-propagate several
losses through different sub-networks per iteration, which DDP's one-forward-one-backward
bookkeeping does not express; the result is the same synchronous data parallelism.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "setup", "cleanup", "average_gradients", "broadcast_module", "broadcast_buffers",
           "all_gather_objects", "all_reduce_sum", "barrier"]


@dataclass
class DistInfo:
    """Process layout: ``rank`` of ``world_size`` processes, ``local_rank`` on this node, ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA was requested but is not available")
        index = dev.index if dev.index is not None else local_rank % torch.cuda.device_count()
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    return dev


def setup(device: str = "auto") -> DistInfo:
    """Initialise the process group when ``WORLD_SIZE > 1`` (torchrun) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def cleanup() -> None:
    """Destroy the process group if this module's :func:`setup` created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_gradients(params: list[nn.Parameter], bucket_mb: float = 25.0) -> None:
    """All-reduce-average the ``.grad`` of ``params`` over ranks (no-op in one process).

    Parameters without a gradient on a rank get a zero gradient so that every rank reduces the
    same tensors.
    """
    if not _active():
        return
    world = dist.get_world_size()
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    limit = int(bucket_mb * 2**20)
    bucket: list[torch.Tensor] = []
    size = 0

    def flush() -> None:
        if not bucket:
            return
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for g in bucket:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n
        bucket.clear()

    for g in grads:
        if bucket and (g.dtype != bucket[0].dtype or size + g.numel() * g.element_size() > limit):
            flush()
            size = 0
        bucket.append(g)
        size += g.numel() * g.element_size()
    flush()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers of rank ``src`` to every rank."""
    if not _active():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src)


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy the buffers (batch-norm running statistics, counters) of rank ``src`` to every rank."""
    if not _active():
        return
    with torch.no_grad():
        for t in module.buffers():
            dist.broadcast(t.data, src)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list in one process)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (returned; the input is reduced in place)."""
    if _active():
        dist.all_reduce(values)
    return values


def barrier() -> None:
    """Wait for every rank."""
    if _active():
        dist.barrier()
