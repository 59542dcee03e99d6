"""mIoU from one confusion matrix, checked against an independent per-class computation."""
import math

import numpy as np
import pytest
import torch

from kit.metrics import ConfusionMatrix, confusion_matrix, iou_table, miou


def _reference_iou(pred, target, C):
    """Independent computation: per-class set sizes with numpy, ignoring 255."""
    p = pred.numpy().ravel()
    t = target.numpy().ravel()
    keep = t != 255
    p, t = p[keep], t[keep]
    out = []
    for c in range(C):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        out.append(np.nan if union == 0 else inter / union)
    return np.array(out)


def test_against_reference_random():
    g = torch.Generator().manual_seed(0)
    C = 7
    m = ConfusionMatrix(C)
    preds, targets = [], []
    for _ in range(5):
        t = torch.randint(0, C - 1, (2, 9, 11), generator=g)     # class C-1 never in GT
        t[torch.rand(t.shape, generator=g) < 0.1] = 255
        p = torch.randint(0, C - 2, (2, 9, 11), generator=g)     # classes C-2, C-1 never predicted
        m.update(p, t)
        preds.append(p)
        targets.append(t)
    ref = _reference_iou(torch.cat(preds), torch.cat(targets), C)
    np.testing.assert_allclose(m.iou(), ref, equal_nan=True)
    assert math.isnan(m.iou()[C - 1])                              # absent from GT and prediction
    assert m.iou()[C - 2] == 0                                      # in GT, never predicted
    assert m.miou() == pytest.approx(np.nanmean(ref))


def test_dataset_level_not_mean_of_images():
    # image 1: class 0 perfect on 1 pixel; image 2: class 0 wrong on 9 pixels
    m = ConfusionMatrix(2)
    m.update(torch.tensor([0]), torch.tensor([0]))
    m.update(torch.ones(9, dtype=torch.long), torch.zeros(9, dtype=torch.long))
    assert m.iou()[0] == pytest.approx(0.1)


def test_ignore_and_errors():
    cm = confusion_matrix(torch.tensor([0, 1]), torch.tensor([255, 1]), 2)
    assert cm.sum() == 1
    with pytest.raises(ValueError, match="outside the label space"):
        confusion_matrix(torch.tensor([0]), torch.tensor([5]), 2)
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 2)
    with pytest.raises(TypeError):
        confusion_matrix(torch.tensor([0.5]), torch.tensor([0]), 2)


def test_table_and_empty():
    assert math.isnan(miou(torch.zeros(3, 3)))
    df = iou_table(torch.tensor([[2, 0], [1, 1]]), ["a", "b"])
    assert list(df["class"]) == ["a", "b"]
    assert df["IoU"].tolist() == pytest.approx([200 / 3, 50.0])
