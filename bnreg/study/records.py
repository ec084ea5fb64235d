"""A study's raw records: every run's ``metrics.jsonl`` and ``summary.json``, compressed, with the
study's config, measurements of its own and the machine they were made on — everything its
results.md and figures are computed from, so that they can be regenerated (and re-analysed)
without training and without the run directories.

Layout of a records directory::

    study.json                     the study's name, its config, the machine and software
    <phase>/<run>/metrics.jsonl.gz the engine's metrics, one JSON line per evaluation and member
    <phase>/<run>/summary.json.gz  the engine's summary (the final evaluation of every member)
    extra/<name>.jsonl.gz          a study's own measurements, one JSON line per row

The phases are ``tune`` (each tuned arm's run on the validation split) and ``final`` (the final
runs on the test split). Files are gzip'd with no name and no time in their header, so the same
records are the same bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import platform
import shutil
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import ml_collections

STUDY_FILE = "study.json"
METRICS = "metrics.jsonl.gz"
SUMMARY = "summary.json.gz"
EXTRA = "extra"
PHASES = ("tune", "final")
# The packages whose versions change a study's numbers (XLA's kernels round per version).
VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy")


def _write_gzip(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as file:
        file.write(text.encode())
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(buffer.getvalue())
    temporary.replace(path)


def _read_gzip(path: Path) -> str:
    with gzip.open(path, "rt") as file:
        return file.read()


def _jsonl(rows: Iterable[Mapping]) -> str:
    return "".join(json.dumps(dict(row)) + "\n" for row in rows)


# The instruction-set extensions XLA:CPU chooses its kernels by (a different set rounds
# differently).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def _cpu() -> dict[str, Any]:
    """The CPU as ``/proc/cpuinfo`` names it (model name, family and model, the flags of
    :data:`CPU_FLAGS`) and the cores this process may use; the platform's processor string
    elsewhere."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cores = usable_cores()
    flags = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name") or platform.processor() or platform.machine(),
        "cpu_id": (f"family {fields['cpu family']}, model {fields['model']}"
                   if "cpu family" in fields and "model" in fields else "unknown"),
        "cpu_flags": " ".join(flag for flag in CPU_FLAGS if flag in flags),
        "cores": cores,
    }


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the platform has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def machine() -> dict[str, Any]:
    """What a study's numbers depend on beyond its config: the CPU (model, family and model,
    instruction-set flags, cores), the accelerator kind, and the versions of
    :data:`VERSIONED`."""
    import jax

    return {
        **_cpu(),
        "devices": sorted({device.device_kind for device in jax.devices()}),
        "python": platform.python_version(),
        **{name: metadata.version(name) for name in VERSIONED},
    }


def write_run(directory: Path, phase: str, name: str, run_dir: Path) -> None:
    """Copies run ``name``'s ``metrics.jsonl`` and ``summary.json`` (from the engine's
    ``run_dir``) into the records ``directory``, compressed."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}.")
    target = directory / phase / name
    _write_gzip(target / METRICS, (run_dir / "metrics.jsonl").read_text())
    _write_gzip(target / SUMMARY, (run_dir / "summary.json").read_text())


def write_extra(directory: Path, name: str, rows: Iterable[Mapping]) -> None:
    """A study's own measurement ``name`` (rows of JSON-able values) into the records."""
    _write_gzip(directory / EXTRA / f"{name}.jsonl.gz", _jsonl(rows))


def write_study(directory: Path, study: str, config: ml_collections.ConfigDict) -> None:
    """``study.json``: the study's name, its config and :func:`machine`."""
    text = json.dumps({"study": study, "config": json.loads(config.to_json_best_effort()),
                       "machine": machine()}, indent=2, sort_keys=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STUDY_FILE).write_text(text + "\n")


def _tuples(value: Any) -> Any:
    """JSON's lists back to the config's tuples, at any depth."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


class Records:
    """A records directory, read: the study's config, its runs' metrics and summaries, its own
    measurements.

    Raises (on construction):
      FileNotFoundError: no ``study.json`` (not a records directory).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        path = self.directory / STUDY_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: pass a study's records directory (the `records/` a "
                "study's run writes into its work dir, or a committed "
                "experiments/results/<study>_<dataset>/records).")
        study = json.loads(path.read_text())
        self.study: str = study["study"]
        self.config = ml_collections.ConfigDict(_tuples(study["config"]))
        self.machine: dict[str, Any] = study["machine"]

    def runs(self, phase: str) -> list[str]:
        """The names of the phase's runs, sorted."""
        root = self.directory / phase
        return sorted(p.name for p in root.iterdir() if (p / SUMMARY).is_file()) \
            if root.is_dir() else []

    def history(self, phase: str, name: str) -> list[dict]:
        """Run ``name``'s metrics records, one per evaluation and member."""
        text = _read_gzip(self.directory / phase / name / METRICS)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def summary(self, phase: str, name: str) -> dict:
        """Run ``name``'s summary (``members``: the final evaluation of every member)."""
        return json.loads(_read_gzip(self.directory / phase / name / SUMMARY))

    def extra(self, name: str) -> list[dict]:
        """The study's own measurement ``name``, as rows."""
        text = _read_gzip(self.directory / EXTRA / f"{name}.jsonl.gz")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def extras(self) -> list[str]:
        root = self.directory / EXTRA
        return sorted(p.name.removesuffix(".jsonl.gz") for p in root.glob("*.jsonl.gz")) \
            if root.is_dir() else []


def copy(source: Path, target: Path) -> None:
    """Copies a records directory (e.g. a work dir's into experiments/results), replacing
    ``target``."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
