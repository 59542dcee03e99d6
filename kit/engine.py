"""The one training loop, used by every method of the kit.

A method supplies a *step function* -- the body of its paper's algorithm box -- and the
engine does everything generic: iteration-based schedule, any number of infinite and
resumable data streams (source, target, ...), poly learning-rate decay on every
optimizer (with the 10x head multiplier of DeepLab papers), bf16 autocast and
channels_last where they help, ``tqdm.auto`` progress, a history of losses and
periodic validation, checkpoint and exact resume, a NaN/inf guard, a guard against
labelled streams whose labels are all void (255), and seeding.

A step function has the signature ``step(batch, engine) -> dict[str, Tensor | float]``:
``batch`` maps each stream name to its ``(images, labels)`` already on the device;
the step runs its forward passes inside ``engine.autocast()``, calls ``backward`` and
``optimizer.step()`` itself (AdaptSegNet interleaves two optimizers, so the engine does
not presume one loss), and returns the losses to log.

Under ``torchrun`` (see :mod:`kit.distributed`) the same engine trains data-parallel:
``batch_size`` is per process, modules with trainable parameters are wrapped in
DistributedDataParallel, each process reads a disjoint slice of every global batch,
and rank 0 alone shows progress, evaluates and writes checkpoints.

Inference and evaluation (``predict``, ``evaluate``, ``EvalResult``) live in :mod:`kit.evaluation`;
the device, precision and threads (``resolve_device``, ``autocast``, ``set_threads``) in :mod:`kit.machine`.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from . import distributed as dist_utils
from .cache import checkpoint_exists, load_checkpoint, load_into, save_checkpoint
from .data import VOID_LABELS_HINT, describe_dataset
from .data.labels import IGNORE_INDEX
from .machine import amp_dtype, autocast, resolve_device

__all__ = [
    "seed_everything", "BatchStream", "make_optimizer", "poly_lr",
    "History", "Engine",
]


# ----------------------------------------------------------------------------------
# Devices, precision, seeds
# ----------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _progress_bar(**kwargs):
    """A tqdm bar: the notebook widget when a front end shows it; plain text updated at most
    every 30 s in headless runs (papermill, nbval). A widget bar sends several messages a
    second, and a client that reads them only after a long cell (nbval) loses messages past
    ZeroMQ's queue limit -- the kernel's final status among them, which fails the cell."""
    from .viz import headless

    if headless():
        from tqdm.std import tqdm

        return tqdm(mininterval=30.0, maxinterval=120.0, leave=False, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(leave=False, dynamic_ncols=True, **kwargs)


# ----------------------------------------------------------------------------------
# Data streams
# ----------------------------------------------------------------------------------
class _StartAt(torch.utils.data.Sampler):
    """Batch sampler: batch k of an endless sequence of seeded epochs, starting at ``start``.

    With ``world > 1`` each global batch has ``batch_size * world`` indices (the same on
    every rank) and this rank yields its contiguous slice ``[rank*bs, (rank+1)*bs)``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, shuffle: bool, rank: int = 0,
                 world: int = 1):
        self.n, self.bs, self.seed, self.start, self.shuffle = n, batch_size, seed, start, shuffle
        self.rank, self.world = rank, world
        self.global_bs = batch_size * world
        self.per_epoch = n // self.global_bs

    def __iter__(self):
        k = self.start
        while True:
            epoch, j = divmod(k, self.per_epoch)
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                perm = torch.randperm(self.n, generator=g)
            else:
                perm = torch.arange(self.n)
            lo = j * self.global_bs + self.rank * self.bs
            yield perm[lo:lo + self.bs].tolist()
            k += 1


class BatchStream:
    """An infinite, resumable stream of batches over a map-style dataset.

    Batch ``k`` is a pure function of ``(seed, k)``: epochs are seeded permutations,
    the last incomplete batch of an epoch is dropped. ``state_dict()`` records how many
    batches were consumed, so a resumed run reads exactly the batches it would have.

    Distributed (``world > 1``): ``batch_size`` is per rank; batch ``k`` is the same global
    list of ``batch_size * world`` indices on every rank, and rank ``rank`` reads its
    contiguous share of it, so the ranks' batches are disjoint and their union is the
    batch a single process with ``batch_size * world`` would read.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, shuffle: bool = True,
                 num_workers: int = 0, pin_memory: bool = False, start: int = 0, *, rank: int = 0,
                 world: int = 1):
        n = len(dataset)  # type: ignore[arg-type]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in 0..{world - 1}, got {rank}")
        if n < batch_size * world:
            per = f" ({batch_size} per process x {world} processes)" if world > 1 else ""
            raise ValueError(f"dataset {dataset!r} has {n} items, fewer than the batch size {batch_size * world}{per}")
        self.rank, self.world = rank, world
        self.dataset, self.batch_size, self.seed, self.shuffle = dataset, batch_size, seed, shuffle
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.consumed = start
        self._it: Iterator | None = None

    def _make(self) -> Iterator:
        sampler = _StartAt(len(self.dataset), self.batch_size, self.seed, self.consumed, self.shuffle,
                           self.rank, self.world)
        # a private generator: creating the iterator must not draw from the global RNG,
        # or a resumed run (which creates it anew) would diverge from an uninterrupted one
        g = torch.Generator().manual_seed(self.seed * 31 + self.consumed)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, persistent_workers=False, generator=g)
        return iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            self._it = self._make()
        batch = next(self._it)
        self.consumed += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.consumed = int(state["consumed"])
        self._it = None


# ----------------------------------------------------------------------------------
# Optimizers and schedules
# ----------------------------------------------------------------------------------
def _groups(params_or_groups, lr: float) -> list[dict]:
    if isinstance(params_or_groups, nn.Module):
        m = params_or_groups
        params_or_groups = m.param_groups() if hasattr(m, "param_groups") else [
            {"params": [p for p in m.parameters() if p.requires_grad], "lr_mult": 1.0, "name": "all"}]
    groups = list(params_or_groups)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups, "lr_mult": 1.0, "name": "all"}]
    out = []
    for g in groups:
        g = dict(g)
        g["params"] = [p for p in g["params"] if p.requires_grad]
        if not g["params"]:
            continue
        g.setdefault("lr_mult", 1.0)
        g["lr"] = lr * g["lr_mult"]
        g["initial_lr"] = g["lr"]
        out.append(g)
    if not out:
        raise ValueError("no trainable parameters to optimize")
    return out


def make_optimizer(kind: str, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                   betas: tuple[float, float] = (0.9, 0.99)) -> torch.optim.Optimizer:
    """SGD or Adam over a module's ``param_groups()`` (each group's ``lr_mult`` scales ``lr``)."""
    groups = _groups(params, lr)
    # Fused kernels: one pass over all parameters per step instead of ~10 small ops per tensor
    # (the quick step: 87.7 -> 82.5 ms at ResNet-18 width 16, 57 -> 49 ms at ResNet-10, AVX2
    # fp32). Same update rule; results differ from the per-tensor loop in the last float bits.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    fused = fused or None
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {kind!r}; expected 'sgd', 'adam' or 'adamw'")


def poly_lr(base_lr: float, it: int, max_it: int, power: float = 0.9) -> float:
    """DeepLab's poly schedule: ``base_lr * (1 - it / max_it) ** power``."""
    return base_lr * max(0.0, 1.0 - it / max_it) ** power


# ----------------------------------------------------------------------------------
# History
# ----------------------------------------------------------------------------------
@dataclass
class History:
    """Losses per logged iteration and validation metrics per evaluation."""

    train: list[dict[str, float]] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def frame(self, which: str = "train"):
        import pandas as pd

        return pd.DataFrame(self.train if which == "train" else self.val)

    def to_dict(self) -> dict:
        return {"train": self.train, "val": self.val, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Mapping) -> "History":
        return cls(list(d.get("train", [])), list(d.get("val", [])), float(d.get("seconds", 0.0)))


# ----------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------
class _DDP(nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that forwards unknown attributes to the wrapped module,
    so step functions can still call e.g. ``engine.modules["model"].param_groups()``.
    Only the forward (``wrapper(x)``) synchronises gradients."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


StepFn = Callable[[dict[str, Any], "Engine"], Mapping[str, Any]]


class Engine:
    """Runs ``step`` for ``max_iters`` iterations of a poly schedule of length ``iters``.

    Args:
        modules: the networks the step trains (saved in checkpoints), by name.
        optimizers: their optimizers, by name (poly-decayed, saved in checkpoints).
        step: the method's step function (see module docstring).
        data: dataset per stream name; each becomes an infinite :class:`BatchStream`.
        batch_size: one size for all streams or a size per stream.
        iters: length of the poly schedule. ``max_iters``: stop earlier (the papers
            often stop a 250k schedule at 150k); default ``iters``.
        eval_fn: ``eval_fn(engine) -> dict`` run every ``eval_every`` iterations and at the end.
        checkpoint: a ``.pt`` path; saved every ``checkpoint_every`` iterations and at
            the end; if it exists when ``run`` starts, the run resumes from it exactly.
        distributed: ``None`` (default) = on when a ``torch.distributed`` process group
            with more than one process is initialised (``torchrun``, see
            :mod:`kit.distributed`), ``False`` = never. Then ``batch_size`` is *per process*,
            each module with trainable parameters is wrapped in DistributedDataParallel
            (``self.modules[name]``; the plain module is ``self.raw_modules[name]`` and is
            what checkpoints hold), losses are averaged over processes, and progress,
            evaluation and checkpoint writing happen on rank 0 only.
        find_unused_parameters: passed to DistributedDataParallel (for modules whose
            parameters do not all receive gradients in every iteration).
        unlabelled: streams whose labels may be all void (255) by design and are not checked:
            by default ``"target"``, the domain-adaptation target (unlabelled, or labelled over
            time by active learning). Every other stream whose batches carry label maps
            (``[B, H, W]`` integers) must show a labelled pixel within its first
            :attr:`LABEL_CHECK_BATCHES` batches (or all of them in a shorter run), else ``run``
            raises ``ValueError`` naming the dataset, before the step of that last batch: all-void
            labels give a loss of 0 and a model that learnt nothing. Streams of per-item indices
            (:class:`kit.data.Unlabeled`) carry no label maps and are never checked.
    """

    #: batches of a labelled stream read before all-void labels count as a data error (one
    #: all-void batch, e.g. a crop of an ignored region, is legitimate; twenty in a row are not)
    LABEL_CHECK_BATCHES = 20

    def __init__(self, modules: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
                 step: StepFn, data: Mapping[str, Dataset], batch_size: int | Mapping[str, int],
                 iters: int, *, max_iters: int | None = None, poly_power: float = 0.9,
                 device: str | torch.device = "auto", amp: str = "auto", channels_last: bool = True,
                 seed: int = 0, eval_fn: Callable[["Engine"], Mapping[str, float]] | None = None,
                 eval_every: int = 0, log_every: int = 10, checkpoint: str | Path | None = None,
                 checkpoint_every: int = 0, progress: bool = True, num_workers: int = 0,
                 desc: str = "train", distributed: bool | None = None, find_unused_parameters: bool = False,
                 unlabelled: Collection[str] = ("target",)):
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        self.max_iters = iters if max_iters is None else int(max_iters)
        if not 1 <= self.max_iters <= iters:
            raise ValueError(f"max_iters must be in 1..iters={iters}, got {max_iters}")
        self.iters = int(iters)
        self.distributed = dist_utils.is_active() if distributed is None else bool(distributed)
        if self.distributed and not dist_utils.is_active():
            raise RuntimeError("distributed=True needs an initialised process group with more than one process; "
                               "launch with torchrun and call kit.distributed.init_distributed() first")
        self.rank = dist_utils.rank() if self.distributed else 0
        self.world_size = dist_utils.world_size() if self.distributed else 1
        self.device = resolve_device(device)
        if self.distributed and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())  # set to LOCAL_RANK by init_distributed
        self.amp = amp
        amp_dtype(self.device, amp)  # validates
        self.channels_last = channels_last
        self.modules = dict(modules)
        self.optimizers = dict(optimizers)
        self.step_fn = step
        self.poly_power = poly_power
        self.seed = seed
        self.eval_fn, self.eval_every, self.log_every = eval_fn, eval_every, max(1, log_every)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = checkpoint_every
        self.progress, self.desc = progress, desc
        bs = batch_size if isinstance(batch_size, Mapping) else {k: batch_size for k in data}
        missing = set(data) - set(bs)
        if missing:
            raise ValueError(f"no batch size for streams {sorted(missing)}")
        if self.device.type == "cuda":
            # fixed input sizes: let cuDNN pick the fastest kernels once
            torch.backends.cudnn.benchmark = True
        pin = self.device.type == "cuda"

        def on_cpu(ds) -> bool:   # a dataset that renders on the GPU (ToyWorld(device="cuda")) needs no workers
            return torch.device(getattr(ds, "device", "cpu")).type == "cpu"

        self.streams = {k: BatchStream(ds, int(bs[k]), seed=seed * 7919 + i,
                                       num_workers=num_workers if on_cpu(ds) else 0,
                                       pin_memory=pin and on_cpu(ds), rank=self.rank, world=self.world_size)
                        for i, (k, ds) in enumerate(data.items())}
        self.unlabelled = frozenset(unlabelled)
        self.history = History()
        self.it = 0
        for m in self.modules.values():
            m.to(self.device)
            if channels_last:
                m.to(memory_format=torch.channels_last)
        #: the plain modules (checkpoints hold their state_dicts); ``modules`` holds the DDP wrappers
        self.raw_modules = dict(self.modules)
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            for k, m in self.raw_modules.items():
                if any(p.requires_grad for p in m.parameters()):
                    self.modules[k] = _DDP(m, device_ids=ids, find_unused_parameters=find_unused_parameters)

    #: the config fields every method's Engine takes unchanged (:meth:`from_config`)
    CONFIG_FIELDS = ("poly_power", "device", "amp", "channels_last", "log_every", "progress", "num_workers")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], modules: Mapping[str, nn.Module],
                    optimizers: Mapping[str, torch.optim.Optimizer], step: StepFn, data: Mapping[str, Dataset], *,
                    seed: int, batch_size: int | Mapping[str, int] | None = None, iters: int | None = None,
                    **kw: Any) -> "Engine":
        """A method's Engine from its resolved config: ``batch_size`` and ``iters`` default to
        the config's, the machine and logging fields (:attr:`CONFIG_FIELDS`) come from it, and
        ``kw`` (``max_iters``, ``eval_fn``, ``eval_every``, ``desc``, ...) passes through,
        overriding a config field where it names one."""
        opts = {f: cfg[f] for f in cls.CONFIG_FIELDS}
        opts.update(kw)
        return cls(modules, optimizers, step, data, cfg["batch_size"] if batch_size is None else batch_size,
                   int(cfg["iters"] if iters is None else iters), seed=seed, **opts)

    @property
    def is_main(self) -> bool:
        """True on the process that logs, evaluates and saves (always, without distribution)."""
        return self.rank == 0

    # -- helpers available to step functions ----------------------------------------
    def autocast(self):
        """The autocast context that step functions wrap their forward passes in."""
        return autocast(self.device, self.amp)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        nb = self.device.type == "cuda"
        if x.dim() == 4 and x.is_floating_point():
            x = x.to(self.device, non_blocking=nb)
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        return x.to(self.device, non_blocking=nb)

    @property
    def progress_fraction(self) -> float:
        return self.it / self.iters

    # -- checkpointing --------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {f"module.{k}": m.state_dict() for k, m in self.raw_modules.items()}
        state.update({f"optim.{k}": o.state_dict() for k, o in self.optimizers.items()})
        state["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            state["rng.cuda"] = torch.cuda.get_rng_state_all()
        return state

    def save(self, path: str | Path | None = None) -> Path:
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("no checkpoint path given")
        meta = {"iteration": self.it, "iters": self.iters, "history": self.history.to_dict(),
                "streams": {k: s.state_dict() for k, s in self.streams.items()}, "seed": self.seed}
        return save_checkpoint(path, self.state_dict(), meta)

    def load(self, path: str | Path) -> None:
        state, meta = load_checkpoint(path, map_location="cpu")
        # a missing module, or weights of another layout: a CheckpointError naming what differs
        load_into(path, {f"module.{k}": m for k, m in self.raw_modules.items()}, state)
        for k, o in self.optimizers.items():
            if f"optim.{k}" in state:
                o.load_state_dict(state[f"optim.{k}"])
        torch.set_rng_state(state["rng.torch"])
        if "rng.cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng.cuda"])
        self.it = int(meta["iteration"])
        self.history = History.from_dict(meta.get("history", {}))
        for k, s in self.streams.items():
            if k in meta.get("streams", {}):
                s.load_state_dict(meta["streams"][k])

    # -- the loop -------------------------------------------------------------------
    def _set_lr(self) -> None:
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g["lr"] = poly_lr(g["initial_lr"], self.it, self.iters, self.poly_power)

    def _evaluate(self, t_loop: float) -> None:
        if self.eval_fn is None:
            return
        if self.is_main:
            wrapped = self.modules
            # rank 0 evaluates alone: hand eval_fn the plain modules, whose forward runs no collectives
            self.modules = dict(self.raw_modules)
            try:
                for m in self.modules.values():
                    m.eval()
                with torch.no_grad():
                    metrics = dict(self.eval_fn(self))
                for m in self.modules.values():
                    m.train()
            finally:
                self.modules = wrapped
            rec = {"iter": self.it, **{k: float(v) for k, v in metrics.items()}, "time_s": t_loop}
            self.history.val.append(rec)
        if self.distributed:
            dist_utils.barrier()

    def _save_main(self) -> None:
        """Save on rank 0; the other ranks wait until the file is complete."""
        if self.is_main:
            self.save()
        if self.distributed:
            dist_utils.barrier()

    def _check_losses(self, losses: Mapping[str, Any]) -> dict[str, float]:
        names = list(losses)
        vals = [float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for v in losses.values()]
        if self.distributed:
            vals = dist_utils.all_reduce_mean(vals)  # a NaN on any rank reaches every rank
        out = {}
        for name, v in zip(names, vals):
            if not math.isfinite(v):
                raise FloatingPointError(
                    f"loss {name!r} is {v} at iteration {self.it} of {self.desc!r}; training stopped. "
                    f"Lower the learning rate or check the inputs (the last good checkpoint, if any, "
                    f"is untouched).")
            out[name] = v
        return out

    def _check_labelled(self, seen: Mapping[str, bool], batches: int) -> None:
        """Raise if a checked stream showed no labelled pixel in its first ``batches`` batches
        (under distribution: on no process; every process calls this at the same iteration)."""
        names = list(seen)
        flags = [1.0 if seen[k] else 0.0 for k in names]
        if self.distributed:
            flags = dist_utils.all_reduce_mean(flags)   # > 0 where any process saw a labelled pixel
        void = [k for k, f in zip(names, flags) if f == 0]
        if not void:
            return
        k = void[0]
        s = self.streams[k]
        raise ValueError(
            f"training stream {k!r} of {self.desc!r} has no labelled pixel in its first {batches} batch(es) "
            f"({batches * s.batch_size * self.world_size} items) of {describe_dataset(s.dataset)}: every label "
            f"pixel is {IGNORE_INDEX} (ignore), so the loss is 0 and nothing is learnt. {VOID_LABELS_HINT} "
            f"Data that is unlabelled by design belongs in a stream listed in Engine(unlabelled=...) or behind kit.data.Unlabeled.")

    def run(self) -> History:
        """Train until ``max_iters`` (resuming from the checkpoint if one exists)."""
        if self.checkpoint is not None and checkpoint_exists(self.checkpoint):
            self.load(self.checkpoint)
        elif self.it == 0:
            torch.manual_seed(self.seed + 1)
        bar = _progress_bar(total=self.max_iters, initial=self.it, desc=self.desc,
                            disable=not (self.progress and self.is_main))
        for m in self.modules.values():
            m.train()
        t0 = time.perf_counter() - self.history.seconds
        running: dict[str, float] = {}
        n_run = 0
        # all-void labels: look at the first batches of each labelled stream (on the CPU, before the
        # copy to the device) until one shows a labelled pixel; decide at one iteration for all ranks
        seen = {k: False for k in self.streams if k not in self.unlabelled}
        check_at = min(self.it + self.LABEL_CHECK_BATCHES, self.max_iters)
        start = self.it
        try:
            while self.it < self.max_iters:
                self._set_lr()
                batch = {}
                for k, s in self.streams.items():
                    x, y = next(s)
                    if k in seen and not seen[k]:
                        # a batch of per-item indices or other non-map labels has nothing to check
                        is_map = isinstance(y, torch.Tensor) and y.dim() >= 3 and not y.is_floating_point()
                        seen[k] = not is_map or bool((y != IGNORE_INDEX).any())
                    batch[k] = (self.to_device(x), self.to_device(y))
                if seen and self.it + 1 == check_at:
                    self._check_labelled(seen, check_at - start)
                losses = self.step_fn(batch, self)
                self.it += 1
                for name, v in self._check_losses(losses).items():
                    running[name] = running.get(name, 0.0) + v
                n_run += 1
                if self.it % self.log_every == 0 or self.it == self.max_iters:
                    rec = {"iter": self.it, **{k: v / n_run for k, v in running.items()}}
                    lrs = [g["lr"] for o in self.optimizers.values() for g in o.param_groups[:1]]
                    if lrs:
                        rec["lr"] = lrs[0]
                    self.history.train.append(rec)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in rec.items() if k not in ("iter", "lr")}, refresh=False)
                    running, n_run = {}, 0
                bar.update(1)
                if self.eval_every and self.it % self.eval_every == 0 and self.it < self.max_iters:
                    self._evaluate(time.perf_counter() - t0)
                if self.checkpoint is not None and self.checkpoint_every and self.it % self.checkpoint_every == 0 \
                        and self.it < self.max_iters:
                    self.history.seconds = time.perf_counter() - t0
                    self._save_main()
        finally:
            bar.close()
        self._evaluate(time.perf_counter() - t0)
        self.history.seconds = time.perf_counter() - t0
        if self.checkpoint is not None:
            self._save_main()
        for m in self.modules.values():
            m.eval()
        return self.history
