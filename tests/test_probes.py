"""kit.probes: linear read-outs of a network's levels (the multi-level premise check of 00)."""
import pytest
import torch
import torch.nn as nn

from kit.probes import fit_linear, level_probes, predict_linear


def _split(n, flip=False, seed=0):
    """Images whose first channel says the class of each pixel (two classes: left/right halves
    at random split points); ``flip`` swaps the colour code (a domain shift a probe feels)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        cut = int(torch.randint(2, 14, (1,), generator=g))
        y = torch.zeros(16, 16, dtype=torch.long)
        y[:, cut:] = 1
        x = torch.rand(3, 16, 16, generator=g) * 0.1
        x[0] += (1 - y if flip else y).float()
        y[0, 0] = 255   # an ignored pixel
        items.append((x, y))
    return items


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x


def test_probe_reads_the_classes_and_feels_the_shift():
    levels = lambda m, x: {"same": m(x), "noise": torch.rand_like(x)}  # noqa: E731
    r = level_probes(_Net(), _split(8), _split(4, seed=1), _split(4, flip=True, seed=2), 2, layers=("same", "noise"),
                     levels_fn=levels)
    assert set(r) == {"same", "noise", "pixels"}
    assert r["same"]["source_miou"] == pytest.approx(100.0) and r["pixels"]["source_miou"] == pytest.approx(100.0)
    assert r["same"]["target_miou"] < 10.0                 # the colour code flipped: the source probe fails
    assert r["noise"]["source_miou"] < 70.0                # a level without the layout reads little


def test_fit_linear_separates_and_rejects_empty_splits():
    x = torch.randn(40, 3)
    y = (x[:, 0] > 0).long()
    assert (predict_linear(fit_linear(x, y, 2), x) == y).float().mean() > 0.95
    with pytest.raises(ValueError, match="at least one image"):
        level_probes(_Net(), [], _split(1), _split(1), 2, levels_fn=lambda m, x: {"layer3": x})
