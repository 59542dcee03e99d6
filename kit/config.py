"""Profiles and per-method defaults, validated.

A notebook's ``parameters`` cell sets ``PROFILE`` and optionally overrides fields; the
next cell calls :func:`resolve`. Unknown profile or field names fail loudly with the
list of valid ones -- a typo in a papermill ``-p`` flag must never be silently ignored.

=========  =============  ======================================================
profile    where          purpose
=========  =============  ======================================================
smoke      CI, seconds    every code path runs; numbers mean nothing
quick      laptop CPU     the paper's claims tested on the toy world, 3 seeds
paper      one GPU        the paper's architecture and hyperparameters
=========  =============  ======================================================
"""
from __future__ import annotations

import copy
import difflib
import json
from typing import Any, Mapping

__all__ = ["PROFILES", "METHODS", "Config", "resolve", "register_method", "profile_names"]

# Fields common to every notebook. Sizes are (H, W).
_COMMON: dict[str, Any] = {
    "profile": "quick",
    "seeds": [0, 1, 2],
    "device": "auto",            # "auto" = cuda if available, else cpu
    "amp": "auto",               # "auto" | "bf16" | "off"
    "channels_last": True,
    "num_workers": 0,
    "render_device": "cpu",      # where the toy world renders training images ("auto" = GPU if any)
    "progress": True,
    "data_root": None,           # real datasets (paper profile); None = the toy world
    "source": "synthetic",       # toy-world source domain
    "target": "real",            # toy-world target domain
    "size": [64, 128],           # training image size (target)
    "source_size": None,         # source training size; None = size
    "eval_size": [64, 128],      # evaluation size (labels at this size)
    "n_train": 1000,             # toy-world images per training split
    "n_val": 200,                # toy-world images per validation split
    # segmentation network
    "model": "deeplabv2",
    "depth": 18,
    "width": 16,
    "output_stride": 8,
    "multi_level": False,
    "official_aspp": False,
    "aspp_dilations": [1, 2, 3, 4],  # the paper's [6, 12, 18, 24] scaled to 8x16 feature maps
    "frozen_bn": False,          # BatchNorm: False (trains) | True (eval mode, frozen) | "affine" (affine
                                 # frozen, batch statistics: AdaptSegNet's official code); kit.models.resnet
    "pretrained": None,          # path to a torchvision-format ImageNet state_dict
    # optimisation. The paper profile uses the DeepLab-v2 recipe (SGD, heads at 10x LR,
    # ImageNet-initialised backbone). The toy profiles train from scratch, where Adam
    # with one LR for all layers converges in a few hundred steps and SGD does not.
    "optimizer": "adam",
    "head_lr_mult": 1.0,
    "iters": 600,
    "batch_size": 8,
    "lr": 2e-3,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "poly_power": 0.9,
    "eval_every": 0,             # 0 = only at the end
    "log_every": 10,
    "eval_batch_size": 32,
    "flip_eval": False,
    "cache_dir": None,           # None = $KIT_CACHE or runs/cache
    "run_dir": None,             # None = runs/<profile>/<notebook>
}

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "profile": "smoke", "seeds": [0], "size": [32, 64], "eval_size": [32, 64],
        "n_train": 32, "n_val": 16, "depth": 10, "width": 8, "iters": 4, "batch_size": 4,
        "eval_batch_size": 16, "log_every": 1, "progress": False,
    },
    # quick: a ResNet-10 layout (one basic block per stage; half the FLOPs of ResNet-18,
    # 1.8x faster per step at fp32 on two AVX2 cores), so that every notebook fits its
    # budget on the slowest machine the kit supports (README, benchmarks/RESULTS.md).
    "quick": {"profile": "quick", "depth": 10},
    "paper": {
        "profile": "paper", "seeds": [0], "size": [512, 1024], "source_size": [720, 1280],
        "eval_size": [512, 1024],
        "n_train": 3000, "n_val": 500, "depth": 101, "width": 64, "iters": 150000,
        "batch_size": 1, "optimizer": "sgd", "lr": 2.5e-4, "head_lr_mult": 10.0, "frozen_bn": True, "aspp_dilations": [6, 12, 18, 24], "eval_every": 5000,
        "log_every": 50, "eval_batch_size": 4, "num_workers": 4, "render_device": "auto",
    },
}

#: per-method defaults, each a {"common": {...}, "<profile>": {...}} mapping
METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "intro": {"common": {}},
    "supervised": {"common": {}},
}


def register_method(name: str, defaults: Mapping[str, Mapping[str, Any]]) -> None:
    """Declare a method's fields (``{"common": {...}, "quick": {...}, ...}``)."""
    for key in defaults:
        if key != "common" and key not in PROFILES:
            raise ValueError(f"method {name!r}: unknown profile {key!r}; expected 'common' or one of {list(PROFILES)}")
    METHODS[name] = {k: dict(v) for k, v in defaults.items()}


def profile_names() -> list[str]:
    return list(PROFILES)


class Config(dict):
    """A dict with attribute access and a stable hash of its content."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(_unknown("config field", key, self)) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key not in self:
            raise AttributeError(_unknown("config field", key, self))
        self[key] = value

    def to_json(self) -> str:
        return json.dumps(self, sort_keys=True, default=str)

    def hash(self, exclude: tuple[str, ...] = ("progress", "log_every", "cache_dir", "run_dir",
                                              "num_workers", "eval_batch_size", "device")) -> str:
        from .cache import config_hash

        return config_hash({k: v for k, v in self.items() if k not in exclude})

    def subset(self, keys) -> "Config":
        return Config({k: self[k] for k in keys})


def _unknown(what: str, name: str, valid) -> str:
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=3)
    hint = f" Did you mean {close}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Valid: {sorted(valid)}"


#: fields that take a BatchNorm regime: False, True or "affine" (kit.models.resnet.BN_MODES)
_BN_FIELDS = ("frozen_bn", "bn_frozen")


def _coerce(key: str, default: Any, value: Any) -> Any:
    """Light type checking: numbers stay numbers, sizes stay pairs."""
    if value is None or default is None:
        return value
    if key in _BN_FIELDS and isinstance(value, str):
        if value.lower() == "affine":
            return "affine"
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} must be False, True or 'affine', got {value!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise TypeError(f"{key} expects true/false, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(f"{key} expects an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise TypeError(f"{key} expects an integer, got {value!r}") from None
        if f != int(f):
            raise TypeError(f"{key} expects an integer, got {value!r}")
        return int(f)
    if isinstance(default, float):
        if isinstance(value, bool):
            raise TypeError(f"{key} expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{key} expects a number, got {value!r}") from None
    if isinstance(default, (list, tuple)):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{key} expects a list, got {value!r}")
        if key in ("size", "eval_size") and len(value) != 2:
            raise ValueError(f"{key} expects (H, W), got {value!r}")
        return list(value)
    return value


def resolve(profile: str = "quick", method: str = "intro", **overrides: Any) -> Config:
    """The configuration of ``method`` at ``profile``, with ``overrides`` applied.

    Overrides whose value is ``None`` keep the profile's value (so a notebook can pass
    all its parameters and leave unset ones as ``None``).

    >>> cfg = resolve("smoke", iters=2)
    >>> cfg.iters, cfg.profile
    (2, 'smoke')
    """
    if profile not in PROFILES:
        raise ValueError(_unknown("profile", profile, PROFILES))
    if method not in METHODS:
        raise ValueError(_unknown("method", method, METHODS))
    cfg: dict[str, Any] = copy.deepcopy(_COMMON)
    cfg.update(copy.deepcopy(METHODS[method].get("common", {})))
    cfg.update(copy.deepcopy(PROFILES[profile]))
    cfg.update(copy.deepcopy(METHODS[method].get(profile, {})))
    for key, value in overrides.items():
        key = key.lower()
        if key not in cfg:
            raise ValueError(_unknown(f"parameter for method {method!r}", key, cfg))
        if value is None:
            continue
        cfg[key] = _coerce(key, cfg[key], value)
    _validate(cfg)
    return Config(cfg)


def _validate(cfg: dict[str, Any]) -> None:
    if cfg["amp"] not in ("auto", "bf16", "off"):
        raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {cfg['amp']!r}")
    for key in _BN_FIELDS:
        if key in cfg and not (cfg[key] is False or cfg[key] is True or cfg[key] == "affine"):
            raise ValueError(f"{key} must be False, True or 'affine', got {cfg[key]!r}")
    if cfg["optimizer"] not in ("sgd", "adam", "adamw"):
        raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {cfg['optimizer']!r}")
    if cfg["output_stride"] not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {cfg['output_stride']}")
    for key in ("iters", "batch_size", "n_train", "n_val"):
        if cfg[key] < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    if not cfg["seeds"]:
        raise ValueError("seeds must list at least one seed")
    for key in ("size", "eval_size"):
        h, w = cfg[key]
        if h < 16 or w < 16:
            raise ValueError(f"{key} must be at least 16x16, got {cfg[key]}")
