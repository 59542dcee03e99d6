"""How the toy recipes are chosen, and a check of them that never looks at the evaluation split.

**The principle.** Every toy-profile hyperparameter of a method is the paper's value, scaled
where the toy budget requires it (the comments in :mod:`kit.defaults` say which and
why). No value is chosen by the numbers the claims are decided on.

**The check.** The notebooks' sensitivity sweeps also evaluate each swept model on a *tuning
split*: images of the target domain's ``test`` split of the toy world, which no claim and no
table uses (:func:`tuning_split`). :func:`tuning_choice` reports the value that split picks next
to the recipe's default, and the evaluation split's mIoU at both: if they differ, the recipe
is not the one a tuning split would choose, and the table says by how much that matters on
the evaluation split. (With real data there is no third split: the check is skipped.)
:func:`plot_check` draws one such sweep: both splits' mean ± sd over seeds per value, the
default marked.

>>> import pandas as pd
>>> t = pd.DataFrame({"value": [0.1, 0.1, 1.0, 1.0], "seed": [0, 1, 0, 1],
...                   "tune mIoU": [30.0, 31.0, 33.0, 34.0], "val mIoU": [29.0, 30.0, 31.0, 31.0]})
>>> r = tuning_choice(t, "value", default=0.1)
>>> r["chosen on the tuning split"], r["agrees with the default"], r["val mIoU, chosen − default"]
(1.0, False, 1.5)
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["tuning_split", "tuning_choice", "plot_check"]


def tuning_split(cfg: Mapping[str, Any], domain: str | None = None):
    """The tuning split of the toy world: ``n_val`` images of ``domain`` (default: the config's
    target) from its ``test`` split, at ``eval_size``; None with real data (``data_root``)."""
    if cfg.get("data_root"):
        return None
    from .data import ToyWorld

    return ToyWorld(domain or cfg["target"], "test", tuple(cfg["eval_size"]), cfg["n_val"])


def tuning_choice(table, parameter: str, default: Any, tune: str = "tune mIoU", val: str = "val mIoU") -> dict:
    """The value of ``parameter`` with the best mean ``tune`` (tuning-split mIoU) over the seeds of
    ``table`` (one row per value and seed), next to ``default``, with the mean ``val``
    (evaluation-split mIoU) at both. A tie keeps the default."""
    if table.empty or parameter not in table or tune not in table or val not in table:
        raise ValueError(f"tuning_choice needs rows with columns {parameter!r}, {tune!r}, {val!r}; "
                         f"got {list(table.columns)} ({len(table)} rows)")
    means = table.groupby(parameter)[[tune, val]].mean()
    if default not in means.index:
        raise ValueError(f"the default {parameter}={default!r} is not among the swept values {list(means.index)}")
    best = means[tune].max()
    chosen = default if means.loc[default, tune] >= best else means[tune].idxmax()
    chosen = chosen.item() if hasattr(chosen, "item") else chosen   # a numpy scalar -> a Python value
    return {"parameter": parameter, "default": default, "chosen on the tuning split": chosen,
            "agrees with the default": bool(chosen == default),
            "tuning mIoU, chosen − default": float(means.loc[chosen, tune] - means.loc[default, tune]),
            "val mIoU at the default": float(means.loc[default, val]),
            "val mIoU, chosen − default": float(means.loc[chosen, val] - means.loc[default, val]),
            "seeds": int(table["seed"].nunique()) if "seed" in table else None}


SPLIT_LABELS = ("tuning split (target test)", "evaluation split (target val)")


def plot_check(table, parameter: str, default: Any, ax=None, *, xscale: str | float | None = None,
               ticks: Mapping[Any, str] | None = None, labels: tuple[str, str] = SPLIT_LABELS,
               default_label: str | None = None, tune: str = "tune mIoU", val: str = "val mIoU", **axes_set: Any):
    """Draw a recipe check on ``ax`` (a new figure when None): the mean ``tune`` and ``val`` mIoU
    per value of ``parameter`` over the seeds of ``table`` (error bars: sd, with two seeds or
    more), ticks at the swept values (labels from ``ticks`` or ``f"{v:g}"``), a dotted line at
    ``default``. ``xscale``: "log", a number (log with that base) or None (linear);
    ``axes_set`` goes to ``ax.set`` (title, xlabel, ylabel). Returns ``ax``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.6))
    g = table.groupby(parameter)[[tune, val]]
    mean, sd = g.mean(), (g.std() if table["seed"].nunique() > 1 else None)
    for col, label in zip((tune, val), labels):
        ax.errorbar(mean.index, mean[col], yerr=None if sd is None else sd[col], marker="o", capsize=3, label=label)
    ax.axvline(default, color="grey", ls=":", lw=1, label=default_label or f"default {parameter} = {default:g}")
    if xscale is not None:
        ax.set_xscale("log", base=float(xscale)) if not isinstance(xscale, str) else ax.set_xscale(xscale)
    ax.set_xticks(list(mean.index), [ticks[v] if ticks else f"{v:g}" for v in mean.index])
    ax.minorticks_off()
    ax.set(**{"xlabel": parameter, "ylabel": "target mIoU (%)", **axes_set})
    return ax
