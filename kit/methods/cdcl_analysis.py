"""CDCL's motivation figure (paper Fig. 1): networks trained on different datasets have alike
conv weights but different BN statistics, hence shared convs and dataset-specific BNs.

* :func:`layer_statistics`: per BN of a plain network, its running statistics and the conv
  weights just before it (a DAT model: take :func:`kit.methods.cdcl.dataset_model` first);
* :func:`distribution_distance`: a scale-free distance between two such empirical
  distributions, comparable across layers.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch.nn as nn

__all__ = ["layer_statistics", "distribution_distance"]


def layer_statistics(model: nn.Module) -> list[dict[str, Any]]:
    """For every BN of a plain network and the conv just before it: the conv weights and the
    BN's running means and variances (numpy arrays), with the layer names."""
    recs, last_conv = [], None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            last_conv = (name, m)
        elif isinstance(m, nn.BatchNorm2d) and last_conv is not None and m.running_mean is not None:
            recs.append({"bn": name, "conv": last_conv[0],
                         "conv_weight": last_conv[1].weight.detach().flatten().cpu().numpy(),
                         "bn_mean": m.running_mean.detach().cpu().numpy(),
                         "bn_var": m.running_var.detach().cpu().numpy()})
            last_conv = None
    if not recs:
        raise ValueError("model has no conv followed by a BatchNorm2d (a DSBN model? use dataset_model first)")
    return recs


def distribution_distance(a, b, quantiles: int = 256) -> float:
    """Scale-free distance between two empirical distributions: the 1-Wasserstein distance
    (mean absolute difference of matched quantiles) divided by the pooled standard deviation.
    0 for identical distributions; comparable across layers of different scale.

    >>> round(distribution_distance([0., 1., 2.], [0., 1., 2.]), 3)
    0.0
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("distribution_distance needs two non-empty samples")
    q = (np.arange(quantiles) + 0.5) / quantiles
    w1 = float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))
    sd = float(np.std(np.concatenate([a, b])))
    return w1 / sd if sd > 0 else 0.0
