"""kit.recipes: the tuning split is disjoint from the evaluation split, and the choice made on it."""
import pandas as pd
import pytest
import torch

from kit.config import resolve
from kit.data import make_da_datasets
from kit.recipes import tuning_choice, tuning_split


def test_the_tuning_split_is_the_target_test_split_and_not_val():
    cfg = resolve("smoke", "intro")
    tune, val = tuning_split(cfg), make_da_datasets(cfg)["target_val"]
    assert tune.domain == cfg.target and tune.split == "test" and len(tune) == cfg.n_val
    assert not torch.equal(tune[0][0], val[0][0])          # other images
    assert tuning_split(cfg, "city_b").domain == "city_b"
    assert tuning_split(resolve("smoke", "intro", data_root="/nowhere")) is None


def test_tuning_choice_picks_the_best_mean_and_keeps_the_default_on_a_tie():
    t = pd.DataFrame({"k": [1, 1, 2, 2, 3, 3], "seed": [0, 1] * 3, "tune mIoU": [30, 32, 33, 33, 31, 30],
                      "val mIoU": [20, 22, 25, 23, 19, 19]})
    r = tuning_choice(t, "k", 1)
    assert r["chosen on the tuning split"] == 2 and not r["agrees with the default"]
    assert r["tuning mIoU, chosen − default"] == pytest.approx(2.0) and r["val mIoU, chosen − default"] == pytest.approx(3.0)
    assert r["val mIoU at the default"] == pytest.approx(21.0) and r["seeds"] == 2
    tie = t.assign(**{"tune mIoU": [31, 31, 31, 31, 30, 30]})
    assert tuning_choice(tie, "k", 2)["agrees with the default"]
    with pytest.raises(ValueError, match="not among the swept values"):
        tuning_choice(t, "k", 7)
    with pytest.raises(ValueError, match="needs rows with columns"):
        tuning_choice(t.drop(columns="val mIoU"), "k", 1)


def test_plot_check_draws_both_splits_per_value():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from kit.recipes import plot_check

    t = pd.DataFrame({"k": [1, 1, 2, 2, 4, 4], "seed": [0, 1] * 3, "tune mIoU": [1.0, 3.0, 5.0, 5.0, 2.0, 2.0],
                      "val mIoU": [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]})
    ax = plot_check(t, "k", 2, xscale=2, title="T")
    lines = [c for c in ax.containers]   # one errorbar container per split
    assert len(lines) == 2
    assert list(lines[0].lines[0].get_ydata()) == [2.0, 5.0, 2.0] and list(lines[1].lines[0].get_ydata()) == [0.0, 1.0, 2.0]
    assert [x.get_text() for x in ax.get_xticklabels()] == ["1", "2", "4"]
    assert ax.get_xscale() == "log" and ax.get_title() == "T" and ax.get_ylabel() == "target mIoU (%)"
    assert any(l.get_label() == "default k = 2" for l in ax.get_lines())
