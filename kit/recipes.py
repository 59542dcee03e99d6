"""How the toy recipes are chosen, and a check of them that never looks at the evaluation split.

**The principle.** Every toy-profile hyperparameter of a method is the paper's value, scaled
where the toy budget requires it (the comments in :mod:`kit.methods.defaults` say which and
why). No value is chosen by the numbers the claims are decided on.

**The check.** The notebooks' sensitivity sweeps also evaluate each swept model on a *tuning
split*: images of the target domain's ``test`` split of the toy world, which no claim and no
table uses (:func:`tuning_split`). :func:`tuning_choice` reports the value that split picks next
to the recipe's default, and the evaluation split's mIoU at both: if they differ, the recipe
is not the one a tuning split would choose, and the table says by how much that matters on
the evaluation split. (With real data there is no third split: the check is skipped.)

>>> import pandas as pd
>>> t = pd.DataFrame({"value": [0.1, 0.1, 1.0, 1.0], "seed": [0, 1, 0, 1],
...                   "tune mIoU": [30.0, 31.0, 33.0, 34.0], "val mIoU": [29.0, 30.0, 31.0, 31.0]})
>>> r = tuning_choice(t, "value", default=0.1)
>>> r["chosen on the tuning split"], r["agrees with the default"], r["val mIoU, chosen − default"]
(1.0, False, 1.5)
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["tuning_split", "tuning_choice"]


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
