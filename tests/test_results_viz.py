"""Run records (metrics.json schema), plots and the widget fallback, the segmentation loss."""
import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

from kit import losses, viz
from kit.config import resolve
from kit.results import Run, load_metrics, load_result, mean_sd


def test_run_writes_schema(tmp_path):
    cfg = resolve("smoke", run_dir=str(tmp_path / "r"))
    run = Run("99_test", cfg)
    run.add("table", pd.DataFrame({"a": [1.0, float("nan")], "b": ["x", "y"]}))
    run.claim("C1", "a claim", "paper says", "here we see", np.bool_(True))
    run.claim("C1", "a claim", "paper says", "here we see more", False)       # replaces, not duplicates
    path = run.save()
    data = load_metrics(path)
    assert data["notebook"] == "99_test" and data["profile"] == "smoke" and data["seeds"] == [0]
    assert data["results"]["table"][1]["a"] is None                            # NaN -> null, valid JSON
    assert [c["holds"] for c in data["claims"]] == [False]
    assert run.claims_frame()["verdict"].tolist() == ["does not hold"]


def test_load_metrics_rejects_incomplete(tmp_path):
    p = tmp_path / "metrics.json"
    p.write_text(json.dumps({"notebook": "x", "claims": []}))
    with pytest.raises(ValueError, match="lacks keys"):
        load_metrics(p)


def test_load_result_reads_another_notebooks_table(tmp_path):
    """03 reads 01's main table by name: None before 01 has run, a clear error for a wrong name."""
    path = tmp_path / "01" / "metrics.json"
    assert load_result(path, "main_summary") is None
    run = Run("01", resolve("smoke", run_dir=str(tmp_path / "01")))
    run.add("main_summary", pd.DataFrame({"method": ["single-level"], "here mIoU": [29.4]}))
    assert run.save() == path
    assert load_result(path, "main_summary") == [{"method": "single-level", "here mIoU": 29.4}]
    with pytest.raises(ValueError, match=r"no result 'summary'; it records \['main_summary'\]"):
        load_result(path, "summary")


def test_mean_sd():
    assert mean_sd([1, 2, 3]) == (2.0, 1.0)
    assert mean_sd([5]) == (5.0, 0.0)
    assert all(math.isnan(v) for v in mean_sd([]))


def test_colorize_uses_cityscapes_colors_and_black_ignore():
    lab = torch.tensor([[0, 255], [1, 0]])
    rgb = viz.colorize(lab, ["road", "sky"])
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == viz.CITYSCAPES_COLORS["road"] and tuple(rgb[0, 1]) == (0, 0, 0)
    assert tuple(rgb[1, 0]) == viz.CITYSCAPES_COLORS["sky"]
    other = viz.class_colors(["unicorn", "unicorn"])
    assert (other[0] == other[1]).all()                                          # stable per name


def test_explore_headless_draws_the_default_once(monkeypatch):
    import ipywidgets as widgets

    monkeypatch.setenv("KIT_HEADLESS", "1")
    calls = []
    out = viz.explore(lambda k=0: calls.append(k), {"k": widgets.IntSlider(value=3)})
    assert calls == [3] and out is None


def test_segmentation_grid_runs():
    img = torch.rand(3, 16, 32)
    lab = torch.randint(0, 3, (16, 32))
    fig = viz.segmentation_grid([[img, lab]], ["road", "sky", "car"], col_titles=["image", "label"])
    assert len(fig.axes) == 2
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_seg_loss_value_ignore_and_errors():
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 1], [2, 255]]])
    assert float(losses.seg_loss(logits, labels).detach()) == pytest.approx(math.log(3))
    none = torch.full((1, 2, 2), 255)
    zero = losses.seg_loss(logits, none)
    assert float(zero.detach()) == 0.0
    zero.backward()                                                              # a graph, not a constant
    with pytest.raises(ValueError, match="label id 7 outside the label space 0..2"):
        losses.seg_loss(logits, torch.tensor([[[7, 0], [0, 0]]]))
    up = losses.seg_loss(torch.zeros(1, 3, 1, 1), torch.zeros(1, 4, 4, dtype=torch.long))
    assert float(up) == pytest.approx(math.log(3))                                # upsampled to the label
