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
