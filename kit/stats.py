"""Statistics over seeds: effect sizes with t intervals, and verdicts on claims.

:func:`effect` turns per-seed numbers into a mean difference with its t interval
(``scipy.stats``), paired by seed where the seeds pair, and a verdict for a claim "the
effect is positive" (an :class:`Effect`); :func:`all_hold` combines verdicts,
:func:`seeds_needed` says how many seeds would decide an undecided effect and
:func:`mean_sd` is the mean and sample sd of a list. Split out of ``kit/results.py``, which
records the claims (:class:`kit.results.Run`) and still exports every name here.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

__all__ = ["Effect", "HOLDS", "VERDICTS", "all_hold", "effect", "mean_sd", "seeds_needed"]


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value, NaNs for none).

    >>> mean_sd([1, 2, 3])
    (2.0, 1.0)
    """
    v = [float(x) for x in values]
    if not v:
        return float("nan"), float("nan")
    if len(v) == 1:
        return v[0], 0.0
    import statistics

    return statistics.fmean(v), statistics.stdev(v)


VERDICTS = ("holds", "does not hold", "undecided")
#: a verdict as the ``holds`` field of a claim record: True, False or None (undecided)
HOLDS = {"holds": True, "does not hold": False, "undecided": None}


@dataclass(frozen=True)
class Effect:
    """A mean effect over seeds with its confidence interval; see :func:`effect`.

    ``mean``: mean of ``values`` (one sample) or mean difference ``values - paired_with``;
    ``low``/``high``: its t interval at ``confidence`` (NaN when ``n < 2``); ``n``: the
    number of pairs (paired), of values (one sample) or of the smaller group (unpaired);
    ``sd``: sample sd of the differences (paired) or of the values (one sample), NaN for
    unpaired groups; ``test``: ``"one-sample"``, ``"paired"`` or ``"welch"``;
    ``p_value``: two-sided p of the t test of "the effect is 0"; ``verdict``: one of
    ``"holds"``, ``"does not hold"``, ``"undecided"`` for the claim "the effect > 0".
    """

    mean: float
    low: float
    high: float
    n: int
    sd: float
    confidence: float
    test: str
    p_value: float
    margin: float
    verdict: str

    @property
    def paired(self) -> bool:
        return self.test == "paired"

    @property
    def holds(self) -> bool | None:
        """The verdict as :meth:`kit.results.Run.claim` takes it: True, False or None (undecided)."""
        return HOLDS[self.verdict]

    def as_dict(self) -> dict:
        """The fields (and ``paired``) as a plain dict, e.g. a row of a results table."""
        return {**asdict(self), "paired": self.paired}

    def format(self, digits: int = 1) -> str:
        """E.g. ``'+1.5 [+0.6, +2.4] (95% CI, paired, 4 seeds)'``."""
        if self.n < 2 or not math.isfinite(self.low):
            return f"{self.mean:+.{digits}f} ({self.n} seed{'s' if self.n != 1 else ''}, no interval)"
        kind = {"paired": "paired", "one-sample": "one sample", "welch": "unpaired"}[self.test]
        return (f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
                f"({self.confidence:.0%} CI, {kind}, {self.n} seeds)")

    __str__ = format

    def seeds_needed(self, power: float = 0.8) -> int | None:
        """The seeds an undecided effect would need; see :func:`seeds_needed`."""
        return seeds_needed(self.mean, self.sd, self.confidence, power)


def seeds_needed(mean: float, sd: float, confidence: float = 0.95, power: float = 0.8,
                 max_n: int = 10_000) -> int | None:
    """How many (paired) seeds a t test needs to find an effect of size ``mean`` with
    seed-to-seed sd ``sd`` at ``confidence`` with probability ``power``: the smallest n
    with ``(t_{(1+confidence)/2, n-1} + t_{power, n-1}) * sd / sqrt(n) <= |mean|``
    (the usual approximation of the power of a one-sample / paired t test).

    It answers "what budget would decide this?" for an undecided claim *if* the measured
    mean and sd are the truth; both are themselves uncertain with few seeds, so read it as
    an order of magnitude. None when it cannot be estimated (no sd: one seed or unpaired
    groups; a zero effect) or exceeds ``max_n``.

    >>> seeds_needed(1.0, 1.0), seeds_needed(0.5, 1.0), seeds_needed(0.0, 1.0), seeds_needed(1.0, float("nan"))
    (10, 34, None, None)
    """
    from scipy import stats

    if not (0 < power < 1 and 0 < confidence < 1):
        raise ValueError(f"seeds_needed: power and confidence must be in (0, 1), got {power!r}, {confidence!r}")
    if not (math.isfinite(mean) and math.isfinite(sd)) or mean == 0:
        return None
    if sd == 0:
        return 2

    def enough(n: int) -> bool:  # decreasing half-width in n, so bisect
        t = stats.t.ppf((1 + confidence) / 2, n - 1) + stats.t.ppf(power, n - 1)
        return t * sd / math.sqrt(n) <= abs(mean)

    if not enough(max_n):
        return None
    lo, hi = 2, max_n  # enough(hi) is True
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return lo


def _per_seed(x: Any, name: str) -> tuple[list[float], list | None]:
    """Values and their seed labels (None for a plain sequence)."""
    if isinstance(x, Mapping):
        return [float(v) for v in x.values()], list(x.keys())
    if hasattr(x, "index") and hasattr(x, "to_numpy"):  # pandas Series: index = seeds
        return [float(v) for v in x.to_numpy()], list(x.index)
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        raise TypeError(f"effect: {name} must be a sequence of numbers, a {{seed: value}} "
                        f"mapping or a pandas Series indexed by seed, got {type(x).__name__}")
    return [float(v) for v in x], None


def effect(values: Any, paired_with: Any = None, confidence: float = 0.95,
           margin: float = 0.0) -> Effect:
    """Mean effect over seeds, its t interval, and a verdict on the claim "effect > 0".

    * ``paired_with=None``: ``values`` are the effects themselves (e.g. per-seed gains);
      the interval is the one-sample t interval of their mean (``scipy.stats.ttest_1samp``).
    * ``paired_with`` given: the effect is ``values - paired_with``. When the seeds pair
      it is a paired t interval on the per-seed differences (``scipy.stats.ttest_rel``),
      which removes what the seeds share (data order, initialization) and is usually much
      narrower; otherwise Welch's unpaired interval (``scipy.stats.ttest_ind``,
      ``equal_var=False``). The seeds pair when both arguments carry seed labels (a
      ``{seed: value}`` mapping or a pandas Series indexed by seed) and share at least one
      seed (pairs on the shared seeds; the others are dropped), or when both are plain
      sequences of the same length (paired by position).

    NaN values are dropped (with their partner when paired). ``n`` counts what is left.

    Verdict on the claim "effect > 0", at the interval's ``confidence``:

    * ``"holds"``: the interval lies above 0 (``low > 0``);
    * ``"does not hold"``: the interval lies below ``margin`` (``high < margin``) and not
      above 0. With the default ``margin=0`` this means the data show the *opposite*
      effect. A CI that straddles 0 is not evidence against the claim, only a lack of
      evidence for it; so it is ``"undecided"``, not "does not hold". To also call a
      claim refuted when the seeds show the effect is too small to matter, pass the
      smallest effect that would count as ``margin`` (in the units of ``values``): a
      narrow interval such as ``[-0.2, +0.3]`` with ``margin=1`` then "does not hold";
    * ``"undecided"``: otherwise, and whenever ``n < 2`` (no interval with one seed).
      More seeds narrow the interval.

    >>> e = effect({0: 10.0, 1: 12.0, 2: 11.0, 3: 13.0}, paired_with={0: 9.0, 1: 10.0, 2: 10.0, 3: 11.0})
    >>> e.verdict, round(e.mean, 2), round(e.low, 2), round(e.high, 2), e.n, e.test
    ('holds', 1.5, 0.58, 2.42, 4, 'paired')
    >>> effect([10.0, 12.0, 11.0, 13.0], paired_with=[9.0, 10.0, 10.0]).test  # lengths differ
    'welch'
    >>> effect([0.4]).verdict
    'undecided'
    """
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"effect: confidence must be in (0, 1), got {confidence!r}")
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"effect: margin must be a finite number >= 0, got {margin!r}")
    a, seeds_a = _per_seed(values, "values")
    if paired_with is None:
        test, groups = "one-sample", ([x for x in a if not math.isnan(x)],)
    else:
        b, seeds_b = _per_seed(paired_with, "paired_with")
        if (seeds_a is None) != (seeds_b is None):
            raise ValueError("effect: give values and paired_with both with seed labels (mappings "
                             "or Series indexed by seed) or both as plain sequences")
        if seeds_a is not None:
            if len(set(seeds_a)) != len(seeds_a) or len(set(seeds_b)) != len(seeds_b):
                raise ValueError("effect: a seed label occurs twice; aggregate per seed first")
            by_b = dict(zip(seeds_b, b))
            shared = [(x, by_b[s]) for s, x in zip(seeds_a, a) if s in by_b]
        else:
            shared = list(zip(a, b)) if len(a) == len(b) else []
        if shared:
            test = "paired"
            shared = [(x, y) for x, y in shared if not (math.isnan(x) or math.isnan(y))]
            groups = ([x for x, _ in shared], [y for _, y in shared])
        else:
            test = "welch"
            groups = ([x for x in a if not math.isnan(x)], [y for y in b if not math.isnan(y)])
    n = min(len(g) for g in groups)
    if test == "welch":
        mean = (sum(groups[0]) / len(groups[0]) if groups[0] else math.nan) - \
               (sum(groups[1]) / len(groups[1]) if groups[1] else math.nan)
        sd = math.nan
    else:
        diffs = groups[0] if test == "one-sample" else [x - y for x, y in zip(*groups)]
        mean, sd = mean_sd(diffs)
        sd = sd if n > 1 else math.nan
    low = high = p = math.nan
    if n >= 2:
        with warnings.catch_warnings():  # identical values: scipy warns, the interval is [m, m]
            warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
            if test == "one-sample":
                res = stats.ttest_1samp(groups[0], 0.0)
            elif test == "paired":
                res = stats.ttest_rel(*groups)
            else:
                res = stats.ttest_ind(*groups, equal_var=False)
            ci = res.confidence_interval(confidence_level=confidence)
        low, high, p = float(ci.low), float(ci.high), float(res.pvalue)
    if n >= 2 and low > 0:
        verdict = "holds"
    elif n >= 2 and high < margin:
        verdict = "does not hold"
    else:
        verdict = "undecided"
    return Effect(mean=float(mean), low=low, high=high, n=n, sd=float(sd), confidence=confidence,
                  test=test, p_value=p, margin=float(margin), verdict=verdict)


def all_hold(effects: Iterable[Effect]) -> str:
    """The verdict on "every one of these effects > 0": "does not hold" when one of them
    does not hold, "holds" when all hold, else "undecided".

    >>> up, flat = effect([1.0, 1.2, 0.9]), effect([1.0, -1.0, 0.5])
    >>> all_hold([up, up]), all_hold([up, flat]), all_hold([up, effect([-1.0, -1.2, -0.9])])
    ('holds', 'undecided', 'does not hold')
    """
    verdicts = [e.verdict for e in effects]
    if not verdicts:
        raise ValueError("all_hold: no effects given")
    if "does not hold" in verdicts:
        return "does not hold"
    return "holds" if all(v == "holds" for v in verdicts) else "undecided"
