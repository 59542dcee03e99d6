"""Atomic checkpoints: a partial or corrupt file never loads as valid."""
import json
import os

import pytest
import torch

from kit import cache
from kit.cache import CheckpointError, load_checkpoint, load_or_train, save_checkpoint
from kit.hashing import config_hash


def test_roundtrip(tmp_path):
    p = save_checkpoint(tmp_path / "a.pt", {"w": torch.arange(5)}, {"note": "x"})
    state, meta = load_checkpoint(p)
    assert torch.equal(state["w"], torch.arange(5)) and meta["note"] == "x"


def test_truncated_checkpoint_is_rejected(tmp_path):
    p = save_checkpoint(tmp_path / "a.pt", {"w": torch.randn(100)})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(p)


def test_missing_metadata_means_incomplete(tmp_path):
    p = save_checkpoint(tmp_path / "a.pt", {"w": torch.randn(3)})
    p.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_killed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    p = save_checkpoint(tmp_path / "a.pt", {"w": torch.zeros(3)})

    def boom(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(cache.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(p, {"w": torch.ones(3)})
    monkeypatch.undo()
    # no temporary files left behind; the old .pt is intact but, its JSON being gone, is not trusted
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_load_or_train_caches_and_retrains_on_corruption(tmp_path):
    calls = []

    def train():
        calls.append(1)
        return {"w": torch.full((2,), float(len(calls)))}, {"history": [1, 2]}

    s1, m1 = load_or_train("m", {"a": 1}, train, tmp_path, verbose=False)
    s2, m2 = load_or_train("m", {"a": 1}, train, tmp_path, verbose=False)
    assert len(calls) == 1 and m2["cached"] and torch.equal(s1["w"], s2["w"])
    load_or_train("m", {"a": 2}, train, tmp_path, verbose=False)
    assert len(calls) == 2
    # corrupt the first checkpoint: it is set aside and trained again
    key = f"m-{config_hash({'a': 1})}"
    (tmp_path / f"{key}.pt").write_bytes(b"garbage")
    s3, m3 = load_or_train("m", {"a": 1}, train, tmp_path, verbose=False)
    assert len(calls) == 3 and not m3["cached"]
    assert (tmp_path / f"{key}.pt.corrupt").exists()
    assert json.loads((tmp_path / f"{key}.json").read_text())["meta"]["key"] == key


def test_config_hash_order_independent():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 1.5})
