"""Load-or-train with config hashing and atomic writes.

A checkpoint is two files: ``<key>.pt`` (a dict of plain ``state_dict``s and tensors,
loaded with ``torch.load(weights_only=True)``) and ``<key>.json`` (metadata: the
config, the training history, and the SHA-256 of the ``.pt`` file). Both are written
to a temporary file in the same folder and moved into place with ``os.replace``; the
JSON is written last, so a checkpoint without its JSON -- or whose ``.pt`` does not
match the recorded hash -- is incomplete and is never loaded as valid.

Keys. :func:`model_key` derives a trained model's key from its config: the fields of the
sections that define a model (:data:`kit.config.KEY_SECTIONS`; never ``run`` or
``notebook``), the identity of its data (:func:`kit.hashing.data_identity`), its seed, and the keys of
the cached models it starts from. No method keeps a list of fields of its own.
"""
from __future__ import annotations

import contextlib
import contextvars
import glob
import hashlib
import io
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .hashing import atomic_write_bytes, config_hash, data_identity, umask_mode

__all__ = ["model_key", "cache_name", "runs_root", "cache_root", "save_checkpoint", "load_checkpoint",
           "checkpoint_exists", "load_or_train", "bypassed", "key_lock", "load_into", "claim_run_dir", "CheckpointError",
           "StaleCheckpointError", "CacheError"]


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, partial or corrupt."""


#: the version of what a cached model is: bumped whenever a change of the code changes the
#: networks' layout or what a recipe trains for the same config (every key holds it, so such a
#: change trains anew instead of loading weights of another code). A layout change that slips
#: through without a bump is still caught on load (:func:`load_into`: kept aside, retrained).
KEY_VERSION = 2


def model_key(cfg: Mapping[str, Any], method: str, *, seed: int | None, data: Mapping[str, Any] | None = None,
              parents: tuple | list = (), tags: tuple | list = (), **extra: Any) -> dict:
    """The cache key of a model that ``method`` trains from ``cfg``.

    * ``config``: ``cfg``'s values of the fields of ``method`` in the sections that define a
      model (data, model, optim, schedule, method) -- for a method that trains several kinds of
      model, the untagged ones and those tagged with one of ``tags`` (:func:`kit.config.key_fields`);
      ``cfg`` may hold more fields (another method's): they do not enter;
    * ``data``: ``{role: dataset}``, each recorded by :func:`data_identity`;
    * ``parents``: the cache keys (:func:`cache_name`) of the cached models it starts from;
    * ``seed`` and ``extra`` (arguments of the training function that are not config fields).

    >>> from kit.config import resolve
    >>> a = model_key(resolve("smoke"), "supervised", seed=0)
    >>> a == model_key(resolve("smoke", progress=True, log_every=5), "supervised", seed=0)
    True
    >>> a == model_key(resolve("smoke", amp="off"), "supervised", seed=0)
    False
    """
    from .config import key_fields

    names = key_fields(method, tuple(tags))
    missing = [k for k in names if k not in cfg]
    if missing:
        raise KeyError(f"the config lacks fields of method {method!r}: {missing}; "
                       f"build it with kit.config.resolve(profile, {method!r})")
    return {"method": method, "version": KEY_VERSION, "tags": sorted(tags), "config": {k: cfg[k] for k in names},
            "data": {str(role): data_identity(ds) for role, ds in (data or {}).items()},
            "parents": [str(p) for p in parents], "seed": None if seed is None else int(seed), **extra}


def cache_name(name: str, key: Mapping[str, Any]) -> str:
    """The file stem of a cached model: ``<name>-<hash of key>`` (also ``meta["key"]`` of
    :func:`load_or_train`, and what a derived model records as its parent)."""
    return f"{name}-{config_hash(key)}"


def runs_root() -> Path:
    """Where runs go: ``$KIT_RUNS``, else ``runs/`` in the project folder.

    The project folder is the nearest parent of the working directory that holds a
    ``pyproject.toml`` (so a notebook executed from ``notebooks/`` writes to the same
    ``runs/`` as the command line), else the working directory itself.
    """
    if os.environ.get("KIT_RUNS"):
        return Path(os.environ["KIT_RUNS"])
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").exists():
            return d / "runs"
    return here / "runs"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$KIT_CACHE``, else ``runs/cache`` in the project folder (created).

    Raises :class:`CacheError` naming the path when it is a file or cannot be created."""
    root = Path(cache_dir or os.environ.get("KIT_CACHE") or runs_root() / "cache")
    if root.exists() and not root.is_dir():
        raise CacheError(f"the model cache {root} is a file, not a folder: point KIT_CACHE (or cache_dir) "
                         "at a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CacheError(f"cannot create the model cache folder {root} ({e.strerror or e}): point KIT_CACHE "
                         "(or cache_dir) at a writable folder") from None
    return root


class CacheError(OSError):
    """The model cache cannot be used as asked (not a folder, not writable)."""


# ----------------------------------------------------------------------------------
# Per-key locks: one process trains (or writes) a key, the others wait for it
# ----------------------------------------------------------------------------------
try:
    import fcntl
except ImportError:                      # no advisory locks (Windows): one process per cache
    fcntl = None                         # type: ignore[assignment]

#: locks this process holds: lock path -> [thread lock, depth, fd]; a nested acquire of the
#: same key (a save inside load_or_train's lock) is re-entrant instead of a self-deadlock
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


def _lock_path(path: Path) -> Path:
    """The lock file of checkpoint ``path`` (``<dir>/.<stem>.lock``)."""
    return path.parent / f".{path.stem}.lock"


@contextlib.contextmanager
def key_lock(path: str | os.PathLike, *, wait_message: str | None = None):
    """Hold the exclusive lock of checkpoint ``path`` (an advisory ``flock`` on ``.<stem>.lock``
    beside it) for the block: between processes (and threads) only one holds it at a time; the
    same thread may nest it. ``wait_message`` is printed once when another process holds it."""
    lp = _lock_path(Path(path))
    name = str(lp.resolve())
    with _HELD_GUARD:
        entry = _HELD.setdefault(name, [threading.RLock(), 0, None])
    rlock = entry[0]
    rlock.acquire()
    try:
        if entry[1] == 0:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT, umask_mode())
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if wait_message:
                        print(wait_message, flush=True)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except OSError as e:        # a filesystem without flock (some network mounts)
                    _warn_no_locks(lp.parent, e)
            entry[2] = fd
        entry[1] += 1
        try:
            yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                fd, entry[2] = entry[2], None
                os.close(fd)                  # closing the descriptor releases the flock
    finally:
        rlock.release()


_WARNED: set[str] = set()


def _warn_no_locks(folder: Path, err: OSError) -> None:
    if str(folder) not in _WARNED:
        _WARNED.add(str(folder))
        warnings.warn(f"{folder} does not support file locks ({err.strerror or err}): processes that share it "
                      "may train the same model twice (each save stays whole)", RuntimeWarning, stacklevel=3)


def _remove_stale_temps(path: Path) -> None:
    """Delete the temporary files a killed writer of ``path`` left (call with its lock held:
    no live writer of this checkpoint can own them then)."""
    for target in (path, path.with_suffix(".json")):
        for tmp in path.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Path:
    """Save ``state`` (state_dicts / tensors / numbers) to ``path`` (.pt) and ``meta`` beside it (.json).

    Writers of the same ``path`` take turns (:func:`key_lock`), so the pair on disk is always one
    writer's ``.pt`` with that writer's ``.json``; a reader that meets the pair mid-write sees it
    as incomplete (no ``.json``) or as not matching its hash, never as another valid model."""
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"checkpoint path must end with .pt, got {path}")
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    data = buf.getvalue()
    record = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "meta": dict(meta or {})}
    blob = json.dumps(record, indent=1, default=str).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    json_path = path.with_suffix(".json")
    with key_lock(path):
        _remove_stale_temps(path)
        # the stale JSON goes first: from here until the new JSON lands, the pair is incomplete
        json_path.unlink(missing_ok=True)
        atomic_write_bytes(path, data)
        atomic_write_bytes(json_path, blob)
    return path


def checkpoint_exists(path: str | os.PathLike) -> bool:
    """True if both files of a complete checkpoint are present (the hash is checked on load)."""
    path = Path(path)
    return path.is_file() and path.with_suffix(".json").is_file()


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns ``(state, meta)``.

    Raises :class:`CheckpointError` naming the file if it is missing, partial
    (no JSON), truncated, not a file, or otherwise different from what was written.
    """
    path = Path(path)
    json_path = path.with_suffix(".json")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    if not json_path.exists():
        raise CheckpointError(f"checkpoint {path} is incomplete: its metadata file {json_path.name} is missing "
                              "(a run was probably interrupted while saving); delete it and train again")
    try:
        record = json.loads(json_path.read_text())
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
        expected = record["sha256"]
        if not isinstance(expected, str):
            raise ValueError("its sha256 is not a string")
        meta = record.get("meta", {})
        if not isinstance(meta, dict):
            raise ValueError("its meta is not an object")
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint metadata {json_path} is unreadable ({e})") from None
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {len(data)} bytes, expected "
                              f"{record.get('bytes')} bytes with SHA-256 {expected[:12]}...; delete it and train again")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling error means a bad file
        raise CheckpointError(f"checkpoint {path} could not be loaded: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of weights")
    return state, meta


#: False inside :func:`bypassed`: load_or_train neither reads nor writes the cache
_USE_CACHE: contextvars.ContextVar[bool] = contextvars.ContextVar("kit_use_cache", default=True)


@contextlib.contextmanager
def bypassed():
    """Within the block, :func:`load_or_train` trains every model afresh and saves none:
    ``kit train`` runs a method's whole pipeline this way (also under ``torchrun``, whose
    global batch the cache keys do not record), leaving the notebooks' cache untouched.

        >>> with bypassed():
        ...     state, meta = load_or_train("demo", {"a": 1}, lambda: ({}, {"n": 1}), verbose=False)
        >>> meta["cached"], meta["n"]
        (False, 1)
    """
    token = _USE_CACHE.set(False)
    try:
        yield
    finally:
        _USE_CACHE.reset(token)


class StaleCheckpointError(CheckpointError):
    """A complete checkpoint whose weights no longer fit the network the code builds."""


def load_into(path: str | os.PathLike, modules: Mapping[str, torch.nn.Module], state: Mapping[str, Any]) -> None:
    """Load ``state[name]`` into each of ``modules`` strictly; a missing entry, a missing or
    unexpected parameter or a shape that differs raises :class:`StaleCheckpointError` that names
    the checkpoint and what changed (the network's layout changed since it was saved)."""
    for name, module in modules.items():
        if name not in state:
            raise StaleCheckpointError(f"checkpoint {path} has no weights for {name!r} (it holds {sorted(state)})")
        own = module.state_dict()
        saved = state[name]
        missing = [k for k in own if k not in saved]
        unexpected = [k for k in saved if k not in own]
        shapes = [f"{k}: saved {tuple(saved[k].shape)}, now {tuple(own[k].shape)}" for k in own
                  if k in saved and hasattr(saved[k], "shape") and tuple(saved[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or shapes:
            parts = [f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "",
                     f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}" if unexpected else "",
                     f"other shapes {shapes[:3]}{' ...' if len(shapes) > 3 else ''}" if shapes else ""]
            raise StaleCheckpointError(f"checkpoint {path}: the weights of {name!r} do not fit the network the code "
                                       f"builds now ({'; '.join(p for p in parts if p)})")
        module.load_state_dict(saved)


def _set_aside(path: Path, suffix: str) -> None:
    for p in (path, path.with_suffix(".json")):
        if p.exists():
            os.replace(p, p.with_name(p.name + suffix))


def _writable(root: Path) -> bool:
    return os.access(root, os.W_OK | os.X_OK)


#: what load_or_train did in this process, in order: ("loaded" | "trained", key) (:func:`activity`)
_EVENTS: list[tuple[str, str]] = []


def activity(since: int = 0) -> dict[str, frozenset[str]]:
    """The cache keys :func:`load_or_train` has loaded and trained in this process, from its
    ``since``-th call on (:func:`activity_mark` gives the mark of now). A notebook's record
    (:class:`kit.results.Run`) counts those of its run, so a reader sees whether its models were
    trained there or before (by its ``JOBS`` workers, another notebook, ``kit reproduce``).

    >>> sorted(activity(activity_mark()).items())
    [('loaded', frozenset()), ('trained', frozenset())]
    """
    ev = _EVENTS[since:]
    return {k: frozenset(key for kind, key in ev if kind == k) for k in ("loaded", "trained")}


def activity_mark() -> int:
    """A mark for :func:`activity`: the calls from now on."""
    return len(_EVENTS)


def load_or_train(name: str, config: Mapping[str, Any], train: Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]],
                  cache_dir: str | os.PathLike | None = None, force: bool = False,
                  verbose: bool = True, build: Callable[[dict], Any] | None = None) -> tuple[Any, dict]:
    """Return ``(state, meta)`` from the cache if a checkpoint for ``(name, config)`` exists, else train.

    ``train()`` must return ``(state, meta)``: a dict of state_dicts/tensors and a
    JSON-serialisable dict (e.g. the training history). The key is
    ``<name>-<hash(config)>``, so any change of configuration trains anew. Inside
    :func:`bypassed` it always trains and saves nothing.

    * **Concurrency.** Processes that ask for the same key share it: one trains, the others
      wait for its lock (a line says so) and then load what it saved. A reader never sets
      aside a file another process is writing: a checkpoint that fails its check is looked at
      again under the lock before it counts as corrupt.
    * **Bad entries.** A corrupt checkpoint is reported, kept aside with a ``.corrupt`` suffix
      and trained again. With ``build(state)`` (which builds the network and loads ``state`` into
      it, e.g. with :func:`load_into`) the result is ``(build(state), meta)``, and a cached
      checkpoint that no longer fits the network (:class:`StaleCheckpointError`) is kept aside
      as ``.stale`` with the reason, and trained again.
    * **A cache that cannot be written** is found before training: a cached model is still
      loaded, but a model that would have to be trained raises :class:`CacheError` first, so
      no training is lost.
    """
    key = cache_name(name, config)
    finish = build if build is not None else (lambda st: st)
    if not _USE_CACHE.get():
        state, meta = train()
        return finish(dict(state)), {**meta, "config": dict(config), "key": key, "cached": False}
    root = cache_root(cache_dir)
    path = root / f"{key}.pt"

    def cached():
        state, meta = load_checkpoint(path)
        out = finish(state)
        _EVENTS.append(("loaded", key))
        if verbose:
            print(f"[cache] loaded {path}")
        return out, {**meta, "cached": True}

    if not force and checkpoint_exists(path):
        try:
            return cached()                      # the common case: no lock, no write
        except CheckpointError:
            pass                                 # maybe mid-write by another process: look again under its lock
    if not _writable(root):
        if not force and path.exists():
            raise CacheError(f"checkpoint {path} cannot be loaded and the cache folder {root} is not writable, so it "
                             "cannot be set aside or retrained here; point KIT_CACHE (or cache_dir) at a writable folder")
        raise CacheError(f"the model cache {root} is not writable: {key} would train and then be lost. Point KIT_CACHE "
                         "(or cache_dir) at a writable folder, or train inside kit.cache.bypassed()")
    with key_lock(path, wait_message=f"[cache] waiting: another process is training or saving {key}"):
        if not force and path.exists():
            try:
                return cached()                  # another process trained it while we waited
            except StaleCheckpointError as e:
                if verbose:
                    print(f"[cache] {e}; kept aside as .stale, training again")
                _set_aside(path, ".stale")
            except CheckpointError as e:
                if verbose:
                    print(f"[cache] {e}; kept aside as .corrupt, training again")
                _set_aside(path, ".corrupt")
        state, meta = train()
        meta = {**meta, "config": dict(config), "key": key}
        save_checkpoint(path, state, meta)
        _EVENTS.append(("trained", key))
    if verbose:
        print(f"[cache] saved {path}")
    return finish(dict(state)), {**meta, "cached": False}


def claim_run_dir(run_dir: str | os.PathLike, key: str, *, parts: tuple[str, ...] = ()) -> Path:
    """Bind a resumable run folder to the model ``key`` it trains (``<run_dir>/run_key.json``).

    A later call with the same key resumes; a call with another key raises
    :class:`CheckpointError` naming both, before anything in the folder is read or changed (a
    run of another configuration is never resumed, nor overwritten). A folder that already holds
    any of ``parts`` but no key (written by an older kit) is refused the same way."""
    run_dir = Path(run_dir)
    marker = run_dir / "run_key.json"
    if marker.exists():
        try:
            held = json.loads(marker.read_text()).get("key")
        except (OSError, ValueError, AttributeError) as e:
            raise CheckpointError(f"run folder {run_dir}: {marker.name} is unreadable ({e}); delete the folder "
                                  "to start over") from None
        if held != key:
            raise CheckpointError(f"run folder {run_dir} holds a run of another configuration ({held}); this run is "
                                  f"{key}. Give another run_dir, or delete that folder to start over")
        return run_dir
    found = [p for p in parts if (run_dir / p).exists()]
    if found:
        raise CheckpointError(f"run folder {run_dir} holds {found} without a run key, so it cannot be told whether "
                              f"they belong to this run ({key}); give another run_dir, or delete that folder")
    atomic_write_bytes(marker, json.dumps({"key": key}).encode())
    return run_dir
