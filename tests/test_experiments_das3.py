"""DAS3's registered stage-wise table (kit/experiments/das3.py): its cells, paper numbers and
claims C1, C1a, C1b on small synthetic tables (no training)."""
import math

import pandas as pd
import pytest

from kit import experiments
from kit.experiments import das3
from kit.results import all_hold

SRC, BN, S1, S2, CTL, S3, ORC = (c.name for c in experiments.get("das3/stagewise").cells)


def table(values: dict[str, list[float]]) -> pd.DataFrame:
    """{cell: [mIoU per seed]} -> the registry's result table."""
    return pd.DataFrame([{"cell": c, "seed": s, "miou": v} for c, vs in values.items() for s, v in enumerate(vs)])


def test_cells_and_paper_numbers():
    e = experiments.get("das3/stagewise")
    assert e.notebook == "02_das3" and e.method == "das3"
    assert [c.name for c in e.cells] == ["source model", "BN statistics only (reference)", "+ alignment (stage 1)",
                                         "+ self-training (stage 2)", "stage 2 as long as stages 2+3 (control)",
                                         "+ propagation (stage 3)", "target oracle"]
    assert {c.name: c.paper for c in e.cells} == {SRC: None, BN: None, S1: 54.0, S2: 62.4, CTL: None, S3: 64.0,
                                                  ORC: None}
    assert [c.id for c in e.claims] == ["C1", "C1a", "C1b"]


@pytest.mark.parametrize("s3, verdict", [
    ([44, 45, 46], "holds"),          # every stage above the previous one on every seed
    ([38, 39, 40], "does not hold"),  # stage 3 below stage 2 on every seed
    ([43, 40, 42], "undecided"),      # stage 3 − stage 2 straddles zero
])
def test_c1_each_stage_improves(s3, verdict):
    t = table({SRC: [20, 21, 22], S1: [30, 32, 31], S2: [41, 42, 42.5], S3: s3})
    effects = experiments.get("das3/stagewise").claim("C1").effects(t)
    assert list(effects) == ["+ alignment", "+ self-training", "+ propagation"]
    assert all(e.paired and e.n == 3 for e in effects.values())
    assert effects["+ alignment"].mean == pytest.approx(10.0)       # stage 1 − source model, paired by seed
    assert all_hold(effects.values()) == verdict


@pytest.mark.parametrize("s1, verdict", [([31, 32, 33], "holds"), ([27, 28, 29], "does not hold"),
                                         ([31, 28, 30.5], "undecided")])
def test_c1a_stage1_against_bn_statistics_only(s1, verdict):
    t = table({BN: [29, 30, 31], S1: s1})
    (label, e), = experiments.get("das3/stagewise").claim("C1a").effects(t).items()
    assert label == "stage 1 − BN statistics only" and e.paired and e.verdict == verdict


def test_c1a_without_the_bn_row_is_undecided():
    """Frozen BN (paper profile): the notebook has no BN row, the registry a NaN one; both: no seeds."""
    for t in (table({S1: [30, 31]}), table({S1: [30, 31], BN: [math.nan, math.nan]})):
        e = experiments.get("das3/stagewise").claim("C1a").effects(t)["stage 1 − BN statistics only"]
        assert e.n == 0 and e.verdict == "undecided"


def test_c1b_pairs_on_the_seeds_the_control_ran():
    """The control runs on the sweep seeds only (NaN on the others): C1b pairs on those."""
    c1b = experiments.get("das3/stagewise").claim("C1b")
    e = c1b.effects(table({S3: [45, 46, 47], CTL: [43, math.nan, math.nan]}))["stage 3 − longer stage 2"]
    assert e.n == 1 and e.mean == pytest.approx(2.0) and e.verdict == "undecided"
    assert c1b.effects(table({S3: [45, 46, 47], CTL: [43, 44, 45]}))["stage 3 − longer stage 2"].verdict == "holds"
    assert c1b.effects(table({S3: [41, 42, 43], CTL: [43, 44, 45]}))["stage 3 − longer stage 2"].verdict == "does not hold"


def test_cells_not_run_give_nan_without_training_and_leave_the_summary():
    cfg = experiments.get("das3/stagewise").config("smoke")
    assert math.isnan(das3.control({**cfg, "seeds": [0, 1], "sweep_seeds": None}, 1, None)["miou"])
    assert math.isnan(das3.bn_only({**cfg, "frozen_bn": True}, 0, None)["miou"])
    rows = experiments.get("das3/stagewise").summary(table({S3: [45, 46, 47], CTL: [43, math.nan, math.nan]}))
    assert [(r["cell"], r["here mIoU"], r["seeds"]) for r in rows] == [(CTL, 43.0, 1), (S3, 46.0, 3)]
