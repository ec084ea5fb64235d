"""A study's results as tables, read from its records (:mod:`bnreg.study.records`): the tuning
runs, each tuned arm's choice, the final runs' curves and final evaluations with every row
labelled by its arm, and the study's own measurements."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
import pandas as pd

from bnreg import analysis
from bnreg.study.arms import Arm, arm_settings
from bnreg.study.choice import Choice, choose
from bnreg.study.records import Records


@dataclasses.dataclass
class Results:
    """What a study's claims, tables and figures are computed from.

    Attributes:
      config: the study's config, as it ran.
      arms: the study's arms, by name.
      choices: each tuned arm's :class:`~bnreg.study.choice.Choice`.
      settings: each final arm's member values (axis -> value).
      tuning: the tuning runs' final evaluations, one row per member, an ``arm`` column.
      history: the final runs' metrics, one row per evaluation and member, an ``arm`` column.
      final: the final runs' final evaluations (every final evaluator), an ``arm`` column.
      summaries: ``"<phase>/<run>"`` -> the run's summary without its members (data source,
        split sizes, evaluators).
      extra: the study's own measurements, by name.
      machine: what the numbers were made on (:func:`bnreg.study.records.machine`).
    """

    config: ml_collections.ConfigDict
    arms: dict[str, Arm]
    choices: dict[str, Choice]
    settings: dict[str, dict[str, float]]
    tuning: pd.DataFrame
    history: pd.DataFrame
    final: pd.DataFrame
    summaries: dict[str, dict]
    extra: dict[str, pd.DataFrame]
    machine: dict[str, Any]

    def label(self, arm: str) -> str:
        return self.arms[arm].label

    def curves(self, arm: str, column: str = "accuracy") -> tuple[np.ndarray, np.ndarray]:
        """``arm``'s ``column`` over training: ``steps (T,)`` and ``values (seeds, T, ...)``,
        seeds in increasing order."""
        return analysis.curves(self._rows(self.history, arm), column)

    def finals(self, arm: str, column: str = "accuracy") -> pd.Series:
        """``arm``'s final ``column`` (e.g. ``accuracy_population``), one value per seed,
        indexed by seed."""
        rows = self._rows(self.final, arm)
        analysis.require_columns(rows, [column])
        return pd.Series(rows[column].to_numpy(dtype=np.float64),
                         index=rows["seed"].to_numpy(), name=column).sort_index()

    def seeds(self, arm: str) -> list[int]:
        return sorted(self._rows(self.final, arm)["seed"].astype(int).tolist())

    def summary(self, phase: str, arm: str) -> dict:
        """The summary of the run that trained ``arm`` in ``phase``."""
        return self.summaries[f"{phase}/{self.arms[arm].run_name if phase == 'final' else arm}"]

    def _rows(self, frame: pd.DataFrame, arm: str) -> pd.DataFrame:
        if arm not in self.arms:
            raise KeyError(f"no arm {arm!r}; the arms: {list(self.arms)}")
        rows = frame[frame["arm"] == arm]
        if rows.empty:
            raise ValueError(f"arm {arm!r} has no rows in the final runs (is it final?)")
        return rows


def _label_rows(frame: pd.DataFrame, arms: Sequence[Arm],
                settings: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """``frame``'s rows that belong to ``arms`` (their member values equal an arm's settings),
    with an ``arm`` column first."""
    parts = []
    for arm in arms:
        mask = np.ones(len(frame), dtype=bool)
        for axis, value in settings[arm.name].items():
            mask &= (frame[axis] == value).to_numpy()
        part = frame[mask].copy()
        part.insert(0, "arm", arm.name)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def load(records: Records, arms_of: Callable[[ml_collections.ConfigDict], Sequence[Arm]],
         objective: str) -> Results:
    """The :class:`Results` of ``records``, whose arms ``arms_of(config)`` gives; each tuned
    arm's choice is made again from its tuning run (:func:`bnreg.study.choice.choose`)."""
    config = records.config
    arms = list(arms_of(config))
    summaries, tuning, choices = {}, [], {}
    for arm in (a for a in arms if a.tune):
        summary = records.summary("tune", arm.name)
        members = analysis.table(summary["members"])
        choices[arm.name] = choose(members, arm, objective)
        members.insert(0, "arm", arm.name)
        tuning.append(members)
        summaries[f"tune/{arm.name}"] = {k: v for k, v in summary.items() if k != "members"}
    settings = arm_settings(arms, {name: c.values for name, c in choices.items()})
    history, final = [], []
    for run in sorted({arm.run_name for arm in arms if arm.final}):
        in_run = [arm for arm in arms if arm.final and arm.run_name == run]
        summary = records.summary("final", run)
        summaries[f"final/{run}"] = {k: v for k, v in summary.items() if k != "members"}
        history.append(_label_rows(analysis.table(records.history("final", run)), in_run,
                                   settings))
        final.append(_label_rows(analysis.table(summary["members"]), in_run, settings))
    return Results(
        config=config, arms={arm.name: arm for arm in arms}, choices=choices,
        settings=settings,
        tuning=pd.concat(tuning, ignore_index=True) if tuning else pd.DataFrame(),
        history=pd.concat(history, ignore_index=True), final=pd.concat(final, ignore_index=True),
        summaries=summaries,
        extra={name: pd.DataFrame(records.extra(name)) for name in records.extras()},
        machine=records.machine,
    )
