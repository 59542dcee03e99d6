"""DAS3's registered ablations, parameter sweeps and stage-3 variants (kit/experiments/das3_tables.py):
their cells, paper numbers, the sweep grid per profile, the config each cell chains with, and
claims C2-C6 on small synthetic tables (no training)."""
import math

import pandas as pd
import pytest

from kit import experiments
from kit.experiments import das3_tables as t3
from kit.results import all_hold

SMALL = ("pole", "traffic sign", "person", "bicycle")


def table(values: dict[str, list[float]], **extra: dict[str, list[float]]) -> pd.DataFrame:
    """{cell: [mIoU per seed]} (and {column: {cell: [value per seed]}}) -> the registry's result table."""
    rows = [{"cell": c, "seed": s, "miou": v, **{k.replace("_", " "): d[c][s] for k, d in extra.items() if c in d}}
            for c, vs in values.items() for s, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_ablation_cells_and_claims():
    e = experiments.get("das3/ablations")
    assert e.notebook == "02_das3" and e.method == "das3" and e.decides
    assert [c.name for c in e.cells] == [
        "focal entropic + diversity (default)", "plain entropy + diversity", "focal entropic, no diversity",
        "focal factor as a weight (detached)", "positive + negative (default)", "positive only",
        "class-wise thresholds (default)", "one global threshold"]
    assert all(c.paper is None for c in e.cells)
    assert [c.id for c in e.claims] == ["C2", "C3", "C4", "C5"]


def test_sweep_cells_and_grid_per_profile():
    e = experiments.get("das3/sweeps")
    assert e.claims == () and all(c.paper is None for c in e.cells) and len(e.cells) == 18
    smoke = e.config("smoke")
    assert [c.name for c in e.grid(smoke)] == ["gamma = 0", "alpha = 0", "neg_threshold = 0.01", "top_k = 0.2",
                                               "easy_ratio = 0.1"]
    assert [c.name for c in e.grid(e.config("smoke", extended=False))] == ["gamma = 0"]   # quick's path
    assert [c.name for c in e.grid(e.config("quick"))] == ["gamma = 0", "gamma = 1", "gamma = 3", "gamma = 5", "gamma = 8"]
    assert len(e.grid(e.config("full"))) == 18
    assert e.seeds(e.config("quick")) == [0] and e.seeds(e.config("full")) == list(e.config("full").sweep_seeds)


def test_stage3_variant_cells_and_paper_numbers():
    e = experiments.get("das3/stage3_variants")
    assert {c.name: c.paper for c in e.cells} == {"stage 2": 62.4, "stage 3, kit (frozen teacher, thresholds)": None,
                                                  "stage 3, ATP (EMA teacher, argmax, DACS weight)": 64.0}
    assert [c.id for c in e.claims] == ["C6"]


class _Val:
    classes = ("road", "pole", "person")


def _fake_chain(calls):
    def chain(cfg, seed, ds, upto, **over):
        calls.append((upto, over))
        ev = {"miou": 40.0 + upto, "iou": {"road": 90.0, "pole": 10.0, "person": None},
              "pred_share": {"road": 0.8, "pole": 0.1, "person": 0.1}, "true_share": {"road": 0.7, "pole": 0.2, "person": 0.1}}
        return None, {"eval": ev, "history": {"train": [{"hard_weight": 0.5}]}}
    return chain


def test_cells_chain_the_notebooks_config_changes(monkeypatch):
    """Each cell is the notebook's chain(seed, stage, **changes) -- same config, same cache key."""
    calls = []
    monkeypatch.setattr(t3, "_chain", _fake_chain(calls))
    cfg, ds = experiments.get("das3/ablations").config("smoke"), {"target_val": _Val()}
    for c in experiments.get("das3/ablations").cells:
        rec = c.run(cfg, 0, ds)
    assert [o for _, o in calls] == [{}, {"stage1_loss": "entropy"}, {"div_weight": 0.0}, {"focal_grad": "detached"},
                                     {}, {"neg_weight": 0.0}, {}, {"threshold_mode": "global"}]
    assert [s for s, _ in calls] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert rec["IoU pole"] == 10.0 and rec["share road"] == 0.8 and rec["true pole"] == 0.2
    assert rec[t3.KL] == pytest.approx(sum(t * math.log(t / q) for t, q in ((0.7 + 1e-8, 0.8 + 1e-8), (0.2 + 1e-8, 0.1 + 1e-8),
                                                                             (0.1 + 1e-8, 0.1 + 1e-8))))
    calls.clear()
    detached = experiments.get("das3/ablations").cell("focal factor as a weight (detached)")
    assert math.isnan(detached.run({**cfg, "seeds": [0, 1], "sweep_seeds": None}, 1, ds)["miou"]) and not calls
    sweeps = experiments.get("das3/sweeps")
    recs = [c.run(cfg, 0, ds) for c in sweeps.grid(cfg)]
    assert calls == [(1, {"stage1_loss": "entropy"}), (1, {"alpha": 0.0}), (2, {"neg_threshold": 0.01}),
                     (2, {"top_k": 0.2}), (3, {"easy_ratio": 0.1})]
    assert recs[0]["small-class IoU"] == 10.0 and recs[0]["parameter"] == "gamma" and recs[2]["stage"] == 2
    calls.clear()
    recs = [c.run(cfg, 0, ds) for c in experiments.get("das3/stage3_variants").cells]
    assert calls == [(2, {}), (3, {"stage3": "kit"}), (3, {"stage3": "atp"})]
    assert recs[0] == {"miou": 42.0} and recs[2]["hard_weight"] == 0.5


REF = [41, 42, 43]
CASES = [([44, 45, 46.5], "holds"), ([38, 39, 40.5], "does not hold"), ([43, 40, 42], "undecided")]


@pytest.mark.parametrize("b, verdict", CASES)
def test_c2_negative_labels(b, verdict):
    (label, e), = experiments.get("das3/ablations").claim("C2").effects(
        table({t3.POS_NEG: b, t3.POS_ONLY: REF})).items()
    assert label == "positive + negative − positive only, after stage 2" and e.paired and e.verdict == verdict


@pytest.mark.parametrize("b, verdict", CASES)
def test_c4_focal_against_plain_entropy(b, verdict):
    (label, e), = experiments.get("das3/ablations").claim("C4").effects(
        table({t3.DEFAULT_S1: b, t3.PLAIN: REF})).items()
    assert label == "focal − plain entropy, after stage 1" and e.paired and e.verdict == verdict


@pytest.mark.parametrize("shift, verdict", [(5.0, "holds"), (-5.0, "does not hold"), (None, "undecided")])
def test_c3_small_class_iou(shift, verdict):
    """Mean IoU over the small classes among the table's IoU columns (road is not one), class-wise − global."""
    glob = {"road": [90, 91, 92], "pole": [10, 12, 11], "person": [20, 21, 22]}
    cw = {k: [v + (shift if shift is not None else d) for v, d in zip(vs, (3, -3, 1))] for k, vs in glob.items()}
    cw["road"] = [50, 50, 50]                                              # road: no part of C3
    cols = {f"IoU_{k}": {t3.CLASSWISE: cw[k], t3.GLOBAL: glob[k]} for k in glob}
    t = table({t3.CLASSWISE: [40, 41, 42], t3.GLOBAL: [40, 41, 42]}, **cols)
    (label, e), = experiments.get("das3/ablations").claim("C3").effects(t).items()
    assert label == "small-class IoU (pole, person), class-wise − global"
    assert e.paired and e.n == 3 and e.verdict == verdict
    if shift is not None:
        assert e.mean == pytest.approx(shift)


@pytest.mark.parametrize("kl_without, miou_with, verdict", [
    ([0.5, 0.6, 0.7], [44, 45, 46.5], "holds"),
    ([0.01, 0.11, 0.14], [44, 45, 46.5], "does not hold"),      # KL lower without the diversity loss
    ([0.5, 0.6, 0.7], [43, 40, 42], "undecided"),             # the mIoU effect straddles zero
])
def test_c5_diversity_loss(kl_without, miou_with, verdict):
    t = table({t3.DEFAULT_S1: miou_with, t3.NO_DIV: REF},
              **{t3.KL: {t3.DEFAULT_S1: [0.1, 0.2, 0.25], t3.NO_DIV: kl_without}})
    effects = experiments.get("das3/ablations").claim("C5").effects(t)
    assert list(effects) == ["KL(true || predicted) without − with", "mIoU with − without"]
    kl_with = [0.1, 0.2, 0.25]
    assert effects["KL(true || predicted) without − with"].mean == pytest.approx(
        sum(a - b for a, b in zip(kl_without, kl_with)) / 3)                 # without − with, paired by seed
    assert all_hold(effects.values()) == verdict


@pytest.mark.parametrize("atp, verdict", CASES)
def test_c6_atp_stage3_against_stage2(atp, verdict):
    t = table({t3.STAGE2: REF, t3.VARIANTS["kit"]: [42, 43, 41], t3.VARIANTS["atp"]: atp})
    (label, e), = experiments.get("das3/stage3_variants").claim("C6").effects(t).items()
    assert label == "ATP stage 3 − stage 2" and e.paired and e.verdict == verdict


def test_claims_on_one_seed_are_undecided():
    t = table({t3.DEFAULT_S1: [45], t3.PLAIN: [40], t3.STAGE2: [40], t3.VARIANTS["atp"]: [45]})
    assert experiments.get("das3/ablations").claim("C4").effects(t)["focal − plain entropy, after stage 1"].verdict == "undecided"
    assert experiments.get("das3/stage3_variants").claim("C6").effects(t)["ATP stage 3 − stage 2"].verdict == "undecided"
