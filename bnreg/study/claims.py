"""A study's claims as data, and their verdicts (design §3).

A :class:`Claim` names the paper's statement and number, the comparison — ``first`` above or
below ``second`` (a paired difference), or the two within a tolerance of each other — each side a
:class:`Measure` that reads one value per seed from the study's results, whether it is the
study's primary claim, and its regime :class:`Gate`: a precondition, read from the same runs, that
the training reached the regime in which the paper made the claim.

Verdicts, from the per-seed paired differences ``first − second`` (the same seed: the same
initial weights and data order):

* *not testable at this budget* — the gate failed (its numbers are shown);
* *holds* / *does not hold* — the difference is significant in the claimed / the other direction
  (two-sided paired t test at 5%, i.e. the 95% interval excludes 0); for an agreement, the 95%
  interval lies inside ±tolerance (two one-sided tests at 2.5%) / entirely outside it;
* *not resolved with N seeds* — neither; a claim on a net that diverged on some seed (NaN) is
  not resolved either, and says how many seeds diverged.

The primary claim is read at 5%. The secondary claims whose gates passed are one family,
adjusted with Holm–Bonferroni (family-wise error 5%, ``statsmodels``' ``multipletests``): a
secondary claim holds (or does not) only if its adjusted p-value is below 5%. Results show the
unadjusted 95% interval beside the adjusted verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from bnreg import analysis
from bnreg.study.results import Results

ALPHA = 0.05
Outcome = Literal["holds", "does not hold", "not resolved", "not testable"]


class Measure(NamedTuple):
    """One value per seed read from a study's results.

    Attributes:
      describe: what it is, in results.md's words (e.g. "final test accuracy of BN at (i)").
      read: ``results -> Series`` indexed by seed.
      unit: the unit after ``scale`` (e.g. ``"points"``).
      scale: the factor to the unit (100: a fraction in points).
      censored: ``results -> number of seeds`` whose value is a bound (e.g. a threshold never
        reached, counted at the run's end), or None.
      arms: the arms it reads.
    """

    describe: str
    read: Callable[[Results], pd.Series]
    unit: str = "points"
    scale: float = 100.0
    censored: Callable[[Results], int] | None = None
    arms: tuple[str, ...] = ()


class GateReading(NamedTuple):
    """A gate's outcome and its numbers, as results.md states them."""

    passed: bool
    numbers: str


class Gate(NamedTuple):
    """A regime precondition: ``describe`` says what it requires (with its thresholds),
    ``check(results)`` reads it from the runs."""

    describe: str
    check: Callable[[Results], GateReading]


class Claim(NamedTuple):
    """A paper's claim as a study tests it.

    Attributes:
      name: a short key (CLAIMS.md's anchor).
      statement: the claim as tested, e.g. "BN reaches the baseline's final accuracy in fewer
        steps (lr (i))".
      paper: the paper's words or number and its dataset, e.g. "Fig. 1a (MNIST): faster".
      first, second: the two sides; the difference is ``first − second``, paired by seed.
      expect: ``"above"`` or ``"below"`` (first vs second), or ``"agree"`` (within
        ``tolerance``, in the measures' unit).
      tolerance: for ``"agree"``.
      gate: the regime gate, or None (the claim needs no regime).
      primary: the study's primary claim, named before the run (read without adjustment).
    """

    name: str
    statement: str
    paper: str
    first: Measure
    second: Measure
    expect: Literal["above", "below", "agree"]
    tolerance: float = 0.0
    gate: Gate | None = None
    primary: bool = False


class Verdict(NamedTuple):
    """A claim's reading: the paired differences' mean, std, 95% interval, the p-value of the
    outcome it points to (and adjusted by Holm, for a secondary claim), the gate and the
    outcome."""

    claim: Claim
    n: int
    mean: float
    std: float
    low: float
    high: float
    p: float
    adjusted_p: float
    gate: GateReading | None
    outcome: Outcome
    censored: int = 0
    diverged: int = 0

    @property
    def words(self) -> str:
        """The verdict in results.md's words."""
        if self.outcome == "not resolved" and self.diverged:
            return f"not resolved: {self.diverged} of {self.n} seeds diverged"
        if self.outcome == "not resolved":
            return f"not resolved with {self.n} seed{'s' * (self.n != 1)}"
        if self.outcome == "not testable":
            return "not testable at this budget"
        return self.outcome


def differences(claim: Claim, results: Results) -> pd.Series:
    """``scale × (first − second)`` per seed, paired.

    Raises:
      ValueError: the sides hold different seeds, or a side has a NaN.
    """
    first, second = claim.first.read(results), claim.second.read(results)
    if set(first.index) != set(second.index):
        raise ValueError(f"claim {claim.name!r}: the sides hold different seeds "
                         f"({sorted(first.index)} vs {sorted(second.index)}).")
    return claim.first.scale * (first - second.loc[first.index]).sort_index()


def _candidate(values: np.ndarray, expect: str, tolerance: float) -> tuple[str, float]:
    """The outcome the data point to, before any threshold, and its two-sided p-value (for an
    agreement, twice the larger one-sided p of the two one-sided tests, or twice the smaller
    one of being beyond the tolerance, whichever is smaller): significant at 5% exactly when
    the 95% Student-t interval shows it."""
    n, mean = values.size, float(values.mean())
    if n < 2:
        return "not resolved", 1.0
    sem = float(values.std(ddof=1) / np.sqrt(n))

    def upper(t_shift: float) -> float:  # P(T > (mean − shift)/sem)
        if sem == 0:
            return 0.0 if mean > t_shift else 1.0
        return float(stats.t.sf((mean - t_shift) / sem, n - 1))

    def lower(t_shift: float) -> float:  # P(T < (mean − shift)/sem)
        if sem == 0:
            return 0.0 if mean < t_shift else 1.0
        return float(stats.t.cdf((mean - t_shift) / sem, n - 1))

    if expect == "agree":
        inside = min(1.0, 2 * max(upper(-tolerance), lower(tolerance)))
        beyond = min(1.0, 2 * min(upper(tolerance), lower(-tolerance)))
        return ("holds", inside) if inside <= beyond else ("does not hold", beyond)
    p = min(1.0, 2 * min(upper(0.0), lower(0.0)))
    above = mean > 0
    return ("holds" if above == (expect == "above") else "does not hold"), p


def evaluate(claims: Sequence[Claim], results: Results) -> list[Verdict]:
    """Every claim's :class:`Verdict`, the secondary ones Holm-adjusted as one family (those
    whose gate passed).

    Raises:
      ValueError: not exactly one primary claim, or two claims of one name.
    """
    names = [claim.name for claim in claims]
    if len(set(names)) != len(names):
        raise ValueError(f"claims need distinct names, got {names}")
    if sum(claim.primary for claim in claims) != 1:
        raise ValueError("a study names exactly one primary claim before it runs, got "
                         f"{[c.name for c in claims if c.primary]}")
    readings = []
    for claim in claims:
        paired = differences(claim, results).to_numpy()
        diverged = int(np.isnan(paired).sum())
        values = paired[~np.isnan(paired)] if diverged < paired.size else np.zeros(1)
        mean, low, high = analysis.confidence_interval(values)
        outcome, p = ("not resolved", 1.0) if diverged else _candidate(
            values, claim.expect, claim.tolerance)
        censored = sum(int(m.censored(results)) for m in (claim.first, claim.second)
                       if m.censored)
        readings.append(Verdict(claim, paired.size, mean, analysis.mean_std(values)[1], low,
                                high, p, p, claim.gate.check(results) if claim.gate else None,
                                outcome, censored, diverged))
    family = [i for i, r in enumerate(readings) if not r.claim.primary and not r.diverged
              and (r.gate is None or r.gate.passed)]
    if family:
        adjusted = multipletests([readings[i].p for i in family], alpha=ALPHA, method="holm")[1]
        for index, p in zip(family, adjusted, strict=True):
            readings[index] = readings[index]._replace(adjusted_p=float(p))
    verdicts = []
    for reading in readings:
        if reading.gate is not None and not reading.gate.passed:
            reading = reading._replace(outcome="not testable")
        elif reading.adjusted_p >= ALPHA:
            reading = reading._replace(outcome="not resolved")
        verdicts.append(reading)
    return verdicts


# Measures -----------------------------------------------------------------------------------


def final(arm: str, column: str = "accuracy", *, label: str | None = None) -> Measure:
    """``arm``'s final ``column`` (a fraction; in points)."""
    return Measure(f"final {column} of {label or arm}",
                   lambda results: results.finals(arm, column), arms=(arm,))


def _steps_to(results: Results, arm: str, reference: str, column: str,
              target: str) -> tuple[pd.Series, int]:
    steps, curves = results.curves(arm, column)
    _, references = results.curves(reference, column)
    targets = references[:, -1] if target == "final" else references.max(1)
    found, censored = [], 0
    for curve, value in zip(curves, targets, strict=True):
        step = analysis.first_step_reaching(steps, curve, value)
        censored += step is None
        found.append(steps[-1] if step is None else step)
    return pd.Series(np.asarray(found, dtype=np.float64), index=results.seeds(arm)), censored


def steps_to(arm: str, reference: str, column: str = "accuracy", *,
             target: Literal["final", "max"] = "final", label: str | None = None) -> Measure:
    """Per seed, the first evaluated step at which ``arm``'s ``column`` reaches the ``target``
    value — the final or the highest — of ``reference``'s curve on the same seed
    (``reference`` itself: the first step at its own final or highest value). A seed that never
    reaches it counts the run's last step: a lower bound, which only weakens a claim of fewer
    steps."""
    def read(results: Results) -> pd.Series:
        return _steps_to(results, arm, reference, column, target)[0]

    def censored(results: Results) -> int:
        return _steps_to(results, arm, reference, column, target)[1]

    return Measure(f"steps of {label or arm} to {reference}'s {target} {column}", read,
                   unit="steps", scale=1.0, censored=censored, arms=(arm, reference))


def steps_to_final(arm: str, reference: str, column: str = "accuracy", *,
                   label: str | None = None) -> Measure:
    """:func:`steps_to` ``reference``'s final value."""
    return steps_to(arm, reference, column, target="final", label=label)


def gap(arm: str, first: str = "accuracy_on_train", second: str = "accuracy", *,
        label: str | None = None) -> Measure:
    """``arm``'s final ``first − second`` (e.g. training − test accuracy: how much it
    overfits), in points."""
    return Measure(f"final {first} − {second} of {label or arm}",
                   lambda results: results.finals(arm, first) - results.finals(arm, second),
                   arms=(arm,))


# Gates --------------------------------------------------------------------------------------


def _window_means(values: np.ndarray, window: float) -> tuple[float, float]:
    """The seed-mean curve's mean over its last ``window`` of evaluations and over as many
    before them."""
    mean = values.mean(0)
    width = max(1, round(window * (mean.size - 1)))
    if 2 * width >= mean.size:
        raise ValueError(f"a window of {window:g} of {mean.size} evaluations leaves no earlier "
                         "window to compare with")
    return float(mean[-width:].mean()), float(mean[-2 * width:-width].mean())


def plateaued(arm: str, column: str = "accuracy", *, window: float = 0.2,
              tolerance: float = 0.2, scale: float = 100.0, unit: str = "points",
              label: str | None = None) -> Gate:
    """``arm`` has plateaued: its seed-mean ``column`` over the last ``window`` of the
    evaluations is at most ``tolerance`` (× ``scale``, in ``unit``) above its mean over the
    window before — a speed claim needs a reference that stopped improving (design §3)."""
    who = label or arm

    def check(results: Results) -> GateReading:
        _, values = results.curves(arm, column)
        last, before = _window_means(values, window)
        gain = scale * (last - before)
        return GateReading(gain <= tolerance,
                           f"{who}: last {window:.0%} of training − the {window:.0%} before: "
                           f"{gain:+.2f} {unit} (≤ {tolerance:g} required)")

    return Gate(f"{who} has plateaued (the mean {column} of the last {window:.0%} of "
                f"evaluations at most {tolerance:g} {unit} above the {window:.0%} before)",
                check)


def overfits(arm: str, *, train_column: str = "accuracy_on_train",
             test_column: str = "accuracy", margin: float = 2.0, window: float = 0.2,
             scale: float = 100.0, unit: str = "points", label: str | None = None) -> Gate:
    """``arm`` overfits (a regularization claim needs it; design §3): at the end its training
    ``train_column`` is at least ``margin`` (× ``scale``, in ``unit``) above its
    ``test_column``, and its seed-mean ``test_column`` peaked before the last ``window`` of the
    evaluations."""
    who = label or arm

    def check(results: Results) -> GateReading:
        steps, train = results.curves(arm, train_column)
        _, test = results.curves(arm, test_column)
        gap = scale * float((train[:, -1] - test[:, -1]).mean())
        mean = test.mean(0)
        last_window = max(1, round(window * (mean.size - 1)))
        peak = int(np.argmax(mean))
        peaked = peak < mean.size - last_window
        return GateReading(gap >= margin and peaked,
                           f"{who}: train − test at the end {gap:+.2f} {unit} (≥ {margin:g} "
                           "required); "
                           f"best test {test_column} at step {int(steps[peak]):,} "
                           f"(before the last {window:.0%}: {'yes' if peaked else 'no'})")

    return Gate(f"{who} overfits (train − test ≥ {margin:g} {unit} at the end and the test curve "
                f"past its peak before the last {window:.0%})", check)


def all_of(*gates: Gate) -> Gate:
    """Every gate passes; the numbers of each."""
    def check(results: Results) -> GateReading:
        readings = [gate.check(results) for gate in gates]
        return GateReading(all(r.passed for r in readings),
                           "; ".join(r.numbers for r in readings))

    return Gate(" and ".join(gate.describe for gate in gates), check)
