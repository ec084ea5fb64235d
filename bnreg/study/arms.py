"""A study's arms and the runs the protocol trains for them.

An *arm* is one network of a study as the protocol sees it: a label, the config overrides that
make it (structure and fixed values, e.g. ``{"model.norm": "batch"}``), the member axes tuned for
it on the validation split with their grids, and its settings in the final runs — values, or
another arm's choice times a factor (:class:`Chosen`: the BN paper's "BN-x5" is the Inception's
learning rate × 5). An arm with a grid is tuned; an arm is trained in the final phase unless
``final=False``, and several final arms share one run (``run=``) when they differ only in member
axes: they then train as members of one compiled program, paired by seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import ml_collections

from bnreg.config import AXES, axis_value, override


class Chosen(NamedTuple):
    """A final setting taken from a tuned arm's choice: ``arm``'s chosen value of ``axis``
    times ``factor``."""

    arm: str
    axis: str
    factor: float = 1.0


class Arm(NamedTuple):
    """One network of a study.

    Attributes:
      name: its key in records and tables (a run directory's name when it has a run of its own).
      label: its name in results.md and figures.
      overrides: dotted config keys that make it (structure, fixed values).
      tune: member axis -> grid, tuned on the validation split (crossed, with the tuning seeds).
      settings: member axis -> value or :class:`Chosen`, in the final runs. A tuned axis that
        is not named here takes the arm's own choice.
      run: the final run it trains in ("": a run of its own, named ``name``); the arms of one
        run must have equal ``overrides`` and differ in their settings.
      final: whether it trains in the final phase (False: tuned only, e.g. to choose for
        others).
      final_overrides: dotted config keys of its final run only, e.g. an evaluator the choice
        does not need (``{"evaluation.final": ("gaussian",)}``).
    """

    name: str
    label: str
    overrides: Mapping[str, Any] = {}
    tune: Mapping[str, Sequence[float]] = {}
    settings: Mapping[str, float | Chosen] = {}
    run: str = ""
    final: bool = True
    final_overrides: Mapping[str, Any] = {}

    @property
    def run_name(self) -> str:
        return self.run or self.name


def check_arms(arms: Sequence[Arm]) -> None:
    """The arms make sense together: names unique, tuned axes and settings on member axes, each
    :class:`Chosen` naming a tuned arm's tuned axis, the arms of one run alike in overrides.

    Raises:
      ValueError: naming the arm and what to change.
    """
    names = [arm.name for arm in arms]
    if not arms or len(set(names)) != len(names):
        raise ValueError(f"A study needs arms with distinct names, got {names}.")
    tuned = {arm.name: arm for arm in arms if arm.tune}
    for arm in arms:
        for axis, grid in arm.tune.items():
            if axis not in AXES or axis == "seed":
                raise ValueError(f"Arm {arm.name!r} tunes {axis!r}, which is not a member axis "
                                 f"other than the seed ({[a for a in AXES if a != 'seed']}).")
            if not grid or len(set(grid)) != len(grid):
                raise ValueError(f"Arm {arm.name!r}'s grid for {axis!r} must hold distinct "
                                 f"values, got {tuple(grid)}.")
        for axis, setting in arm.settings.items():
            if axis not in AXES or axis == "seed":
                raise ValueError(f"Arm {arm.name!r} sets {axis!r}, which is not a member axis "
                                 "other than the seed.")
            if isinstance(setting, Chosen) and setting.axis not in getattr(
                    tuned.get(setting.arm), "tune", {}):
                raise ValueError(f"Arm {arm.name!r} takes {setting.axis!r} from arm "
                                 f"{setting.arm!r}, which does not tune it.")
    runs: dict[str, Arm] = {}
    for arm in (a for a in arms if a.final):
        first = runs.setdefault(arm.run_name, arm)
        if (dict(first.overrides), dict(first.final_overrides)) != (
                dict(arm.overrides), dict(arm.final_overrides)):
            raise ValueError(f"Arms {first.name!r} and {arm.name!r} share the run "
                             f"{arm.run_name!r} but not their overrides: give them runs of "
                             "their own.")
    if not runs:
        raise ValueError("No arm trains in the final phase: set final=True on at least one.")


def round_value(value: float) -> float:
    """A setting rounded to 12 significant digits, so that 0.1 × 3 reads 0.3 everywhere."""
    return float(f"{value:.12g}")


def final_settings(arm: Arm, choices: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``arm``'s member values in the final runs, from the tuned arms' ``choices`` (arm ->
    axis -> chosen value)."""
    settings = {axis: choices[arm.name][axis] for axis in arm.tune}
    for axis, setting in arm.settings.items():
        if isinstance(setting, Chosen):
            settings[axis] = round_value(choices[setting.arm][setting.axis] * setting.factor)
        else:
            settings[axis] = setting
    return settings


def tuning_overrides(config: ml_collections.ConfigDict, arm: Arm) -> dict[str, Any]:
    """The engine overrides of a tuned arm's run: its overrides, its grids as member axes
    crossed with ``config.study.tune_seeds``, on the validation split, ``tune_steps`` long."""
    study = config.study
    steps = study.tune_steps or config.num_steps
    every = study.tune_eval_every or config.eval_every
    return {
        **arm.overrides,
        **{f"sweep.{axis}": tuple(grid) for axis, grid in arm.tune.items()},
        "sweep.seed": tuple(study.tune_seeds), "validation_fraction": study.validation_fraction,
        "num_steps": steps, "eval_every": every, "checkpoint_every": _checkpoint_every(
            config.checkpoint_every, every, steps),
        # A setting that diverges is information for the choice, not an error.
        "nonfinite": "record",
    }


def _checkpoint_every(every: int, eval_every: int, steps: int) -> int:
    if not every:
        return 0
    return max(eval_every, every // eval_every * eval_every) if every < steps else steps


def final_runs(config: ml_collections.ConfigDict, arms: Sequence[Arm],
               choices: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """The final runs' engine overrides, by run name: each run's arms' overrides, their member
    values (an axis on which the arms differ swept, several such axes zipped), crossed with
    ``config.sweep.seed``, on the test split (unless the arms' overrides set a
    ``validation_fraction``).

    Raises:
      ValueError: two arms of a run with the same settings, or a setting of an axis the
        config itself sweeps.
    """
    grouped: dict[str, list[Arm]] = {}
    for arm in (a for a in arms if a.final):
        grouped.setdefault(arm.run_name, []).append(arm)
    runs = {}
    for name, members in grouped.items():
        base = override(config, members[0].overrides)
        settings = [final_settings(arm, choices) for arm in members]
        axes = [axis for axis in AXES if any(axis in s for s in settings)]
        swept = [axis for axis in axes if axis in config.sweep]
        if swept:
            raise ValueError(f"Run {name!r} sets {swept}, which config.sweep sweeps itself: "
                             "remove them from config.sweep.")
        values = {axis: tuple(s.get(axis, axis_value(base, axis)) for s in settings)
                  for axis in axes}
        if len(set(zip(*values.values(), strict=True))) < len(members):
            raise ValueError(f"The arms {[a.name for a in members]} of run {name!r} have the "
                             f"same settings {values}: members must differ.")
        varying = [axis for axis in axes if len(set(values[axis])) > 1]
        # The test split, unless the arms evaluate on a validation split themselves.
        overrides = {"validation_fraction": 0.0, **members[0].overrides,
                     **members[0].final_overrides}
        for axis in axes:
            if axis in varying:
                overrides[f"sweep.{axis}"] = values[axis]
            else:
                overrides[AXES[axis]] = values[axis][0]
        if len(varying) > 1:
            overrides["sweep_zip"] = (*config.sweep_zip, tuple(varying))
        runs[name] = overrides
    return runs


def placeholder_choices(arms: Sequence[Arm]) -> dict[str, dict[str, float]]:
    """Stand-ins for the tuned arms' choices (the first value of each grid), with which every
    final run is checked before anything trains."""
    return {arm.name: {axis: grid[0] for axis, grid in arm.tune.items()}
            for arm in arms if arm.tune}


def arm_settings(arms: Sequence[Arm], choices: Mapping[str, Mapping[str, float]]
                 ) -> dict[str, dict[str, float]]:
    """Every final arm's member values (:func:`final_settings`), by arm name."""
    return {arm.name: final_settings(arm, choices) for arm in arms if arm.final}


def protocol_keys(config: ml_collections.ConfigDict, arms: Sequence[Arm]) -> dict[str, str]:
    """The config keys the protocol sets itself, each with what to change instead: an override
    of one (e.g. on the command line) would be replaced in every run without a word.

    Tuned axes name the ``config.study`` key that holds their grid where one does.
    """
    keys = {"validation_fraction": "config.study.validation_fraction (the tuning runs' split; "
                                   "the final runs use the test split)"}
    if "seed" in config.sweep:
        keys["seed"] = "config.sweep.seed (the final runs' seeds) or config.study.tune_seeds"
    for arm in arms:
        for axis, grid in arm.tune.items():
            holders = [f"config.study.{key}" for key, value in config.study.items()
                       if isinstance(value, tuple | list) and tuple(value) == tuple(grid)]
            instead = (" or ".join(holders) or "the study's grids") + f", the grid of {axis}"
            keys.setdefault(AXES[axis], instead)
            keys.setdefault(f"sweep.{axis}", instead)
        for axis in arm.settings:
            keys.setdefault(AXES[axis], f"the study's arms: arm {arm.name!r} sets {axis}")
        for key in (*arm.overrides, *arm.final_overrides):
            keys.setdefault(key, f"config.study or the study's arms: it makes arm {arm.name!r}")
    return keys
