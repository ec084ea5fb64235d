"""A study's runs as ``pandas`` tables: ``metrics.jsonl`` (one row per evaluation and member) and
``summary.json`` (one row per member with every final evaluator), and the cuts studies make of
them (rows of some values, curves per member, paired differences by seed)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The engine's file names (bnreg.engine writes them); not imported from there, so that reading a
# run does not load the engine.
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def require_columns(frame: pd.DataFrame, names: Iterable[str]) -> None:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise KeyError(f"no column {missing[0]!r}; columns: {sorted(map(str, frame.columns))}")


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


def curves(frame: pd.DataFrame, value: str) -> tuple[np.ndarray, np.ndarray]:
    """A history's ``value`` over training, per member.

    Returns ``steps`` ``(T,)`` and ``values`` ``(members, T, ...)`` (list-valued fields stacked
    into the trailing axes), members in increasing ``member`` order, steps in increasing order.

    Raises:
      KeyError: no column ``value`` (the message lists the columns).
      ValueError: no rows; a member has two rows at one step (several runs or splits: select
        one); members evaluated at different steps; values of different shapes.
    """
    require_columns(frame, ["member", "step", value])
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
    require_columns(frame, values)
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
    require_columns(frame, [value, column, pair_on])
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
