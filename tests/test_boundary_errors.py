"""kit.evaluation.boundary_mask / boundary_errors against masks and counts worked out by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from kit.evaluation import boundary_errors, boundary_mask


class Fixed(nn.Module):
    """A 'model' that predicts one given label map [H,W] for every image (as one-hot logits)."""

    def __init__(self, pred: torch.Tensor, num_classes: int):
        super().__init__()
        self.register_buffer("logits", 10 * nn.functional.one_hot(pred, num_classes).permute(2, 0, 1).float())
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return {"out": self.logits[None].expand(x.shape[0], -1, -1, -1) + 0 * self.w}


class Pairs(torch.utils.data.Dataset):
    def __init__(self, y):
        self.y = y

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return torch.zeros(3, *self.y.shape), self.y


def test_boundary_mask_width_and_ignore():
    y = torch.zeros(1, 5, 6, dtype=torch.long)
    y[:, :, 3:] = 1                                   # a vertical edge between columns 2 and 3
    assert boundary_mask(y, 1)[0].sum(0).tolist() == [0, 0, 5, 5, 0, 0]
    assert boundary_mask(y, 2)[0].sum(0).tolist() == [0, 5, 5, 5, 5, 0]
    y[:, 0, :] = 255                                  # ignored pixels: never boundary, never make one
    m = boundary_mask(y, 1)[0]
    assert not m[0].any() and m[1:].sum() == 8
    with pytest.raises(ValueError, match=r"\[B,H,W\]"):
        boundary_mask(y[0])


def test_boundary_errors_counts():
    y = torch.zeros(4, 6, dtype=torch.long)
    y[:, 3:] = 1                                      # boundary: columns 2 and 3 (8 of 24 pixels)
    perfect = boundary_errors(Fixed(y, 2), Pairs(y), amp="off")
    assert perfect["boundary_error"] == 0 and perfect["interior_error"] == 0
    assert perfect["boundary_share"] == pytest.approx(100 * 8 / 24)
    shifted = y.clone()
    shifted[:, 2] = 1                                 # the edge predicted one column early: 4 boundary errors
    r = boundary_errors(Fixed(shifted, 2), Pairs(y), amp="off")
    assert r["boundary_error"] == pytest.approx(100 * 4 / 8) and r["interior_error"] == 0
    assert r["errors_at_boundary"] == pytest.approx(100.0)
    everywhere = boundary_errors(Fixed(1 - y, 2), Pairs(y), amp="off")   # every pixel wrong
    assert everywhere["boundary_error"] == everywhere["interior_error"] == pytest.approx(100.0)
    assert everywhere["errors_at_boundary"] == pytest.approx(everywhere["boundary_share"])
