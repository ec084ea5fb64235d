"""Verdicts on claims from per-seed numbers: agreement within a tolerance, a paired difference,
a curve above another beyond the seeds' noise — each a *holds* / *does not hold* / *not resolved
with N seeds* reading of a 95% Student-t interval (or of the seeds' std), and its words for
results.md."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np

from bnreg.analysis.statistics import confidence_interval, mean_std, seed_mean_std, seed_values


def _seeds(count: int) -> str:
    return f"{count} seed{'s' * (count != 1)}"


def _interval(level: float) -> str:
    return f"{100 * level:g}% interval"


class Agreement(NamedTuple):
    """Whether two quantities agree within ``tolerance``: :func:`agreement`."""

    mean: float
    std: float
    low: float
    high: float
    tolerance: float
    n: int
    outcome: Literal["agree", "disagree", "unresolved"]


def agreement(differences: Any, tolerance: float, *, level: float = 0.95) -> Agreement:
    """Whether two quantities agree within ``tolerance``, from their per-seed differences.

    The mean difference's :func:`confidence_interval` at ``level`` decides: ``"agree"`` when it
    lies inside ``±tolerance`` (bounds included), ``"disagree"`` when it lies entirely outside
    (``low > tolerance`` or ``high < −tolerance``), else ``"unresolved"`` — always so for one
    seed, whose interval is unbounded. At 95% this is stricter than an equivalence test at 5%
    (which would use the 90% interval).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be at least 0, got {tolerance}")
    values = seed_values(differences, "differences")
    mean, low, high = confidence_interval(values, level)
    if -tolerance <= low and high <= tolerance:
        outcome = "agree"
    elif low > tolerance or high < -tolerance:
        outcome = "disagree"
    else:
        outcome = "unresolved"
    return Agreement(mean, mean_std(values)[1], low, high, tolerance, values.size, outcome)


def agreement_text(a: Agreement, unit: str = "points", *, level: float = 0.95) -> str:
    """``a`` in results.md's words, e.g. ``+0.19 ± 0.05 points (95% interval +0.07 to +0.31):
    not resolved with 3 seeds (the mean is within 0.3 points, the interval crosses 0.3)``; a
    disagreement is bold. ``level`` names the interval: pass the one :func:`agreement` used.
    Numbers are formatted as they are (a tiny negative mean reads ``-0.00``), as the studies'
    committed results.md were."""
    tolerance = f"{a.tolerance:g} {unit}"
    if a.outcome == "agree":
        verdict = f"they agree within {tolerance}"
    elif a.outcome == "disagree":
        verdict = f"**they do not agree within {tolerance}**"
    else:
        side = "within" if abs(a.mean) <= a.tolerance else "beyond"
        verdict = (
            f"not resolved with {_seeds(a.n)} (the mean is {side} {tolerance}, the interval "
            f"crosses {a.tolerance:g})"
        )
    return (
        f"{a.mean:+.2f} ± {a.std:.2f} {unit} ({_interval(level)} {a.low:+.2f} to {a.high:+.2f})"
        f": {verdict}"
    )


class Difference(NamedTuple):
    """Whether A is above or below B: :func:`difference`."""

    mean: float
    std: float
    low: float
    high: float
    n: int
    outcome: Literal["above", "below", "unresolved"]


def difference(differences: Any, *, level: float = 0.95) -> Difference:
    """Whether A is above or below B, from the per-seed paired differences A − B
    (:func:`paired_differences`): ``"above"`` when the mean's :func:`confidence_interval` at
    ``level`` lies above 0 (``low > 0``), ``"below"`` when below (``high < 0``), else
    ``"unresolved"`` — always so for one seed. Uncorrected for multiple comparisons."""
    values = seed_values(differences, "differences")
    mean, low, high = confidence_interval(values, level)
    outcome = "above" if low > 0 else "below" if high < 0 else "unresolved"
    return Difference(mean, mean_std(values)[1], low, high, values.size, outcome)


def _signed(number: float) -> str:
    return f"{round(number, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00"


def difference_text(
    d: Difference, unit: str = "points", scale: float = 1.0, *, first: str = "A",
    second: str = "B", level: float = 0.95,
) -> str:
    """``d`` (times ``scale``, e.g. 100 for fractions in points) in words, e.g. ``+0.59 ± 0.20
    points (95% interval +0.09 to +1.09): A is above B``, or ``...: not resolved with 3 seeds
    (the interval crosses 0)``. ``first`` and ``second`` name A and B; ``level`` names the
    interval (pass the one :func:`difference` used). Never prints ``-0.00``."""
    if scale <= 0:
        raise ValueError(f"scale must be positive (it would flip the interval), got {scale}")
    verdict = {
        "above": f"{first} is above {second}",
        "below": f"{first} is below {second}",
        "unresolved": f"not resolved with {_seeds(d.n)} (the interval crosses 0)",
    }[d.outcome]
    unit = f" {unit}" if unit else ""  # "" for a number without unit
    return (
        f"{_signed(scale * d.mean)} ± {scale * d.std:.2f}{unit} ({_interval(level)} "
        f"{_signed(scale * d.low)} to {_signed(scale * d.high)}): {verdict}"
    )


def claim_text(
    d: Difference, expected: Literal["above", "below"], claim: str, *, unit: str = "points",
    scale: float = 1.0, first: str = "A", second: str = "B", level: float = 0.95,
) -> str:
    """A paper's claim that A is ``expected`` (``"below"``: e.g. a lower error) B, read from
    the paired differences' :func:`difference`: ``"- <claim>: **holds**"`` when the interval
    lies on the expected side of 0, ``**does not hold**`` when on the other, ``not resolved
    with N seeds`` when it crosses 0 — then :func:`difference_text`'s numbers."""
    if expected not in ("above", "below"):
        raise ValueError(f"expected must be 'above' or 'below', got {expected!r}")
    outcome = ("not resolved" if d.outcome == "unresolved" else
               "**holds**" if d.outcome == expected else "**does not hold**")
    text = difference_text(d, unit, scale, first=first, second=second, level=level)
    return f"- {claim}: {outcome} — {text}."


def _seed_curves(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{what} must be (seeds, T), at least one of each, got {array.shape}")
    return array


class Above(NamedTuple):
    """Where A is above B beyond the seeds' noise: :func:`above_beyond_noise`."""

    steps: np.ndarray
    gaps: np.ndarray
    margins: np.ndarray
    failing_steps: np.ndarray

    @property
    def holds(self) -> bool:
        """A is above B beyond the noise at every evaluation."""
        return self.failing_steps.size == 0


def above_beyond_noise(steps: np.ndarray, first: np.ndarray, second: np.ndarray) -> Above:
    """Whether curve A (``first``) is above curve B (``second``) beyond the seeds' noise at
    every evaluation.

    ``first`` and ``second`` are ``(seeds, T)`` (their seed counts may differ) at ``steps``
    ``(T,)``. At each evaluation the gap is mean(A) − mean(B) over seeds and the margin the
    larger of their sample stds (0 for one seed); A is above beyond the noise where gap >
    margin, and ``failing_steps`` are the other evaluations (NaN gaps included). To judge from
    some step on, pass only those columns.
    """
    steps, first, second = np.asarray(steps), _seed_curves(first, "A"), _seed_curves(second, "B")
    if not steps.shape == first.shape[1:] == second.shape[1:]:
        raise ValueError(
            f"steps {steps.shape}, first {first.shape} and second {second.shape} must share T"
        )
    first_mean, first_std = seed_mean_std(first)
    second_mean, second_std = seed_mean_std(second)
    gaps = first_mean - second_mean
    margins = np.maximum(first_std, second_std)
    return Above(steps, gaps, margins, steps[~(gaps > margins)])


def learned(curve_values: np.ndarray, *, by: float = 0.01) -> bool:
    """Whether a ``(seeds, T)`` curve's mean over seeds ended more than ``by`` above where it
    started (accuracy: ``by=0.01`` is 1 point)."""
    mean = _seed_curves(curve_values, "curve_values").mean(0)
    return bool(mean[-1] > mean[0] + by)


def above_text(
    above: Above, *, first: str, second: str, since: int | None = None, scale: float = 100.0,
    unit: str = "points", note: str = "",
) -> str:
    """``above`` in results.md's words: the gap ``first − second`` (× ``scale``, in ``unit``)
    from step ``since`` on — min, mean, max —, then ``note`` (a sentence of the caller's, or
    nothing), then whether ``first`` is above at every evaluation or at how many it is not."""
    gaps = scale * np.asarray(above.gaps)
    start = "" if since is None else f" from step {since:,} on"
    text = (f"{first} − {second}{start}: min {gaps.min():+.2f}, mean {gaps.mean():+.2f}, max "
            f"{gaps.max():+.2f} {unit}. {note}")
    failing = above.failing_steps
    if not failing.size:
        return text + f"{first} is above by more than the larger seed std at every evaluation."
    return text + (
        f"**Not** above by more than the larger seed std at {failing.size} of "
        f"{len(above.steps)} evaluations (first at step {int(failing[0]):,}; last at step "
        f"{int(failing[-1]):,})."
    )
