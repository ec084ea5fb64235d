"""A study's metrics as tables, statistics over seeds, verdicts on claims, and markdown.

Every study reads its runs the same way: :func:`history` (``metrics.jsonl``, one row per
evaluation and member) and :func:`finals` (``summary.json``, one row per member with every final
evaluator) give ``pandas`` tables; :func:`select`, :func:`describe`, :func:`curves` and
:func:`paired_differences` cut them; the verdicts turn per-seed numbers into *holds* / *does not
hold* / *not resolved with N seeds* from a Student-t interval of the mean; :func:`cell` and
:func:`markdown_table` write results.md.

Conventions: a "std" is the sample standard deviation over seeds (ddof=1), 0 for one seed; an
interval is the two-sided Student-t interval of the mean, unbounded for one seed. Statistics
refuse NaN (a diverged seed must be handled, not averaged away). Column sets vary by run
(evaluators, metrics), so nothing here names a metric column.

This module imports neither matplotlib nor the engine: studies import it at module top.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

# The engine's file names (bnreg.engine writes them); not imported from there, so that reading a
# run does not load the engine.
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def _require_columns(frame: pd.DataFrame, names: Iterable[str]) -> None:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise KeyError(f"no column {missing[0]!r}; columns: {sorted(map(str, frame.columns))}")


def _values(values: Any, what: str = "values") -> np.ndarray:
    """``values`` (one number per seed) as a 1-D float array; ValueError if empty or NaN."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim > 1:
        raise ValueError(f"{what} must be one number per seed (1-D), got shape {array.shape}")
    array = array.reshape(-1)
    if array.size == 0:
        raise ValueError(f"no {what}: select rows that hold at least one seed")
    if np.isnan(array).any():
        raise ValueError(f"{what} contain NaN: drop or select the rows that hold a value first")
    return array


# Tables.


def table(records: Iterable[Mapping]) -> pd.DataFrame:
    """In-memory records (the engine's history or ``summary["members"]``) as a table: one row
    per record, one column per field (missing fields NaN; list-valued fields stay object columns
    of lists; ``train_loss``'s ``None`` at step 0 becomes NaN)."""
    return pd.DataFrame([dict(record) for record in records])


def history(workdir: str | Path) -> pd.DataFrame:
    """A run's ``metrics.jsonl`` as a table, one row per line (per evaluation and member).

    A last line that is not valid JSON (cut by a kill while it was written) is ignored, as the
    engine ignores it on resume; an invalid line before it is an error (ValueError).
    """
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {path}: pass a run directory (the engine's workdir)")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise ValueError(f"{path} line {number} is not JSON ({error})") from error
    return table(records)


def finals(workdir: str | Path) -> pd.DataFrame:
    """A run's ``summary.json`` members as a table: one row per member, its final evaluation
    with every final evaluator (e.g. ``accuracy_ema``, ``accuracy_population``)."""
    path = Path(workdir) / SUMMARY_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {path}: pass the workdir of a run that finished")
    return table(json.loads(path.read_text())["members"])


def combine(frames: Mapping[str, pd.DataFrame], column: str = "run") -> pd.DataFrame:
    """The frames one under the other, each row labelled with its frame's key in ``column``
    (the first column), e.g. a study's runs ``{"bn": ..., "no_bn": ...}``. Columns that only
    some frames have are NaN in the others' rows."""
    if not frames:
        raise ValueError("no frames to combine")
    parts = []
    for key, frame in frames.items():
        if column in frame.columns:
            raise ValueError(f"frame {key!r} already has a column {column!r}: pass another column=")
        part = frame.copy()
        part.insert(0, column, key)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


# Statistics over seeds.


def mean_std(values: Any) -> tuple[float, float]:
    """The mean and sample standard deviation (ddof=1) of ``values``, one number per seed; the
    std of a single value is 0.0."""
    values = _values(values)
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return float(values.mean()), float(std)


def confidence_interval(values: Any, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` (one number per seed) and the two-sided
    Student-t interval of that mean at ``level`` (``n − 1`` degrees of freedom, standard error
    with ddof=1). With one value nothing bounds the mean: ``(mean, -inf, inf)``."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    values = _values(values)
    mean = float(values.mean())
    if values.size < 2:
        return mean, -np.inf, np.inf
    half_width = float(stats.t.ppf(0.5 + level / 2, values.size - 1) * stats.sem(values))
    return mean, mean - half_width, mean + half_width


def describe(
    frame: pd.DataFrame, value: str, by: Sequence[str], *, level: float = 0.95, scale: float = 1.0
) -> pd.DataFrame:
    """``scale × value`` summarised per group of rows with equal ``by`` columns (any columns, or
    one column's name; none: one group of all rows).

    Returns columns ``*by, n, mean, std, low, high``: the number of rows, :func:`mean_std` and
    the :func:`confidence_interval` at ``level``; one row per group, sorted by ``by`` (NaN keys
    last). Every row counts as one seed: select one step (or use :func:`finals`) first. A NaN
    value is an error naming its group.
    """
    by = [by] if isinstance(by, str) else list(by)
    _require_columns(frame, [value, *by])
    groups = frame.groupby(by, sort=True, dropna=False) if by else [((), frame)]
    rows = []
    for key, group in groups:
        what = f"{value!r} in the group {dict(zip(by, key, strict=True))}"
        values = scale * _values(group[value], what)
        mean, std = mean_std(values)
        _, low, high = confidence_interval(values, level)
        rows.append((*key, values.size, mean, std, low, high))
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "std", "low", "high"])


def scores(frame: pd.DataFrame, value: str, by: str) -> dict[Any, tuple[float, float]]:
    """``{setting: (mean, std)}`` of ``value`` over the rows (seeds) of each setting of the
    column ``by`` (e.g. a sweep's final accuracy per learning rate): :func:`describe`'s."""
    table = describe(frame, value, by)
    return {key: (mean, std) for key, mean, std in zip(table[by], table["mean"], table["std"],
                                                         strict=True)}


def best(scores: Mapping[Any, tuple[float, float]]) -> Any:
    """The setting of :func:`scores` with the highest mean (the first of a tie)."""
    return max(scores, key=lambda setting: scores[setting][0])


def tied_with_best(scores: Mapping[Any, tuple[float, float]]) -> list[Any]:
    """The settings whose mean is within the seeds' std of the best one's — the larger of the
    two stds —, the best included, sorted: those a sweep cannot tell from the best."""
    best_mean, best_std = scores[best(scores)]
    return sorted(key for key, (mean, std) in scores.items()
                  if best_mean - mean <= max(best_std, std))


def curves(frame: pd.DataFrame, value: str) -> tuple[np.ndarray, np.ndarray]:
    """A history's ``value`` over training, per member.

    Returns ``steps`` ``(T,)`` and ``values`` ``(members, T, ...)`` (list-valued fields stacked
    into the trailing axes), members in increasing ``member`` order, steps in increasing order.

    Raises:
      KeyError: no column ``value`` (the message lists the columns).
      ValueError: no rows; a member has two rows at one step (several runs or splits: select
        one); members evaluated at different steps; values of different shapes.
    """
    _require_columns(frame, ["member", "step", value])
    if frame.empty:
        raise ValueError(f"no rows to take {value!r} curves from")
    ordered = frame.sort_values(["member", "step"], kind="stable")
    repeated = ordered[ordered.duplicated(["member", "step"])]
    if not repeated.empty:
        member, step = repeated.iloc[0][["member", "step"]]
        raise ValueError(
            f"member {member} has several rows at step {step}: the frame holds several runs or "
            "splits; select() one first"
        )
    per_member = dict(list(ordered.groupby("member", sort=True)))
    steps_of = {member: group["step"].tolist() for member, group in per_member.items()}
    if any(steps != next(iter(steps_of.values())) for steps in steps_of.values()):
        raise ValueError(f"members were evaluated at different steps: {steps_of}")
    try:
        values = np.asarray([g[value].tolist() for g in per_member.values()], dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{value!r} holds values of different shapes ({error})") from error
    return next(iter(per_member.values()))["step"].to_numpy(), values


def select(frame: pd.DataFrame, **values: Any) -> pd.DataFrame:
    """The rows whose columns equal ``values`` (e.g. ``learning_rate=0.1, split="test"``), with
    their index. Floats are compared with ``==``: pass the value as it was recorded. NaN and
    None match nothing. A column that does not exist is a KeyError listing the columns."""
    _require_columns(frame, values)
    mask = np.ones(len(frame), dtype=bool)
    for name, wanted in values.items():
        mask &= _equal(frame, name, wanted)
    return frame[mask]


def _equal(frame: pd.DataFrame, column: str, wanted: Any) -> np.ndarray:
    return (frame[column] == wanted).to_numpy(dtype=bool, na_value=False)


def _one_side(frame: pd.DataFrame, value: str, column: str, side: Any, pair_on: str) -> pd.Series:
    rows = frame[_equal(frame, column, side)]
    if rows.empty:
        values = sorted(frame[column].unique().tolist())
        raise ValueError(f"no rows with {column} == {side!r}; its values: {values}")
    repeated = sorted(rows.loc[rows[pair_on].duplicated(), pair_on].unique().tolist())
    if repeated:
        raise ValueError(
            f"{pair_on} {repeated} appear more than once with {column} == {side!r}: select one "
            f"row per {pair_on} on each side first (e.g. one step, one learning rate)"
        )
    return pd.Series(rows[value].to_numpy(dtype=np.float64), index=rows[pair_on].to_numpy())


def paired_differences(
    frame: pd.DataFrame, value: str, *, column: str, first: Any, second: Any,
    pair_on: str = "seed",
) -> pd.Series:
    """``value`` of the rows with ``column == first`` minus that of the rows with ``column ==
    second``, paired on ``pair_on`` (the same seed: the same initialisation and data order).

    Returns a Series indexed by the ``pair_on`` values, sorted, named ``value``.

    Raises:
      KeyError: a column does not exist.
      ValueError: a side has no rows, holds a ``pair_on`` value twice (select one row per seed
        first), or the sides do not hold the same ``pair_on`` values.
    """
    _require_columns(frame, [value, column, pair_on])
    a = _one_side(frame, value, column, first, pair_on)
    b = _one_side(frame, value, column, second, pair_on)
    if set(a.index) != set(b.index):
        raise ValueError(
            f"the sides hold different {pair_on} values: only with {column} == {first!r}: "
            f"{sorted(set(a.index) - set(b.index))}; only with {column} == {second!r}: "
            f"{sorted(set(b.index) - set(a.index))}; select the common ones first"
        )
    differences = (a - b).sort_index()
    differences.index.name = pair_on
    return differences.rename(value)


def first_step_reaching(steps: np.ndarray, curve: np.ndarray, threshold: float) -> int | None:
    """The first evaluated step at which ``curve`` (one value per step) is at least
    ``threshold``; None if it never is."""
    steps, curve = np.asarray(steps), np.asarray(curve)
    if steps.shape != curve.shape:
        raise ValueError(f"steps {steps.shape} and curve {curve.shape} must have one shape")
    reached = np.flatnonzero(curve >= threshold)
    return int(steps[reached[0]]) if reached.size else None


# Verdicts.


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
    values = _values(differences, "differences")
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
    values = _values(differences, "differences")
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
    return (
        f"{_signed(scale * d.mean)} ± {scale * d.std:.2f} {unit} ({_interval(level)} "
        f"{_signed(scale * d.low)} to {_signed(scale * d.high)}): {verdict}"
    )


def _seed_curves(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{what} must be (seeds, T), at least one of each, got {array.shape}")
    return array


def seed_mean_std(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1; 0 for one seed) over the first axis (the seeds) of
    ``values``, e.g. a ``(seeds, T)`` curve: the bands of :mod:`bnreg.plots`."""
    values = np.asarray(values, dtype=np.float64)
    return values.mean(0), values.std(0, ddof=1 if values.shape[0] > 1 else 0)


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


# Markdown.


def cell(values: Any, *, scale: float = 1.0, digits: int = 2, signed: bool = False) -> str:
    """``"88.59 ± 0.23"``: the mean ± sample std (:func:`mean_std`) of ``scale × values`` (one
    number per seed; scaled before the statistics) with ``digits`` decimals; ``signed`` writes
    the mean's sign (``"+0.19 ± 0.05"``). The mean is rounded before it is formatted, so a mean
    that rounds to zero reads ``0.00``, never ``-0.00``. NaN is a ValueError."""
    mean, std = mean_std(scale * _values(values))
    mean = round(mean, digits) + 0.0  # + 0.0 turns the -0.0 of a rounded tiny negative into 0.0
    return f"{mean:{'+' if signed else ''}.{digits}f} ± {std:.{digits}f}"


def _markdown_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table: ``| a | b |``, ``|---|---|``, then one line per row, cells
    ``str()``-ed as they are (markdown in them passes through); no trailing newline. Every row
    must have the header's length."""
    if not header:
        raise ValueError("a table needs at least one column")
    lines = [_markdown_row(header), "|" + "---|" * len(header)]
    for index, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(
                f"row {index} has {len(row)} cells, the header {len(header)}: {list(row)}"
            )
        lines.append(_markdown_row(row))
    return "\n".join(lines)
