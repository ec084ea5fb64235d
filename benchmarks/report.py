"""The benchmarks' one table writer: every benchmark writes its result as JSON, and its markdown
report is rendered from that JSON alone.

A result (:func:`start`) holds the machine and its load, the benchmark's measurements, and what
the report shows: ``title``, ``text`` (paragraphs), ``tables`` (:func:`table`: columns of a key,
a header and a format; rows of values) and ``notes`` (bullets, e.g. targets met or not).

Command (from the repository root): render results again, e.g. after editing a format::

  .venv/bin/python -m benchmarks.report benchmarks/results/dropout_throughput.json

(results written before this module, e.g. ``results/engine_ab.json``, have reports of their own.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

Column = tuple[str, str, str]  # (key in a row, header, format: "{:.1f}", "{:.2f}×", "{}", ...)


def machine() -> dict[str, Any]:
    """The processor, the CPUs this process may use and the 1/5/15-minute load averages."""
    processor = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            processor = next((line.split(":", 1)[1].strip() for line in f
                              if line.startswith("model name")), processor)
    except OSError:
        pass
    return {"processor": processor, "cpus": os.cpu_count(),
            "cpus_allowed": sorted(os.sched_getaffinity(0)), "platform": platform.platform(),
            "loadavg": [round(v, 2) for v in os.getloadavg()]}


def other_load(own: Sequence[str] = ()) -> str:
    """The other busy processes (top CPU users, ≥ 20%), to record what the numbers competed
    with; a process whose command line names one of ``own`` is the benchmark's own."""
    try:
        lines = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"],
                               capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    busy = []
    for line in lines[1:]:
        pid, pcpu, args = line.split(None, 2)
        if int(pid) != os.getpid() and float(pcpu) >= 20 and not any(o in args for o in own):
            busy.append(f"{args[:70]} ({pcpu}% CPU)")
    return "; ".join(busy[:4]) or "none above 20% CPU"


def versions() -> dict[str, str | None]:
    """jax's and flax's versions, and PyTorch's when a peer loaded it."""
    torch = sys.modules.get("torch")
    return {"jax": metadata.version("jax"), "flax": metadata.version("flax"),
            "torch": getattr(torch, "__version__", None)}


def start(benchmark: str, title: str, **settings: Any) -> dict[str, Any]:
    """A new result: the benchmark's name, the report's title, the date, the machine and its
    load before the run, and ``settings``."""
    return {"benchmark": benchmark, "title": title, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": machine(), "other_load": other_load((benchmark,)), **settings}


def table(columns: Sequence[Column], rows: Sequence[dict[str, Any]],
          title: str | None = None) -> dict[str, Any]:
    """A table of a result: ``rows`` are dicts of values, shown by ``columns``."""
    return {"title": title, "columns": [list(c) for c in columns], "rows": list(rows)}


def cell(value: Any, fmt: str) -> str:
    """``value`` in ``fmt`` (a list or tuple fills several fields, e.g. a range); ``None`` is
    "—"."""
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return fmt.format(*value)
    return fmt.format(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def ratio_text(ratio: dict[str, float] | None, target: float | None = None) -> str:
    """A ratio of :func:`benchmarks.runner.measure` in words: the ratio of the medians, the
    per-round median and range, and the target met or not."""
    if not ratio:
        return "— (not measured)"
    text = (f"**{ratio['of_medians']:.2f}×** (per round {ratio['median']:.2f}×, "
            f"{ratio['min']:.2f}–{ratio['max']:.2f})")
    if target is not None:
        met = "met" if ratio["of_medians"] >= target else "NOT met"
        text += f" against the target {target:g}×: {met}"
    return text


def render(result: dict[str, Any]) -> str:
    """The markdown report of ``result``."""
    where, load = result["machine"], result["machine"]["loadavg"]
    found = result.get("versions", {})
    lines = [
        f"# {result['title']}", "",
        f"Measured {result['date']} on {where['processor']} ({len(where['cpus_allowed'])} of "
        f"{where['cpus']} CPUs); " + ", ".join(f"{k} {v or 'absent'}" for k, v in found.items())
        + f". Load average (1/5/15 min) before {load}, after {result.get('loadavg_after')}; "
        f"other busy processes before: {result['other_load']}, after: "
        f"{result.get('other_load_after', 'not recorded')}.", "",
    ]
    if any(not str(result.get(key, "none")).startswith("none")
           for key in ("other_load", "other_load_after")):
        lines += ["**Other processes were busy during this run**: compare the ratios, not the "
                  "rates (benchmarks/README.md).", ""]
    for paragraph in result.get("text", []):
        lines += [paragraph, ""]
    for shown in result.get("tables", []):
        if shown.get("title"):
            lines += [f"## {shown['title']}", ""]
        columns = shown["columns"]
        lines += [markdown_table([header for _, header, _ in columns],
                                 [[cell(row.get(key), fmt) for key, _, fmt in columns]
                                  for row in shown["rows"]]), ""]
    lines += [f"- {note}" for note in result.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def finish(result: dict[str, Any], out: Path, name: str) -> Path:
    """Stamps the load after the run and the versions, writes ``out/name.json`` and its report
    ``out/name.md``, prints the report and returns the JSON's path."""
    result["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    result["other_load_after"] = other_load((result["benchmark"],))
    result.setdefault("versions", versions())
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    report = render(result)
    path.with_suffix(".md").write_text(report)
    print(report, flush=True)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results .json files")
    for path in parser.parse_args(argv).results:
        path.with_suffix(".md").write_text(render(json.loads(path.read_text())))
        print(f"rendered {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
