"""Load-or-train with config hashing and atomic writes.

A checkpoint is two files: ``<key>.pt`` (a dict of plain ``state_dict``s and tensors,
loaded with ``torch.load(weights_only=True)``) and ``<key>.json`` (metadata: the
config, the training history, and the SHA-256 of the ``.pt`` file). Both are written
to a temporary file in the same folder and moved into place with ``os.replace``; the
JSON is written last, so a checkpoint without its JSON -- or whose ``.pt`` does not
match the recorded hash -- is incomplete and is never loaded as valid.

Keys. :func:`model_key` derives a trained model's key from its config: the fields of the
sections that define a model (:data:`kit.config.KEY_SECTIONS`; never ``run`` or
``notebook``), the identity of its data (:func:`data_identity`), its seed, and the keys of
the cached models it starts from. No method keeps a list of fields of its own.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

__all__ = ["config_hash", "model_key", "data_identity", "content_fingerprint", "cache_name", "runs_root", "cache_root", "atomic_write_bytes", "save_checkpoint", "load_checkpoint",
           "checkpoint_exists", "load_or_train", "bypassed", "CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, partial or corrupt."""


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float) and obj == int(obj) and abs(obj) < 2**53:
        return float(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """A short stable hash of a JSON-like config (key order does not matter)."""
    blob = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


#: items of a dataset without a ``fingerprint`` whose content identifies it
FINGERPRINT_ITEMS = 8


def _hash_item(h, obj: Any) -> None:
    """Feed one dataset item (tensors, arrays, numbers, nested tuples / dicts) into ``h``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif hasattr(obj, "__array__") and hasattr(obj, "dtype") and hasattr(obj, "shape"):  # numpy arrays
        import numpy as np

        a = np.ascontiguousarray(obj)
        h.update(f"A{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(obj, Mapping):
        for k in sorted(obj, key=str):
            h.update(f"K{k!s}".encode())
            _hash_item(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _hash_item(h, v)
    else:
        h.update(f"V{obj!r}".encode())


def content_fingerprint(dataset: Any, items: int = FINGERPRINT_ITEMS) -> str:
    """An identity of ``dataset`` computed from its content: its type, length, classes (if it
    names them) and a SHA-256 of ``items`` items at evenly spaced indices (first and last
    included). Deterministic for a deterministic dataset; a dataset with random augmentation
    gets a new one in every process (its models are then retrained, never confused)."""
    try:
        n = len(dataset)
    except TypeError:
        raise TypeError(f"cannot identify dataset {dataset!r} for the model cache: it has no len(); give it a "
                        "`fingerprint` attribute (a string that changes whenever its content does)") from None
    h = hashlib.sha256()
    classes = getattr(dataset, "classes", None)
    h.update(json.dumps({"type": type(dataset).__qualname__, "len": n,
                         "classes": list(classes) if classes is not None else None,
                         "num_classes": getattr(dataset, "num_classes", None)}, default=str).encode())
    k = min(int(items), n)
    idx = sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else list(range(k))
    for i in idx:
        try:
            item = dataset[i]
        except Exception as e:  # noqa: BLE001 - name the dataset and the item
            raise RuntimeError(f"cannot identify dataset {type(dataset).__name__} for the model cache: reading item "
                               f"{i} failed ({e}); give it a `fingerprint` attribute") from e
        h.update(f"I{i}".encode())
        _hash_item(h, item)
    return "content-" + h.hexdigest()[:16]


def data_identity(dataset: Any) -> str | None:
    """What a model key records about a dataset: its ``fingerprint`` attribute when it has one
    (the toy world, the real readers), else :func:`content_fingerprint`, computed once and kept
    on the object as ``fingerprint``. ``None`` for no dataset."""
    if dataset is None:
        return None
    fp = getattr(dataset, "fingerprint", None)
    if fp is not None:
        return str(fp)
    fp = content_fingerprint(dataset)
    try:
        dataset.fingerprint = fp
    except (AttributeError, TypeError):   # a read-only property or __slots__: compute it again next time
        pass
    return fp


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
    return {"method": method, "tags": sorted(tags), "config": {k: cfg[k] for k in names},
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
    """``cache_dir``, else ``$KIT_CACHE``, else ``runs/cache`` in the project folder."""
    root = Path(cache_dir or os.environ.get("KIT_CACHE") or runs_root() / "cache")
    root.mkdir(parents=True, exist_ok=True)
    return root


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Path:
    """Save ``state`` (state_dicts / tensors / numbers) to ``path`` (.pt) and ``meta`` beside it (.json)."""
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"checkpoint path must end with .pt, got {path}")
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    data = buf.getvalue()
    # remove a stale JSON first: from here until the new JSON lands, the checkpoint is incomplete
    json_path = path.with_suffix(".json")
    if json_path.exists():
        json_path.unlink()
    atomic_write_bytes(path, data)
    record = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "meta": dict(meta or {})}
    atomic_write_bytes(json_path, json.dumps(record, indent=1, default=str).encode())
    return path


def checkpoint_exists(path: str | os.PathLike) -> bool:
    """True if both files of a complete checkpoint are present (the hash is checked on load)."""
    path = Path(path)
    return path.exists() and path.with_suffix(".json").exists()


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns ``(state, meta)``.

    Raises :class:`CheckpointError` naming the file if it is missing, partial
    (no JSON), truncated or otherwise different from what was written.
    """
    path = Path(path)
    json_path = path.with_suffix(".json")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not json_path.exists():
        raise CheckpointError(f"checkpoint {path} is incomplete: its metadata file {json_path.name} is missing "
                              "(a run was probably interrupted while saving); delete it and train again")
    try:
        record = json.loads(json_path.read_text())
        expected = record["sha256"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint metadata {json_path} is unreadable ({e})") from None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {len(data)} bytes, expected "
                              f"{record.get('bytes')} bytes with SHA-256 {expected[:12]}...; delete it and train again")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling error means a bad file
        raise CheckpointError(f"checkpoint {path} could not be loaded: {e}") from None
    return state, record.get("meta", {})


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


def load_or_train(name: str, config: Mapping[str, Any], train: Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]],
                  cache_dir: str | os.PathLike | None = None, force: bool = False,
                  verbose: bool = True) -> tuple[dict, dict]:
    """Return ``(state, meta)`` from the cache if a checkpoint for ``(name, config)`` exists, else train.

    ``train()`` must return ``(state, meta)``: a dict of state_dicts/tensors and a
    JSON-serialisable dict (e.g. the training history). The key is
    ``<name>-<hash(config)>``, so any change of configuration trains anew. A cached
    checkpoint that fails its integrity check is reported and trained again (the bad
    files are kept aside with a ``.corrupt`` suffix, not deleted). Inside :func:`bypassed` it
    always trains and saves nothing.
    """
    key = cache_name(name, config)
    if not _USE_CACHE.get():
        state, meta = train()
        return dict(state), {**meta, "config": dict(config), "key": key, "cached": False}
    root = cache_root(cache_dir)
    path = root / f"{key}.pt"
    if not force and path.exists():
        try:
            state, meta = load_checkpoint(path)
            meta = dict(meta)
            meta["cached"] = True
            if verbose:
                print(f"[cache] loaded {path}")
            return state, meta
        except CheckpointError as e:
            if verbose:
                print(f"[cache] {e}; training again")
            for p in (path, path.with_suffix(".json")):
                if p.exists():
                    os.replace(p, p.with_name(p.name + ".corrupt"))
    state, meta = train()
    meta = dict(meta)
    meta["config"] = dict(config)
    meta["key"] = key
    save_checkpoint(path, state, meta)
    meta["cached"] = False
    if verbose:
        print(f"[cache] saved {path}")
    return dict(state), meta
