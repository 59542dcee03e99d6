"""kit.fit: one name and one return shape for every method's cached training."""
import pytest
import torch.nn as nn

from kit import fit as fitmod
from kit.config import resolve
from kit.fit import Fitted, fit


def test_unknown_method_and_spec_are_rejected():
    cfg = resolve("smoke", "intro")
    with pytest.raises(ValueError, match="unknown method 'adaptsegnet'.*adaptseg"):
        fit("adaptsegnet", cfg)
    with pytest.raises(TypeError, match="unexpected \\['stage'\\]"):
        fit("ripu", cfg, stage=2)
    with pytest.raises(TypeError, match="needs \\['fraction'\\]"):
        fit("ddep", cfg, init="ddep")
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3"):
        fit("das3", cfg, stage=4)


def test_every_method_returns_a_fitted(monkeypatch):
    from kit.methods import adaptseg, cdcl, ddep, ripu, supervised

    m = nn.Linear(1, 1)
    meta = {"key": "k-1", "cached": True, "history": {"train": []}}
    calls = {}
    monkeypatch.setattr(supervised, "load_or_train_baseline",
                        lambda kind, cfg, seed, data, verbose: calls.setdefault("base", (kind, seed)) and (m, meta))
    monkeypatch.setattr(adaptseg, "load_or_train_adaptseg", lambda cfg, seed, data, verbose: (m, {"out": m}, meta))
    monkeypatch.setattr(ripu, "load_or_train_ripu", lambda cfg, seed, data, verbose: (m, meta))
    monkeypatch.setattr(cdcl, "load_or_train_cdcl",
                        lambda cfg, kind, names, seed, data, init, verbose: calls.setdefault("cdcl", (kind, names, init))
                        and (m, meta))
    monkeypatch.setattr(ddep, "load_or_finetune",
                        lambda cfg, init, frac, seed, ds, eval_every, verbose: calls.setdefault("ddep", (init, frac))
                        and (m, meta))
    cfg = resolve("smoke", "cdcl")
    for method, spec in [("oracle", {}), ("adaptseg", {}), ("ripu", {}), ("cdcl", {"kind": "single", "names": ["a"]}),
                         ("ddep", {"init": "dep", "fraction": 0.1})]:
        f = fit(method, cfg, 3, data={"target_train": None}, **spec)
        assert isinstance(f, Fitted) and f.method == method and f.model is m
        assert f.key == "k-1" and f.cached and f.history == {"train": []}
    assert calls == {"base": ("oracle", 3), "cdcl": ("single", ["a"], None), "ddep": ("dep", 0.1)}
    assert fit("adaptseg", cfg, data={}).parts == {"discriminators": {"out": m}}
    calls.pop("cdcl")
    fit("cdcl", cfg, data={})   # the defaults: DAT on the config's datasets
    assert calls["cdcl"] == ("dat", list(cfg.datasets), None)


def test_das3_chains_the_stages(monkeypatch):
    from kit.methods import das3

    m = nn.Linear(1, 1)
    seen = []
    monkeypatch.setattr(das3, "load_source_model", lambda cfg, seed, ds: (m, "src-key"))

    def stage(s, model, key, target, cfg, seed, val_set=None, verbose=False):
        seen.append((s, key))
        return m, {"key": f"stage{s}-key", "eval": {"miou": 10.0 * s}}
    monkeypatch.setattr(das3, "load_or_run_stage", stage)
    f = fit("das3", resolve("smoke", "das3"), 0, data={"target_train": "T", "target_val": "V"}, stage=2)
    assert seen == [(1, "src-key"), (2, "stage1-key")]
    assert f.meta["eval"]["miou"] == 20.0 and set(f.parts["stages"]) == {1, 2}


def test_a_real_fit_trains_once_then_loads(tmp_path):
    cfg = resolve("smoke", "intro", iters=2, n_train=8, n_val=8, cache_dir=str(tmp_path))
    first = fit("source_only", cfg, 0)
    again = fit("source_only", cfg, 0)
    assert not first.cached and again.cached and first.key == again.key
    assert not again.model.training
    assert list(tmp_path.glob("*.pt"))
    assert fitmod.METHODS[0] == "source_only"


def test_kit_train_is_fit_without_the_cache(tmp_path):
    """`kit train supervised` = fit("source_only") on the first seed with the cache bypassed:
    it trains though the model is cached, writes nothing to the cache, and saves the model
    with its meta; a second call trains again (same seed, same weights)."""
    import torch

    from kit.cache import load_checkpoint

    cfg = resolve("smoke", "supervised", iters=2, n_train=8, n_val=8, seeds=[3], cache_dir=str(tmp_path / "cache"),
                  run_dir=str(tmp_path / "out"))
    cached = fit("source_only", cfg, 3)
    before = sorted(p.name for p in (tmp_path / "cache").iterdir())
    path = fitmod.train("supervised", cfg)
    assert path == tmp_path / "out" / "supervised.pt"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == before
    state, meta = load_checkpoint(path)
    assert set(state) == {"model"} and meta["method"] == "supervised" and meta["seed"] == 3
    assert meta["world_size"] == 1 and meta["global_batch_size"] == cfg.batch_size and meta["config"]["iters"] == 2
    assert len(meta["history"]["train"]) == 2 and "cached" not in meta and "key" not in meta
    assert all(torch.equal(state["model"][k], v) for k, v in cached.model.state_dict().items())  # deterministic
    with pytest.raises(ValueError, match="unknown trainer 'nope'"):
        fitmod.train("nope", cfg)


def test_kit_train_saves_the_parts_and_tensors(monkeypatch, tmp_path):
    """AdaptSegNet's discriminators become d_<level> and a tensor in the meta (RIPU's
    round_map) goes into the state; DAS3 records each stage's evaluation; DDeP fine-tunes
    DDeP on cfg.fraction."""
    import torch

    from kit.cache import load_checkpoint

    m = nn.Linear(1, 1)
    seen = []

    def fake_fit(method, cfg, seed, data=None, verbose=False, **spec):
        seen.append((method, seed, spec))
        parts = {"discriminators": {"out": nn.Linear(2, 1)}} if method == "adaptseg" else {}
        if method == "das3":
            parts = {"stages": {1: {"eval": {"miou": 1.0}}, 2: {"eval": {"miou": 2.0}}}}
        return Fitted(method, m, {"history": {"train": []}, "round_map": torch.ones(2), "key": "k", "cached": False},
                      parts)
    monkeypatch.setattr(fitmod, "fit", fake_fit)
    for name in ("adaptseg", "ripu", "das3", "ddep"):
        cfg = resolve("smoke", name, run_dir=str(tmp_path), seeds=[5])
        state, meta = load_checkpoint(fitmod.train(name, cfg))
        assert "model" in state and torch.equal(state["round_map"], torch.ones(2)) and meta["method"] == name
        if name == "adaptseg":
            assert set(state) == {"model", "d_out", "round_map"}
        if name == "das3":
            assert meta["stages"] == {"1": {"miou": 1.0}, "2": {"miou": 2.0}}
    assert seen[-1] == ("ddep", 5, {"init": "ddep", "fraction": float(resolve("smoke", "ddep").fraction)})
