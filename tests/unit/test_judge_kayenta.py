"""The judge against Kayenta's own examples: the Mann-Whitney cases of its ClassifierSuite.

Kayenta (Netflix's canary judge in Spinnaker) publishes the test cases of its
``MannWhitneyClassifier`` in ``spinnaker/spinnaker``,
``kayenta-judge/src/test/scala/com/netflix/kayenta/judge/ClassifierSuite.scala`` (commit
b37a26819f8972e5de7f23517204b47139e47144; Copyright 2017 Netflix, Inc., Apache License 2.0).
The arrays below are its data, number for number, and each case's expected outcome is its
assertion; nothing else is taken from it. All 27 Mann-Whitney cases are here, under Kayenta's
names; its three Mean Inequality cases are not (flaggerpy has no such classifier).

How Kayenta's terms map to ours (``flaggerpy/judging.py``, docs/analysis.md):

- experiment / control are the canary / the primary; ``MetricDirection`` Increase, Decrease,
  Either is ``direction`` increase, decrease, either; ``confLevel`` is ``confidence``;
  ``isCriticalMetric`` is ``critical``; ``NaNStrategy`` Remove / Replace is ``nan_strategy``.
  ``tolerance`` (0.10 in every case) is ``tolerance``, but defined differently: Kayenta's band
  is a fraction of the Hodges-Lehmann shift itself, ours of the primary's median (no case
  below tells the two apart).
- Kayenta's **Pass** is our Pass or Marginal (both pass the check; Marginal only says "worse,
  possibly beyond the tolerance"). **High** and **Low** are a Fail: Kayenta has already applied
  the direction (a Low under Increase is a Pass there, as it is here). **Nodata** is NoData
  (an empty side; our ``minSamples`` generalises it, and ``onNoData`` then decides).
- ``result.critical`` on a High or Low is a critical failure of the whole run: here the metric
  is in :func:`flaggerpy.judging.score`'s ``failed_critical``.

Where flaggerpy deliberately differs, the case says so (``differs``) with the verdict ours
gives; docs/analysis.md ("Kayenta's examples") explains each. Kayenta's "High Metric (Large
Input)" showed a bug here, fixed in the judge: two mostly-zero series gave the interval
``[0, 0]`` and a Pass although the test rejected shift 0 (p = 3e-9); see ``_open_ends``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from flaggerpy.judging import (
    Comparison,
    Direction,
    Judgement,
    NanStrategy,
    Verdict,
    judge_samples,
    score,
)

# --- Kayenta's data ---------------------------------------------------------------------------
# Five arrays of the suite, named by where they lie. The 30-value ones are near 10 or near 20;
# the 210-value ones are mostly 0 (the canary nonzero 64 times, the primary 17 times).

CANARY_NEAR_TEN = (
    9.7767343120109462, 10.587071850477695, 7.8375506388901766, 9.3243326886113884,
    8.3774505409784421, 8.9359264399606282, 8.2707663324728511, 9.7484308126716925,
    11.623746715547156, 9.2753442679633942, 8.1538047749171518, 10.562020975754294,
    13.498135575451835, 11.054419256110332, 6.9538903590055092, 12.521008342195479,
    9.0216358603546443, 4.9234856699531662, 11.251360203607172, 11.598449508040337,
    8.435232204668182, 11.110228516867279, 10.70063380164755, 8.9212773652115249,
    10.086167067942661, 11.42107515483087, 9.3792347813644952, 7.7980320148552593,
    10.62339807275746, 11.909642062063739,
)
PRIMARY_NEAR_TEN = (
    11.1453586774086, 9.9618059885597017, 7.068574306369829, 7.3012661810483657,
    9.7944630265656727, 9.6037918603687302, 6.1867793350339388, 12.345599159550174,
    10.371891733859533, 8.6094300785016724, 9.913162673361084, 10.361375299003466,
    14.206800387518818, 10.946153754753301, 10.215876627044048, 11.739760899484603,
    10.907627468626439, 12.823353694464775, 8.1018609771732137, 8.4981616408804932,
    12.113441374697231, 13.272210809932028, 10.114579381663297, 6.9463958767978067,
    6.2105278541727778, 10.160401684903775, 8.3457712066455461, 8.383822063895833,
    7.0020205070083765, 10.755757401808442,
)
CANARY_NEAR_TWENTY = (
    20.878412601720026, 21.78550581191622, 19.70828084717019, 15.859946903461562,
    19.510058772176841, 19.392005525270303, 22.926528314912101, 17.156530276709894,
    18.655117916226171, 23.422607911610392, 24.055817684156644, 22.62689958516501,
    21.979472967817678, 21.659318607218694, 20.067707574072426, 22.119570836305414,
    16.44037132663307, 21.559622826341268, 21.000181443489218, 17.779369411412663,
    17.806006358943584, 18.537200618386109, 20.555550300210797, 19.552928184468378,
    21.771118944087092, 21.809622806176627, 20.961762909905271, 20.977571577503021,
    19.106303205498794, 16.976918966987078,
)
PRIMARY_NEAR_TWENTY = (
    20.758113589510348, 22.802059629464559, 20.612340363492208, 20.973274654749986,
    23.469237330498622, 21.53133988954805, 21.767353687439805, 18.308050730374301,
    19.062145167827566, 25.879498436001779, 18.982629726336128, 19.387920182269266,
    18.995398251246982, 24.228420230932805, 20.050985172694688, 18.2340451091756,
    17.870515494460435, 23.058103863806618, 18.400259567501134, 16.971352091177167,
    19.467529066052151, 17.90465423342031, 17.553948617825831, 16.104611843907193,
    24.38171081433039, 15.919294339922635, 20.479409626304697, 19.08307201492406,
    17.455788050722866, 18.853826823235142,
)
CANARY_MOSTLY_ZERO = (
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.6666666666666572, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 3.7037037037036811, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5625000000000142,
    0.0, 0.0, 0.0, 0.0, 3.3333333333333428, 0.0, 1.7543859649122737, 0.0,
    1.8518518518518476, 0.0, 0.0, 1.8518518518518476, 0.0, 0.0, 1.5151515151515156,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.7857142857142776,
    1.3333333333333286, 0.0, 3.1250000000000142, 1.9607843137255117,
    1.4492753623188293, 2.4390243902438868, 1.6393442622950687, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 1.6129032258064484, 1.9607843137255117, 1.5873015873015817, 0.0,
    0.0, 2.8169014084507182, 0.0, 0.0, 3.0303030303030454, 0.0, 0.0,
    3.3898305084745743, 0.0, 0.0, 1.234567901234584, 0.0, 0.0, 0.0, 0.0,
    1.7241379310344769, 0.0, 0.0, 0.0, 0.0, 1.6949152542372872, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 1.470588235294116, 0.0, 0.0, 1.3698630136986196,
    3.225806451612911, 1.7543859649122879, 3.4482758620689538, 0.0,
    3.3333333333333428, 0.0, 0.0, 0.0, 1.818181818181813, 0.0, 0.0,
    1.4285714285714448, 0.0, 0.0, 1.8867924528301927, 2.0000000000000284, 0.0, 0.0,
    0.0, 2.985074626865682, 0.0, 0.0, 1.6666666666666714, 0.0, 0.0, 1.5625,
    1.9230769230769198, 0.0, 1.8518518518518619, 0.0, 2.7027027027027088, 0.0, 0.0,
    0.0, 1.3513513513513544, 0.0, 1.818181818181813, 0.0, 1.6666666666666572, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.818181818181813, 0.0, 1.4285714285714164, 0.0,
    0.0, 4.1095890410959015, 0.0, 0.0, 0.0, 1.8518518518518619, 0.0, 0.0,
    1.8518518518518476, 1.3888888888888857, 0.0, 0.0, 0.0, 0.0, 1.8867924528301785,
    1.4285714285714164, 0.0, 0.0, 1.5625, 1.8867924528301927, 0.0, 0.0, 0.0, 0.0,
    2.040816326530603, 1.818181818181813, 0.0, 0.0, 1.6393442622950687, 0.0,
    1.7241379310344769, 1.5151515151515156, 2.564102564102555, 0.0, 0.0, 0.0, 0.0,
    5.5555555555555571, 0.0, 0.0, 4.0816326530612059, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 3.5714285714285836, 0.0, 2.040816326530603, 3.1746031746031633, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
)
PRIMARY_MOSTLY_ZERO = (
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5625000000000142, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.3888888888888857, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 1.5384615384615614, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.4925373134328339, 0.0, 0.0, 0.0,
    1.6949152542373014, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 1.470588235294116, 0.0, 0.0, 0.0, 0.0, 1.7543859649122879, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 1.8518518518518619, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.6393442622950687, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 1.7241379310344769, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5873015873015817,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    1.4925373134328339, 0.0, 0.0, 0.0, 3.1249999999999858, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 1.4925373134328339, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    2.9850746268656536, 0.0, 2.5000000000000284, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    1.7857142857142776, 0.0, 0.0, 0.0,
)

HIGH_FIVE = (20.0, 22.0, 21.0, 25.0, 30.0)
LOW_FIVE = (1.0, 2.2, 1.1, 2.5, 3.0)

# --- the cases --------------------------------------------------------------------------------

KAYENTA_TOLERANCE = 0.10
KAYENTA_CONFIDENCE = 0.95

MAPPED: dict[str, frozenset[Verdict]] = {
    "Pass": frozenset({Verdict.PASS, Verdict.MARGINAL}),
    "High": frozenset({Verdict.FAIL}),
    "Low": frozenset({Verdict.FAIL}),
    "Nodata": frozenset({Verdict.NO_DATA}),
}
"""Kayenta's classification -> the verdicts of ours that mean the same (module doc)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One Mann-Whitney case of Kayenta's suite: its data, parameters and expectation.

    ``kayenta_critical`` is what the suite asserts of ``result.critical`` (None where it asserts
    nothing). ``ours`` and ``differs`` are set only where flaggerpy deliberately gives another
    outcome: the verdict, whether the run fails critically, and why.
    """

    name: str
    canary: Sequence[float]
    primary: Sequence[float]
    direction: Direction
    kayenta: str
    critical: bool = False
    kayenta_critical: bool | None = None
    nan_strategy: NanStrategy = NanStrategy.REMOVE
    ours: Verdict | None = None
    ours_fails_run: bool | None = None
    differs: str = ""

    def judge(self) -> Judgement:
        comparison = Comparison(
            direction=self.direction,
            tolerance=KAYENTA_TOLERANCE,
            confidence=KAYENTA_CONFIDENCE,
            critical=self.critical,
            nan_strategy=self.nan_strategy,
        )
        return judge_samples(self.canary, self.primary, comparison)


NO_EFFECT_SIZE = (
    "flaggerpy has no effect-size threshold (Kayenta's effectSizeThresholds on the ratio of the"
    " means, here {ratio} against {limit}): a significant shift beyond the tolerance fails"
)
NO_CRITICAL_THRESHOLD = (
    "flaggerpy has no critical threshold (Kayenta's criticalThresholds on the ratio of the"
    " means, here 12.04 against 13): a failing critical metric fails the run"
)

CASES = [
    Case(name="Pass Metric", canary=CANARY_NEAR_TEN, primary=PRIMARY_NEAR_TEN,
         direction=Direction.EITHER, kayenta="Pass"),
    Case(name="High Metric", canary=CANARY_NEAR_TWENTY, primary=PRIMARY_NEAR_TEN,
         direction=Direction.EITHER, kayenta="High"),
    Case(name="Low Metric", canary=CANARY_NEAR_TEN, primary=PRIMARY_NEAR_TWENTY,
         direction=Direction.EITHER, kayenta="Low"),
    Case(name="Directional: Increase", canary=CANARY_NEAR_TEN, primary=PRIMARY_NEAR_TWENTY,
         direction=Direction.INCREASE, kayenta="Pass"),
    Case(name="Directional: Decrease", canary=CANARY_NEAR_TWENTY, primary=PRIMARY_NEAR_TEN,
         direction=Direction.DECREASE, kayenta="Pass"),
    Case(name="Directional: High Metric", canary=CANARY_NEAR_TWENTY, primary=PRIMARY_NEAR_TEN,
         direction=Direction.INCREASE, kayenta="High", kayenta_critical=False),
    Case(name="Directional: Low Metric", canary=CANARY_NEAR_TEN, primary=PRIMARY_NEAR_TWENTY,
         direction=Direction.DECREASE, kayenta="Low"),
    Case(name="High Metric (Large Input)", canary=CANARY_MOSTLY_ZERO,
         primary=PRIMARY_MOSTLY_ZERO, direction=Direction.EITHER, kayenta="High",
         kayenta_critical=False),
    Case(name="Mean Ratio Effect Size: High", canary=HIGH_FIVE, primary=LOW_FIVE,
         direction=Direction.EITHER, kayenta="High"),
    Case(name="Mean Ratio Effect Size: Low", canary=CANARY_NEAR_TEN,
         primary=PRIMARY_NEAR_TWENTY, direction=Direction.DECREASE, kayenta="Low"),
    Case(name="Mean Ratio Effect Size: Pass", canary=(10.0, 12.2, 10.1, 12.5, 23.0),
         primary=HIGH_FIVE, direction=Direction.EITHER, kayenta="Pass"),
    Case(name="Mean Ratio Effect Size: Pass (Large Input)", canary=CANARY_MOSTLY_ZERO,
         primary=PRIMARY_MOSTLY_ZERO, direction=Direction.EITHER, kayenta="Pass",
         ours=Verdict.FAIL, ours_fails_run=False,
         differs=NO_EFFECT_SIZE.format(ratio="4.45", limit="5")),
    Case(name="Critical Effect Size: Critical High", canary=HIGH_FIVE, primary=LOW_FIVE,
         direction=Direction.EITHER, kayenta="High", critical=True, kayenta_critical=True),
    Case(name="Critical Effect Size: Critical Low", canary=(2.0, 2.0, 2.0, 2.0, 3.0),
         primary=(10.0, 20.2, 10.1, 20.5, 30.0), direction=Direction.EITHER, kayenta="Low",
         critical=True, kayenta_critical=True),
    Case(name="Critical Effect Size: High", canary=HIGH_FIVE, primary=LOW_FIVE,
         direction=Direction.EITHER, kayenta="High", critical=True, kayenta_critical=False,
         ours=Verdict.FAIL, ours_fails_run=True, differs=NO_CRITICAL_THRESHOLD),
    Case(name="Critical Effect Size: Pass", canary=HIGH_FIVE, primary=LOW_FIVE,
         direction=Direction.EITHER, kayenta="Pass", critical=True, kayenta_critical=False,
         ours=Verdict.FAIL, ours_fails_run=True,
         differs=NO_EFFECT_SIZE.format(ratio="12.04", limit="13")),
    Case(name="Critical Effect Size: Critical High (Default Thresholds)", canary=HIGH_FIVE,
         primary=LOW_FIVE, direction=Direction.EITHER, kayenta="High", critical=True,
         kayenta_critical=True),
    Case(name="Tied Observations", canary=(1.0, 1.0, 1.0), primary=(1.0, 1.0),
         direction=Direction.DECREASE, kayenta="Pass", ours=Verdict.NO_DATA,
         ours_fails_run=False,
         differs="3 values against 2 are too few for any 95% interval: NoData, whatever they"
         " are (Kayenta passes a single value shared by both sides)"),
    Case(name="Identical Populations", canary=(1.0, 2.0, 3.0, 4.0, 5.0),
         primary=(5.0, 4.0, 3.0, 2.0, 1.0), direction=Direction.DECREASE, kayenta="Pass"),
    Case(name="Leading Zero Identical Population", canary=(0.0, 1.0, 1.0, 1.0, 1.0),
         primary=(1.0, 1.0, 1.0, 1.0, 1.0), direction=Direction.DECREASE, kayenta="Pass"),
    Case(name="Missing Experiment Data", canary=(), primary=(1.0, 2.0, 3.0, 4.0, 5.0),
         direction=Direction.DECREASE, kayenta="Nodata"),
    Case(name="Missing Experiment Data: Critical Metric", canary=(),
         primary=(1.0, 2.0, 3.0, 4.0, 5.0), direction=Direction.DECREASE, kayenta="Nodata",
         critical=True, kayenta_critical=True, ours=Verdict.NO_DATA, ours_fails_run=False,
         differs="no data never fails the run by itself: the metric's onNoData decides (fail,"
         " hold or skip), critical or not (Kayenta fails the run on a critical metric without"
         " data)"),
    Case(name="Missing Experiment Data with NaN Replacement", canary=(),
         primary=(1.0, 2.0, 3.0, 4.0, 5.0), direction=Direction.DECREASE, kayenta="Pass",
         nan_strategy=NanStrategy.REPLACE, ours=Verdict.NO_DATA, ours_fails_run=False,
         differs="an empty side is NoData whatever the NaN strategy (which only turns NaN"
         " values into 0), and onNoData decides (Kayenta passes it when NaN is replaced)"),
    Case(name="Missing Data: Reason String", canary=(), primary=(),
         direction=Direction.DECREASE, kayenta="Nodata", critical=True),
    Case(name="Majority Tied Observations", canary=(1.0, 1.0, 1.0, 1.0, 10.0),
         primary=(1.0, 1.0, 1.0, 1.0, 1.0), direction=Direction.EITHER, kayenta="Pass"),
    Case(name="Tied Ranks", canary=(10.0, 10.0, 10.0, 10.0, 10.0),
         primary=(1.0, 1.0, 1.0, 1.0, 1.0), direction=Direction.EITHER, kayenta="High"),
    Case(name="Tied Ranks With Zeros", canary=(10.0, 10.0, 10.0, 10.0, 10.0),
         primary=(0.0, 0.0, 0.0, 0.0, 0.0), direction=Direction.EITHER, kayenta="High"),
]

AGREED = [case for case in CASES if case.ours is None]
DIFFERENT = [case for case in CASES if case.ours is not None]


def _ids(cases: Sequence[Case]) -> list[str]:
    return [case.name for case in cases]


def _fails_run(case: Case, judgement: Judgement) -> bool:
    return score({case.name: judgement}).failed_critical == (case.name,)


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", AGREED, ids=_ids(AGREED))
def test_verdict_means_what_kayenta_classified(case: Case) -> None:
    judgement = case.judge()

    assert judgement.verdict in MAPPED[case.kayenta], judgement.reason
    assert judgement.reason.startswith(f"{judgement.verdict}: ")
    expected_run_failure = bool(case.kayenta_critical) and case.kayenta in ("High", "Low")
    assert _fails_run(case, judgement) is expected_run_failure


@pytest.mark.parametrize("case", DIFFERENT, ids=_ids(DIFFERENT))
def test_deliberate_difference(case: Case) -> None:
    """Ours gives what docs/analysis.md says, and that really is not Kayenta's outcome."""
    judgement = case.judge()

    assert judgement.verdict is case.ours, judgement.reason
    assert _fails_run(case, judgement) is case.ours_fails_run
    kayenta_fails_run = bool(case.kayenta_critical)
    assert case.differs
    assert (
        judgement.verdict not in MAPPED[case.kayenta]
        or case.ours_fails_run is not kayenta_fails_run
    )


def test_mostly_zero_series_fail_because_zero_is_rejected() -> None:
    """Kayenta's large example: the interval is [0, 0], and the tied end 0 is excluded."""
    judgement = Case(
        name="large", canary=CANARY_MOSTLY_ZERO, primary=PRIMARY_MOSTLY_ZERO,
        direction=Direction.INCREASE, kayenta="High",
    ).judge()
    same_the_other_way = Case(
        name="large", canary=PRIMARY_MOSTLY_ZERO, primary=CANARY_MOSTLY_ZERO,
        direction=Direction.INCREASE, kayenta="Pass",
    ).judge()

    assert judgement.interval == (0.0, 0.0)
    assert judgement.p_value is not None
    assert judgement.p_value < 1e-8
    assert judgement.verdict is Verdict.FAIL
    assert "0 excluded: tied values" in judgement.reason
    assert same_the_other_way.verdict is Verdict.PASS
