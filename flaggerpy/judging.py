"""The statistical judge: is the canary worse than the primary, with how much confidence?

Flagger judges a metric against a fixed threshold (:func:`flaggerpy.analysis.evaluate`). A
threshold cannot tell "the canary is 30 % slower than the primary" from "the whole service is
slow today", and it cannot say how sure it is. This module compares two samples of the same
metric, one from the canary and one from the primary, the way Kayenta's NetflixACAJudge does
(Spinnaker's canary judge): a nonparametric test per metric, a verdict per metric, and a score
over all metrics in which a failing *critical* metric fails the whole run.

It is pure (no I/O, no clock): the engine renders the query for each workload, collects the
samples and calls :func:`judge_samples` or :func:`judge_proportions`, then :func:`score`.

Two tests, chosen per metric (``compare.test``):

- ``mann-whitney`` for latency-like series (many values per side): the Mann-Whitney U test
  (``scipy.stats.mannwhitneyu``), with the Hodges-Lehmann estimate of the shift
  ``canary - primary`` and its distribution-free confidence interval (see
  :func:`hodges_lehmann`). The interval decides, as in Kayenta's ``MannWhitneyClassifier``.
- ``proportion`` for error ratios (events out of a total per side): the two-proportion z test
  for the p-value and Newcombe's hybrid score interval for the difference of the two ratios
  (see :func:`newcombe_interval`), which, unlike the textbook Wald interval, behaves at the
  error rates near 0 that canaries actually have.

Both answer with a two-sided interval at ``confidence`` for the difference canary - primary;
``direction`` says which side of it is bad (``increase`` for latency and errors, ``decrease``
for a success rate or throughput, ``either``), and ``tolerance`` how large a change is
acceptable, as a fraction of the primary's level (its median, or its ratio). With ``band =
tolerance * |primary level|`` and the interval ``[lo, hi]``, for ``direction: increase``:

- **Fail**: ``lo > band``: the canary is worse by more than the tolerance, at that confidence;
- **Marginal**: ``lo > 0`` and ``hi > band``: the canary is surely worse, possibly beyond the
  tolerance, but not surely;
- **Pass**: anything else: no evidence that it is worse, or evidence that it is worse only
  within the tolerance;
- **NoData**: a side has fewer than ``min_samples`` values (or too few to form an interval at
  that confidence at all).

``decrease`` mirrors this, ``either`` applies both. An end that tied data put exactly on 0 or
on the band counts as past it when the test rejects that shift (:func:`_open_ends`). Kayenta's
classifications High/Low are both a Fail here; its per-metric Marginal does not exist (Kayenta
only has a marginal *score*), it is added so a person can see "worse, but within what was
allowed" before it becomes a Fail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from flaggerpy.models.canary import CanaryMetric, ComparisonDirection, ComparisonTest

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_TOLERANCE",
    "EXACT_LIMIT",
    "Comparison",
    "Direction",
    "Judgement",
    "NanStrategy",
    "Proportion",
    "Scorecard",
    "StatTest",
    "Verdict",
    "classify",
    "hodges_lehmann",
    "judge_proportions",
    "judge_samples",
    "mann_whitney_cdf",
    "newcombe_interval",
    "score",
]

DEFAULT_TOLERANCE = 0.1
"""A change of up to 10 % of the primary's level is acceptable unless the metric says otherwise."""

DEFAULT_CONFIDENCE = 0.95
"""The confidence level of every interval unless the metric says otherwise (Kayenta's too)."""

EXACT_LIMIT = 2500
"""Up to this many pairs (``m * n``) the interval comes from the exact null distribution of U;
above it, from its normal approximation (at 50 x 50 the two differ by at most one rank)."""


class Verdict(StrEnum):
    """A metric's (or a whole run's) outcome."""

    PASS = "Pass"
    MARGINAL = "Marginal"
    FAIL = "Fail"
    NO_DATA = "NoData"


Direction = ComparisonDirection
"""Which change of the metric is bad: ``increase`` (latency, errors), ``decrease``, both (the
Canary field's own values)."""

StatTest = ComparisonTest
"""How two samples are compared (the Canary field's own values)."""


class NanStrategy(StrEnum):
    """What a NaN in a series means: dropped (``remove``, Kayenta's default) or 0 (``replace``)."""

    REMOVE = "remove"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """How one metric is compared: the ``compare`` block of a Canary metric, defaults applied.

    ``min_samples`` is the metric's ``minSamples``: values per side for ``mann-whitney``,
    requests (the proportion's total) per side for ``proportion``.
    """

    test: StatTest = StatTest.MANN_WHITNEY
    direction: Direction = Direction.INCREASE
    tolerance: float = DEFAULT_TOLERANCE
    confidence: float = DEFAULT_CONFIDENCE
    critical: bool = False
    min_samples: int = 0
    nan_strategy: NanStrategy = NanStrategy.REMOVE

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1, got {self.confidence}")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must not be negative, got {self.tolerance}")
        if self.min_samples < 0:
            raise ValueError(f"minSamples must not be negative, got {self.min_samples}")

    @classmethod
    def from_metric(cls, metric: CanaryMetric) -> Comparison | None:
        """The comparison a Canary metric asks for, or None when it has no ``compare`` block."""
        compare = metric.compare
        if compare is None:
            return None
        return cls(
            test=compare.test or StatTest.MANN_WHITNEY,
            direction=compare.direction or Direction.INCREASE,
            tolerance=DEFAULT_TOLERANCE if compare.tolerance is None else compare.tolerance,
            confidence=DEFAULT_CONFIDENCE if compare.confidence is None else compare.confidence,
            critical=bool(compare.critical),
            min_samples=metric.min_samples or 0,
        )


@dataclass(frozen=True, slots=True)
class Proportion:
    """Events (errors, or successes) out of a total, for one side of a ``proportion`` test."""

    events: int
    total: int

    def __post_init__(self) -> None:
        if self.total < 0 or not 0 <= self.events <= max(self.total, 0):
            raise ValueError(f"need 0 <= events <= total, got {self.events}/{self.total}")

    @property
    def ratio(self) -> float:
        """``events / total``; NaN for an empty total."""
        return self.events / self.total if self.total else math.nan


@dataclass(frozen=True, slots=True, kw_only=True)
class Judgement:
    """One metric's verdict and everything needed to explain it.

    ``estimate`` and ``interval`` are the difference canary - primary (Hodges-Lehmann shift,
    or difference of ratios) and its two-sided interval at ``confidence``; ``band`` is the
    tolerated change in the same unit. ``statistic`` is U (Mann-Whitney, for the canary) or z
    (proportions). All of these are None for a NoData verdict.
    """

    verdict: Verdict
    test: StatTest
    direction: Direction
    confidence: float
    critical: bool
    canary_count: int
    primary_count: int
    reason: str
    statistic: float | None = None
    p_value: float | None = None
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    band: float | None = None
    primary_level: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Scorecard:
    """The run's verdict over all judged metrics, as NetflixACAJudge scores a canary."""

    verdict: Verdict
    score: float | None
    passed: int
    measured: int
    failed_critical: tuple[str, ...] = ()
    judgements: Mapping[str, Judgement] = field(default_factory=dict)
    reason: str = ""


# ---------------------------------------------------------------------------------------------
# statistics


@lru_cache(maxsize=256)
def _u_counts(m: int, n: int) -> tuple[int, ...]:
    """How many arrangements give each U in 0..m*n: the coefficients of the Gaussian binomial.

    The generating function of U for sizes m and n (no ties) is the q-binomial coefficient
    ``[m+n choose m]_q = prod_{i=1..m} (1 - q^(n+i)) / (1 - q^i)`` (Mann and Whitney 1947);
    multiplying and dividing one factor at a time keeps every intermediate a polynomial with
    integer coefficients, so the counts are exact (Python integers).
    """
    size = m * n + 1
    coeffs = [0] * size
    coeffs[0] = 1
    for i in range(1, m + 1):
        # multiply by (1 - q^(n+i)), high degrees first, then divide by (1 - q^i)
        shift = n + i
        for k in range(size - 1, shift - 1, -1):
            coeffs[k] -= coeffs[k - shift]
        for k in range(i, size):
            coeffs[k] += coeffs[k - i]
    return tuple(coeffs)


def mann_whitney_cdf(u: int, m: int, n: int) -> float:
    """``P(U <= u)`` under the null hypothesis for samples of sizes m and n, without ties."""
    if u < 0:
        return 0.0
    counts = _u_counts(min(m, n), max(m, n))
    return sum(counts[: u + 1]) / math.comb(m + n, m)


def _rank_index(m: int, n: int, confidence: float) -> int:
    """The order statistic ``k`` (1-based) of the pairwise differences bounding the interval.

    The interval ``[D(k), D(mn + 1 - k)]`` covers the true shift with probability at least
    ``confidence`` when ``k`` is the largest integer with ``P(U <= k - 1) <= alpha / 2``
    (Hollander and Wolfe, *Nonparametric Statistical Methods*, 2nd ed., section 4.3). Exact up
    to :data:`EXACT_LIMIT` pairs; above it the normal approximation
    ``k = mn/2 - z * sqrt(mn (m + n + 1) / 12)``, rounded down (the wider, conservative side).
    0 means no interval at this confidence exists for these sizes.
    """
    alpha_half = (1.0 - confidence) / 2.0
    pairs = m * n
    if pairs <= EXACT_LIMIT:
        counts = _u_counts(min(m, n), max(m, n))
        total = math.comb(m + n, m)
        limit = alpha_half * total
        cumulative = 0
        k = 0
        for count in counts:
            cumulative += count
            if cumulative > limit:
                break
            k += 1
        return min(k, (pairs + 1) // 2)
    z = float(stats.norm.ppf(1.0 - alpha_half))
    k = math.floor(pairs / 2.0 - z * math.sqrt(pairs * (m + n + 1) / 12.0))
    return max(0, min(k, (pairs + 1) // 2))


def hodges_lehmann(
        canary: Sequence[float] | NDArray[np.float64],
        primary: Sequence[float] | NDArray[np.float64],
        *,
        confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, tuple[float, float] | None]:
    """The Hodges-Lehmann shift estimate of ``canary - primary`` and its confidence interval.

    The estimate is the median of the ``m * n`` pairwise differences ``canary_i - primary_j``
    (Hodges and Lehmann 1963); the interval is bounded by two of their order statistics chosen
    from the null distribution of the Mann-Whitney U (Moses' method, as in Hollander and
    Wolfe, section 4.3, and R's ``wilcox.test(conf.int = TRUE)`` for small samples); see
    :func:`_rank_index`. The interval is None when the samples are too small for any
    interval at this confidence (both sides of 3 at 95 %, for example).
    """
    x = np.asarray(canary, dtype=np.float64)
    y = np.asarray(primary, dtype=np.float64)
    if x.size == 0 or y.size == 0:
        raise ValueError("both samples need at least one value")
    differences = np.sort(np.subtract.outer(x, y).ravel())
    estimate = float(np.median(differences))
    k = _rank_index(x.size, y.size, confidence)
    if k < 1:
        return estimate, None
    return estimate, (float(differences[k - 1]), float(differences[differences.size - k]))


def _wilson(events: int, total: int, z: float) -> tuple[float, float]:
    p = events / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    scale = 1 + z * z / total
    return (centre - spread) / scale, (centre + spread) / scale


def newcombe_interval(
        canary: Proportion, primary: Proportion, *, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """The interval of ``canary.ratio - primary.ratio``: Newcombe's hybrid score method.

    Newcombe, "Interval estimation for the difference between independent proportions:
    comparison of eleven methods", Statistics in Medicine 17 (1998) 873-890, method 10: the
    Wilson score intervals ``[l1, u1]`` and ``[l0, u0]`` of the two ratios combine into
    ``d - sqrt((p1 - l1)^2 + (u0 - p0)^2)`` and ``d + sqrt((u1 - p1)^2 + (p0 - l0)^2)``.
    Unlike the Wald interval it does not collapse to a point when a side saw no event.
    """
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    p1, p0 = canary.ratio, primary.ratio
    l1, u1 = _wilson(canary.events, canary.total, z)
    l0, u0 = _wilson(primary.events, primary.total, z)
    difference = p1 - p0
    return (
        difference - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2),
        difference + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2),
    )


def _two_proportion_z(canary: Proportion, primary: Proportion) -> tuple[float, float]:
    """The pooled two-proportion z statistic and its two-sided p-value."""
    pooled = (canary.events + primary.events) / (canary.total + primary.total)
    variance = pooled * (1 - pooled) * (1 / canary.total + 1 / primary.total)
    if variance <= 0:
        return 0.0, 1.0
    z = (canary.ratio - primary.ratio) / math.sqrt(variance)
    return z, float(2 * stats.norm.sf(abs(z)))


# ---------------------------------------------------------------------------------------------
# verdicts


def classify(
        interval: tuple[float, float], band: float, direction: Direction
) -> tuple[Verdict, str]:
    """The verdict of an interval of canary - primary against a tolerance band (module doc).

    Returns the verdict and the words that explain it (the start of a judgement's reason).
    """
    lo, hi = interval
    worse_up = direction in (Direction.INCREASE, Direction.EITHER)
    worse_down = direction in (Direction.DECREASE, Direction.EITHER)
    if worse_up and lo > band:
        return Verdict.FAIL, "higher than the primary beyond the tolerance"
    if worse_down and hi < -band:
        return Verdict.FAIL, "lower than the primary beyond the tolerance"
    if worse_up and lo > 0 and hi > band:
        return Verdict.MARGINAL, "higher than the primary, possibly beyond the tolerance"
    if worse_down and hi < 0 and lo < -band:
        return Verdict.MARGINAL, "lower than the primary, possibly beyond the tolerance"
    if (worse_up and lo > 0) or (worse_down and hi < 0):
        return Verdict.PASS, "different from the primary, within the tolerance"
    return Verdict.PASS, "no worse than the primary"


def _open_ends(
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        interval: tuple[float, float],
        thresholds: Iterable[float],
        *,
        confidence: float,
) -> tuple[tuple[float, float], tuple[float, ...]]:
    """The interval as the verdict reads it, and the ends that tied data exclude.

    The order-statistic interval is closed. For continuous data an end falls exactly on 0 or on
    the band with probability 0, but many equal values (a series that is mostly 0, a primary
    whose median is 0) can put it there although the Mann-Whitney test with midranks rejects
    that very shift: two mostly-zero series, the canary nonzero three times as often, give
    ``[0, 0]`` and p = 3e-9 (Kayenta's "High Metric (Large Input)" example). Such an end is
    tested at that shift (one-sided at ``alpha / 2``, the normal approximation with the tie
    and continuity corrections, as R's ``wilcox.test`` inverts it) and, when rejected, read as
    just past the threshold, so an interval ``[0, 0]`` that excludes 0 counts as above it.
    """
    alpha_half = (1.0 - confidence) / 2.0
    marks = set(thresholds)
    lo, hi = interval
    excluded: list[float] = []
    if lo in marks and _rejects(x - lo, y, "greater", alpha_half):
        excluded.append(lo)
        lo = math.nextafter(lo, math.inf)
    if hi in marks and _rejects(x - hi, y, "less", alpha_half):
        excluded.append(hi)
        hi = math.nextafter(hi, -math.inf)
    return (lo, hi), tuple(excluded)


def _rejects(
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        alternative: Literal["greater", "less"],
        alpha: float,
) -> bool:
    result = stats.mannwhitneyu(x, y, alternative=alternative, method="asymptotic")
    return float(result.pvalue) < alpha


def _num(value: float) -> str:
    return f"{value:.4g}"


def _clean(values: Iterable[float], strategy: NanStrategy) -> NDArray[np.float64]:
    array = np.asarray(list(values), dtype=np.float64)
    nan = np.isnan(array)
    if strategy is NanStrategy.REPLACE:
        return np.where(nan, 0.0, array)
    return array[~nan]


def _no_data(
        comparison: Comparison, canary_count: int, primary_count: int, why: str
) -> Judgement:
    return Judgement(
        verdict=Verdict.NO_DATA,
        test=comparison.test,
        direction=comparison.direction,
        confidence=comparison.confidence,
        critical=comparison.critical,
        canary_count=canary_count,
        primary_count=primary_count,
        reason=f"NoData: {why} (canary {canary_count}, primary {primary_count})",
    )


def _too_few(comparison: Comparison, canary_count: int, primary_count: int) -> str | None:
    least = max(comparison.min_samples, 1)
    if canary_count < least or primary_count < least:
        return f"fewer than {least} samples on a side"
    return None


def judge_samples(
        canary: Iterable[float], primary: Iterable[float], comparison: Comparison
) -> Judgement:
    """The verdict of a latency-like metric: Mann-Whitney U with a Hodges-Lehmann interval.

    NaNs are handled by ``comparison.nan_strategy`` before anything is counted. Identical
    samples pass at once, as in Kayenta (the test is undefined for them).
    """
    x = _clean(canary, comparison.nan_strategy)
    y = _clean(primary, comparison.nan_strategy)
    if (why := _too_few(comparison, x.size, y.size)) is not None:
        return _no_data(comparison, x.size, y.size, why)
    estimate, interval = hodges_lehmann(x, y, confidence=comparison.confidence)
    level = float(np.median(y))
    band = comparison.tolerance * abs(level)
    if interval is None:
        return _no_data(
            comparison, x.size, y.size,
            f"too few samples for a {comparison.confidence:.0%} interval",
        )
    excluded: tuple[float, ...] = ()
    if np.array_equal(np.sort(x), np.sort(y)):
        verdict, why = Verdict.PASS, "same values as the primary"
        u, p_value = x.size * y.size / 2.0, 1.0
    else:
        result = stats.mannwhitneyu(x, y, alternative="two-sided")
        u, p_value = float(result.statistic), float(result.pvalue)
        judged, excluded = _open_ends(
            x, y, interval, (0.0, band, -band), confidence=comparison.confidence
        )
        verdict, why = classify(judged, band, comparison.direction)
    relative = f" ({estimate / abs(level):+.1%})" if level else ""
    open_ends = "".join(
        f" ({_num(end)} excluded: tied values, the test rejects that shift)" for end in excluded
    )
    reason = (
        f"{verdict}: canary {why}: shift {_num(estimate)}{relative},"
        f" {comparison.confidence:.0%} interval [{_num(interval[0])}, {_num(interval[1])}]"
        f"{open_ends},"
        f" tolerance ±{_num(band)} ({comparison.tolerance:.0%} of the primary's median"
        f" {_num(level)}), Mann-Whitney U={_num(u)} p={p_value:.3g},"
        f" samples canary {x.size} primary {y.size}"
    )
    return Judgement(
        verdict=verdict,
        test=StatTest.MANN_WHITNEY,
        direction=comparison.direction,
        confidence=comparison.confidence,
        critical=comparison.critical,
        canary_count=int(x.size),
        primary_count=int(y.size),
        reason=reason,
        statistic=u,
        p_value=p_value,
        estimate=estimate,
        interval=interval,
        band=band,
        primary_level=level,
    )


def judge_proportions(
        canary: Proportion, primary: Proportion, comparison: Comparison
) -> Judgement:
    """The verdict of a ratio metric (errors per request): two proportions compared.

    ``min_samples`` counts requests (``total``) per side. The tolerance is a fraction of the
    primary's ratio, so a primary without a single error tolerates no significant increase.
    """
    if (why := _too_few(comparison, canary.total, primary.total)) is not None:
        return _no_data(comparison, canary.total, primary.total, why)
    interval = newcombe_interval(canary, primary, confidence=comparison.confidence)
    z, p_value = _two_proportion_z(canary, primary)
    estimate = canary.ratio - primary.ratio
    level = primary.ratio
    band = comparison.tolerance * level
    verdict, why = classify(interval, band, comparison.direction)
    reason = (
        f"{verdict}: canary {why}: ratio {canary.events}/{canary.total} = {_num(canary.ratio)}"
        f" vs primary {primary.events}/{primary.total} = {_num(level)}, difference"
        f" {_num(estimate)}, {comparison.confidence:.0%} interval [{_num(interval[0])},"
        f" {_num(interval[1])}], tolerance ±{_num(band)} ({comparison.tolerance:.0%} of the"
        f" primary's ratio), z={z:.3g} p={p_value:.3g}"
    )
    return Judgement(
        verdict=verdict,
        test=StatTest.PROPORTION,
        direction=comparison.direction,
        confidence=comparison.confidence,
        critical=comparison.critical,
        canary_count=canary.total,
        primary_count=primary.total,
        reason=reason,
        statistic=z,
        p_value=p_value,
        estimate=estimate,
        interval=interval,
        band=band,
        primary_level=level,
    )


def score(
        judgements: Mapping[str, Judgement],
        *,
        pass_score: float = 95.0,
        marginal_score: float = 75.0,
) -> Scorecard:
    """The run's verdict over all metrics, as NetflixACAJudge scores a canary.

    A critical metric that fails fails the run, whatever the rest. Otherwise the score is
    ``100 * passed / measured``, where NoData metrics are not measured and only Pass counts as
    passed (Kayenta's rule; a Marginal metric lowers the score); at least ``pass_score`` is a
    Pass, at least ``marginal_score`` a Marginal, below a Fail. Nothing measured is NoData.
    """
    if not 0 <= marginal_score <= pass_score <= 100:
        raise ValueError("need 0 <= marginal_score <= pass_score <= 100")
    critical = tuple(
        name for name, judgement in judgements.items()
        if judgement.critical and judgement.verdict is Verdict.FAIL
    )
    measured = sum(1 for j in judgements.values() if j.verdict is not Verdict.NO_DATA)
    passed = sum(1 for j in judgements.values() if j.verdict is Verdict.PASS)
    value = 100.0 * passed / measured if measured else None
    if critical:
        verdict = Verdict.FAIL
        reason = f"Fail: critical metric {', '.join(critical)} failed"
    elif value is None:
        verdict = Verdict.NO_DATA
        reason = "NoData: no metric had enough samples"
    else:
        if value >= pass_score:
            verdict = Verdict.PASS
        elif value >= marginal_score:
            verdict = Verdict.MARGINAL
        else:
            verdict = Verdict.FAIL
        reason = (
            f"{verdict}: score {value:.0f} ({passed} of {measured} measured metrics passed;"
            f" pass at {pass_score:g}, marginal at {marginal_score:g})"
        )
    return Scorecard(
        verdict=verdict,
        score=value,
        passed=passed,
        measured=measured,
        failed_critical=critical,
        judgements=dict(judgements),
        reason=reason,
    )
