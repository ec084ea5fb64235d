"""The command line every study shares: ``python -m experiments.<study> --workdir --config``.

A study module ends with ``if __name__ == "__main__": cli.main(__file__, run_study,
workdir="runs/<study>")``. Its command takes ``--workdir`` (where results, figures and the
engine's run directories go; rerunning with the same one resumes where the study stopped),
``--config`` (the study module itself, ``--config=experiments/<study>.py:smoke`` for a variant)
and ``--config.<key>=<value>`` overrides, which must name existing keys.

On a CPU the command gives XLA one device per core (``jax_num_cpu_devices``), so the runs of a
group train at the same time, one device each, and a run's members spread over the devices
(``bnreg.engine.devices``): for networks this small that beats XLA's intra-op threading
(benchmarks/README.md). An ``XLA_FLAGS`` that sets ``--xla_force_host_platform_device_count``
itself is left as it is; accelerators are not affected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections

RunStudy = Callable[[ml_collections.ConfigDict, Path], Sequence[Path]]


def use_cpu_cores() -> None:
    """One XLA CPU device per core, unless ``XLA_FLAGS`` already sets a device count. Must run
    before JAX starts its backends (before anything asks for a device)."""
    import jax

    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        jax.config.update("jax_num_cpu_devices", cores or 1)


def main(study_file: str, run_study: RunStudy, *, workdir: str) -> None:
    """Parses the flags, runs ``run_study(config, workdir)`` and prints its first output
    (``results.md``) and the paths of the others (the figures)."""
    from absl import app, flags, logging
    from ml_collections import config_flags

    flags.DEFINE_string("workdir", workdir, "Where results, figures and checkpoints go.")
    config_flags.DEFINE_config_file(
        "config", study_file, "The study's config file (the module; ':smoke' for smoke size)."
    )

    def run(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        # Orbax logs every checkpoint step at INFO; the progress bars already show progress.
        logging.set_verbosity(logging.WARNING)
        use_cpu_cores()
        results, *figures = run_study(flags.FLAGS.config, Path(flags.FLAGS.workdir))
        print(results.read_text())
        print("Figures: " + ", ".join(str(path) for path in figures))

    app.run(run)
