"""Foundation: stable hashes of configs and files, and atomic file writes (no kit imports).

* :func:`config_hash` -- a short stable hash of a JSON-like config (the model cache's keys,
  a config's identity). A NaN or infinite number has no stable identity and is refused.
* :func:`file_sha256` -- the SHA-256 of a file's bytes, remembered per ``(path, size, mtime,
  inode)`` in this process and in a small store beside the user's cache
  (``$KIT_HASH_STORE``, default ``~/.cache/kit/file_sha256.json``), so a dataset of thousands
  of files is read once per edit, not once per process.
* :func:`atomic_write_bytes` -- readers see the old file or the whole new one, never a part.
* :func:`data_identity` -- what a model key records about a dataset: its ``fingerprint``, else a
  hash of its content (:func:`content_fingerprint`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping

__all__ = ["config_hash", "canonical", "file_sha256", "flush_file_hashes", "atomic_write_bytes", "umask_mode",
           "content_fingerprint", "data_identity"]


def canonical(obj: Any) -> Any:
    """``obj`` as plain JSON data with sorted mappings; integral floats stay floats
    (``1.0`` and ``1`` hash differently only by type, as before). Refuses NaN and infinity
    with a ValueError that names the value's place."""
    return _canonical(obj, "")


def _canonical(obj: Any, where: str) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v, f"{where}.{k}" if where else str(k))
                for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where or 'value'} = {obj!r}: a NaN or infinite number has no stable identity "
                             "(give a finite number)")
        return float(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return repr(obj)


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """A short stable hash of a JSON-like config (key order does not matter).

    >>> config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    True
    >>> config_hash({"lr": float("nan")})
    Traceback (most recent call last):
    ...
    ValueError: lr = nan: a NaN or infinite number has no stable identity (give a finite number)
    """
    blob = json.dumps(canonical(config), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process's umask: what ``open()`` would have created."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The file gets the permissions an ordinary ``open()`` would give it (``0666`` less the umask),
    not the ``0600`` of a temporary file, so a cache or a page shared between users stays readable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# ----------------------------------------------------------------------------------
# File content hashes, remembered per (path, size, mtime, inode)
# ----------------------------------------------------------------------------------
_MEMO: dict[str, tuple[tuple[int, int, int], str]] = {}
_STORE_LOADED: set[str] = set()
#: stores with hashes this process computed and has not written yet (:func:`flush_file_hashes`)
_DIRTY: set[str] = set()
_LOCK = threading.Lock()


def _store_path() -> Path | None:
    p = os.environ.get("KIT_HASH_STORE")
    if p == "":
        return None                   # KIT_HASH_STORE= (empty): remember in this process only
    return Path(p) if p else Path.home() / ".cache" / "kit" / "file_sha256.json"


def _load_store(store: Path) -> None:
    if str(store) in _STORE_LOADED:
        return
    _STORE_LOADED.add(str(store))
    try:
        data = json.loads(store.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(data, dict):
        return
    for path, entry in data.items():
        if (isinstance(entry, list) and len(entry) == 4 and all(isinstance(v, int) for v in entry[:3])
                and isinstance(entry[3], str) and path not in _MEMO):
            _MEMO[path] = ((entry[0], entry[1], entry[2]), entry[3])


def _save_store(store: Path) -> None:
    try:
        data = json.loads(store.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data.update({p: [*stamp, h] for p, (stamp, h) in _MEMO.items()})
    data = {p: v for p, v in data.items() if os.path.exists(p)}     # files deleted since: forget them
    try:
        atomic_write_bytes(store, json.dumps(data, separators=(",", ":")).encode())
    except OSError:
        pass                          # a read-only home: hash again in the next process


def file_sha256(path: str | os.PathLike, *, remember: bool = True) -> str:
    """The SHA-256 (hex) of the file's bytes.

    Remembered per absolute path with the file's ``(size, mtime_ns, inode)``: a file rewritten in
    place gets a new mtime (and usually size) and is read again; an unchanged one is not.
    Call :func:`flush_file_hashes` after hashing many files to keep them for the next process.
    """
    p = Path(path).resolve()
    st = p.stat()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    key = str(p)
    store = _store_path() if remember else None
    with _LOCK:
        if store is not None:
            _load_store(store)
        hit = _MEMO.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if os.stat(p).st_mtime_ns != st.st_mtime_ns:       # written while we read it: do not remember
        return digest
    with _LOCK:
        _MEMO[key] = (stamp, digest)
        if store is not None:
            _DIRTY.add(str(store))
    return digest


def flush_file_hashes() -> None:
    """Write the file hashes computed in this process to the store (no-op if none are new)."""
    store = _store_path()
    with _LOCK:
        if store is None or str(store) not in _DIRTY:
            return
        _DIRTY.discard(str(store))
        _save_store(store)


# ----------------------------------------------------------------------------------
# Dataset identity
# ----------------------------------------------------------------------------------
#: items of a dataset without a ``fingerprint`` whose content identifies it
FINGERPRINT_ITEMS = 8


def _hash_item(h, obj: Any) -> None:
    """Feed one dataset item (tensors, arrays, numbers, nested tuples / dicts) into ``h``."""
    import torch
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
