"""The protocol every study follows, written once (design §9).

1. Every run of both phases is checked (:func:`bnreg.engine.check`) before the first trains; the
   final runs with stand-ins for the choices they depend on.
2. **Tune**: each tuned arm trains its grid crossed with ``config.study.tune_seeds`` as the
   members of one program, ``tune_steps`` long, on a class-stratified validation split of
   ``validation_fraction`` of the training split (the test set chooses nothing).
3. **Choose**: each tuned arm's setting with the lowest mean final validation objective, never one
   that diverged, every tuned axis flagged at an edge of its grid
   (:mod:`bnreg.study.choice`).
4. **Final**: the final arms at their settings, on the whole training split, with the seeds of
   ``config.sweep.seed`` as members, evaluated on the test split; arms of one run train as
   members of one program (:mod:`bnreg.study.arms`).
5. **Records**: every run's metrics and summary, compressed, into ``<workdir>/records``, with
   the study's own measurements (:attr:`Study.measure`) and the machine
   (:mod:`bnreg.study.records`).
6. **Analyse**: results.md and the figures from the records alone (:func:`analyze`): the claims
   table (:mod:`bnreg.study.claims`), the sweep table, the study's own sections. Regenerating
   them from the same records gives the same bytes.

A study module defines its :class:`Study` — arms, claims, sections, figures — and its config;
``python -m experiments.<study>`` runs :func:`run`, ``... --analyze`` runs :func:`analyze` on a
records directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import ml_collections

from bnreg import workdir as workdirs
from bnreg.config import override, validate_config
from bnreg.study import records as records_lib
from bnreg.study.arms import (
    Arm,
    check_arms,
    final_runs,
    placeholder_choices,
    tuning_overrides,
)
from bnreg.study.choice import sweep_lines
from bnreg.study.claims import Claim, Verdict, evaluate
from bnreg.study.report import claims_lines, machine_line
from bnreg.study.results import Results, load

RECORDS_DIR = "records"
RUNS_DIR = "runs"

# The protocol's keys in ``config.study`` (every study's config has them).
PROTOCOL_KEYS = {
    "tune_seeds": (0,),  # the seeds of the tuning runs (members)
    "tune_steps": 0,  # 0: config.num_steps
    "tune_eval_every": 0,  # 0: config.eval_every
    "validation_fraction": 1 / 6,  # of the training split: 10,000 of MNIST's 60,000
}


class StudyConfigError(ValueError):
    """A config or arm that a run of the study cannot take, found before anything trains (the
    command line prints it as one line)."""


class Study(NamedTuple):
    """A study: what it trains, what it claims, what it reports.

    Attributes:
      name: the module's name, e.g. ``"bn_mnist"``.
      title: results.md's heading.
      arms: ``config -> arms`` (:class:`bnreg.study.arms.Arm`).
      claims: ``config -> claims`` (:class:`bnreg.study.claims.Claim`), exactly one primary.
      setup: ``results -> lines``: the data, nets and protocol, said once at the top.
      sections: ``(results, verdicts) -> lines``: the study's own tables after the claims.
      figures: ``(results, directory) -> paths`` of the PNGs it writes there.
      check: ``config -> None``, the study's own checks of its config (raises ValueError),
        made before anything is written.
      measure: ``(config, runs, results) -> {name: rows}``: measurements of the study's own
        that need the trained states (``runs``: final run name -> the engine's RunResult),
        stored with the records; None for none.
      objective: the metric each tuned arm minimises on validation (``"error"``, ``"loss"``).
    """

    name: str
    title: str
    arms: Callable[[ml_collections.ConfigDict], Sequence[Arm]]
    claims: Callable[[ml_collections.ConfigDict], Sequence[Claim]]
    setup: Callable[[Results], list[str]]
    sections: Callable[[Results, Sequence[Verdict]], list[str]]
    figures: Callable[[Results, Path], list[Path]]
    check: Callable[[ml_collections.ConfigDict], None] | None = None
    measure: Callable[..., Mapping[str, Sequence[Mapping]]] | None = None
    objective: str = "error"


def configure(config: ml_collections.ConfigDict, variants: Mapping[str, Mapping[str, Any]],
              variant: str) -> ml_collections.ConfigDict:
    """``config`` with the dotted keys of ``variants[variant]`` set (``"full"``: none), locked:
    a study's variants (``smoke``, ``paper``, …) as data.

    Raises:
      ValueError: an unknown variant (the message lists them), or a key the config lacks
        (outside ``sweep``, whose axes a variant may add).
    """
    if variant != "full" and variant not in variants:
        raise ValueError(f"variant must be one of {['full', *variants]}, got {variant!r}.")
    for name, value in variants.get(variant, {}).items():
        *sections, key = name.split(".")
        target = config
        for section in sections:
            target = target[section]
        if key not in target and sections != ["sweep"]:
            raise ValueError(f"Variant {variant!r} sets {name!r}, which the config does not "
                             "have.")
        target[key] = value
    config.lock()
    return config


def _check_config(study: Study, config: ml_collections.ConfigDict) -> None:
    missing = [key for key in PROTOCOL_KEYS if key not in config.study]
    if missing:
        raise ValueError(f"config.study lacks the protocol's keys {missing} "
                         "(bnreg.study.PROTOCOL_KEYS).")
    # The engine's own keys first, so that a bad one is named as itself rather than by a
    # study check that reads it (a negative num_steps is not the milestones' fault); the
    # study's own before its arms are made from them.
    validate_config(config)
    if study.check:
        study.check(config)


def _check(config: ml_collections.ConfigDict, arms: Sequence[Arm]) -> None:
    from bnreg import engine

    check_arms(arms)
    for arm in (a for a in arms if a.tune):
        engine.check(override(config, tuning_overrides(config, arm)))
    for overrides in final_runs(config, arms, placeholder_choices(arms)).values():
        engine.check(override(config, overrides))


def run(study: Study, config: ml_collections.ConfigDict, workdir: str | Path) -> list[Path]:
    """Runs the protocol (module docstring) in ``workdir``: run directories under ``runs/``,
    records under ``records/``, then :func:`analyze`. Rerunning resumes where it stopped.

    Returns:
      results.md's path, then the figures'.

    One process at a time, in a directory of its own: a ``workdir`` that holds anything but
    this study's files is refused before anything is written, and the study holds its lock
    (:mod:`bnreg.workdir`).

    Raises:
      StudyConfigError: a config or arm any run cannot take, or a ``workdir`` holding what
        is not this study's (before anything is written).
      ValueError: a tuned arm whose every setting diverged.
      DirectoryInUseError: another process works in ``workdir``.
    """
    from bnreg.engine.devices import is_main_process

    workdir = Path(workdir)
    owner = workdirs.study_owner(study.name)
    try:
        workdirs.check_owner(workdir, owner)
        _check_config(study, config)
        arms = list(study.arms(config))
        _check(config, arms)
    except (ValueError, NotADirectoryError) as error:
        raise StudyConfigError(str(error)) from error
    writes = is_main_process()
    with workdirs.held(workdir, hold=writes):
        workdirs.mark(workdir, owner, write=writes)
        return _run(study, config, workdir, arms, writes)


def _run(study: Study, config: ml_collections.ConfigDict, workdir: Path, arms: Sequence[Arm],
         writes: bool) -> list[Path]:
    from bnreg import engine

    records = workdir / RECORDS_DIR
    tuned = {arm.name: tuning_overrides(config, arm) for arm in arms if arm.tune}
    if tuned:
        engine.train_group(config, tuned, workdir / RUNS_DIR / "tune")
        if writes:
            records_lib.write_study(records, study.name, config)
            for name in tuned:
                records_lib.write_run(records, "tune", name, workdir / RUNS_DIR / "tune" / name)
    partial = records_lib.Records(records) if tuned else None
    choices = ({name: choice.values for name, choice in load_choices(study, partial).items()}
               if partial else {})
    finals = final_runs(config, arms, choices)
    runs = engine.train_group(config, finals, workdir / RUNS_DIR / "final")
    if writes:
        records_lib.write_study(records, study.name, config)
        for name in finals:
            records_lib.write_run(records, "final", name, workdir / RUNS_DIR / "final" / name)
        if study.measure:
            results = load(records_lib.Records(records), study.arms, study.objective)
            for name, rows in study.measure(config, runs, results).items():
                records_lib.write_extra(records, name, rows)
    return analyze(study, records, workdir)


def load_choices(study: Study, records: records_lib.Records) -> dict:
    """Each tuned arm's choice, from the tuning runs' records."""
    from bnreg import analysis
    from bnreg.study.choice import choose

    arms = study.arms(records.config)
    return {arm.name: choose(analysis.table(records.summary("tune", arm.name)["members"]), arm,
                             study.objective)
            for arm in arms if arm.tune}


def analyze(study: Study, records_dir: str | Path, directory: str | Path) -> list[Path]:
    """Writes ``results.md`` and the figures into ``directory`` from the records in
    ``records_dir`` alone (no training, no run directories).

    Returns:
      results.md's path, then the figures'.

    Raises:
      FileNotFoundError: ``records_dir`` holds no records.
      ValueError: the records are another study's.
    """
    records = records_lib.Records(records_dir)
    if records.study != study.name:
        raise ValueError(f"{records_dir} holds the records of {records.study!r}, not of "
                         f"{study.name!r}.")
    results = load(records, study.arms, study.objective)
    verdicts = evaluate(study.claims(results.config), results)
    directory = Path(directory)
    lines = [f"# {study.title}", "", *study.setup(results), *claims_lines(verdicts, results),
             *tuning_lines(study, results), *study.sections(results, verdicts),
             machine_line(results), ""]
    path = directory / "results.md"
    path.write_text("\n".join(lines))
    return [path, *study.figures(results, directory)]


def verdicts_of(study: Study, records_dir: str | Path) -> tuple[list[Verdict], Results]:
    """A study's verdicts and results from its records (the claims page's rows)."""
    results = load(records_lib.Records(records_dir), study.arms, study.objective)
    return evaluate(study.claims(results.config), results), results


def tuning_lines(study: Study, results: Results) -> list[str]:
    """results.md's tuning section: how the tuning ran, the sweep table, every final arm's
    settings."""
    arms = list(results.arms.values())
    tuned = [arm for arm in arms if arm.tune]
    settings = [f"- {arm.label}: " + (", ".join(f"{axis} {value:g}" for axis, value in
                                              results.settings[arm.name].items()) or "as set")
                for arm in arms if arm.final]
    if not tuned:
        return ["## Final settings", "", *settings, ""]
    config, summary = results.config, results.summary("tune", tuned[0].name)
    return [
        "## Tuning on the validation split", "",
        f"{summary['num_steps']:,} steps, seeds {list(config.study.tune_seeds)}, on "
        f"{summary['num_evaluation_examples']:,} validation examples held out of the training "
        f"split (class-stratified; the test set chooses nothing). Final validation "
        f"{study.objective} in %, mean ± std over the seeds; each tuned arm's choice is the "
        "setting with the lowest mean that never diverged.", "",
        *sweep_lines(arms, results.choices, objective=study.objective),
        "Final runs' settings:", "", *settings, "",
    ]
