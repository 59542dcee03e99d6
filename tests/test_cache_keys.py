"""Model cache keys derived from the config's sections and the data's identity (issue #15)."""
import subprocess
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

from kit.cache import cache_name, model_key
from kit.hashing import content_fingerprint, data_identity
from kit.config import KEY_SECTIONS, METHODS, PROFILES, SECTIONS, fields, key_fields, resolve, section_of


def _tags(method):
    """Every tag the fields of ``method`` use (so that a key holds all of its fields)."""
    return tuple(sorted({t for f in fields(method).values() if f.uses for t in f.uses}))


def _changed(value):
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.125
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return value + [value[-1] if value else 1]
    return "set"   # None


def test_resolve_needs_no_method_import():
    code = ("import sys; from kit.config import resolve; c = resolve('smoke', 'ripu'); "
            "assert c.budget == 0.022; assert not [m for m in sys.modules if m.startswith('kit.methods')], "
            "sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_field_has_one_section(profile, method):
    for name in resolve(profile, method):
        assert section_of(name, method) in SECTIONS


def test_a_field_name_means_one_section_in_every_method():
    seen = {}
    for m in METHODS:
        for name, f in fields(m).items():
            assert seen.setdefault(name, f.section) == f.section, (m, name)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_key_changes_with_every_model_field_and_no_run_field(profile, method):
    cfg, tags = resolve(profile, method), _tags(method)
    base = model_key(cfg, method, seed=0, tags=tags)
    for name, value in cfg.items():
        key = model_key({**cfg, name: _changed(value)}, method, seed=0, tags=tags)
        if section_of(name, method) in KEY_SECTIONS:
            assert key != base, f"{method}/{profile}: changing {name!r} must change the key"
        else:
            assert key == base, f"{method}/{profile}: {name!r} ({section_of(name, method)}) must not enter keys"
    assert model_key(cfg, method, seed=1, tags=tags) != base


def test_tagged_fields_stay_out_of_other_models():
    cfg = resolve("smoke", "das3")
    k1 = model_key(cfg, "das3", seed=0, tags=("stage1",))
    assert model_key({**cfg, "top_k": 0.9}, "das3", seed=0, tags=("stage1",)) == k1   # a stage-2/3 field
    assert model_key({**cfg, "gamma": 1.0}, "das3", seed=0, tags=("stage1",)) != k1
    ft = resolve("smoke", "ddep")
    kf = model_key(ft, "ddep", seed=0, tags=("finetune",))
    assert model_key({**ft, "sigma": 0.4}, "ddep", seed=0, tags=("finetune",)) == kf   # pretraining only
    assert model_key({**ft, "sigma": 0.4}, "ddep", seed=0, tags=("pretrain",)) != model_key(ft, "ddep", seed=0,
                                                                                             tags=("pretrain",))


def test_ddep_pretrained_models_ignore_the_fine_tuning_recipe():
    """The encoder and the denoising pretraining do not read the fine-tuning length; the
    pretraining does not read the fine-tuning LR and batch either (it has its own)."""
    cfg = resolve("smoke", "ddep")
    for tag, unused in (("encoder", {"iters": 99}), ("pretrain", {"iters": 99, "lr": 0.5, "batch_size": 3})):
        k = model_key(cfg, "ddep", seed=0, tags=(tag,))
        assert model_key({**cfg, **unused}, "ddep", seed=0, tags=(tag,)) == k, tag
    assert model_key({**cfg, "lr": 0.5}, "ddep", seed=0, tags=("encoder",)) != model_key(cfg, "ddep", seed=0,
                                                                                         tags=("encoder",))
    assert model_key({**cfg, "supervised_iters": 9}, "ddep", seed=0, tags=("encoder",)) != model_key(
        cfg, "ddep", seed=0, tags=("encoder",))


def test_ddep_finetune_key_holds_the_whole_recipe():
    names = set(key_fields("ddep", ("finetune",)))
    assert {"momentum", "weight_decay", "poly_power", "amp", "iters", "lr", "batch_size", "optimizer"} <= names
    assert not names & {"progress", "cache_dir", "seeds", "device", "label_fractions", "curve_every"}


def test_baseline_key_ignores_other_methods_fields():
    """The source-only model DAS3 starts from is the one the introduction trained."""
    from kit.fit import key_of

    ds = TensorDataset(torch.zeros(2, 3, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long))
    ds.num_classes = 2
    intro, das3 = resolve("smoke", "intro"), resolve("smoke", "das3", stage1_iters=7)
    data = {"source_train": ds}
    assert key_of("source_only", intro, 0, data) == key_of("source_only", das3, 0, data)


def test_baseline_config_inherits_data_model_and_run_sections():
    from kit import methods
    from kit.methods.supervised import baseline_config

    for method in ("adaptseg", "ripu"):
        cfg = resolve("smoke", method, render_device="auto", depth=18, amp="off", progress=True, iters=2)
        base = baseline_config(cfg)
        assert methods.get(method).parents(cfg, {})["init"].cfg == base   # the model both start from
        assert (base.render_device, base.depth, base.amp, base.progress) == ("auto", 18, "off", True)
        assert base.iters == resolve("smoke", "supervised").iters   # the adaptation schedule stays behind


# ---------------------------------------------------------------------------------------------
# data identity
# ---------------------------------------------------------------------------------------------
def _plain(seed, n=6, classes=3, size=16):
    g = torch.Generator().manual_seed(seed)
    ds = TensorDataset(torch.rand(n, 3, size, size, generator=g),
                       torch.randint(0, classes, (n, size, size), generator=g))
    ds.num_classes = classes
    return ds


def test_content_fingerprint_tells_datasets_apart():
    a, a2, b = _plain(0), _plain(0), _plain(1)
    assert content_fingerprint(a) == content_fingerprint(a2) != content_fingerprint(b)
    assert content_fingerprint(a) != content_fingerprint(_plain(0, n=5))
    assert data_identity(a) == content_fingerprint(a2) and a.fingerprint == data_identity(a)   # kept on the object
    assert data_identity(None) is None
    with pytest.raises(TypeError, match="fingerprint"):
        content_fingerprint(object())


def test_toy_world_keeps_its_fingerprint():
    from kit.data import ToyWorld

    w = ToyWorld("real", "train", (32, 64), 4)
    assert data_identity(w) == w.fingerprint


def test_two_plain_datasets_never_share_a_model(tmp_path):
    """Two different datasets without a fingerprint, same config: two different models."""
    from kit.fit import fit

    cfg = resolve("smoke", "supervised", iters=2, batch_size=2, size=[16, 16], eval_size=[16, 16],
                  device="cpu", amp="off", cache_dir=str(tmp_path))
    f1, f2 = (fit("source_only", cfg, 0, {"source_train": _plain(i)}) for i in (0, 1))
    (m1, meta1), (m2, meta2) = (f1.model, f1.meta), (f2.model, f2.meta)
    assert meta1["key"] != meta2["key"] and meta2["cached"] is False
    w1, w2 = m1.state_dict(), m2.state_dict()
    assert any(not torch.equal(w1[k], w2[k]) for k in w1 if w1[k].is_floating_point())
    meta3 = fit("source_only", cfg, 0, {"source_train": _plain(0)}).meta
    assert meta3["cached"] is True and meta3["key"] == meta1["key"]   # same content: the same model


# ---------------------------------------------------------------------------------------------
# derived models record the key of the model they start from
# ---------------------------------------------------------------------------------------------
def test_derived_keys_name_their_parent():
    from kit import methods
    from kit.data import make_da_datasets
    from kit.fit import key_of
    from kit.methods import adaptseg
    from kit.methods.supervised import baseline_config

    def key(method, cfg, data, parents, **spec):
        m = methods.get(method)
        return m.key(cfg, 0, data, {**m.spec, **spec}, parents)

    cfg = resolve("smoke", "adaptseg")
    ds = make_da_datasets(cfg)
    parent = key_of("source_only", baseline_config(cfg), 0, ds)
    assert methods.get("adaptseg").parents(cfg, {}) == {"init": methods.base.Parent("source_only", baseline_config(cfg))}
    assert methods.get("adaptseg").parents(adaptseg.variant(cfg, init="pretrained"), {}) == {}
    assert key("adaptseg", cfg, ds, {"init": parent})["parents"] == [parent]
    rcfg = resolve("smoke", "ripu")
    assert methods.get("ripu").parents(rcfg, {})["init"].cfg == baseline_config(rcfg)
    dcfg = resolve("smoke", "das3")
    assert key("das3", dcfg, ds, {"input": "das3-stage1-abc"}, stage=2)["parents"] == ["das3-stage1-abc"]
    assert key("das3", dcfg, ds, {"input": "a"}, stage=2) != key("das3", dcfg, ds, {"input": "b"}, stage=2)
    assert methods.get("das3").parents(dcfg, {"stage": 2})["input"].spec == {"stage": 1}
    ccfg = resolve("smoke", "cdcl")
    data = {n: {"train": _plain(i)} for i, n in enumerate(("city_a", "city_b"))}
    single = key_of("cdcl", ccfg, 0, data, kind="single", names=["city_b"])
    assert key_of("cdcl", ccfg, 0, data, kind="finetune", names=["city_a"], init="city_b") == cache_name(
        "cdcl_finetune", key("cdcl", ccfg, data, {"init": single}, kind="finetune", names=["city_a"], init="city_b"))


def test_parent_key_is_the_cached_models_key(tmp_path):
    """What a derived key records is exactly the key the parent was cached under."""
    from kit.data import make_da_datasets
    from kit.fit import fit, key_of
    from kit.methods.supervised import baseline_config

    cfg = resolve("smoke", "adaptseg", iters=2, device="cpu", amp="off", cache_dir=str(tmp_path))
    ds = make_da_datasets(cfg)
    parent = fit("source_only", baseline_config(cfg), 0, ds)
    assert parent.key == key_of("source_only", baseline_config(cfg), 0, ds)
    child = fit("adaptseg", cfg, 0, ds)
    assert child.meta["config"]["parents"] == [parent.key]     # the key dict it was cached under
    assert child.key == key_of("adaptseg", cfg, 0, ds)
