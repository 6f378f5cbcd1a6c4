"""The statistical judge against known values: scipy's answers, published tables and examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from flaggerpy.judging import (
    Comparison,
    Direction,
    Judgement,
    NanStrategy,
    Proportion,
    StatTest,
    Verdict,
    classify,
    hodges_lehmann,
    judge_proportions,
    judge_samples,
    mann_whitney_cdf,
    newcombe_interval,
    score,
)

# Hollander and Wolfe (1973), p. 69: permeability constants of the human chorioamnion at term
# (x) and at 12 to 26 weeks (y); also the example of R's wilcox.test.
HW_X = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46]
HW_Y = [1.15, 0.88, 0.90, 0.74, 1.21]


def _lognormal(seed: int, size: int, *, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(mean=4.0, sigma=0.5, size=size) * scale


# --- the null distribution of U and the interval's order statistic -----------------------------


@pytest.mark.parametrize(("m", "n"), [(3, 5), (6, 4), (8, 8), (10, 5), (7, 12)])
def test_u_distribution_is_scipys_exact_one(m: int, n: int) -> None:
    """P(U <= u) equals scipy's exact one-sided p-value for every observed U of tie-free data."""
    rng = np.random.default_rng(m * 100 + n)
    for _ in range(20):
        x, y = rng.normal(size=m), rng.normal(size=n)
        result = stats.mannwhitneyu(x, y, alternative="less", method="exact")
        assert mann_whitney_cdf(int(result.statistic), m, n) == pytest.approx(
            result.pvalue, rel=1e-12
        )


def test_u_distribution_edges() -> None:
    assert mann_whitney_cdf(-1, 4, 4) == 0.0
    assert mann_whitney_cdf(0, 3, 3) == pytest.approx(1 / math.comb(6, 3))
    assert mann_whitney_cdf(16, 4, 4) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("m", "n", "critical_u"),
    # Two-sided 5 % critical values of U from the published tables (reject when U <= value).
    [(5, 5, 2), (5, 10, 8), (8, 8, 13), (10, 10, 23), (20, 20, 127)],
)
def test_critical_values_match_the_published_table(m: int, n: int, critical_u: int) -> None:
    assert mann_whitney_cdf(critical_u, m, n) <= 0.025 < mann_whitney_cdf(critical_u + 1, m, n)


# --- Hodges-Lehmann ---------------------------------------------------------------------------


def test_hodges_lehmann_by_hand() -> None:
    """Differences of [1, 4, 6] and [2, 3]: -2, -1, 1, 2, 3, 4; their median is 1.5."""
    estimate, interval = hodges_lehmann([1, 4, 6], [2, 3], confidence=0.95)

    assert estimate == 1.5
    assert interval is None  # 3 and 2 values cannot give a 95 % interval (P(U=0) = 0.1)


def test_hodges_lehmann_interval_of_the_published_example() -> None:
    """Sizes 10 and 5: the table's critical U is 8, so the 95 % interval is [D(9), D(42)].

    By hand: the nine smallest differences x - y are -0.48, -0.42, -0.41, -0.38, -0.35,
    -0.32, -0.17, -0.17, -0.15; by symmetry the ninth largest is 1.91 - 1.15 = 0.76.
    """
    estimate, interval = hodges_lehmann(HW_X, HW_Y, confidence=0.95)

    assert estimate == pytest.approx(0.305)
    assert interval == pytest.approx((-0.15, 0.76))


def test_hodges_lehmann_large_samples_use_the_normal_approximation() -> None:
    x, y = _lognormal(1, 80), _lognormal(2, 80)
    estimate, interval = hodges_lehmann(x, y, confidence=0.95)
    differences = np.sort(np.subtract.outer(x, y).ravel())
    pairs = 80 * 80
    k = math.floor(pairs / 2 - 1.959963984540054 * math.sqrt(pairs * 161 / 12))

    assert estimate == pytest.approx(float(np.median(differences)))
    assert interval == (differences[k - 1], differences[pairs - k])


@pytest.mark.parametrize(("m", "n"), [(50, 51), (45, 60), (60, 60)])
def test_normal_approximation_is_within_one_rank_of_the_exact_interval(m: int, n: int) -> None:
    """Just above EXACT_LIMIT pairs, the approximate bound is the exact one or one rank wider."""
    x, y = _lognormal(m, m), _lognormal(n + 1000, n)
    differences = np.sort(np.subtract.outer(x, y).ravel())
    exact_k = 0
    while mann_whitney_cdf(exact_k, m, n) <= 0.025:
        exact_k += 1

    _, interval = hodges_lehmann(x, y, confidence=0.95)

    assert interval is not None
    lower = int(np.searchsorted(differences, interval[0])) + 1
    assert exact_k - 1 <= lower <= exact_k


def test_hodges_lehmann_interval_covers_the_true_shift() -> None:
    """Over 400 draws with a known shift of 3, a 95 % interval misses it about 5 % of the time."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        primary = rng.exponential(10.0, size=15)
        canary = rng.exponential(10.0, size=12) + 3.0
        _, interval = hodges_lehmann(canary, primary, confidence=0.95)
        assert interval is not None
        covered += interval[0] <= 3.0 <= interval[1]

    assert 0.93 <= covered / 400 <= 0.99


# --- two proportions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "primary", "expected"),
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10.
    [((56, 70), (48, 80), (0.0524, 0.3339)), ((9, 10), (3, 10), (0.1705, 0.8090))],
)
def test_newcombe_interval_matches_the_paper(
    canary: tuple[int, int], primary: tuple[int, int], expected: tuple[float, float]
) -> None:
    interval = newcombe_interval(Proportion(*canary), Proportion(*primary), confidence=0.95)

    assert interval == pytest.approx(expected, abs=5e-5)


def test_proportion_z_is_scipys_chi_square() -> None:
    """The pooled z test is the 2x2 chi-square test without continuity correction (z^2 = X^2)."""
    judgement = judge_proportions(
        Proportion(30, 1000), Proportion(10, 1000), Comparison(test=StatTest.PROPORTION)
    )
    chi2 = stats.chi2_contingency([[30, 970], [10, 990]], correction=False)

    assert judgement.statistic is not None
    assert judgement.statistic > 0
    assert judgement.statistic**2 == pytest.approx(chi2.statistic)
    assert judgement.p_value == pytest.approx(chi2.pvalue)
    assert judgement.verdict is Verdict.FAIL
    assert judgement.estimate == pytest.approx(0.02)


def test_no_errors_on_either_side_pass() -> None:
    judgement = judge_proportions(
        Proportion(0, 500), Proportion(0, 500), Comparison(test=StatTest.PROPORTION)
    )

    assert judgement.verdict is Verdict.PASS
    assert judgement.p_value == 1.0
    assert judgement.interval is not None
    assert judgement.interval[0] < 0 < judgement.interval[1]


def test_a_few_errors_against_none_are_not_enough_to_fail() -> None:
    judgement = judge_proportions(
        Proportion(2, 200), Proportion(0, 200), Comparison(test=StatTest.PROPORTION)
    )

    assert judgement.verdict is Verdict.PASS


def test_success_rate_judged_downwards() -> None:
    """The band is relative to the primary's ratio: 1 % of 99 % allows a drop to about 98 %."""
    comparison = Comparison(
        test=StatTest.PROPORTION, direction=Direction.DECREASE, tolerance=0.01
    )
    worse = judge_proportions(Proportion(900, 1000), Proportion(990, 1000), comparison)
    better = judge_proportions(Proportion(999, 1000), Proportion(990, 1000), comparison)

    assert worse.verdict is Verdict.FAIL
    assert "lower than the primary" in worse.reason
    assert better.verdict is Verdict.PASS


def test_proportion_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="events <= total"):
        Proportion(5, 4)
    with pytest.raises(ValueError, match="events <= total"):
        Proportion(-1, 4)


# --- Mann-Whitney verdicts --------------------------------------------------------------------


def test_statistic_and_p_value_are_scipys() -> None:
    canary, primary = _lognormal(3, 60, scale=1.2), _lognormal(4, 50)
    judgement = judge_samples(canary, primary, Comparison())
    expected = stats.mannwhitneyu(canary, primary, alternative="two-sided")

    assert judgement.statistic == pytest.approx(expected.statistic)
    assert judgement.p_value == pytest.approx(expected.pvalue)
    assert (judgement.canary_count, judgement.primary_count) == (60, 50)
    assert judgement.primary_level == pytest.approx(float(np.median(primary)))


@pytest.mark.parametrize(
    ("scale", "direction", "verdict"),
    [
        (1.5, Direction.INCREASE, Verdict.FAIL),
        (1.5, Direction.EITHER, Verdict.FAIL),
        (1.5, Direction.DECREASE, Verdict.PASS),
        (0.6, Direction.DECREASE, Verdict.FAIL),
        (0.6, Direction.EITHER, Verdict.FAIL),
        (0.6, Direction.INCREASE, Verdict.PASS),
        (1.0, Direction.EITHER, Verdict.PASS),
    ],
)
def test_direction(scale: float, direction: Direction, verdict: Verdict) -> None:
    canary, primary = _lognormal(11, 200, scale=scale), _lognormal(12, 200)

    judgement = judge_samples(canary, primary, Comparison(direction=direction))

    assert judgement.verdict is verdict, judgement.reason


def test_tolerance_decides_between_fail_marginal_and_pass() -> None:
    """A 30 % slower canary: beyond a 5 % tolerance, straddling 30 %, well within 100 %."""
    canary, primary = _lognormal(21, 300, scale=1.3), _lognormal(22, 300)

    tight = judge_samples(canary, primary, Comparison(tolerance=0.05))
    around = judge_samples(canary, primary, Comparison(tolerance=0.3))
    loose = judge_samples(canary, primary, Comparison(tolerance=1.0))

    assert tight.verdict is Verdict.FAIL, tight.reason
    assert around.verdict is Verdict.MARGINAL, around.reason
    assert loose.verdict is Verdict.PASS, loose.reason
    assert "within the tolerance" in loose.reason


@pytest.mark.parametrize(
    ("interval", "band", "direction", "verdict"),
    [
        ((2.0, 5.0), 1.0, Direction.INCREASE, Verdict.FAIL),
        ((0.5, 5.0), 1.0, Direction.INCREASE, Verdict.MARGINAL),
        ((0.2, 0.8), 1.0, Direction.INCREASE, Verdict.PASS),
        ((-0.5, 5.0), 1.0, Direction.INCREASE, Verdict.PASS),
        ((1.0, 5.0), 1.0, Direction.INCREASE, Verdict.MARGINAL),  # lo == band is not beyond
        ((-5.0, -2.0), 1.0, Direction.DECREASE, Verdict.FAIL),
        ((-5.0, -0.5), 1.0, Direction.DECREASE, Verdict.MARGINAL),
        ((-0.8, -0.2), 1.0, Direction.DECREASE, Verdict.PASS),
        ((-5.0, -2.0), 1.0, Direction.INCREASE, Verdict.PASS),
        ((2.0, 5.0), 1.0, Direction.DECREASE, Verdict.PASS),
        ((-5.0, -2.0), 1.0, Direction.EITHER, Verdict.FAIL),
        ((2.0, 5.0), 0.0, Direction.EITHER, Verdict.FAIL),
    ],
)
def test_classify(
    interval: tuple[float, float], band: float, direction: Direction, verdict: Verdict
) -> None:
    assert classify(interval, band, direction)[0] is verdict


def test_identical_samples_pass() -> None:
    primary = _lognormal(5, 40)

    judgement = judge_samples(primary[::-1], primary, Comparison())

    assert judgement.verdict is Verdict.PASS
    assert judgement.estimate == 0.0
    assert judgement.p_value == 1.0


def test_reason_is_one_line_with_the_numbers() -> None:
    judgement = judge_samples(_lognormal(31, 50, scale=1.4), _lognormal(32, 50), Comparison())

    assert "\n" not in judgement.reason
    assert judgement.reason.startswith(f"{judgement.verdict}: ")
    for part in ("shift", "95% interval", "tolerance", "U=", "p=", "canary 50 primary 50"):
        assert part in judgement.reason


# --- no data ----------------------------------------------------------------------------------


def test_below_min_samples_is_no_data() -> None:
    comparison = Comparison(min_samples=30)

    judgement = judge_samples(_lognormal(1, 29), _lognormal(2, 100), comparison)
    enough = judge_samples(_lognormal(1, 30), _lognormal(2, 100), comparison)

    assert judgement.verdict is Verdict.NO_DATA
    assert judgement.interval is None
    assert judgement.statistic is None
    assert (judgement.canary_count, judgement.primary_count) == (29, 100)
    assert "fewer than 30 samples" in judgement.reason
    assert enough.verdict is not Verdict.NO_DATA


def test_empty_side_is_no_data_even_without_min_samples() -> None:
    assert judge_samples([], [1.0, 2.0], Comparison()).verdict is Verdict.NO_DATA
    judgement = judge_proportions(
        Proportion(0, 0), Proportion(3, 100), Comparison(test=StatTest.PROPORTION)
    )
    assert judgement.verdict is Verdict.NO_DATA


def test_too_few_for_an_interval_is_no_data() -> None:
    judgement = judge_samples([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], Comparison())

    assert judgement.verdict is Verdict.NO_DATA
    assert "too few samples for a 95% interval" in judgement.reason


def test_proportion_min_samples_counts_requests() -> None:
    comparison = Comparison(test=StatTest.PROPORTION, min_samples=100)

    judgement = judge_proportions(Proportion(50, 99), Proportion(1, 1000), comparison)

    assert judgement.verdict is Verdict.NO_DATA
    assert (judgement.canary_count, judgement.primary_count) == (99, 1000)


def test_nan_strategy() -> None:
    canary = [float("nan")] * 5 + list(_lognormal(8, 10))
    primary = list(_lognormal(9, 15))

    removed = judge_samples(canary, primary, Comparison(min_samples=12))
    replaced = judge_samples(
        canary, primary, Comparison(min_samples=12, nan_strategy=NanStrategy.REPLACE)
    )

    assert removed.verdict is Verdict.NO_DATA
    assert removed.canary_count == 10
    assert replaced.canary_count == 15
    assert replaced.verdict is not Verdict.NO_DATA


@pytest.mark.parametrize(
    "kwargs",
    [{"confidence": 1.0}, {"confidence": 0.0}, {"tolerance": -0.1}, {"min_samples": -1}],
)
def test_comparison_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        Comparison(**kwargs)  # type: ignore[arg-type]


# --- the score over metrics -------------------------------------------------------------------


def _judged(verdict: Verdict, *, critical: bool = False) -> Judgement:
    return Judgement(
        verdict=verdict,
        test=StatTest.MANN_WHITNEY,
        direction=Direction.INCREASE,
        confidence=0.95,
        critical=critical,
        canary_count=10,
        primary_count=10,
        reason=str(verdict),
    )


def test_score_is_the_share_of_measured_metrics_that_pass() -> None:
    judgements = {f"m{i}": _judged(Verdict.PASS) for i in range(19)}
    judgements["slow"] = _judged(Verdict.FAIL)
    judgements["quiet"] = _judged(Verdict.NO_DATA)

    card = score(judgements)

    assert (card.verdict, card.score, card.passed, card.measured) == (Verdict.PASS, 95.0, 19, 20)


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([Verdict.PASS, Verdict.PASS, Verdict.PASS, Verdict.MARGINAL], Verdict.MARGINAL),
        ([Verdict.PASS, Verdict.PASS, Verdict.PASS, Verdict.FAIL], Verdict.MARGINAL),
        ([Verdict.PASS, Verdict.FAIL], Verdict.FAIL),
        ([Verdict.NO_DATA, Verdict.NO_DATA], Verdict.NO_DATA),
        ([], Verdict.NO_DATA),
    ],
)
def test_score_thresholds(verdicts: list[Verdict], expected: Verdict) -> None:
    card = score({f"m{i}": _judged(v) for i, v in enumerate(verdicts)})

    assert card.verdict is expected, card.reason


def test_a_failing_critical_metric_fails_the_run() -> None:
    judgements = {f"m{i}": _judged(Verdict.PASS) for i in range(30)}
    judgements["latency"] = _judged(Verdict.FAIL, critical=True)

    card = score(judgements)

    assert card.verdict is Verdict.FAIL
    assert card.failed_critical == ("latency",)
    assert "critical metric latency failed" in card.reason
    assert card.score == pytest.approx(100 * 30 / 31)


def test_a_marginal_critical_metric_does_not_fail_the_run_alone() -> None:
    judgements = {f"m{i}": _judged(Verdict.PASS) for i in range(30)}
    judgements["latency"] = _judged(Verdict.MARGINAL, critical=True)

    assert score(judgements).verdict is Verdict.PASS


def test_score_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="marginal_score <= pass_score"):
        score({}, pass_score=50, marginal_score=80)
