"""Profiles and per-method defaults, validated.

Every field is declared once, with its default and its section (data, model, optim,
schedule, method, run, notebook), in the static table :mod:`kit.defaults`; the
sections decide what enters a model's cache key (:func:`kit.cache.model_key`).

A notebook's ``parameters`` cell sets ``PROFILE`` and optionally overrides fields; the
next cell calls :func:`resolve`. Unknown profile or field names fail loudly with the
list of valid ones -- a typo in a papermill ``-p`` flag must never be silently ignored --
and so does a NaN or infinite number in any field (``-p lr=nan``), named with its value.

=========  =============  ======================================================
profile    where          purpose
=========  =============  ======================================================
smoke      CI, seconds    every code path runs; numbers mean nothing
quick      laptop CPU     the method taught and its central claims tested on the
                          toy world, 2-3 seeds, each notebook within 6 CPU minutes
full       CPU or GPU     quick's recipe with 5 paired seeds and every comparison
                          (``extended``), so that the claims can be decided
paper      one GPU        the paper's architecture and hyperparameters
=========  =============  ======================================================
"""
from __future__ import annotations

import copy
import difflib
import json
import math
from typing import Any, Mapping

from .machine import AMP_MODES
from . import defaults as _defaults
from .defaults import KEY_SECTIONS, SECTIONS, Field

__all__ = ["PROFILES", "METHODS", "SECTIONS", "KEY_SECTIONS", "Field", "Config", "resolve", "register_method",
           "profile_names", "profile_chain", "fields", "section_of", "key_fields", "inherit", "INHERITED", "variant"]

#: common fields, profile presets and per-method fields: one static table (kit.defaults)
_COMMON: dict[str, Field] = dict(_defaults.COMMON)
PROFILES: dict[str, dict[str, Any]] = _defaults.PROFILES
METHODS: dict[str, dict[str, dict[str, Any]]] = _defaults.METHODS


def register_method(name: str, defaults: Mapping[str, Mapping[str, Any]],
                    sections: Mapping[str, str] | None = None) -> None:
    """Declare a method of your own: ``defaults`` is ``{"common": {...}, "quick": {...}, ...}``
    (field values at every profile and per profile) and ``sections`` names the section
    (:data:`SECTIONS`) of each field that is not a common one, e.g.
    ``register_method("mine", {"common": {"my_weight": 0.1}}, {"my_weight": "method"})``.
    Fields in the sections ``run`` and ``notebook`` stay out of model cache keys."""
    sections = dict(sections or {})
    for key in defaults:
        if key != "common" and key not in PROFILES:
            raise ValueError(f"method {name!r}: unknown profile {key!r}; expected 'common' or one of {list(PROFILES)}")
    own: dict[str, Field] = {}
    for values in defaults.values():
        for k in values:
            if k in _COMMON or k in own:
                continue
            if k not in sections:
                raise ValueError(f"method {name!r}: field {k!r} needs a section in `sections` "
                                 f"(one of {list(SECTIONS)}); it decides whether {k!r} is part of model cache keys")
            if sections[k] not in SECTIONS:
                raise ValueError(_unknown(f"section of field {k!r}", sections[k], SECTIONS))
            own[k] = Field(defaults.get("common", {}).get(k), sections[k])
    common = {k: v for k, v in defaults.get("common", {}).items() if k in _COMMON}
    METHODS[name] = {"fields": own, "common": common,
                     **{p: dict(v) for p, v in defaults.items() if p != "common"}}


def fields(method: str) -> dict[str, Field]:
    """Every field of ``method`` (the common ones and its own) with its default and section."""
    if method not in METHODS:
        raise ValueError(_unknown("method", method, METHODS))
    return {**_COMMON, **METHODS[method]["fields"]}


def section_of(name: str, method: str | None = None) -> str:
    """The section of field ``name`` (of ``method``; without it, of whichever method declares it)."""
    if method is not None:
        table = fields(method)
        if name not in table:
            raise ValueError(_unknown(f"field of method {method!r}", name, table))
        return table[name].section
    if name in _COMMON:
        return _COMMON[name].section
    for m in METHODS.values():
        if name in m["fields"]:
            return m["fields"][name].section
    raise ValueError(_unknown("config field", name, set(_COMMON).union(*(m["fields"] for m in METHODS.values()))))


def key_fields(method: str, tags: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The fields of ``method`` that define one of its models (tagged ``tags``): every field of
    a section in :data:`KEY_SECTIONS` that is untagged or tagged with one of ``tags``."""
    tags = set(tags)
    return sorted(k for k, f in fields(method).items()
                  if f.section in KEY_SECTIONS and (f.uses is None or tags.intersection(f.uses)))


#: the sections a derived method's config hands to the config of the model it starts from
INHERITED = ("data", "model", "run")


def inherit(cfg: Mapping[str, Any], method: str, sections: tuple[str, ...] = INHERITED) -> "Config":
    """The config of ``method`` at ``cfg``'s profile with ``cfg``'s values of the fields in
    ``sections`` (by default the data, the network and how to run): the config of the model a
    derived model starts from (e.g. the source-only model an adapted model is fine-tuned from).
    The derived method's own training recipe (``iters``, ``lr``, ...) is not carried over."""
    parent = fields(method)
    carried = {k: cfg[k] for k in cfg if k in parent and k != "profile" and parent[k].section in sections}
    return resolve(cfg["profile"], method, **carried)   # a None value keeps the parent's default


def profile_names() -> list[str]:
    return list(PROFILES)


def profile_chain(profile: str) -> list[str]:
    """The profiles whose values make up ``profile``, base first.

    >>> profile_chain("full"), profile_chain("quick")
    (['quick', 'full'], ['quick'])
    """
    chain = [profile]
    while chain[0] in _defaults.BASES:
        chain.insert(0, _defaults.BASES[chain[0]])
    return chain


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

    def hash(self) -> str:
        """A short stable hash of the fields that define a model: every field except those in the
        ``run`` and ``notebook`` sections (fields no method declares count too)."""
        from .hashing import config_hash

        return config_hash({k: v for k, v in self.items() if _section_or_none(k) not in ("run", "notebook")})

    def subset(self, keys) -> "Config":
        return Config({k: self[k] for k in keys})


def _section_or_none(name: str) -> str | None:
    try:
        return section_of(name)
    except ValueError:
        return None


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
        if not math.isfinite(f):        # int() of these would fail with a message that names no field
            raise ValueError(_not_finite(key, value))
        if f != int(f):
            raise TypeError(f"{key} expects an integer, got {value!r}")
        return int(f)
    if isinstance(default, float):
        if isinstance(value, bool):
            raise TypeError(f"{key} expects a number, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{key} expects a number, got {value!r}") from None
        if not math.isfinite(f):        # "nan", "inf" and "-inf" read as floats
            raise ValueError(_not_finite(key, value))
        return f
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
    cfg: dict[str, Any] = {k: copy.deepcopy(f.default) for k, f in fields(method).items()}
    cfg.update(copy.deepcopy(METHODS[method].get("common", {})))
    for layer in profile_chain(profile):
        cfg.update(copy.deepcopy(PROFILES[layer]))
        cfg.update(copy.deepcopy(METHODS[method].get(layer, {})))
    cfg["profile"] = profile
    for key, value in overrides.items():
        key = key.lower()
        if key not in cfg:
            raise ValueError(_unknown(f"parameter for method {method!r}", key, cfg))
        if value is None:
            continue
        cfg[key] = _coerce(key, cfg[key], value)
    _validate(cfg)
    return Config(cfg)


def variant(cfg: Mapping[str, Any], method: str, **changes: Any) -> Config:
    """``cfg`` (a resolved config of ``method``) with some fields changed, resolved and validated
    again at the same profile; an explicit ``None`` in ``cfg`` (e.g. ``max_iters=None``) stays None.

    >>> variant(resolve("smoke", "ripu"), "ripu", acquisition="random").acquisition
    'random'
    """
    values = {k: v for k, v in cfg.items() if k != "profile"}
    for k in changes:
        if k not in values:
            raise ValueError(_unknown(f"{method} config field", k, values))
    values.update(changes)
    out = resolve(cfg["profile"], method, **{k: v for k, v in values.items() if v is not None})
    for k, v in values.items():
        if v is None:
            out[k] = None
    return out


def _not_finite(key: str, value: Any) -> str:
    what = "hold finite numbers" if isinstance(value, (list, tuple, Mapping)) else "be a finite number"
    return f"{key} must {what}, got {value!r} (NaN and infinity are not valid config values)"


def _has_non_finite(value: Any) -> bool:
    """Whether ``value`` is, or holds (in lists, tuples, dicts), a NaN or infinite float."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


def _validate(cfg: dict[str, Any]) -> None:
    # every field, not only those _coerce checks: a field whose default is None (e.g. atp_lr) or a list
    # takes a value as given, and a NaN there would only fail later, deep in the model cache's hashing
    for key, value in cfg.items():
        if _has_non_finite(value):
            raise ValueError(_not_finite(key, value))
    if cfg["amp"] not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {cfg['amp']!r}")
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
