"""The command line every study shares: ``python -m experiments.<study> --workdir --config``.

A study module ends with ``if __name__ == "__main__": cli.main(__file__, STUDY,
workdir="runs/<study>")`` (its :class:`bnreg.study.Study`, or a ``run_study(config, workdir)``
function for a study not yet on the study layer). Its command takes ``--workdir`` (where results,
figures, records and the engine's run directories go; rerunning with the same one resumes where
the study stopped), ``--config`` (the study module itself, ``--config=experiments/<study>.py:smoke``
for a variant), ``--config.<key>=<value>`` overrides, which must name existing keys (an unknown
one is an error that names it, before anything runs, and so is a key the study's protocol sets
itself in every run — a tuned axis, an arm's structure, the seeds, the validation split —
naming what to change instead: :func:`bnreg.study.protocol_keys`), ``--overwrite``, which
deletes the work dir first (without it, a work dir is resumed and never overwritten by another
config), and
``--analyze``, which rewrites ``results.md`` and the figures in ``--workdir`` from the records in
``--workdir/records`` alone — no training, no run directories (e.g. a committed
``experiments/results/<study>_<dataset>``).

On a CPU the command gives XLA one device per core (``jax_num_cpu_devices``), so the runs of a
group train at the same time, one device each, and a run's members spread over the devices
(``bnreg.engine.devices``): for networks this small that beats XLA's intra-op threading
(benchmarks/README.md). An ``XLA_FLAGS`` that sets ``--xla_force_host_platform_device_count``
itself is left as it is; accelerators are not affected. ``--config.mesh.*`` lays a run out over
the devices and ``--config.distributed.*`` starts several processes (README "Scaling out").
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import ml_collections

RunStudy = Callable[[ml_collections.ConfigDict, Path], Sequence[Path]]
if TYPE_CHECKING:
    from bnreg.study import Study


def fail(message: str) -> NoReturn:
    """Ends the command on a mistake of its user: ``message`` as one line on stderr, exit code
    2 (a usage error, as argparse and absl give), no traceback."""
    print(message, file=sys.stderr)
    sys.exit(2)


def use_cpu_cores() -> None:
    """One XLA CPU device per core, unless ``XLA_FLAGS`` already sets a device count. Must run
    before JAX starts its backends (before anything asks for a device)."""
    import jax

    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        jax.config.update("jax_num_cpu_devices", cores or 1)


def study_config(study_file: str, argv: Sequence[str]) -> ml_collections.ConfigDict:
    """The study's config before overrides: the ``--config`` file and variant of ``argv``,
    default ``study_file``."""
    source = study_file
    for index, argument in enumerate(argv):
        if argument.startswith("--config="):
            source = argument.split("=", 1)[1]
        elif argument == "--config" and index + 1 < len(argv):
            source = argv[index + 1]
    path, _, variant = source.partition(":")
    spec = importlib.util.spec_from_file_location("_bnreg_study_config", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        return module.get_config(variant) if variant else module.get_config()
    finally:
        del sys.modules[spec.name]


def override_keys(argv: Sequence[str]) -> list[str]:
    """The dotted keys of the ``--config.<key>=<value>`` arguments of ``argv``."""
    return [argument[len("--config."):].split("=", 1)[0] for argument in argv
            if argument.startswith("--config.")]


def unknown_overrides(config: ml_collections.ConfigDict, argv: Sequence[str]) -> list[str]:
    """The ``--config.<key>`` arguments of ``argv`` whose dotted key ``config`` does not have."""
    unknown = []
    for key in override_keys(argv):
        node = config
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node.keys():
                unknown.append(key)
                break
            node = node[part]
    return unknown


def overwrite(workdir: Path, *, delete: bool = True) -> None:
    """Deletes a study's work dir (``--overwrite``; with ``delete`` False only the check, as
    every process but the first makes it); a directory that holds no study's outputs (no
    ``results.md``, no run's ``config.json`` within three levels) is refused."""
    if not workdir.exists():
        return
    outputs = [workdir / "results.md", *(p for pattern in ("config.json", "*/config.json",
                                                            "*/*/config.json", "*/*/*/config.json")
                                         for p in workdir.glob(pattern))]
    if not any(path.is_file() for path in outputs):
        fail(f"--overwrite refuses to delete {workdir}: it holds no study's results "
                 "(results.md or a run's config.json). Pass the study's work dir.")
    if delete:
        shutil.rmtree(workdir)


def main(study_file: str, study: Study | RunStudy, *, workdir: str) -> None:
    """Parses the flags, runs the study (:func:`bnreg.study.run`, or ``study(config, workdir)``)
    or, with ``--analyze``, :func:`bnreg.study.analyze`, and prints its first output
    (``results.md``) and the paths of the others (the figures)."""
    from absl import app, flags, logging
    from ml_collections import config_flags

    from bnreg import study as study_lib

    arguments = sys.argv[1:]
    if any(a.lower() in ("--analyze", "--analyze=true", "--analyze=1") for a in arguments):
        if not isinstance(study, study_lib.Study):
            fail("--analyze needs a study on the study layer (bnreg.study); this one writes "
                     "its results.md only as it trains.")
        if any(a.startswith("--config") for a in arguments):
            fail("--analyze takes the config from the records (records/study.json): leave "
                     "out --config and its overrides.")
    config = study_config(study_file, arguments)
    if isinstance(study, study_lib.Study):
        protocol = study_lib.protocol_keys(config, study.arms(config))
        for key in override_keys(arguments):
            if key in protocol:
                fail(f"--config.{key} is set by the study's protocol in every run and would "
                         f"be ignored; what to change instead: {protocol[key]}.")
    unknown = unknown_overrides(config, arguments)
    if unknown:
        fail(f"Unknown config keys {unknown}: every --config.<key> must name a key of the "
                 "study's config (bnreg.config.default_config() and the study's config.study); "
                 "check the spelling.")
    flags.DEFINE_string("workdir", workdir, "Where results, figures and checkpoints go.")
    flags.DEFINE_bool("overwrite", False, "Delete --workdir first, with every result in it.")
    flags.DEFINE_bool("analyze", False, "Rewrite results.md and the figures in --workdir from "
                      "the records in --workdir/records alone, without training.")
    config_flags.DEFINE_config_file(
        "config", study_file, "The study's config file (the module; ':smoke' for smoke size)."
    )

    def run(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        if flags.FLAGS.analyze:
            directory = Path(flags.FLAGS.workdir)
            try:
                results, *figures = study_lib.analyze(
                    study, directory / study_lib.RECORDS_DIR, directory)
            except (FileNotFoundError, ValueError) as error:
                fail(str(error))
            print(results.read_text())
            print("Figures: " + ", ".join(str(path) for path in figures))
            return
        # Orbax logs every checkpoint step at INFO; the progress bars already show progress.
        logging.set_verbosity(logging.WARNING)
        use_cpu_cores()
        # Several processes meet before any of them touches a device (config.distributed).
        from bnreg.engine.devices import initialize_processes, is_main_process, wait_for_processes

        initialize_processes(flags.FLAGS.config.distributed)
        if flags.FLAGS.overwrite:
            overwrite(Path(flags.FLAGS.workdir), delete=is_main_process())
            wait_for_processes("overwrite")
        run_study = (study if not isinstance(study, study_lib.Study)
                     else lambda config, directory: study_lib.run(study, config, directory))
        try:
            results, *figures = run_study(flags.FLAGS.config, Path(flags.FLAGS.workdir))
        except study_lib.StudyConfigError as error:
            fail(f"error: {error}")
        if is_main_process():
            print(results.read_text())
            print("Figures: " + ", ".join(str(path) for path in figures))

    app.run(run)
