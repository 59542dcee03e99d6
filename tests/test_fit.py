"""kit.fit: one name and one return shape for every method's cached training."""
import pytest
import torch.nn as nn

import torch

from kit import fit as fitmod
from kit import methods
from kit.config import resolve
from kit.fit import fit, key_of
from kit.methods.base import Fitted, Method, Parent


def test_unknown_method_and_spec_are_rejected():
    cfg = resolve("smoke", "intro")
    with pytest.raises(ValueError, match="unknown method 'adaptsegnet'.*adaptseg"):
        fit("adaptsegnet", cfg)
    with pytest.raises(TypeError, match="unexpected \\['stage'\\]"):
        fit("ripu", cfg, stage=2)
    with pytest.raises(TypeError, match="needs \\['fraction'\\]"):
        fit("ddep", cfg, init="ddep")
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3"):
        fit("das3", resolve("smoke", "das3"), stage=4)
    with pytest.raises(ValueError, match="unknown init 'imagenet'"):
        fit("ddep", resolve("smoke", "ddep"), init="imagenet", fraction=0.1)


class Toy(Method):
    """A method of a few lines: a linear layer trained from its parent's weights."""

    name = "toy_for_test"
    spec = {"scale": 1.0}

    def parents(self, cfg, spec):
        return {"init": Parent("toy_base_for_test", cfg)}

    def key(self, cfg, seed, data, spec, parents):
        return {"scale": spec["scale"], "seed": seed, "parents": sorted(parents.values())}

    def build(self, cfg, data, spec):
        return {"model": nn.Linear(2, 2)}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        model = nn.Linear(2, 2)
        model.load_state_dict(parents["init"].model.state_dict())
        with torch.no_grad():
            model.weight.mul_(spec["scale"])
        TRAINED.append((self.name, spec["scale"]))
        return {"model": model}, {"history": {"train": [{"iter": 1}]}, "scale_seen": spec["scale"]}


class ToyBase(Method):
    name = "toy_base_for_test"

    def key(self, cfg, seed, data, spec, parents):
        return {"seed": seed}

    def build(self, cfg, data, spec):
        return {"model": nn.Linear(2, 2)}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        torch.manual_seed(seed)
        TRAINED.append((self.name, None))
        return {"model": nn.Linear(2, 2)}, {}


TRAINED: list = []


def test_the_runner_keys_trains_caches_and_loads_any_declared_method(tmp_path):
    """One runner for every method: parents first, the parent's cache name in the child's key,
    the child trained once and then loaded with the same weights; a cached child does not even
    load its parent."""
    methods.register(Toy(), replace=True)
    methods.register(ToyBase(), replace=True)
    TRAINED.clear()
    cfg = {"cache_dir": str(tmp_path)}
    first = fit("toy_for_test", cfg, 3, data={}, scale=2.0)
    assert TRAINED == [("toy_base_for_test", None), ("toy_for_test", 2.0)]
    assert isinstance(first, Fitted) and not first.cached and first.meta["scale_seen"] == 2.0
    assert first.meta["config"]["parents"] == [key_of("toy_base_for_test", cfg, 3, {})]
    assert first.key == key_of("toy_for_test", cfg, 3, {}, scale=2.0) != key_of("toy_for_test", cfg, 3, {})
    again = fit("toy_for_test", cfg, 3, data={}, scale=2.0)
    assert again.cached and TRAINED == [("toy_base_for_test", None), ("toy_for_test", 2.0)]
    assert torch.equal(again.model.weight, first.model.weight) and not again.model.training
    base = fit("toy_base_for_test", cfg, 3, data={})
    assert base.cached and torch.equal(2 * base.model.weight, again.model.weight)
    with pytest.raises(ValueError, match="already registered"):
        methods.register(Toy())


@pytest.mark.filterwarnings("ignore::kit.evaluation.CollapseWarning")   # two-iteration models: collapsed indeed
def test_das3_chains_the_stages(tmp_path):
    """DAS3 stage s is fitted from stage s-1 and stage 1 from the source-only model; the result
    reports every stage of its chain."""
    cfg = resolve("smoke", "das3", n_train=8, n_val=8, iters=2, stage1_iters=1, stage2_iters=1, stage3_iters=1,
                  cache_dir=str(tmp_path))
    f = fit("das3", cfg, 0, stage=2)
    assert set(f.parts["stages"]) == {1, 2} and f.meta["eval"]["miou"] == f.parts["stages"][2]["eval"]["miou"]
    assert f.meta["config"]["parents"] == [key_of("das3", cfg, 0, stage=1)]
    assert fit("das3", cfg, 0, stage=1).meta["config"]["parents"] == [key_of("source_only", cfg, 0)]
    assert fit("das3", cfg, 0, stage=2).cached


def test_a_real_fit_trains_once_then_loads(tmp_path):
    cfg = resolve("smoke", "intro", iters=2, n_train=8, n_val=8, cache_dir=str(tmp_path))
    first = fit("source_only", cfg, 0)
    again = fit("source_only", cfg, 0)
    assert not first.cached and again.cached and first.key == again.key
    assert not again.model.training
    assert list(tmp_path.glob("*.pt"))
    assert {"source_only", "oracle", "adaptseg", "das3", "ripu", "cdcl", "ddep"} <= set(methods.names())


def test_kit_train_is_fit_without_the_cache(tmp_path):
    """`kit train source_only` = fit("source_only") on the first seed with the cache bypassed:
    it trains though the model is cached, writes nothing to the cache, and saves the model
    with its meta; a second call trains again (same seed, same weights)."""
    import torch

    from kit.cache import load_checkpoint

    cfg = resolve("smoke", "supervised", iters=2, n_train=8, n_val=8, seeds=[3], cache_dir=str(tmp_path / "cache"),
                  run_dir=str(tmp_path / "out"))
    cached = fit("source_only", cfg, 3)
    before = sorted(p.name for p in (tmp_path / "cache").iterdir())
    path = fitmod.train("source_only", cfg)
    assert path == tmp_path / "out" / "source_only.pt"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == before
    state, meta = load_checkpoint(path)
    assert set(state) == {"model"} and meta["method"] == "source_only" and meta["seed"] == 3
    assert meta["world_size"] == 1 and meta["global_batch_size"] == cfg.batch_size and meta["config"]["iters"] == 2
    assert len(meta["history"]["train"]) == 2 and "cached" not in meta and "key" not in meta
    assert all(torch.equal(state["model"][k], v) for k, v in cached.model.state_dict().items())  # deterministic
    assert meta["target_eval"]["miou"] >= 0    # the baseline on the target val split
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        fitmod.train("nope", cfg)


def test_kit_train_saves_the_parts_and_tensors(monkeypatch, tmp_path):
    """Every cached module is saved under its name (AdaptSegNet's discriminators as d_<level>), a
    tensor in the meta (RIPU's round_map) goes into the state; DAS3 records each stage's
    evaluation; DDeP fine-tunes DDeP on cfg.fraction."""
    import torch

    from kit.cache import load_checkpoint

    m = nn.Linear(1, 1)
    seen = []

    def fake_fit(method, cfg, seed, data=None, verbose=False, **spec):
        seen.append((method, seed, spec))
        modules = {"model": m, "d_out": nn.Linear(2, 1)} if method == "adaptseg" else {"model": m}
        parts = {"stages": {1: {"eval": {"miou": 1.0}}, 2: {"eval": {"miou": 2.0}}}} if method == "das3" else {}
        return Fitted(method, m, {"history": {"train": []}, "round_map": torch.ones(2), "key": "k", "cached": False},
                      parts, modules)
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


class Drifting(Method):
    """An unsupervised method of a few lines that 'adapts' a tiny segmenter by a bias on one class:
    collapsing (every pixel to class 0) or not."""

    name = "drifting_for_test"
    spec = {"bias": 0.0}
    watch = ("init", "target_train")

    def parents(self, cfg, spec):
        return {"init": Parent("segmenter_for_test", cfg)}

    def key(self, cfg, seed, data, spec, parents):
        return {"bias": spec["bias"], "parents": sorted(parents.values())}

    def build(self, cfg, data, spec):
        return {"model": TinySeg()}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        model = TinySeg()
        model.load_state_dict(parents["init"].model.state_dict())
        with torch.no_grad():
            model.conv.bias[0] += spec["bias"]
        return {"model": model}, {}


class Segmenter(Method):
    name = "segmenter_for_test"

    def key(self, cfg, seed, data, spec, parents):
        return {"seed": seed}

    def build(self, cfg, data, spec):
        return {"model": TinySeg()}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        torch.manual_seed(seed)
        return {"model": TinySeg()}, {}


class TinySeg(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return {"out": self.conv(x)}


class Images(torch.utils.data.Dataset):
    classes = ("road", "car", "person")

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)), torch.zeros(8, 8, dtype=torch.long)


def test_an_unsupervised_fit_warns_when_its_predictions_collapse(tmp_path):
    """The collapse check needs no label: a model that predicts one class everywhere after
    'adaptation' warns, with the numbers, when it is trained and again when it is loaded; a
    small change of the same model stays quiet."""
    import warnings

    from kit.evaluation import CollapseWarning

    methods.register(Drifting(), replace=True)
    methods.register(Segmenter(), replace=True)
    cfg = {"cache_dir": str(tmp_path), "eval_batch_size": 4, "amp": "off"}
    data = {"target_train": Images()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        quiet = fit("drifting_for_test", cfg, 0, data, bias=0.01)
    start, end = quiet.meta["class_mix"]["start"], quiet.meta["class_mix"]["end"]
    assert abs(sum(start["share"]) - 1) < 1e-9 and 0 < end["entropy"] <= 1
    for _ in range(2):   # trained, then loaded from the cache
        with pytest.warns(CollapseWarning, match=r"total variation .*(road|car|person) .*vanished"):
            collapsed = fit("drifting_for_test", cfg, 0, data, bias=100.0)
    assert collapsed.cached and collapsed.meta["class_mix"]["end"]["share"][0] == 1.0
