"""The recipes on both of the kit's domain pairs: every method's default recipe for unsupervised
(AdaptSegNet, DAS3) and active (RIPU) adaptation, against the model it starts from.

The recipes were chosen on the street world (``synthetic -> real``). ``recipes/alley`` runs them
unchanged on the second pair, the alleys (:data:`kit.data.world_spec.DA_PAIRS`: one background
class, building, covers about three quarters of the pixels; objects at half the size; 8 merged
classes); ``recipes/street`` is the same table on the street world (its models are the notebooks').
A default that ends below its starting model on either pair is a defect of the recipe. Each row
records its model's target mIoU (``miou``) and that of the model it starts from (``start``: the
source-only model, or the previous DAS3 stage), both evaluated the same way (whole target val
split, no flip), so the claim compares them paired by seed.

    >>> from kit import experiments
    >>> [c.name for c in experiments.get("recipes/alley").cells][:4]
    ['source-only', 'target oracle', 'AdaptSegNet', 'DAS3 stage 1']
"""
from __future__ import annotations

from ..data.world_spec import DA_PAIRS
from ..results import effect
from . import Cell, Claim, Experiment, by_cell, paired, register

PAPER = "the kit's recipes on its two domain pairs"
ADAPTED = ("AdaptSegNet", "DAS3 stage 1", "DAS3 stage 2", "DAS3 stage 3", "RIPU")


def _setup(cfg, method: str, seed: int):
    """The method's default config at ``cfg``'s profile on ``cfg``'s domain pair, and its data."""
    from ..config import resolve
    from ..data import make_da_datasets

    c = resolve(cfg["profile"], method, source=cfg["source"], target=cfg["target"], amp=cfg["amp"],
                cache_dir=cfg["cache_dir"], device=cfg["device"])
    return c, make_da_datasets(c)


def _miou(model, ds, c) -> float:
    from ..evaluation import evaluate

    return evaluate(model, ds["target_val"], batch_size=c["eval_batch_size"], amp=c["amp"]).miou


def baseline(kind: str) -> Cell:
    def run(cfg, seed, _):
        from ..fit import fit

        c, ds = _setup(cfg, "supervised", seed)
        return {"miou": _miou(fit(kind, c, seed, ds).model, ds, c)}
    return Cell("source-only" if kind == "source_only" else "target oracle", run)


def adapted(name: str) -> Cell:
    """One method's default model and the model it starts from."""
    def run(cfg, seed, _):
        from ..fit import fit
        from ..methods import das3
        from ..methods.supervised import baseline_config

        method = {"AdaptSegNet": "adaptseg", "RIPU": "ripu"}.get(name, "das3")
        c, ds = _setup(cfg, method, seed)
        if method == "das3":
            stage = int(name[-1])
            p = das3.source_parent(c)
            start = fit("das3", c, seed, ds, stage=stage - 1) if stage > 1 else fit(p.method, p.cfg, seed, ds, **p.spec)
            model = fit("das3", c, seed, ds, stage=stage).model
        else:
            start = fit("source_only", baseline_config(c), seed, ds)
            model = fit(method, c, seed, ds).model
        return {"miou": _miou(model, ds, c), "start": _miou(start.model, ds, c)}
    return Cell(name, run)


def no_default_hurts(table):
    """Each adapted default minus the model it started from, paired by seed (DAS3: each stage
    against the one before it, and its three stages together against the source model)."""
    out = {f"{n} − its start": effect(by_cell(table, n), paired_with=by_cell(table, n, "start")) for n in ADAPTED}
    out["DAS3 (three stages) − source-only"] = paired(table, "DAS3 stage 3", "source-only")
    return out


CLAIM = Claim("R1", "Every method's default recipe improves on the model it starts from",
              "the kit's own check (issue: recipes that do not hurt off the toy world)", no_default_hurts)

for _pair, (_src, _tgt) in DA_PAIRS.items():
    register(Experiment(
        id=f"recipes/{_pair}", paper=PAPER,
        reference=f"every method's default recipe on the {_pair} pair ({_src} -> {_tgt}) against its start",
        notebook="00_introduction", method="supervised", overrides={"source": _src, "target": _tgt},
        cells=(baseline("source_only"), baseline("oracle"), *(adapted(n) for n in ADAPTED)),
        claims=(CLAIM,), decides=False, in_notebook=lambda cfg: False))
