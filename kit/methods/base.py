"""The method protocol: what a method declares so that the one runner, :func:`kit.fit.fit`, can
build, key, train, cache and load its models.

A method is a :class:`Method` subclass, registered by name in :mod:`kit.methods`. It says

* **what it accepts**: ``spec``, the arguments of a fit besides the config (``stage`` of DAS3,
  ``kind``/``names``/``init`` of CDCL, ...) with their defaults (:data:`REQUIRED` for none), and
  :meth:`Method.check`, which refuses a bad config before anything is built;
* **its datasets** (:meth:`Method.datasets`, when the caller gives none);
* **its parent models** (:meth:`Method.parents`): ``{role: Parent(method, cfg, spec)}`` -- DAS3
  stage s from stage s-1, AdaptSegNet and RIPU from the source-only model, CDCL's fine-tuning
  from a single-dataset model, DDeP's fine-tuning from its pretraining and that from the
  supervised encoder. The runner fits them (same seed, same data) when it has to train, and
  their cache names enter this model's key;
* **what identifies a model** (:meth:`Method.key`: its config fields, data, parents, seed);
* **how it builds and trains its modules** (:meth:`Method.build`, :meth:`Method.train`).

The runner owns the rest: the datasets when none are given, the keys (recursive over parents),
the cache and its locks (:func:`kit.cache.load_or_train`), loading, and the returned
:class:`Fitted`. A user's method is a subclass with those methods and ``methods.register(M())``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch.nn as nn

__all__ = ["REQUIRED", "Parent", "Fitted", "Method"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: the default of a ``spec`` argument that every fit must give
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Parent:
    """A model another starts from: ``fit(method, cfg, seed, data, **spec)`` on the child's seed and data."""

    method: str
    cfg: Mapping[str, Any]
    spec: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Fitted:
    """A trained model (eval mode), the meta the cache stored with it, what else the method reports
    (``parts``), and every module whose weights were cached under its key, by name (``modules``:
    ``"model"``, AdaptSegNet's ``"d_<level>"``; set by the runner)."""

    method: str
    model: nn.Module
    meta: dict
    parts: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def key(self) -> str | None:
        """The model's cache name (``<name>-<hash>``)."""
        return self.meta.get("key")

    @property
    def cached(self) -> bool:
        """True when the model came from the cache, False when this call trained it."""
        return bool(self.meta.get("cached"))

    @property
    def history(self) -> dict | None:
        return self.meta.get("history")


class Method:
    """A method's declaration (see the module docstring); subclass it and override what differs.

    Class attributes: ``name`` (what ``fit`` and ``kit train`` call it), ``config`` (the
    :mod:`kit.config` method whose defaults ``kit train NAME`` resolves), ``spec`` (argument ->
    default), ``tensors`` (entries of the meta that are tensors, stored in the checkpoint beside
    the weights: RIPU's ``round_map``), ``load_parents`` (fit the parents even when this model is
    cached: DAS3 reports every stage of its chain), ``watch`` (for an unsupervised method: the
    parent role of the model it adapts and the split of unlabelled images; the runner records
    both models' predicted class mix there, :func:`kit.evaluation.class_mix`, and warns with
    :class:`kit.evaluation.CollapseWarning` when adaptation looks collapsed).
    """

    name: str = ""
    config: str = "supervised"
    spec: Mapping[str, Any] = {}
    tensors: tuple[str, ...] = ()
    load_parents: bool = False
    watch: tuple[str, str] | None = None

    def check(self, cfg: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
        """Raise ValueError for a config or spec this method cannot fit."""

    def datasets(self, cfg: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
        """The datasets of a fit that was given none: the config's source/target splits."""
        from ..data import make_da_datasets

        return make_da_datasets(cfg)

    def parents(self, cfg: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Parent]:
        """``{role: Parent}``: the cached models this one starts from."""
        return {}

    def cache_name(self, cfg: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
        """The name part of the model's cache file (``<name>-<hash of key>``)."""
        return self.name

    def key(self, cfg: Mapping[str, Any], seed: int, data: Mapping[str, Any], spec: Mapping[str, Any],
            parents: Mapping[str, str]) -> dict:
        """What identifies the model (:func:`kit.cache.model_key`); ``parents``: role -> cache name."""
        raise NotImplementedError(f"{type(self).__name__} declares no key")

    def build(self, cfg: Mapping[str, Any], data: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, nn.Module]:
        """The modules whose weights are cached (``"model"`` first), freshly built: what a cached
        checkpoint is loaded into."""
        raise NotImplementedError(f"{type(self).__name__} declares no build")

    def train(self, cfg: Mapping[str, Any], seed: int, data: Mapping[str, Any], spec: Mapping[str, Any],
              parents: Mapping[str, Fitted], verbose: bool = False) -> tuple[dict[str, nn.Module], dict]:
        """Train from the fitted ``parents``: ``(modules, meta)``; ``meta`` JSON values plus the
        tensors named in ``tensors``."""
        raise NotImplementedError(f"{type(self).__name__} declares no training")

    def result(self, cfg: Mapping[str, Any], data: Mapping[str, Any], spec: Mapping[str, Any],
               modules: dict[str, nn.Module], meta: dict, parents: Mapping[str, Fitted]) -> Fitted:
        """The :class:`Fitted` of loaded or trained ``modules`` (``parents`` only with ``load_parents``)."""
        return Fitted(self.name, modules["model"].eval(), meta)

    def external(self, cfg: Mapping[str, Any], seed: int, data: Mapping[str, Any],
                 spec: Mapping[str, Any]) -> tuple[str, Callable[[], Fitted]] | None:
        """A model that is read, not trained (a weights file): ``(its name, a loader)``; None otherwise."""
        return None

    def train_spec(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The spec ``kit train NAME`` fits with (from the config)."""
        return {}

    def train_record(self, fitted: Fitted) -> dict[str, Any]:
        """What ``kit train NAME`` writes beside the meta about the fit besides the model itself
        (DAS3: every stage's evaluation)."""
        return {}

    def __repr__(self) -> str:
        return f"<method {self.name!r}>"
