"""AdaptSegNet: adversarial adaptation in the output space (Tsai et al., CVPR 2018, arXiv 1802.10349).

The algorithm box, in the paper's notation. A segmentation network G gives softmax
outputs P = G(I); a fully convolutional discriminator D (one per adapted level) tells
source outputs P_s from target outputs P_t at every location. Each iteration, with one
source batch (I_s, Y_s) and one unlabelled target batch I_t:

1. **G, segmentation** (Eq. 3, multi-level Eq. 5): ``L_seg = CE(P_s, Y_s) + lambda_seg * CE(P_s^aux, Y_s)``.
2. **G, adversarial** with every D frozen (Eq. 4): ``L_adv = sum_i lambda_adv^i * BCE(D_i(P_t^i), source)``
   -- make target outputs look like source outputs. Gradients reach G only.
3. **D** on *detached* outputs (Eq. 2): ``L_d = 1/2 BCE(D_i(P_s^i), source) + 1/2 BCE(D_i(P_t^i), target)``
   -- gradients reach D only.

G and D step together at the end of the iteration (the official order). Optimizers: G
with the config's optimizer (the paper: SGD 2.5e-4, momentum 0.9, weight decay 5e-4,
heads x10, poly 0.9); D with Adam (``d_lr`` 1e-4, betas (0.9, 0.99), poly 0.9).

Levels (``cfg["level"]``):

* ``"single"`` -- one D on the main output (layer4 ASPP head), ``lambda_adv`` (0.001);
* ``"multi"``  -- also a D on the auxiliary output (layer3 ASPP head) with ``lambda_adv_aux``
  (0.0002), and ``lambda_seg`` (0.1) on its segmentation loss;
* ``"feature"`` -- the paper's comparison: one D on the layer4 *features* instead of the
  softmax output, ``lambda_adv`` as weight.

Weights use the paper's names: ``lambda_adv`` is the main (layer4) level and
``lambda_adv_aux`` the auxiliary (layer3) one; the official code's flags
(``--lambda-adv-target1`` = 0.0002 for the auxiliary level, ``...target2`` = 0.001 for the
main one) number the levels the other way round.

Losses (``kit.losses``): :func:`~kit.losses.adv_loss_g`, :func:`~kit.losses.adv_loss_d`,
:func:`~kit.losses.output_space_input`; ``cfg["gan"] = "lsgan"`` swaps BCE for the
least-squares loss. Label convention: source = 1, target = 0 (paper Eq. 2). What a trained D
sees (:func:`~kit.methods.adaptseg_analysis.discriminator_map`): :mod:`kit.methods.adaptseg_analysis`.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
import torch.nn as nn

from .. import losses
from ..cache import model_key
from ..config import Config
from ..config import variant as config_variant
from ..data import make_da_datasets
from ..engine import Engine, History, make_optimizer, seed_everything
from ..evaluation import evaluate
from ..models import FCDiscriminator
from ..models.utils import set_requires_grad
from .base import Fitted, Method
from .supervised import build_model, make_model_optimizer, source_only_parents

__all__ = ["LEVELS", "level_keys", "level_weights", "AdaptSegStep", "build_discriminators", "make_d_optimizer",
           "d_input", "variant", "build_adapted", "train_adaptseg", "AdaptSeg", "ADAPTSEG"]

#: adapted level -> the keys of the network's output dict whose discriminators it trains
LEVELS: dict[str, tuple[str, ...]] = {"single": ("out",), "multi": ("aux", "out"), "feature": ("feat",)}

# Defaults and sections of every field: kit.defaults (METHODS["adaptseg"]).


def level_keys(level: str) -> tuple[str, ...]:
    """Output keys adapted at ``level`` ("single" -> ("out",), "multi" -> ("aux", "out"), "feature" -> ("feat",))."""
    if level not in LEVELS:
        raise ValueError(f"unknown adaptation level {level!r}; expected one of {list(LEVELS)}")
    return LEVELS[level]


def level_weights(cfg: Mapping[str, Any]) -> dict[str, float]:
    """lambda_adv^i per adapted output key, in the paper's naming (main = layer4, aux = layer3)."""
    w = {"out": float(cfg["lambda_adv"]), "aux": float(cfg["lambda_adv_aux"]), "feat": float(cfg["lambda_adv"])}
    return {k: w[k] for k in level_keys(cfg["level"])}


def d_input(out: Mapping[str, torch.Tensor], key: str, size, feature_upsample: int = 1) -> torch.Tensor:
    """What discriminator ``key`` sees: the softmax of ``out[key]`` upsampled to the image ``size`` for
    the output levels ("out", "aux"), or the layer4 features (float32) upsampled by
    ``feature_upsample`` for the feature level ("feat")."""
    if key not in out:
        raise KeyError(f"the network's output has no {key!r} (has {sorted(out)}); multi-level adaptation "
                       "needs a DeepLabV2 built with multi_level=True")
    if key == "feat":
        f = out["feat"].float()
        if feature_upsample != 1:
            f = nn.functional.interpolate(f, scale_factor=feature_upsample, mode="bilinear", align_corners=False)
        if min(f.shape[-2:]) < FCDiscriminator.min_input_size:
            raise ValueError(f"layer4 features of {tuple(out['feat'].shape[-2:])} upsampled x{feature_upsample} give "
                             f"{tuple(f.shape[-2:])}, smaller than the discriminator's minimum of "
                             f"{FCDiscriminator.min_input_size}x{FCDiscriminator.min_input_size}; raise "
                             "feature_upsample (or the image size)")
        return f
    return losses.output_space_input(out[key], tuple(size))


class AdaptSegStep:
    """The per-iteration step of AdaptSegNet for :class:`kit.engine.Engine`.

    Engine modules: ``"model"`` (G) and ``"d_<key>"`` per adapted key (e.g. ``d_out``,
    ``d_aux``, ``d_feat``); optimizers ``"model"`` (G) and ``"disc"`` (all D). Streams
    ``"source"`` (images, labels) and ``"target"`` (images; labels unused).
    Returns the logged losses: ``seg`` (L_seg, Eq. 3/5), ``adv`` (sum_i lambda_adv^i L_adv^i,
    Eq. 4/5, weighted), ``adv_<key>`` (unweighted L_adv^i), ``d`` and ``d_<key>`` (L_d, Eq. 2).
    """

    def __init__(self, level: str = "multi", lambda_seg: float = 0.1, weights: Mapping[str, float] | None = None,
                 gan: str = "vanilla", feature_upsample: int = 1):
        self.keys = level_keys(level)
        self.level = level
        if gan not in losses.GAN_MODES:
            raise ValueError(f"unknown GAN mode {gan!r}; expected one of {losses.GAN_MODES}")
        self.gan, self.lambda_seg, self.feature_upsample = gan, float(lambda_seg), int(feature_upsample)
        weights = dict(weights) if weights is not None else {"out": 0.001, "aux": 0.0002, "feat": 0.001}
        missing = [k for k in self.keys if k not in weights]
        if missing:
            raise ValueError(f"no adversarial weight for level keys {missing}")
        self.weights = {k: float(weights[k]) for k in self.keys}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "AdaptSegStep":
        return cls(cfg["level"], cfg["lambda_seg"], level_weights(cfg), cfg["gan"], cfg["feature_upsample"])

    # the three parts of the algorithm box, usable on their own (tests, the notebook) ------------
    def segmentation_loss(self, out_s: Mapping[str, torch.Tensor], ys: torch.Tensor) -> torch.Tensor:
        """L_seg [AdaptSegNet Eq. 3], plus lambda_seg times the auxiliary head's CE when the network has one
        [AdaptSegNet Eq. 5]."""
        loss = losses.seg_loss(out_s["out"], ys)
        if "aux" in out_s:
            loss = loss + self.lambda_seg * losses.seg_loss(out_s["aux"], ys)
        return loss

    def adversarial_losses(self, out_t: Mapping[str, torch.Tensor], discs: Mapping[str, nn.Module], size
                           ) -> dict[str, torch.Tensor]:
        """Unweighted L_adv^i [AdaptSegNet Eq. 4] per key: the frozen D_i should call target outputs source."""
        return {k: losses.adv_loss_g(discs[k](d_input(out_t, k, size, self.feature_upsample)), self.gan)
                for k in self.keys}

    def discriminator_losses(self, out_s, out_t, discs, size_s, size_t) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The two halves of L_d [AdaptSegNet Eq. 2] per key, on detached outputs: (1/2 source term, 1/2 target term)."""
        res = {}
        for k in self.keys:
            ps = d_input({k: out_s[k].detach()}, k, size_s, self.feature_upsample)
            pt = d_input({k: out_t[k].detach()}, k, size_t, self.feature_upsample)
            res[k] = (0.5 * losses.gan_loss(discs[k](ps), losses.SOURCE_LABEL, self.gan),
                      0.5 * losses.gan_loss(discs[k](pt), losses.TARGET_LABEL, self.gan))
        return res

    def __call__(self, batch: Mapping[str, Any], engine: Engine) -> dict[str, torch.Tensor]:
        G = engine.modules["model"]
        discs = {k: engine.modules[f"d_{k}"] for k in self.keys}            # trained (DDP-wrapped if distributed)
        frozen = {k: engine.raw_modules[f"d_{k}"] for k in self.keys}       # used as fixed functions in step 2
        opt_g, opt_d = engine.optimizers["model"], engine.optimizers["disc"]
        xs, ys = batch["source"]
        xt = batch["target"][0]
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)

        # 1. source segmentation, Eq. 3 (+ lambda_seg * auxiliary CE, Eq. 5)
        set_requires_grad(frozen, False)
        with engine.autocast():
            out_s = G(xs)
            l_seg = self.segmentation_loss(out_s, ys)
        l_seg.backward()
        out_s = {k: out_s[k].detach() for k in self.keys}

        # 2. target adversarial loss with D frozen, Eq. 4: sum_i lambda_adv^i * L_adv^i
        #    (all lambda_adv = 0: the same forward without a graph, for the logs only)
        adversarial = any(w > 0 for w in self.weights.values())
        with engine.autocast(), torch.set_grad_enabled(adversarial):
            out_t = G(xt)
            adv = self.adversarial_losses(out_t, frozen, xt.shape[-2:])
            l_adv = sum(self.weights[k] * adv[k] for k in self.keys)
        if adversarial:
            l_adv.backward()
        out_t = {k: out_t[k].detach() for k in self.keys}

        # 3. D on detached outputs, Eq. 2: 1/2 source term + 1/2 target term, one backward per D forward
        set_requires_grad(frozen, True)
        d_terms = {}
        for k in self.keys:
            with engine.autocast():
                ls = 0.5 * losses.gan_loss(discs[k](d_input(out_s, k, xs.shape[-2:], self.feature_upsample)),
                                           losses.SOURCE_LABEL, self.gan)
            ls.backward()
            with engine.autocast():
                lt = 0.5 * losses.gan_loss(discs[k](d_input(out_t, k, xt.shape[-2:], self.feature_upsample)),
                                           losses.TARGET_LABEL, self.gan)
            lt.backward()
            d_terms[k] = (ls + lt).detach()

        opt_g.step()
        opt_d.step()
        logs = {"seg": l_seg.detach(), "adv": l_adv.detach(), "d": sum(d_terms.values())}
        logs.update({f"adv_{k}": v.detach() for k, v in adv.items()})
        logs.update({f"d_{k}": v for k, v in d_terms.items()})
        return logs


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------
def _g_config(cfg: Mapping[str, Any]) -> Config:
    """The network config of G: multi-level adaptation needs the auxiliary head."""
    g = Config(dict(cfg))
    g["multi_level"] = bool(cfg["multi_level"]) or cfg["level"] == "multi"
    # bn_frozen (adaptation only) overrides frozen_bn (baselines too) when it is set
    bn = cfg.get("bn_frozen", False)
    g["frozen_bn"] = bn if bn is not False else cfg["frozen_bn"]
    return g


def build_discriminators(cfg: Mapping[str, Any], model: nn.Module, num_classes: int) -> dict[str, FCDiscriminator]:
    """One :class:`~kit.models.FCDiscriminator` per adapted key (input channels: classes, or layer4 channels)."""
    out = {}
    for k in level_keys(cfg["level"]):
        if k == "feat":
            backbone = getattr(model, "backbone", None)
            ch = getattr(backbone, "channels", {}).get("layer4") if backbone is not None else None
            if ch is None:
                raise ValueError("feature-level adaptation needs a model with backbone.channels['layer4'] (DeepLabV2)")
        else:
            ch = num_classes
        out[k] = FCDiscriminator(int(ch), width=int(cfg["d_width"]))
    return out


def make_d_optimizer(cfg: Mapping[str, Any], discs: Mapping[str, nn.Module]) -> torch.optim.Optimizer:
    """Adam over every discriminator (``d_lr``, ``d_betas``; the paper: 1e-4, (0.9, 0.99)), poly-decayed by the engine."""
    params = [p for d in discs.values() for p in d.parameters()]
    betas = tuple(float(b) for b in cfg["d_betas"])
    if len(betas) != 2:
        raise ValueError(f"d_betas must be two numbers, got {cfg['d_betas']!r}")
    return make_optimizer("adam", params, float(cfg["d_lr"]), betas=betas)  # type: ignore[arg-type]


def variant(cfg: Mapping[str, Any], **changes: Any) -> Config:
    """``cfg`` with some fields changed, validated again (e.g. ``variant(cfg, level="single", gan="lsgan")``)."""
    out = config_variant(cfg, "adaptseg", **changes)
    _validate(out)
    return out


def _validate(cfg: Mapping[str, Any]) -> None:
    level_keys(cfg["level"])
    if cfg["gan"] not in losses.GAN_MODES:
        raise ValueError(f"gan must be one of {losses.GAN_MODES}, got {cfg['gan']!r}")
    if cfg["init"] not in ("pretrained", "source_only"):
        raise ValueError(f"init must be 'pretrained' or 'source_only', got {cfg['init']!r}")
    mi = cfg["max_iters"]
    if mi is not None and not (isinstance(mi, int) and 1 <= mi <= cfg["iters"]):
        raise ValueError(f"max_iters must be None or an integer in 1..iters={cfg['iters']}, got {mi!r}")
    for k in ("lambda_seg", "lambda_adv", "lambda_adv_aux", "d_lr"):
        if float(cfg[k]) < 0:
            raise ValueError(f"{k} must be >= 0, got {cfg[k]}")
    if int(cfg["feature_upsample"]) < 1:
        raise ValueError(f"feature_upsample must be a positive integer, got {cfg['feature_upsample']}")


def build_adapted(cfg: Mapping[str, Any], num_classes: int, seed: int = 0,
                  source: Fitted | None = None) -> tuple[nn.Module, dict[str, nn.Module]]:
    """G (initialised as ``cfg["init"]`` says: from ``source``, the fitted source-only model, for
    ``"source_only"``) and its discriminators, before adaptation."""
    _validate(cfg)
    seed_everything(seed)
    g_cfg = _g_config(cfg)
    if g_cfg["frozen_bn"] is True and cfg["init"] == "pretrained" and not cfg.get("pretrained"):
        warnings.warn("G has frozen BatchNorm but starts from random weights (init='pretrained' without a "
                      "`pretrained` ImageNet file): frozen BatchNorm is then the identity and a deep network "
                      "diverges; give `pretrained`, use init='source_only', or set frozen_bn/bn_frozen False",
                      UserWarning, stacklevel=2)
    model = build_model(g_cfg, num_classes)
    if cfg["init"] == "source_only":
        if source is None:
            raise ValueError("init='source_only' starts G from the source-only model: pass it as `source` "
                             "(kit.fit.fit('adaptseg', ...) does)")
        missing, unexpected = model.load_state_dict(source.model.state_dict(), strict=False)
        bad = [k for k in missing if not k.startswith("aux_head.")] + list(unexpected)
        if bad:
            raise RuntimeError(f"source-only weights do not fit the adapted network: {bad[:5]}")
    seed_everything(seed + 1000)
    discs = build_discriminators(cfg, model, num_classes)
    return model, discs


def train_adaptseg(cfg: Mapping[str, Any], seed: int = 0, datasets: Mapping[str, Any] | None = None,
                   source: Fitted | None = None, desc: str | None = None
                   ) -> tuple[nn.Module, dict[str, nn.Module], History]:
    """Adapt G from ``cfg["source"]`` to ``cfg["target"]`` (or GTA5 -> Cityscapes with ``data_root``),
    G starting from ``source`` (the fitted source-only model) with ``init="source_only"``.

    Returns ``(G, {key: D}, history)``; the history holds the losses every ``log_every``
    iterations and the target-val mIoU every ``eval_every`` iterations (on the first
    ``eval_items`` images) and at the end.
    """
    ds = dict(datasets) if datasets is not None else make_da_datasets(cfg)
    num_classes = ds["source_train"].num_classes
    model, discs = build_adapted(cfg, num_classes, seed, source)
    opt_g = make_model_optimizer(cfg, model)
    opt_d = make_d_optimizer(cfg, discs)
    step = AdaptSegStep.from_config(cfg)
    val = ds["target_val"]

    def eval_fn(eng: Engine) -> dict[str, float]:
        return {"miou": evaluate(eng.modules["model"], val, num_classes, cfg["eval_batch_size"], amp=cfg["amp"],
                                 max_items=cfg["eval_items"]).miou}

    modules: dict[str, nn.Module] = {"model": model, **{f"d_{k}": d for k, d in discs.items()}}
    eng = Engine.from_config(cfg, modules, {"model": opt_g, "disc": opt_d}, step,
                             {"source": ds["source_train"], "target": ds["target_train"]}, seed=seed,
                             max_iters=cfg["max_iters"], eval_fn=eval_fn if val is not None else None,
                             eval_every=cfg["eval_every"], desc=desc or f"adaptseg {cfg['level']} seed {seed}",
                             find_unused_parameters=True)
    history = eng.run()
    return model, discs, history


class AdaptSeg(Method):
    """AdaptSegNet for :func:`kit.fit.fit`: G and its discriminators, from the source-only model
    (``init="source_only"``) or the network's initial weights; cached as ``adaptseg_<level>``,
    keyed by the config, the source, target and validation data, the seed and the parent's key.
    The meta holds ``history`` and ``target_eval`` (the final G on the whole target val split,
    with its confusion matrix); ``parts["discriminators"]`` the trained D per level."""

    name = config = "adaptseg"
    watch = ("init", "target_train")

    def check(self, cfg, spec):
        _validate(cfg)

    def parents(self, cfg, spec):
        return source_only_parents(cfg)

    def cache_name(self, cfg, spec):
        return f"adaptseg_{cfg['level']}"

    def key(self, cfg, seed, data, spec, parents):
        return model_key(cfg, "adaptseg", seed=seed, parents=list(parents.values()),
                         data={"source": data["source_train"], "target": data["target_train"],
                               "val": data.get("target_val")},
                         num_classes=data["source_train"].num_classes)

    def build(self, cfg, data, spec):
        model = build_model(_g_config(cfg), data["source_train"].num_classes)
        discs = build_discriminators(cfg, model, data["source_train"].num_classes)
        return {"model": model, **{f"d_{k}": d for k, d in discs.items()}}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        model, discs, hist = train_adaptseg(cfg, seed, data, parents.get("init"))
        meta = {"history": hist.to_dict()}
        if data.get("target_val") is not None:   # the final model on the whole target val split
            res = evaluate(model, data["target_val"], data["source_train"].num_classes, cfg["eval_batch_size"],
                           amp=cfg["amp"])
            meta["target_eval"] = {**res.as_dict(), "confusion": res.confusion.tolist()}
        return {"model": model, **{f"d_{k}": d for k, d in discs.items()}}, meta

    def result(self, cfg, data, spec, modules, meta, parents):
        discs = {k[2:]: d.eval() for k, d in modules.items() if k.startswith("d_")}
        return Fitted(self.name, modules["model"].eval(), meta, {"discriminators": discs})


ADAPTSEG = AdaptSeg()
