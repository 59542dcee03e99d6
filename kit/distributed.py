"""Multi-GPU training through PyTorch's own engine (``torchrun`` + DistributedDataParallel).

Nothing here is needed on a laptop: without ``torchrun`` every function is a no-op
(rank 0 of a world of 1) and the kit runs in one process as usual.

Train a registered method on N GPUs of one machine::

    torchrun --nproc_per_node=N -m kit train source_only --profile paper -p ITERS=150000

(``torchrun --nnodes=M --node_rank=R --rdzv_endpoint=HOST:PORT ...`` for several machines.)
``kit train`` calls :func:`init_distributed`, which reads the ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` variables that torchrun sets, joins the process group (NCCL when CUDA
is available, gloo otherwise) and pins each process to GPU ``LOCAL_RANK``.

What the :class:`kit.engine.Engine` then does on its own:

* every module with trainable parameters is wrapped in ``DistributedDataParallel``;
  ``engine.modules[name]`` is the wrapper (step functions call it as before and their
  gradients are averaged across processes), ``engine.raw_modules[name]`` is the plain
  module, and checkpoints hold the plain ``state_dict`` (no ``module.`` prefixes), so a
  checkpoint written by 8 GPUs loads in a one-process notebook;
* ``batch_size`` is **per process** (the torchrun convention): with N processes the
  global batch is ``N * batch_size``. Batch ``k`` of every stream is the same global list
  of ``N * batch_size`` indices on every rank and rank ``r`` reads its contiguous slice
  ``[r * batch_size, (r + 1) * batch_size)``, so the ranks read disjoint images and their
  union is exactly the batch a single process with ``batch_size = N * batch_size`` reads.
  To keep the paper's recipe (batch 1, LR 2.5e-4) on N GPUs, either keep ``batch_size=1``
  and accept a global batch of N (and usually scale the LR), or run one GPU;
* the logged losses are the mean over processes (one small all-reduce per iteration,
  which also makes the NaN guard stop every process at the same iteration);
* the progress bar, the history of validation metrics, evaluation and checkpoint writing
  happen on rank 0; the other ranks wait at a barrier while rank 0 evaluates or saves.
  A resumed run loads the same checkpoint on every rank.

Known limits: step functions must call the wrapped module (``engine.modules[...]``) for
its forward pass -- calling a submodule or a method of the raw module bypasses DDP's
gradient synchronisation; the loss dict a step returns must have the same keys on every
rank; BatchNorm statistics are per process (the paper profile freezes BN, so this does
not matter there; ``nn.SyncBatchNorm.convert_sync_batchnorm`` before building the
optimizer gives synchronised BN on GPUs). Modules whose parameters are used in some
iterations only need ``Engine(..., find_unused_parameters=True)``.
"""
from __future__ import annotations

import datetime
import gc
import os
from typing import NamedTuple, Sequence

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "is_initialized", "is_active", "is_main", "rank", "world_size",
           "local_rank", "barrier", "cleanup", "all_reduce_mean", "launched_by_torchrun"]


class DistInfo(NamedTuple):
    rank: int
    world_size: int
    local_rank: int
    backend: str | None


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are set."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_active() -> bool:
    """True when a process group with more than one process is running."""
    return is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in an ordinary single-process run)."""
    return rank() == 0


def init_distributed(backend: str | None = None, timeout_minutes: float | None = None) -> DistInfo:
    """Join the torchrun process group; a no-op (rank 0 of 1) without torchrun.

    ``backend``: default NCCL when CUDA is available, else gloo. With CUDA, the process
    is pinned to GPU ``LOCAL_RANK`` (``torch.cuda.set_device``) before the group starts.
    ``timeout_minutes`` (default ``$KIT_DIST_TIMEOUT_MIN`` or 60) bounds how long ranks
    wait for each other, e.g. while rank 0 evaluates. Calling it twice is harmless.
    """
    if is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank(), dist.get_backend())
    if not launched_by_torchrun():
        return DistInfo(0, 1, 0, None)
    r, world, lr = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if world <= 1:
        return DistInfo(0, 1, 0, None)
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; it cannot run under torchrun")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        if lr >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={lr} but only {torch.cuda.device_count()} GPU(s) are visible; "
                               f"use --nproc_per_node <= {torch.cuda.device_count()}")
        torch.cuda.set_device(lr)
    minutes = float(timeout_minutes if timeout_minutes is not None else os.environ.get("KIT_DIST_TIMEOUT_MIN", 60))
    dist.init_process_group(backend=backend, rank=r, world_size=world,
                            timeout=datetime.timedelta(minutes=minutes))
    return DistInfo(r, world, lr, backend)


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if not is_active():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def cleanup(sync: bool = False) -> None:
    """Leave the process group (no-op without one).

    ``sync=True`` is the orderly end of a run that succeeded on every rank: the objects that
    still hold the group (a DistributedDataParallel's reducer) are freed first, then every
    process waits for the others, so no rank shuts its connections down while another still
    uses them. Leave it False on an error path, where another rank may never arrive.
    """
    if not is_initialized():
        return
    if sync:
        gc.collect()
        barrier()
    dist.destroy_process_group()


def comm_device() -> torch.device:
    """Where tensors for collectives must live: the current GPU for NCCL, else the CPU."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: Sequence[float]) -> list[float]:
    """The mean of each value over all processes (the values themselves without a group)."""
    values = [float(v) for v in values]
    if not is_active() or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).tolist()
