"""DeP / DDeP -- Brempong et al., "Denoising Pretraining for Semantic Segmentation" (CVPR-W 2022)
and "Decoder Denoising Pretraining for Semantic Segmentation" (TMLR 2022, arXiv 2205.11423).

Setting: many unlabeled images, few labeled ones, a U-Net-shaped segmenter
(:class:`kit.models.UNet`: ResNet encoder, optional TransUNet Transformer bottleneck,
U-Net decoder with skips, a 1x1 output projection ``head``).

* **Denoising pretraining** (:func:`denoising_step`): corrupt an unlabeled image,
  ``x~ = sqrt(gamma) x + sqrt(1 - gamma) eps`` with ``sigma = sqrt(1 - gamma)``, and train the
  network, with a 3-channel head, to predict ``eps`` under an L2 loss
  (:mod:`kit.losses`, section "DeP / DDeP"). Variants: a fixed sigma or one sampled per
  example; predicting the noise or the clean image; scaled or plain additive noise.
* **DeP**: the whole network starts from random weights and is pretrained by denoising.
* **DDeP**: the encoder comes from *supervised* pretraining and stays frozen (weights and
  BatchNorm statistics bit-identical); only the decoder (Transformer bottleneck, upsampling
  blocks, head) is pretrained by denoising.
* **Fine-tuning** (:func:`finetune`): swap the head for a C-class classifier
  (:meth:`UNet.replace_head`), keep the pretrained body, train everything with
  cross-entropy on a labeled fraction of the images (:func:`kit.data.subsets.label_subset`:
  seeded and nested, so the 5% set contains the 2% set).
* Looking at trained models (denoised images, the frozen encoder's hash):
  :mod:`kit.methods.ddep_analysis`.

Supervised encoder stand-in. The paper initialises the encoder from ImageNet-21K
classification. Here (unless ``cfg["pretrained"]`` gives a torchvision ImageNet file) the
encoder is trained *with labels* on another domain (``cfg["source"]``: the toy world's
"synthetic" domain, GTA5 with real data) -- data disjoint from every fine-tuning label,
labeled by someone else, from a different distribution than the target; that is the
role ImageNet-21K plays. It is a *stronger* stand-in than ImageNet (dense labels, the
same label space, a closer domain), which makes the "DDeP beats supervised" test harder.

Every trained model is declared for :func:`kit.fit.fit` (:class:`Encoder`, :class:`Pretrain`,
:class:`Finetune`) and cached, keyed by everything that defines it (including the key of the
model it starts from).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from .. import losses
from ..cache import cache_name, model_key
from ..data.subsets import RepeatTo, label_subset
from ..data.wrappers import ImagesOnly
from ..engine import Engine, make_optimizer, seed_everything
from ..evaluation import evaluate
from ..models import UNet, UNetFullRes
from .base import REQUIRED, Fitted, Method, Parent
from .supervised import supervised_step

__all__ = ["INITS", "build_unet", "denoising_step", "pretrain_denoising", "train_supervised_encoder", "finetune",
           "Encoder", "Pretrain", "Finetune", "ENCODER", "PRETRAIN", "FINETUNE"]

#: the four initialisations compared in the label-fraction curve (paper Fig. 1 / Table 1)
INITS = ("random", "supervised", "dep", "ddep")

# Defaults and sections of every field: kit.defaults (METHODS["ddep"]).

# ----------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------
def build_unet(cfg: Mapping[str, Any], out_channels: int, imagenet: bool = False) -> UNet:
    """The config's U-Net / TransUNet with ``out_channels`` outputs (3 for denoising, C for
    segmentation; :class:`kit.models.UNetFullRes` when ``cfg["input_skip"]``: the input image is a
    full-resolution skip, without which per-pixel noise is not predictable from a frozen stride-2
    stem). ``imagenet=True`` loads ``cfg["pretrained"]`` into the encoder."""
    cls = UNetFullRes if cfg.get("input_skip", False) else UNet
    return cls(out_channels, depth=cfg["depth"], width=cfg["width"], decoder_width=cfg["decoder_width"],
                transformer_layers=cfg["transformer_layers"], transformer_heads=cfg["transformer_heads"],
                pretrained=cfg.get("pretrained") if imagenet else None, head_lr_mult=cfg["head_lr_mult"])


def _engine(cfg, model, step, data, iters, batch_size, lr, seed, desc, eval_fn=None, eval_every=0):
    return Engine.from_config(cfg, {"model": model}, {"model": _optimizer(cfg, model, float(lr))}, step, data,
                              seed=seed, batch_size=batch_size, iters=iters, eval_fn=eval_fn, eval_every=eval_every,
                              desc=desc)


def _optimizer(cfg, model: UNet, lr: float):
    wd = cfg["weight_decay"] if cfg["optimizer"] == "sgd" else 0.0
    return make_optimizer(cfg["optimizer"], model.param_groups(), lr, cfg["momentum"], wd)


# ----------------------------------------------------------------------------------
# Denoising pretraining (DeP / DDeP)
# ----------------------------------------------------------------------------------
def denoising_step(sigma: float = 0.2, sigma_mode: str = "fixed", sigma_range: Sequence[float] = (0.05, 0.8),
                   scaled: bool = True, target: str = "noise", frozen_encoder: bool = False):
    """The step function of denoising pretraining (for :class:`kit.engine.Engine`, stream "unlabeled").

    Per batch: ``x`` = images on the [-1, 1] scale; sigma fixed or sampled per example;
    ``x~, eps = noisy_image(x, sigma)``; the network sees ``x~`` (mapped back to the [0, 1]
    input convention, values outside it allowed) and its 3-channel output is regressed on
    ``eps`` (or on ``x``) with L2. With ``frozen_encoder`` (DDeP) the encoder is held in eval
    mode, so its BatchNorm statistics do not move either.
    """
    if sigma_mode not in ("fixed", "sampled"):
        raise ValueError(f"sigma_mode must be 'fixed' or 'sampled', got {sigma_mode!r}")
    if target not in losses.DENOISING_TARGETS:
        raise ValueError(f"denoise_target must be one of {losses.DENOISING_TARGETS}, got {target!r}")
    lo, hi = (float(v) for v in sigma_range)

    def step(batch, engine):
        model, opt = engine.modules["model"], engine.optimizers["model"]
        if frozen_encoder:
            model.encoder.eval()
        x = losses.to_signed(batch["unlabeled"][0])
        s = losses.sample_sigma(x.shape[0], lo, hi, device=x.device) if sigma_mode == "sampled" else sigma
        x_noisy, eps = losses.noisy_image(x, s, scaled=scaled)            # Eq. 1
        opt.zero_grad(set_to_none=True)
        with engine.autocast():
            pred = model(losses.from_signed(x_noisy))["out"]
        loss = losses.denoising_loss(pred, x, eps, target)                # Eq. 2
        loss.backward()
        opt.step()
        return {"denoise": loss.detach()}

    return step


def pretrain_denoising(cfg: Mapping[str, Any], unlabeled: Dataset, seed: int = 0,
                       encoder_state: Mapping[str, torch.Tensor] | None = None, **overrides) -> tuple[UNet, Any]:
    """Denoising pretraining of a 3-channel U-Net on ``unlabeled`` images; returns ``(model, history)``.

    ``encoder_state=None``: DeP (everything from random weights, everything trained).
    ``encoder_state`` given: DDeP (that encoder loaded and frozen; only the decoder trained).
    ``overrides`` replace config fields (``sigma=0.4``, ``denoise_target="image"``, ...).
    """
    c = dict(cfg)
    for k, v in overrides.items():
        if k not in c:
            raise ValueError(f"unknown pretraining field {k!r}; valid: {sorted(c)}")
        c[k] = v
    seed_everything(seed)
    model = build_unet(c, 3)
    ddep = encoder_state is not None
    if ddep:
        model.encoder.load_state_dict(encoder_state)
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    step = denoising_step(float(c["sigma"]), c["sigma_mode"], c["sigma_range"], bool(c["noise_scaled"]),
                          c["denoise_target"], frozen_encoder=ddep)
    eng = _engine(c, model, step, {"unlabeled": ImagesOnly(unlabeled) if not isinstance(unlabeled, ImagesOnly)
                                   else unlabeled}, int(c["pretrain_iters"]), int(c["pretrain_batch_size"]), c["pretrain_lr"], seed,
                  desc=f"{'DDeP' if ddep else 'DeP'} pretrain seed {seed}")
    history = eng.run()
    if ddep:
        for p in model.encoder.parameters():
            p.requires_grad_(True)
    model.eval()
    return model, history


def train_supervised_encoder(cfg: Mapping[str, Any], labeled: Dataset, seed: int = 0) -> tuple[UNet, Any]:
    """The supervised-pretraining stand-in: the U-Net trained with cross-entropy on ``labeled``
    (another domain's labeled images) for ``supervised_iters``; its encoder is what counts."""
    seed_everything(seed)
    model = build_unet(cfg, labeled.num_classes)
    eng = _engine(cfg, model, supervised_step, {"train": labeled}, int(cfg["supervised_iters"]), cfg["batch_size"], cfg["lr"], seed,
                  desc=f"supervised encoder seed {seed}")
    history = eng.run()
    return model, history


# ----------------------------------------------------------------------------------
# The pipeline for kit.fit: supervised encoder -> denoising pretraining -> fine-tuning
# ----------------------------------------------------------------------------------
def _with_overrides(cfg: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict:
    c = dict(cfg)
    unknown = [k for k in (overrides or {}) if k not in c]
    if unknown:
        raise ValueError(f"unknown pretraining field(s) {unknown}; valid: {sorted(c)}")
    c.update(overrides or {})
    return c


class Encoder(Method):
    """The supervised encoder: with ``cfg["pretrained"]`` (a torchvision ImageNet file) that
    file's weights in a 3-channel U-Net (the paper's setting; read, not cached), otherwise the
    stand-in U-Net trained with labels on ``source_train`` (cached as ``ddep_supervised``;
    only its encoder counts)."""

    name, config = "ddep_encoder", "ddep"

    def external(self, cfg, seed, data, spec):
        if not cfg.get("pretrained"):
            return None
        name = cache_name("ddep_imagenet", model_key(cfg, "ddep", seed=None, tags=("imagenet",)))
        return name, lambda: Fitted(self.name, build_unet(cfg, 3, imagenet=True).eval(), {"key": name, "cached": True})

    def cache_name(self, cfg, spec):
        return "ddep_supervised"

    def key(self, cfg, seed, data, spec, parents):
        return model_key(cfg, "ddep", seed=seed, data={"train": data["source_train"]}, tags=("encoder",))

    def build(self, cfg, data, spec):
        return {"model": build_unet(cfg, data["source_train"].num_classes)}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        model, hist = train_supervised_encoder(cfg, data["source_train"], seed)
        return {"model": model}, {"history": hist.to_dict(), "num_classes": data["source_train"].num_classes}


class Pretrain(Method):
    """DeP (``kind="dep"``) or DDeP (``"ddep"``, from the supervised encoder) denoising pretraining
    on the target training images (labels unused), with config ``overrides`` of its fields;
    cached as ``ddep_<kind>``."""

    name, config = "ddep_pretrain", "ddep"
    spec = {"kind": REQUIRED, "overrides": None}

    def train_spec(self, cfg):
        """``kit train ddep_pretrain``: DDeP's pretraining."""
        return {"kind": "ddep"}

    def check(self, cfg, spec):
        if spec["kind"] not in ("dep", "ddep"):
            raise ValueError(f"kind must be 'dep' or 'ddep', got {spec['kind']!r}")
        _with_overrides(cfg, spec["overrides"])

    def parents(self, cfg, spec):
        return {"encoder": Parent("ddep_encoder", cfg)} if spec["kind"] == "ddep" else {}

    def cache_name(self, cfg, spec):
        return f"ddep_{spec['kind']}"

    def key(self, cfg, seed, data, spec, parents):
        return model_key(_with_overrides(cfg, spec["overrides"]), "ddep", seed=seed, data={"train": data["target_train"]},
                         parents=list(parents.values()), tags=("pretrain",), kind=spec["kind"])

    def build(self, cfg, data, spec):
        return {"model": build_unet(_with_overrides(cfg, spec["overrides"]), 3)}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        enc = parents["encoder"].model.encoder.state_dict() if "encoder" in parents else None
        model, hist = pretrain_denoising(_with_overrides(cfg, spec["overrides"]), data["target_train"], seed, enc)
        return {"model": model}, {"history": hist.to_dict()}


ENCODER, PRETRAIN = Encoder(), Pretrain()


# ----------------------------------------------------------------------------------
# Fine-tuning
# ----------------------------------------------------------------------------------
def finetune(cfg: Mapping[str, Any], model: UNet, train_set: Dataset, val_set: Dataset | None = None,
             seed: int = 0, eval_every: int = 0, desc: str = "fine-tune") -> Any:
    """Fine-tune all of ``model`` with cross-entropy on ``train_set`` (``iters``, ``lr``, ``batch_size``);
    returns the history (with val mIoU every ``eval_every`` steps and at the end if ``val_set``)."""
    eval_fn = None
    if val_set is not None:
        eval_fn = lambda eng: {"miou": evaluate(eng.modules["model"], val_set, batch_size=cfg["eval_batch_size"],  # noqa: E731
                                                 amp=cfg["amp"]).miou}
    eng = _engine(cfg, model, supervised_step, {"train": train_set}, int(cfg["iters"]), cfg["batch_size"], cfg["lr"], seed, desc,
                  eval_fn=eval_fn, eval_every=eval_every)
    return eng.run()


class Finetune(Method):
    """A C-class U-Net initialised as ``init`` (one of :data:`INITS`: random; the supervised
    encoder with a random decoder and head; or the DeP / DDeP body with a fresh C-class head) and
    fine-tuned on ``fraction`` of the target labels (:func:`label_subset`: seeded and nested),
    validated every ``eval_every`` steps; ``overrides``: fields of the pretraining it starts from.
    Cached as ``ddep_finetune``; the meta holds ``miou`` (target val), ``history`` and ``n_labeled``."""

    name, config = "ddep", "ddep"
    spec = {"init": REQUIRED, "fraction": REQUIRED, "eval_every": 0, "overrides": None}

    def train_spec(self, cfg):
        """``kit train ddep``: the paper's pipeline, DDeP pretraining fine-tuned on ``cfg.fraction`` of the labels."""
        return {"init": "ddep", "fraction": float(cfg["fraction"])}

    def check(self, cfg, spec):
        if spec["init"] not in INITS:
            raise ValueError(f"unknown init {spec['init']!r}; expected one of {INITS}")

    def parents(self, cfg, spec):
        if spec["init"] == "supervised":
            return {"init": Parent("ddep_encoder", cfg)}
        if spec["init"] in ("dep", "ddep"):
            return {"init": Parent("ddep_pretrain", cfg, {"kind": spec["init"], "overrides": spec["overrides"]})}
        return {}

    def cache_name(self, cfg, spec):
        return "ddep_finetune"

    def key(self, cfg, seed, data, spec, parents):
        tgt = data["target_train"]
        init = parents.get("init") or cache_name("ddep_random", model_key(cfg, "ddep", seed=seed, tags=("random",)))
        return model_key(cfg, "ddep", seed=seed, data={"train": tgt, "val": data["target_val"]}, parents=[init],
                         tags=("finetune",), init=spec["init"], fraction=float(spec["fraction"]),
                         n_labeled=len(label_subset(len(tgt), float(spec["fraction"]), seed)),
                         eval_every=int(spec["eval_every"]))

    def build(self, cfg, data, spec):
        return {"model": build_unet(cfg, data["target_train"].num_classes)}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        tgt, val, init, fraction = data["target_train"], data["target_val"], spec["init"], float(spec["fraction"])
        idx = label_subset(len(tgt), fraction, seed)
        seed_everything(seed)
        if init in ("dep", "ddep"):      # the pretrained body, the head swapped for a fresh C-class projection
            model = build_unet(cfg, 3)
            model.load_state_dict(parents["init"].model.state_dict())
            seed_everything(seed)
            model.replace_head(tgt.num_classes)
        else:
            model = build_unet(cfg, tgt.num_classes)
            if init == "supervised":
                model.encoder.load_state_dict(parents["init"].model.encoder.state_dict())
        hist = finetune(cfg, model, RepeatTo(tgt, idx, cfg["batch_size"]), val, seed, int(spec["eval_every"]),
                        desc=f"fine-tune {init} {100 * fraction:g}% seed {seed}")
        return {"model": model}, {"history": hist.to_dict(), "miou": hist.val[-1]["miou"], "n_labeled": len(idx)}


FINETUNE = Finetune()
