"""Every configuration field of the kit, declared once: its default, its section, and its
values per profile and per method. Pure data: importing it imports nothing else, so
``kit.config.resolve(profile, method)`` works before any method module is imported.

A field's *section* says what it describes, and so whether it belongs in the cache key
of a trained model (:func:`kit.cache.model_key`):

============  ===========================================================  ==========
section       describes                                                     in the key
============  ===========================================================  ==========
``data``      which images and labels, at which size, rendered where        yes
``model``     the network, its initial weights and its arithmetic           yes
              (precision, memory layout)
``optim``     optimizer, learning rates, batch sizes                        yes
``schedule``  iterations, decay, when and how the model is evaluated        yes
              while it trains (the history stored with it)
``method``    the paper's algorithm and its hyperparameters                 yes
``run``       where and how a run executes and logs; which seeds a          no
              notebook loops over (a model's own seed enters its key)
``notebook``  which experiments a notebook runs (sweeps, ablations): they   no
              choose *which* models get trained, never *how*
============  ===========================================================  ==========

``uses``: a method that trains several models (DAS3's stages, DDeP's encoder /
pretraining / fine-tuning, CDCL's kinds) tags the fields that only some of them read;
a model's key holds the untagged fields and those tagged with one of the model's tags.
The key of a model that starts from another cached model also holds that model's key.
"""
from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Field", "SECTIONS", "KEY_SECTIONS", "COMMON", "FULL_SEEDS", "PROFILES", "BASES", "METHODS"]

#: every section, in display order
SECTIONS = ("data", "model", "optim", "schedule", "method", "run", "notebook")
#: the sections that define a trained model (the others never enter a cache key)
KEY_SECTIONS = ("data", "model", "optim", "schedule", "method")


class Field(NamedTuple):
    """A configuration field: its default, its section, and (optionally) the tags of the
    models that read it, for methods that train several kinds of model."""

    default: Any
    section: str
    uses: tuple[str, ...] | None = None


F = Field

#: fields common to every method. Sizes are (H, W).
COMMON: dict[str, Field] = {
    # run: where and how a run executes (never in a cache key)
    "profile": F("quick", "run"),
    "seeds": F([0, 1, 2], "run"),
    "device": F("auto", "run"),            # "auto" = cuda if available, else cpu
    "num_workers": F(0, "run"),
    "progress": F(True, "run"),
    "log_every": F(10, "run"),
    "eval_batch_size": F(32, "run"),
    "cache_dir": F(None, "run"),           # None = $KIT_CACHE or runs/cache
    "run_dir": F(None, "run"),             # None = runs/<profile>/<notebook>
    # data
    "data_root": F(None, "data"),          # real datasets (paper profile); None = the toy world
    "source": F("synthetic", "data"),      # toy-world source domain
    "target": F("real", "data"),           # toy-world target domain
    "size": F([64, 128], "data"),          # training image size (target)
    "source_size": F(None, "data"),        # source training size; None = size
    "eval_size": F([64, 128], "data"),     # evaluation size (labels at this size)
    "n_train": F(1000, "data"),            # toy-world images per training split
    "n_val": F(200, "data"),               # toy-world images per validation split
    "render_device": F("cpu", "data"),     # where the toy world renders training images ("auto" = GPU if any)
    # segmentation network, and the arithmetic it trains with (bf16 and fp32 give different models)
    "model": F("deeplabv2", "model"),
    "depth": F(18, "model"),
    "width": F(16, "model"),
    "output_stride": F(8, "model"),
    "multi_level": F(False, "model"),
    "official_aspp": F(False, "model"),
    "aspp_dilations": F([1, 2, 3, 4], "model"),  # the paper's [6, 12, 18, 24] scaled to 8x16 feature maps
    # BatchNorm: False (trains) | True (eval mode, frozen) | "affine" (affine frozen, batch
    # statistics: AdaptSegNet's official code); kit.models.resnet
    "frozen_bn": F(False, "model"),
    "pretrained": F(None, "model"),        # path to a torchvision-format ImageNet state_dict
    "amp": F("auto", "model"),             # "auto" | "bf16" | "off"
    "channels_last": F(True, "model"),
    # optimisation. The paper profile uses the DeepLab-v2 recipe (SGD, heads at 10x LR,
    # ImageNet-initialised backbone). The toy profiles train from scratch, where Adam
    # with one LR for all layers converges in a few hundred steps and SGD does not.
    "optimizer": F("adam", "optim"),
    "head_lr_mult": F(1.0, "optim"),
    "batch_size": F(8, "optim"),
    "lr": F(2e-3, "optim"),
    "momentum": F(0.9, "optim"),
    "weight_decay": F(5e-4, "optim"),
    "iters": F(600, "schedule"),
    "poly_power": F(0.9, "schedule"),
    "eval_every": F(0, "schedule"),        # 0 = only at the end
    "flip_eval": F(False, "schedule"),
    # notebook: run the comparisons that cannot be decided within the quick budget (each notebook
    # names them); at quick they are skipped and their claims say "not run at quick"
    "extended": F(True, "notebook"),
}

#: the paired seeds of the full profile (its seeds, and the sweep and ablation seeds of its notebooks)
FULL_SEEDS = [0, 1, 2, 3, 4]

#: profile presets: values of common fields
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "profile": "smoke", "seeds": [0], "size": [32, 64], "eval_size": [32, 64],
        "n_train": 32, "n_val": 16, "depth": 10, "width": 8, "iters": 4, "batch_size": 4,
        "eval_batch_size": 16, "log_every": 1, "progress": False,
    },
    # quick: a ResNet-10 layout (one basic block per stage; half the FLOPs of ResNet-18,
    # 1.8x faster per step at fp32 on two AVX2 cores), so that every notebook fits its
    # budget on the slowest machine the kit supports (README, benchmarks/RESULTS.md).
    "quick": {"profile": "quick", "depth": 10, "extended": False},
    # full: the quick recipe (every method's quick values apply, see BASES) with five paired
    # seeds and every comparison of every notebook, the extended ones included
    "full": {"profile": "full", "seeds": FULL_SEEDS, "extended": True},
    "paper": {
        "profile": "paper", "seeds": [0], "size": [512, 1024], "source_size": [720, 1280],
        "eval_size": [512, 1024],
        "n_train": 3000, "n_val": 500, "depth": 101, "width": 64, "iters": 150000,
        "batch_size": 1, "optimizer": "sgd", "lr": 2.5e-4, "head_lr_mult": 10.0, "frozen_bn": True,
        "aspp_dilations": [6, 12, 18, 24], "eval_every": 5000,
        "log_every": 50, "eval_batch_size": 4, "num_workers": 4, "render_device": "auto",
    },
}

#: a profile that starts from another: its own values (and each method's values at it) are
#: applied on top of the base profile's (and each method's values at the base)
BASES: dict[str, str] = {"full": "quick"}

#: per method: ``fields`` (its own fields), ``common`` (its values of fields, at every profile)
#: and one entry per profile (its values at that profile)
METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "intro": {"fields": {}, "common": {}},
    "supervised": {"fields": {}, "common": {}},

    # -----------------------------------------------------------------------------------------
    # AdaptSegNet (kit.methods.adaptseg). Paper values (Sec. 4.1 and the official code) in
    # "common"/"paper"; the quick profile rescales for the toy world (documented in the notebook).
    # -----------------------------------------------------------------------------------------
    "adaptseg": {
        "fields": {
            "level": F("multi", "method"),          # "single" | "multi" | "feature"
            "gan": F("vanilla", "method"),          # "vanilla" (BCE) | "lsgan" (MSE)
            "lambda_seg": F(0.1, "method"),         # auxiliary segmentation loss (layer3 head)
            "lambda_adv": F(0.001, "method"),       # adversarial weight, main level (layer4 output or features)
            "lambda_adv_aux": F(0.0002, "method"),  # adversarial weight, auxiliary level (layer3 output)
            "d_width": F(64, "method"),             # discriminator channels 64-128-256-512
            "d_lr": F(1e-4, "optim"),
            "d_betas": F([0.9, 0.99], "optim"),
            # G starts from "pretrained" (cfg.pretrained; None = random) or "source_only"
            "init": F("pretrained", "method"),
            "max_iters": F(None, "schedule"),       # stop the poly schedule early; None = run all `iters`
            # G's BatchNorm during adaptation (frozen_bn sets it for the baselines too; this only in the
            # adapted models): False (trains) | True (eval mode: running statistics fixed, affine not
            # trained) | "affine" (the official code: affine not trained, the network in train mode, so
            # BN normalizes with batch statistics and keeps updating the running ones used at evaluation)
            "bn_frozen": F(False, "method"),
            "feature_upsample": F(1, "method"),     # feature-level D: upsample layer4 features by this factor first
            "eval_items": F(None, "schedule"),      # target val images for the periodic evaluation; None = all
            "lambda_sweep": F([0.0005, 0.001, 0.002, 0.004], "notebook"),  # the paper's lambda_adv sweep
            "sweep_seeds": F(None, "notebook"),     # seeds of the sweep; None = the first seed of `seeds`
            # C3's diagnosis (01 section 2.2b): the sweep continued beyond its largest value, on the
            # sweep seeds (the paper's doubling continued); empty = not run (quick: 01 fits 6 min without it)
            "lambda_wide": F([0.008, 0.016, 0.032], "notebook"),
        },
        "common": {},
        "smoke": {"init": "source_only", "bn_frozen": True, "iters": 3, "lr": 5e-4, "d_width": 8, "d_lr": 2e-4,
                  "lambda_adv": 0.01, "lambda_adv_aux": 0.002, "feature_upsample": 8, "eval_every": 2,
                  "eval_items": 8, "lambda_sweep": [0.01, 0.02], "lambda_wide": [0.04]},
        # The toy world: G starts from the cached source-only model and is fine-tuned for a short
        # schedule with Adam (the optimizer the baseline was trained with) at a low learning rate,
        # BatchNorm frozen as in the paper's DeepLab-v2; adversarial weights and sweep x10; D as wide
        # as G's widest stage (16-32-64-128; at 64 it had 4x G's parameters and dominated every
        # step); layer4 features (8x16) upsampled x4 to reach D's 32x32 minimum. Explained in the notebook.
        "quick": {"init": "source_only", "bn_frozen": True, "iters": 100, "batch_size": 8, "lr": 1e-4,
                  "d_width": 16, "d_lr": 2e-4, "lambda_adv": 0.01, "lambda_adv_aux": 0.002,
                  "lambda_sweep": [0.005, 0.01, 0.02, 0.04], "feature_upsample": 4, "eval_every": 25,
                  "eval_items": 100, "log_every": 10, "lambda_wide": []},
        "full": {"sweep_seeds": FULL_SEEDS, "lambda_wide": [0.08, 0.16, 0.32]},
        # paper: the official code's BatchNorm regime (affine frozen, batch statistics) in the
        # source-only model and in G, not DeepLab-v2's eval-mode frozen BN of the other papers
        "paper": {"iters": 250000, "max_iters": 150000, "batch_size": 1, "eval_every": 5000,
                  "frozen_bn": "affine", "bn_frozen": "affine"},
    },

    # -----------------------------------------------------------------------------------------
    # RIPU (kit.methods.ripu)
    # -----------------------------------------------------------------------------------------
    "ripu": {
        "fields": {
            "acquisition": F("ripu", "method"),     # "ripu" (RI x PU) | "impurity" | "uncertainty" | "random"
            "mode": F("region", "method"),          # "region" (RA) | "pixel" (PA) | "point" | "image"
            "radius_k": F(1, "method"),             # regions are (2k+1)^2
            "budget": F(0.022, "method"),           # labelled fraction of target pixels (region / point / image)
            "pa_points": F(40, "method"),           # PA: labelled pixels per image
            "suppress": F(None, "method"),          # suppression radius; None means 2k (RA), pa_suppress (PA), 1 (point)
            "pa_suppress": F(32, "method"),         # PA radius: impurity window and suppression (65x65 in the paper)
            "rounds": F(5, "method"),
            "select_size": F("label", "method"),    # "label": score and pick at the original label size (official) | "train"
            "tie_order": F("column", "method"),     # "column": lowest column wins ties (official) | "row": row-major
            "persist_suppression": F(True, "method"),  # pixels ever suppressed stay -inf in later rounds (official)
            "normalize_impurity": F(True, "method"),   # RA impurity / log C (official); PA stays in nats (official)
            "budget_rounding": F("exact", "method"),   # "exact": never above the budget | "ceil": official per-round ceil
            "cr_variant": F("official", "method"),  # L_cr: "official" (Laplacian boundary, replicate mean) | "in_image"
            "select_at": F(None, "method"),         # iterations of the selection rounds; None: evenly over the first 40%
            "lambda_cr": F(0.1, "method"),
            "lambda_nl": F(1.0, "method"),
            "tau": F(0.05, "method"),
            "source_free": F(False, "method"),
            "pool_size": F(None, "method"),         # target images in the active pool; None means all of target_train
            "target_batch_size": F(None, "optim"),  # None means batch_size
            "select_batch_size": F(32, "run"),      # images scored at once during selection
            "init": F("source_only", "method"),     # "source_only" (cached baseline) | "pretrained"
            "max_iters": F(None, "schedule"),
            "eval_items": F(None, "schedule"),
            "sweep_seeds": F(None, "notebook"),     # seeds of the notebook's sweeps; None = the first two seeds
            "budgets": F([0.005, 0.01, 0.022, 0.05], "notebook"),   # the budget curve (03 section 5, ripu/budget)
            "k_values": F([1, 2, 3], "notebook"),   # region sizes k of the region-size sweep (ripu/region_size)
        },
        "common": {},
        "smoke": {"iters": 4, "batch_size": 2, "rounds": 2, "select_at": [0, 2], "pool_size": 8, "pa_suppress": 2,
                  "pa_points": 8, "eval_items": 8, "lr": 5e-4, "budgets": [0.01, 0.05], "k_values": [1, 2]},
        # toy world at 64x128 (1/10 of the paper's 640x1280 target crops): PA suppression 32 -> 3;
        # fine-tuned from the cached source-only model with Adam, short schedule (see the notebook)
        "quick": {"iters": 60, "batch_size": 4, "lr": 5e-4, "pool_size": 100, "pa_suppress": 3,
                  "eval_items": 100, "log_every": 10, "progress": False},
        "full": {"sweep_seeds": FULL_SEEDS},
        "paper": {"iters": 62500, "max_iters": 40000, "batch_size": 2, "select_at": [10000, 12000, 14000, 16000, 18000],
                  "init": "pretrained", "budget_rounding": "ceil", "size": [640, 1280], "source_size": [720, 1280],
                  "eval_size": [1024, 2048], "eval_every": 2000, "flip_eval": True, "select_batch_size": 2},
    },

    # -----------------------------------------------------------------------------------------
    # DAS3 (kit.methods.das3): the stages' own iteration counts and learning rates, so that the
    # source model's fields (iters, lr, ... of the supervised recipe) stay untouched. Stage
    # models are tagged stage1 / stage2 / stage3 (+ atp for the authors' later stage 3).
    # -----------------------------------------------------------------------------------------
    "das3": {
        "fields": {
            # state_dict file of a source-trained model; None = kit's source-only model
            "source_checkpoint": F(None, "model"),
            "stage1_iters": F(100, "schedule", ("stage1",)),
            "stage2_iters": F(100, "schedule", ("stage2",)),
            "stage3_iters": F(100, "schedule", ("stage3",)),
            # learning rate of each stage (the optimizer is cfg["optimizer"], heads at head_lr_mult x)
            "stage1_lr": F(5e-5, "optim", ("stage1",)),
            "stage2_lr": F(1e-3, "optim", ("stage2",)),
            "stage3_lr": F(1e-3, "optim", ("stage3",)),
            # stage 1: implicit feature alignment
            "stage1_loss": F("focal", "method", ("stage1",)),  # "focal" (DAS3) | "entropy" (ablation)
            # the focal factor (1 - H)^gamma: "through" = part of the objective, as the authors' code
            # (yxiwang/ATP, EntropyLoss: no stop-gradient; pixels with H > 1/(1+gamma) are pushed to
            # *higher* entropy) | "detached" = a per-pixel weight (every pixel's entropy goes down,
            # confident ones first); see kit.losses.focal_entropic_loss
            "focal_grad": F("through", "method", ("stage1",)),
            "gamma": F(5.0, "method", ("stage1",)),
            "alpha": F(3.0, "method", ("stage1",)),
            "ent_weight": F(1.0, "method", ("stage1",)),
            "div_weight": F(0.1, "method", ("stage1",)),
            # the weighted mean prediction of the diversity term: "weights" = divided by the sum of the
            # weights (a distribution; the kit's reading) | "pixels" = by the pixel count, its entropy by
            # log C (the authors' code, yxiwang/ATP EntropyLoss); see kit.losses.weighted_diversity_loss
            "diversity_norm": F("weights", "method", ("stage1",)),
            # stage 2: bi-directional self-training
            "top_k": F(0.5, "method", ("stage2", "stage3")),  # share of each class's most confident pixels kept
            # "classwise" (DAS3) | "global" (one threshold, same proportion; ablation)
            "threshold_mode": F("classwise", "method", ("stage2", "stage3")),
            "neg_threshold": F(0.05, "method", ("stage2",)),
            "neg_weight": F(1.0, "method", ("stage2",)),
            # stage 3: information propagation
            "stage3": F("kit", "method", ("stage3",)),  # "kit" (frozen stage-2 teacher) | "atp" (authors' later code)
            "easy_ratio": F(0.3, "method", ("stage3",)),
            "mix_weight": F(1.0, "method", ("stage3",)),
            # stage3 = "atp": EMA teacher, argmax labels, DACS weight, strong augmentation of the mixed images
            "ema_alpha": F(0.999, "method", ("atp",)),  # teacher <- a teacher + (1 - a) student, a = min(1 - 1/(t+1), ema_alpha)
            "atp_conf_threshold": F(0.968, "method", ("atp",)),  # hard-pixel weight = share of confidences >= this
            "atp_jitter": F(0.2, "method", ("atp",)),        # colour jitter strength
            "atp_jitter_prob": F(0.8, "method", ("atp",)),   # probability that a batch is jittered
            "atp_blur_prob": F(0.5, "method", ("atp",)),     # probability that a batch is blurred
            # deviations for diagnosis (the official recipe: "argmax", "ema")
            "atp_labels": F("argmax", "method", ("atp",)),   # "argmax" | "thresholded" (stage 2's class-wise rule)
            "atp_teacher": F("ema", "method", ("atp",)),     # "ema" | "frozen" (the stage-2 model throughout)
            "atp_optimizer": F(None, "optim", ("atp",)),     # None = the config's optimizer; the authors: "adamw"
            "atp_lr": F(None, "optim", ("atp",)),            # None = stage3_lr; the authors: 6e-5
            "atp_weight_decay": F(0.01, "optim", ("atp",)),  # AdamW's decoupled weight decay
            # scans of the target set (thresholds, ranking)
            "scan_items": F(None, "method", ("stage2",)),    # target images scanned for the stage-2 thresholds
            "scan_pixels": F(2048, "method", ("stage2", "stage3")),  # pixels sampled per image for thresholds
            "sweep_seeds": F(None, "notebook"),     # seeds of the notebook's sweeps; None = the first seed
        },
        "common": {},
        "smoke": {"stage1_iters": 3, "stage2_iters": 3, "stage3_iters": 3},
        # quick: the paper's 10:1 ratio of the alignment weights pulls the toy world's very
        # unbalanced class distribution too hard towards uniform; 100:1 is used instead.
        # Stage 3 gets 200 iterations: at 100 it does not move the model measurably.
        "quick": {"scan_items": 256, "div_weight": 0.01, "stage3_iters": 200},
        "full": {"sweep_seeds": FULL_SEEDS},
        # The paper's DeepLab-v2 SGD recipe (lr 2.5e-4, heads x10, poly). The card gives no
        # stage lengths; 5000 iterations per stage is this kit's choice. Only the *ratio* of
        # the alignment weights (10:1) is taken from the authors' later code (AdamW, where the
        # scale of a loss hardly matters).
        # stage3 = "atp" at paper scale: the authors' AdamW at 6e-5 (heads 10x, weight decay 0.01).
        "paper": {"stage1_iters": 5000, "stage2_iters": 5000, "stage3_iters": 5000, "stage1_lr": 2.5e-4,
                  "stage2_lr": 2.5e-4, "stage3_lr": 2.5e-4, "scan_pixels": 16384,
                  "atp_optimizer": "adamw", "atp_lr": 6e-5},
    },

    # -----------------------------------------------------------------------------------------
    # CDCL (kit.methods.cdcl). "paper": PSPNet ResNet-18, SGD lr 0.01 poly 0.9, momentum 0.9,
    # wd 1e-4, batch 8, crop 512 (paper Sec. 4.1). "quick": the toy world, small data so that one
    # city alone is data-limited and pooling cities can help; Adam from scratch like the rest of
    # the toy profile. Models are tagged by kind: single, finetune, remap, dat.
    # -----------------------------------------------------------------------------------------
    "cdcl": {
        "fields": {
            # toy cities, or cityscapes/bdd100k/camvid with data_root; a model's datasets are its own argument
            "datasets": F(["city_a", "city_b", "city_c"], "notebook"),
            "interval": F(1, "method", ("dat",)),   # t: dataset 0 every iteration, the others every t-th
            "dat_mode": F("sum", "method", ("dat",)),  # "sum" (one step on the summed loss) | "alternate"
            "dataset_weights": F(None, "method", ("dat",)),  # w_i of the summed loss; None means all 1
            "ft_iters": F(None, "schedule", ("finetune",)),  # fine-tuning iterations; None means iters
            "eval_items": F(None, "schedule"),      # val images per dataset in evaluation; None means all
            "intervals": F([1, 2, 4], "notebook"),  # the notebook's interval-t ablation
            "ablation_seeds": F(None, "notebook"),  # seeds of the notebook's ablations; None = the first seed
        },
        "common": {"model": "pspnet"},
        "smoke": {"n_train": 16, "n_val": 8, "iters": 3, "ft_iters": 2, "batch_size": 2},
        "quick": {"n_train": 96, "n_val": 96, "iters": 150, "ft_iters": 100, "seeds": [0, 1]},
        "full": {"ablation_seeds": FULL_SEEDS},
        "paper": {"depth": 18, "width": 64, "output_stride": 8, "size": [512, 512], "source_size": None,
                  "eval_size": [512, 1024], "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
                  "weight_decay": 1e-4, "head_lr_mult": 10.0, "batch_size": 8, "frozen_bn": False,
                  "iters": 40000, "ft_iters": 20000, "n_train": 3000, "n_val": 500,
                  "datasets": ["city_a", "city_b", "city_c"]},
    },

    # -----------------------------------------------------------------------------------------
    # DeP / DDeP (kit.methods.ddep). Models are tagged encoder (the supervised encoder),
    # pretrain (DeP / DDeP denoising pretraining) and finetune.
    # -----------------------------------------------------------------------------------------
    "ddep": {
        "fields": {
            "decoder_width": F(8, "model"),         # U-Net decoder channels (8d, 4d, 2d, d, d)
            "transformer_layers": F(1, "model"),    # TransUNet-style Transformer on the stride-32 tokens (0 = none)
            "transformer_heads": F(4, "model"),
            "input_skip": F(True, "model"),         # full-resolution input skip in the last decoder block
            # denoising pretraining
            "sigma": F(0.2, "method", ("pretrain",)),  # noise std on the [-1, 1] scale (sigma = sqrt(1 - gamma))
            "sigma_mode": F("fixed", "method", ("pretrain",)),  # "fixed" | "sampled" (uniform in sigma_range)
            "sigma_range": F([0.05, 0.8], "method", ("pretrain",)),
            "noise_scaled": F(True, "method", ("pretrain",)),   # x~ = sqrt(1 - sigma^2) x + sigma eps (False: x + sigma eps)
            "denoise_target": F("noise", "method", ("pretrain",)),  # "noise" (the paper) | "image"
            "pretrain_iters": F(200, "schedule", ("pretrain",)),
            "pretrain_batch_size": F(8, "optim", ("pretrain",)),
            "pretrain_lr": F(2e-3, "optim", ("pretrain",)),
            # supervised encoder stand-in (trained with labels on cfg["source"])
            "supervised_iters": F(200, "schedule", ("encoder",)),
            # the common recipe fields that only some of DDeP's models read: the fine-tuning length
            # (the encoder and the pretraining have their own), and the LR and batch of the encoder
            # and the fine-tuning (the pretraining has pretrain_lr / pretrain_batch_size); so
            # changing ITERS does not retrain the encoder or the pretraining
            "iters": F(COMMON["iters"].default, "schedule", ("finetune",)),
            "lr": F(COMMON["lr"].default, "optim", ("encoder", "finetune")),
            "batch_size": F(COMMON["batch_size"].default, "optim", ("encoder", "finetune")),
            # fine-tuning uses iters, batch_size, lr; what the notebook and `kit train ddep` run:
            "label_fractions": F([0.01, 0.05, 0.25, 1.0], "notebook"),
            "inits": F(["random", "supervised", "dep", "ddep"], "notebook"),
            "fraction": F(0.05, "notebook"),        # label fraction of single runs (sigma sweep, curves, kit train)
            "sweep_sigmas": F([0.05, 0.1, 0.2, 0.4, 0.8], "notebook"),
            "sweep_seeds": F([0], "notebook"),
            "curve_every": F(20, "notebook"),       # evaluate every this many fine-tuning steps for the curves
        },
        "common": {"model": "unet", "depth": 18, "width": 8, "n_val": 100},
        "smoke": {"n_train": 40, "n_val": 8, "decoder_width": 8, "pretrain_iters": 3, "pretrain_batch_size": 4,
                  "supervised_iters": 3, "iters": 3, "label_fractions": [0.1, 1.0], "fraction": 0.1,
                  "sweep_sigmas": [0.1, 0.2], "curve_every": 2},
        # quick: 2 seeds, 80 fine-tuning steps, the quick profile's ResNet-10 layout at width 8 (4 inits x 4 fractions x
        # 2 seeds + the sigma sweep must fit in ~4.5 CPU minutes); Adam from scratch like the toy profile
        "quick": {"seeds": [0, 1], "iters": 80},
        "full": {"sweep_seeds": FULL_SEEDS},
        # The paper: TransUNet (R50 + ViT-B/16, 12 layers), sigma = 0.2, Cityscapes label fractions.
        # Here: ResNet-18 at width 64 + a 12-layer Transformer on its 512-d stride-32 tokens (the
        # kit's UNet has no token projection, so a ResNet-50's 2048-d tokens would make 12 layers
        # ~600M parameters). Iteration counts and learning rates are this kit's choice (the card
        # gives none); Adam, as the paper fine-tunes with Adam-type optimizers.
        "paper": {"depth": 18, "width": 64, "decoder_width": 32, "transformer_layers": 12, "transformer_heads": 8,
                  "optimizer": "adam", "lr": 1e-4, "head_lr_mult": 1.0, "frozen_bn": False, "batch_size": 8,
                  "iters": 20000, "pretrain_iters": 50000, "pretrain_batch_size": 8, "pretrain_lr": 1e-4,
                  "supervised_iters": 40000, "sweep_seeds": [0], "curve_every": 2000,
                  "label_fractions": [0.01, 0.02, 0.05, 0.1, 0.25, 1.0]},
    },
}
