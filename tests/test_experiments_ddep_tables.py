"""DDeP's noise ablations and fine-tuning curves (kit.experiments.ddep_tables: ``ddep/noise``,
``ddep/finetune_curves``): their grids, their cells' calls to the cache, and their claims on small
synthetic tables. No training."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import kit.fit
from kit import experiments, methods
from kit.config import PROFILES, resolve
from kit.experiments import ddep_tables as X
from kit.methods.base import REQUIRED, Fitted
from kit.results import all_hold, effect

NOISE = experiments.get("ddep/noise")
CURVES = experiments.get("ddep/finetune_curves")
N = X.INIT_NAMES


def noise_table(sweep: dict[float, list[float]], sampled: list[float], image: list[float], default=0.2):
    """{σ: [mIoU per seed]} of the sweep + the sampled-σ and predict-image rows, in the notebook's columns."""
    rows = []
    for s in range(len(sampled)):
        rows += [{"cell": f"σ = {k:g}", "seed": s, "miou": v[s], "group": "sweep", "sigma": k} for k, v in sweep.items()]
        rows += [{"cell": "sampled σ ~ U(0.05, 0.8)", "seed": s, "miou": sampled[s], "group": "fixed vs sampled", "sigma": default},
                 {"cell": "predict image (σ = 0.2)", "seed": s, "miou": image[s], "group": "noise vs image", "sigma": default}]
    return pd.DataFrame(rows).assign(**{"default σ": default})


SWEEP = {0.05: [20, 21, 22], 0.1: [24, 25, 26], 0.2: [26, 27.5, 28], 0.4: [23, 24, 25], 0.8: [15, 16, 17]}


def test_cells_cover_every_profile_and_state_no_paper_numbers():
    for e in (NOISE, CURVES):
        assert e.method == "ddep" and e.notebook == "05_ddep" and e.decides and all(c.paper is None for c in e.cells)
    assert [c.id for c in NOISE.claims] == ["C4", "C5", "C6"] and [c.id for c in CURVES.claims] == ["C7", "C8"]
    assert [c.name for c in NOISE.cells] == [f"σ = {s:g}" for s in X.SIGMAS] + ["sampled σ ~ U(0.05, 0.8)",
                                                                                "predict image (σ = 0.2)"]
    assert [c.name for c in CURVES.cells] == ["random init", "supervised encoder", "DeP", "DDeP"]
    for p in PROFILES:
        cfg = resolve(p, "ddep")
        assert {c.name for c in NOISE.grid(cfg)} <= {c.name for c in NOISE.cells}, p
        assert len(NOISE.grid(cfg)) == len(cfg.sweep_sigmas) + 2
        assert list(NOISE.seeds(cfg)) == list(cfg.sweep_seeds)


def full_spec(method, spec):
    """``spec`` with the method's declared defaults, checked as ``kit.fit.fit`` checks it (no
    unknown argument, every required one given)."""
    declared = methods.get(method).spec
    assert set(spec) <= set(declared), (method, spec)
    assert all(k in spec for k, v in declared.items() if v is REQUIRED), (method, spec)
    return {**declared, **spec}


def test_noise_cells_make_the_notebooks_calls(monkeypatch):
    calls, pre_calls = [], []

    def fake(method, cfg, seed=0, data=None, verbose=False, **spec):
        spec = full_spec(method, spec)
        ov = dict(spec["overrides"] or {})
        if method == "ddep":
            calls.append((seed, spec["init"], spec["fraction"], spec["eval_every"], ov))
            return Fitted(method, None, {"miou": 10.0 + seed})
        assert method == "ddep_pretrain"
        pre_calls.append((seed, spec["kind"], ov))
        return Fitted(method, None, {"history": {"train": [{"denoise": 1.0}, {"denoise": 0.4}]}})

    monkeypatch.setattr(kit.fit, "fit", fake)
    cfg = NOISE.config("smoke", seeds=[0, 1], sweep_seeds=[0, 1])
    t = replace(NOISE, data=lambda cfg: None).run(cfg)
    ovs = [{"sigma": 0.1}, {}, {"sigma_mode": "sampled"}, {"denoise_target": "image"}]   # σ = 0.2: section 3's model
    assert calls == [(s, "ddep", 0.1, 2 if s == 0 else 0, ov) for s in (0, 1) for ov in ovs]
    assert pre_calls == [(s, "ddep", ov) for s in (0, 1) for ov in ovs]   # the fine-tuned model's pretraining
    assert list(t["group"][:4]) == ["sweep", "sweep", "fixed vs sampled", "noise vs image"]
    assert list(t["sigma"][:4]) == [0.1, 0.2, 0.2, 0.2] and set(t["default σ"]) == {0.2}
    assert set(t["final denoising loss"]) == {0.4}


def test_curve_cells_read_the_label_fraction_models(monkeypatch):
    calls = []

    def fake(method, cfg, seed=0, data=None, verbose=False, **spec):
        assert method == "ddep"
        spec = full_spec(method, spec)
        calls.append((seed, spec["init"], spec["fraction"], spec["eval_every"], dict(spec["overrides"] or {})))
        hist = {"train": [{"iter": 1, "seg": 2.0}, {"iter": 4, "seg": 1.0 + seed}],
                "val": [{"iter": 2, "miou": 5.0}, {"iter": 4, "miou": 9.0}]}
        return Fitted(method, None, {"miou": 9.0, "history": hist})

    monkeypatch.setattr(kit.fit, "fit", fake)
    t = replace(CURVES, data=lambda cfg: None).run(CURVES.config("smoke", seeds=[0, 1]))
    assert calls == [(s, i, 0.1, 2 if s == 0 else 0, {}) for s in (0, 1) for i in ("random", "supervised", "dep", "ddep")]
    assert list(t["final CE"]) == [1.0] * 4 + [2.0] * 4 and set(t["last iter"]) == {4}
    assert list(t["first val mIoU"][:4]) == [5.0] * 4 and t["first val mIoU"][4:].isna().all()


@pytest.mark.parametrize("sampled, image, verdict", [
    ([20, 21, 22], [18, 19, 20], "holds"),          # fixed σ = 0.2 beats both by 6-8 on every seed
    ([30, 31, 33], [35, 36, 37], "does not hold"),  # both beat the fixed σ
    ([26, 20, 29], [30, 20, 27], "undecided"),      # straddles
])
def test_c5_c6_on_synthetic_tables(sampled, image, verdict):
    t = noise_table(SWEEP, sampled, image)
    c5, c6 = NOISE.claim("C5").effects(t), NOISE.claim("C6").effects(t)
    assert list(c5) == ["fixed − sampled"] and list(c6) == ["predict noise − predict image"]
    assert c5["fixed − sampled"].paired and c5["fixed − sampled"].n == 3
    assert all_hold(c5.values()) == verdict and all_hold(c6.values()) == verdict


def test_c4_on_synthetic_tables():
    c4 = NOISE.claim("C4").effects(noise_table(SWEEP, [0] * 3, [0] * 3))
    assert list(c4) == ["best σ in [0.1, 0.4] − best σ outside"] and all_hold(c4.values()) == "holds"
    assert c4["best σ in [0.1, 0.4] − best σ outside"].mean == pytest.approx(18.5 / 3)
    worse = {**SWEEP, 0.05: [30, 31, 32]}
    assert all_hold(NOISE.claim("C4").effects(noise_table(worse, [0] * 3, [0] * 3)).values()) == "does not hold"
    mixed = {**SWEEP, 0.8: [30, 20, 40]}
    assert all_hold(NOISE.claim("C4").effects(noise_table(mixed, [0] * 3, [0] * 3)).values()) == "undecided"
    only_band = {k: v for k, v in SWEEP.items() if 0.1 <= k <= 0.4}   # the smoke sweep: nothing outside
    assert list(NOISE.claim("C4").effects(noise_table(only_band, [0] * 3, [0] * 3))) == ["(no σ outside [0.1, 0.4] swept)"]


def curve_table(ce: dict[str, list[float]], first: dict[str, float], last=80):
    return pd.DataFrame([{"cell": N[i], "seed": s, "miou": 20.0, "init": N[i], "last iter": last, "final CE": v[s],
                          "first val iter": 20 if s == 0 else np.nan, "first val mIoU": first[i] if s == 0 else np.nan}
                         for s in range(3) for i, v in ce.items()])


@pytest.mark.parametrize("ddep_ce, verdict", [([0.5, 0.6, 0.7], "holds"), ([2.5, 2.6, 2.7], "does not hold"),
                                              ([0.5, 2.6, 1.2], "undecided")])
def test_c7_c8_on_synthetic_tables(ddep_ce, verdict):
    ce = {"random": [1.5, 1.6, 1.7], "supervised": [1.0] * 3, "dep": [x - 0.1 for x in ddep_ce], "ddep": ddep_ce}
    t = curve_table(ce, {"random": 10.0, "supervised": 12.0, "dep": 11.0, "ddep": 14.0})
    c7 = CURVES.claim("C7").effects(t)
    assert list(c7) == ["training CE after 80 steps, random − DDeP", "training CE after 80 steps, random − DeP"]
    assert all_hold(c7.values()) == verdict
    c8 = CURVES.claim("C8").effects(t)
    assert list(c8) == ["val mIoU after 20 steps, DDeP − random"]
    e = c8["val mIoU after 20 steps, DDeP − random"]
    assert e.n == 1 and e.mean == pytest.approx(4.0) and e.verdict == "undecided"   # one seed: no interval


def test_claims_equal_the_notebooks_former_formulas():
    """The notebook's own computation (before it called the registry) on a noisy table."""
    rng = np.random.default_rng(0)
    t = noise_table({k: list(np.array(v) + rng.normal(0, 2, 3)) for k, v in SWEEP.items()},
                    list(24 + rng.normal(0, 2, 3)), list(23 + rng.normal(0, 2, 3)))
    sweep = t.rename(columns={"miou": "mIoU"})

    def by(group, sigma=None):
        sel = sweep[sweep.group == group]
        sel = sel if sigma is None else sel[np.isclose(sel.sigma, sigma)]
        return sel.groupby("seed")["mIoU"].mean()

    sw = sweep[sweep.group == "sweep"].pivot_table(index="seed", columns="sigma", values="mIoU")
    band = [c for c in sw.columns if 0.1 <= c <= 0.4]
    rest = [c for c in sw.columns if c not in band]
    fixed_seed = by("sweep", sigma=0.2)
    expected = {"C4": {"best σ in [0.1, 0.4] − best σ outside": effect(sw[band].max(axis=1), paired_with=sw[rest].max(axis=1))},
                "C5": {"fixed − sampled": effect(fixed_seed, paired_with=by("fixed vs sampled"))},
                "C6": {"predict noise − predict image": effect(fixed_seed, paired_with=by("noise vs image"))}}
    for cid, exp in expected.items():
        got = NOISE.claim(cid).effects(t)
        assert list(got) == list(exp), cid
        for k, e in exp.items():
            assert (got[k].mean, got[k].low, got[k].high, got[k].verdict) == (e.mean, e.low, e.high, e.verdict), (cid, k)
