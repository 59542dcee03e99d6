"""kit.results.effect: t intervals and verdicts against numbers computed by hand."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from kit.results import Effect, Run, all_hold, effect

# Two-sided 95% quantiles of Student's t, from the table: t(0.975; df).
T975 = {2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}


def t_interval(diffs, t):
    """Mean +- t * sd / sqrt(n), written out."""
    n = len(diffs)
    m = sum(diffs) / n
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / (n - 1))
    half = t * sd / math.sqrt(n)
    return m, m - half, m + half, sd


# Four seeds: B beats A by 1 or 2 points on every seed, but the seeds differ by more than that.
A = {0: 9.0, 1: 10.0, 2: 10.0, 3: 11.0}
B = {0: 10.0, 1: 12.0, 2: 11.0, 3: 13.0}


def test_paired_by_seed_holds():
    e = effect(B, paired_with=A)
    m, lo, hi, sd = t_interval([1.0, 2.0, 1.0, 2.0], T975[3])  # 1.5 +- 3.1824 * 0.57735 / 2
    assert (e.test, e.paired, e.n) == ("paired", True, 4)
    assert e.mean == pytest.approx(m) and e.sd == pytest.approx(sd)
    assert (e.low, e.high) == (pytest.approx(lo), pytest.approx(hi))
    assert (round(e.low, 4), round(e.high, 4)) == (0.5813, 2.4187)
    assert e.verdict == "holds" and e.holds is True
    assert 0 < e.p_value < 0.05
    # the same numbers as Series indexed by seed, in another order, pair the same way
    e2 = effect(pd.Series(B), paired_with=pd.Series(A).iloc[::-1])
    assert (e2.low, e2.high, e2.test) == (pytest.approx(lo), pytest.approx(hi), "paired")
    # plain sequences of equal length pair by position
    assert effect(list(B.values()), paired_with=list(A.values())).low == pytest.approx(lo)


def test_unpaired_welch_is_undecided_on_the_same_numbers():
    """Without the pairing, the seed-to-seed spread swamps the gain (Welch's interval)."""
    a, b = list(A.values()), list(B.values())
    e = effect(b, paired_with=a[:3] + [a[3], 10.0])  # 5 values against 4: no pairing
    assert e.test == "welch" and not e.paired and e.n == 4
    # Welch by hand for the 4-vs-4 case (seed labels that do not meet)
    e = effect({10 + k: v for k, v in B.items()}, paired_with=A)
    va, vb = 2 / 3, 5 / 3  # sample variances of A and B
    se = math.sqrt(va / 4 + vb / 4)
    df = (va / 4 + vb / 4) ** 2 / ((va / 4) ** 2 / 3 + (vb / 4) ** 2 / 3)
    from scipy.stats import t as student_t

    half = student_t.ppf(0.975, df) * se
    assert e.test == "welch" and e.mean == pytest.approx(1.5)
    assert (e.low, e.high) == (pytest.approx(1.5 - half), pytest.approx(1.5 + half))
    assert e.low < 0 < e.high and e.verdict == "undecided" and e.holds is None


def test_one_sample_undecided_and_does_not_hold():
    m, lo, hi, _ = t_interval([1.0, 2.0, 4.0], T975[2])
    e = effect([1.0, 2.0, 4.0])
    assert e.test == "one-sample" and (e.mean, e.low, e.high) == (
        pytest.approx(m), pytest.approx(lo), pytest.approx(hi))
    assert (round(e.low, 3), round(e.high, 3)) == (-1.461, 6.128)
    assert e.verdict == "undecided"
    neg = effect([-3.0, -2.0, -4.0])
    m, lo, hi, _ = t_interval([-3.0, -2.0, -4.0], T975[2])
    assert (neg.low, neg.high) == (pytest.approx(lo), pytest.approx(hi)) and hi < 0
    assert neg.verdict == "does not hold" and neg.holds is False


def test_margin_turns_a_narrow_null_result_into_does_not_hold():
    d = [0.1, -0.1, 0.05, -0.05, 0.0]
    m, lo, hi, _ = t_interval(d, T975[4])
    assert effect(d).verdict == "undecided"  # straddles 0: no evidence either way at margin 0
    e = effect(d, margin=1.0)
    assert (e.low, e.high) == (pytest.approx(lo), pytest.approx(hi))
    assert e.verdict == "does not hold"      # every effect the data allow is below 1 point
    assert effect([1.0, 2.0, 4.0], margin=1.0).verdict == "undecided"  # wide: could be large


def test_small_n_nan_and_identical_values():
    one = effect([0.7])
    assert one.n == 1 and one.verdict == "undecided" and math.isnan(one.low) and math.isnan(one.sd)
    assert "1 seed" in str(one)
    assert effect([]).verdict == "undecided"
    # seeds shared by both: 1 and 2 only (0 and 3 dropped); a NaN drops its pair
    e = effect({0: 5.0, 1: 2.0, 2: 3.0, 3: float("nan")}, paired_with={1: 1.0, 2: 1.0, 3: 0.0, 4: 9.0})
    assert e.test == "paired" and e.n == 2 and e.mean == pytest.approx(1.5)
    same = effect([2.0, 2.0, 2.0])  # zero spread: the interval collapses onto the mean
    assert (same.low, same.high, same.verdict) == (2.0, 2.0, "holds")


def test_format_confidence_and_errors():
    e = effect(B, paired_with=A, confidence=0.9)
    assert str(e) == "+1.5 [+0.8, +2.2] (90% CI, paired, 4 seeds)"
    assert e.high - e.low < effect(B, paired_with=A).high - effect(B, paired_with=A).low
    assert isinstance(e, Effect) and e.as_dict()["paired"] is True
    with pytest.raises(ValueError, match="confidence"):
        effect([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="both with seed labels"):
        effect(B, paired_with=[1.0, 2.0, 3.0, 4.0])
    with pytest.raises(TypeError, match="sequence of numbers"):
        effect(3.0)
    with pytest.raises(ValueError, match="margin"):
        effect([1.0, 2.0], margin=-1)


def test_effect_feeds_a_claim(tmp_path):
    run = Run("nb", {"profile": "smoke", "seeds": [0, 1, 2, 3], "run_dir": str(tmp_path)})
    e = effect(B, paired_with=A)
    rec = run.claim("C1", "B beats A", "paper: +1", str(e), e.holds)
    assert rec["holds"] is True


def test_claim_effect_records_verdict_interval_and_effects(tmp_path):
    run = Run("nb", {"profile": "quick", "seeds": [0, 1, 2, 3], "run_dir": str(tmp_path)})
    up = effect(B, paired_with=A)                                   # holds
    noisy = effect({0: 1.0, 1: -1.0, 2: 0.5, 3: -0.2})              # straddles 0
    down = effect({0: -1.0, 1: -1.2, 2: -0.9, 3: -1.1})             # the opposite effect
    assert run.claim_effect("C1", "B beats A", "p", up)["verdict"] == "holds"
    mixed = run.claim_effect("C2", "both", "p", {"B − A": up, "noise": noisy}, here="means 1 vs 2")
    assert mixed["holds"] is None and mixed["verdict"] == "undecided"
    assert mixed["here"].startswith("means 1 vs 2; B − A: +1.5 [") and "noise: " in mixed["here"]
    assert set(mixed["effects"]) == {"B − A", "noise"} and mixed["effects"]["B − A"]["n"] == 4
    refuted = run.claim_effect("C3", "x", "p", {"a": up, "b": down})
    assert refuted["holds"] is False and refuted["verdict"] == "does not hold"
    skipped = run.skip("C4", "y", "p", "runs at PROFILE='full'")
    assert skipped["not_run"] and skipped["holds"] is None
    frame = run.claims_frame()
    assert frame["verdict"].tolist() == ["holds", "undecided", "does not hold", "not run at quick"]
    data = json.loads(run.save().read_text())
    assert [c["verdict"] for c in data["claims"]] == frame["verdict"].tolist()
    with pytest.raises(ValueError, match="no effects"):
        all_hold([])


def test_seeds_needed_gives_the_stated_power():
    """With n = seeds_needed(d, sd) normal paired differences, the t interval excludes 0 in
    about `power` of repeats (simulated); with n - 2 seeds clearly less often."""
    import numpy as np
    from scipy import stats

    from kit.results import seeds_needed

    d, sd = 0.8, 1.5
    n = seeds_needed(d, sd)
    assert n == seeds_needed(-d, sd) and seeds_needed(d, 2 * sd) > n  # sign-free, grows with noise
    rng = np.random.default_rng(0)

    def power(k):
        x = rng.normal(d, sd, size=(4000, k))
        t = x.mean(1) / (x.std(1, ddof=1) / np.sqrt(k))
        return float((t > stats.t.ppf(0.975, k - 1)).mean())

    assert 0.76 <= power(n) <= 0.86
    assert power(n - 2) < 0.78
    e = effect([1.0, -0.5, 2.0, 0.3])
    assert e.verdict == "undecided" and e.seeds_needed() == seeds_needed(e.mean, e.sd) > e.n
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(1.0, math.nan) is None
    assert seeds_needed(1.0, 0.0) == 2 and seeds_needed(1e-4, 1.0, max_n=50) is None
    with pytest.raises(ValueError, match="power and confidence"):
        seeds_needed(1.0, 1.0, power=80)
