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

import errno
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
        from bnreg.study.records import usable_cores

        jax.config.update("jax_num_cpu_devices", usable_cores())


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
    every process but the first makes it); a directory bnreg did not make
    (:mod:`bnreg.workdir`) is refused, and so is one another process works in."""
    from bnreg.workdir import DirectoryInUseError, held, owner_of

    if not workdir.exists() or not any(workdir.iterdir()):
        return
    if owner_of(workdir) is None:
        fail(f"--overwrite refuses to delete {workdir}: bnreg did not make it (it has no "
             ".bnreg-workdir marker, no records and no runs). Pass the study's work dir.")
    if delete:
        try:
            with held(workdir):  # never under a process that works there
                shutil.rmtree(workdir)
        except DirectoryInUseError as error:
            fail(f"--overwrite: {error}")


# The data loader's fixes name its Python arguments; on the command line they are flags.
_FLAG_FIXES = {
    "pass manual_dir=": "pass --config.manual_dir=",
    "pass data_dir= / set TFDS_DATA_DIR to it":
        "pass --config.data_dir= or set TFDS_DATA_DIR to it",
    "call with download=True": "rerun the command",
}


def command_line_fixes(message: str) -> str:
    """A data error's fixes in the command line's words."""
    for python, flag in _FLAG_FIXES.items():
        message = message.replace(python, flag)
    return message


def workdir_path(text: str) -> Path:
    """``--workdir`` as a shell user means it: ``~`` expanded; an empty path or a file is a
    mistake (exit 2)."""
    if not text.strip():
        fail("--workdir is empty: pass the directory to write into.")
    path = Path(os.path.expanduser(text))
    if path.exists() and not path.is_dir():
        fail(f"--workdir {path} is a file: pass a directory.")
    return path


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
    from bnreg.config import AXES

    axes = [key for key in unknown if key.startswith("sweep.") and key[6:] in AXES]
    if axes:
        fail(f"--config.{axes[0]}: this study does not sweep {axes[0][6:]!r} (its config.sweep "
             f"holds {sorted(config.sweep)}); set config.{AXES[axes[0][6:]]} for one value.")
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
        directory = workdir_path(flags.FLAGS.workdir)
        if flags.FLAGS.analyze:
            try:
                results, *figures = study_lib.analyze(
                    study, directory / study_lib.RECORDS_DIR, directory)
            except (FileNotFoundError, ValueError) as error:
                fail(str(error))
            print(results.read_text())
            print("Figures: " + ", ".join(str(path) for path in figures))
            return
        # Orbax logs every checkpoint step at INFO, tfds a warning per data dir it looks in:
        # the progress bars and bnreg's own errors say what matters.
        logging.set_verbosity(logging.ERROR)
        use_cpu_cores()
        # Several processes meet before any of them touches a device (config.distributed).
        from bnreg import workdir as workdirs
        from bnreg.data import DatasetUnavailableError
        from bnreg.engine.devices import initialize_processes, is_main_process, wait_for_processes
        from bnreg.engine.memory import OutOfMemoryError
        from bnreg.engine.run import Interrupted

        initialize_processes(flags.FLAGS.config.distributed)
        if flags.FLAGS.overwrite:
            overwrite(directory, delete=is_main_process())
            wait_for_processes("overwrite")
        if isinstance(study, study_lib.Study):
            def run_study(config, path):
                return study_lib.run(study, config, path)
        else:  # a study on its own protocol: the work dir is checked and marked here
            owner = workdirs.study_owner(Path(study_file).stem)

            def run_study(config, path):
                workdirs.check_owner(path, owner)
                with workdirs.held(path, hold=is_main_process()):
                    workdirs.mark(path, owner, write=is_main_process())
                    return study(config, path)
        try:
            results, *figures = run_study(flags.FLAGS.config, directory)
        except DatasetUnavailableError as error:
            fail(f"error: {command_line_fixes(str(error))}")
        except (study_lib.StudyConfigError, workdirs.DirectoryInUseError,
                workdirs.NotOwnedError, workdirs.NotWritableError, OutOfMemoryError) as error:
            fail(f"error: {error}")
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            fail(f"error: the disk is full ({error.filename or 'writing'}): free space, then "
                 "rerun the same command to resume.")
        except KeyboardInterrupt as interrupt:
            said = str(interrupt) if isinstance(interrupt, Interrupted) else "interrupted"
            print(f"{said}; rerun the same command to resume.", file=sys.stderr, flush=True)
            # At once, as a kill would (every resume verifies what it reads): a normal exit
            # would wait on the checkpointer's and XLA's threads, and abort in them.
            os._exit(130)
        if is_main_process():
            print(results.read_text())
            print("Figures: " + ", ".join(str(path) for path in figures))

    app.run(run)
