"""The engine against the commit before it, side by side in one round robin, and a 15-member
hidden-dropout sweep in one compiled program.

Rows (``benchmarks/train_throughput.py``'s network, data and turns: the BN study's BN net,
784-100-100-100-10 sigmoid, BN, batch 60, SGD lr 0.1, synthetic 60000×784 data on the device,
scan-fused chunks of 500 steps):

* **baseline 1 run / baseline 5 seeds** — a worker process of the baseline checkout
  (``--baseline``, e.g. a ``git worktree`` of the commit before the work), running *its own*
  ``benchmarks.train_throughput --worker --single`` (cwd and the head of ``PYTHONPATH`` = that
  tree), i.e. its ``bnreg_runner`` on its engine: rows (a) and (e) of train_throughput;
* **new 1 run / new 5 seeds** — the same worker of this tree, on this engine
  (:func:`benchmarks.train_throughput.bnreg_runner`);
* **new sweep** — ``config.sweep.hidden_dropout = (0.0, 0.1, 0.2, 0.3, 0.5)`` ×
  ``config.sweep.seed = (0, 1, 2)``: 15 members of the BN net in one program, in a worker of
  its own, which counts XLA's compilations (:class:`benchmarks.common.CompileCounter`) from
  before anything compiles: the training chunk's (``jit(chunk)``) must be 1 over warm-up and
  every timed turn (the jitted chunk's cache size is reported too);
* **peak** — a 2048² float32 matmul in the baseline's and the new worker (the same jnp code in
  both: a control of the machine, its ratio should be ~1.00).

With ``--diagnostics``, the sweep worker also runs 15 seeds without dropout and 15 seeds at a
fixed dropout rate of 0.2 (compiled in as a constant), to size what the sweep's traced rates
and its dropout masks cost.

Every worker compiles and warms up first, with XLA's defaults (one host device, as the committed
train_throughput rows); then the rows take turns, round robin, ``--repeats`` rounds: ``--steps``
steps per turn for the 1-run, 5-seed and peak rows, ``--sweep-steps`` for the 15-member rows
(500: 7500 member-steps, a turn about as long as a 5-seed one). The order of a round puts the
two rows of each comparison next to each other (baseline and new; the new 1 run and the sweep)
and is reversed every other round, so neither side always goes first. A rate is the median
turn. *new / baseline* is the median over rounds of the ratio of the two rows' rates in the same
round: on this shared 2-core machine the load moves between rounds (other people's test runs)
much more than between two adjacent turns, so the per-round ratio is the robust one (the ratio
of the medians is reported beside it). The sweep's member-steps/s are compared in the same way
with the new 1-run row.

Command (from the repository root; ~11 min on 2 cores, more under load)::

  git worktree add /tmp/before 035f6db    # the baseline checkout, if not there yet
  .venv/bin/python -m benchmarks.engine_ab --baseline /tmp/before --diagnostics
  # a quick look
  .venv/bin/python -m benchmarks.engine_ab --baseline /tmp/before --steps 500 --repeats 2 \\
      --output /tmp/engine_ab

Results: ``benchmarks/results/engine_ab.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks import train_throughput as tt

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]

SWEEP_RATES = (0.0, 0.1, 0.2, 0.3, 0.5)
SWEEP_SEEDS = (0, 1, 2)
# The sweep worker's runners: name -> (overrides of the BN net's config, description).
SWEEP_RUNNERS: dict[str, tuple[dict[str, Any], str]] = {
    "sweep": (
        {"sweep.hidden_dropout": SWEEP_RATES, "sweep.seed": SWEEP_SEEDS},
        f"hidden dropout {SWEEP_RATES} × seeds {SWEEP_SEEDS}: 15 members, one program",
    ),
}
DIAGNOSTIC_RUNNERS: dict[str, tuple[dict[str, Any], str]] = {
    "seeds15": ({"sweep.seed": tuple(range(15))}, "DIAGNOSTIC: 15 seeds, no dropout"),
    "dropout15": (
        {"sweep.seed": tuple(range(15)), "model.hidden_dropout": 0.2},
        "DIAGNOSTIC: 15 seeds, hidden dropout 0.2 for all (a compiled-in constant)",
    ),
}
CHUNK_NAME = "jit(chunk)"  # the training chunk's name in JAX's compile events


# --------------------------------------------------------------------------------------------
# The sweep worker (this tree)
# --------------------------------------------------------------------------------------------


def sweep_worker(args: argparse.Namespace) -> None:
    """Builds and warms the sweep's runner (and the diagnostics'), counting every XLA
    compilation from before the first; serves ``run NAME STEPS`` turns as train_throughput's
    workers do; at ``quit`` prints ``RESULT {json}`` with the compilations of each runner's
    calls (warm-up, timed turns) and the chunk's jit cache size."""
    counter = common.CompileCounter()  # before jax compiles anything
    import jax

    images, labels = common.synthetic_mnist()
    specs = dict(SWEEP_RUNNERS)
    if args.diagnostics:
        specs.update(DIAGNOSTIC_RUNNERS)
    runners, chunks, members = {}, {}, {}
    for name, (overrides, _) in specs.items():
        config = tt.bnreg_config(list(SWEEP_SEEDS), overrides)
        runners[name], chunks[name] = tt.bnreg_config_runner(images, labels, config)
        members[name] = len(tt.engine.members_from_config(config))
    compiles: dict[str, dict[str, dict[str, int]]] = {name: {} for name in runners}

    def counted(name: str, phase: str, num_steps: int) -> tt.Turn:
        before = counter.snapshot()
        turn = tt.timed_turn(runners[name], num_steps)
        tally = compiles[name].setdefault(phase, {})
        for function, count in (counter.snapshot() - before).items():
            tally[function] = tally.get(function, 0) + count
        return turn

    for name in runners:
        counted(name, "warm_up", args.steps)
    print("READY", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "quit":
            break
        turn = counted(command[1], "turns", int(command[2]))
        print(f"TURN {turn.seconds} {turn.cpu_seconds}", flush=True)
    result = {
        "devices": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "thread_affinities": common.thread_affinities(),
        "members": members,
        "compiles": compiles,
        "chunk_cache_size": {name: chunk._cache_size() for name, chunk in chunks.items()},
        "all_compiles": dict(counter.counts),
    }
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# The round robin
# --------------------------------------------------------------------------------------------


def _git(tree: Path, *command: str) -> str:
    try:
        return subprocess.run(
            ["git", "--no-optional-locks", "-C", str(tree), *command],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _tree(tree: Path) -> dict[str, Any]:
    """A tree's commit, whether it has uncommitted changes, and where its worker's ``bnreg``
    and ``benchmarks.train_throughput`` import from (checked in a process with the worker's
    cwd and ``PYTHONPATH``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    found = subprocess.run(
        [sys.executable, "-c", "import bnreg, benchmarks.train_throughput as t; "
         "print(bnreg.__file__); print(t.__file__)"],
        cwd=tree, env=env, capture_output=True, text=True,
    )
    if found.returncode:
        raise RuntimeError(f"{tree}: its worker cannot import:\n{found.stderr[-2000:]}")
    return {
        "path": str(tree),
        "commit": _git(tree, "rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(_git(tree, "status", "--porcelain")),
        "imports": found.stdout.split(),
    }


def round_robin(
    schedule: dict[str, tuple[Any, ...]], steps: dict[str, int], repeats: int
) -> tuple[dict[str, list[tt.Turn]], list[list[float]]]:
    """``repeats`` rounds, every entry one turn of ``steps[entry]`` steps per round, the order
    reversed every other round; returns the turns and the load average after each round."""
    turns: dict[str, list[tt.Turn]] = {label: [] for label in schedule}
    loads = []
    for round_index in range(repeats):
        order = list(schedule) if round_index % 2 == 0 else list(reversed(schedule))
        for label in order:
            turns[label].append(tt.take_turn(schedule[label], steps[label]))
        loads.append([round(v, 2) for v in os.getloadavg()])
        print(
            f"round {round_index + 1}/{repeats} (load {loads[-1][0]:.2f}): "
            + ", ".join(f"{label} {steps[label] / t[-1].seconds:.0f}/s"
                        for label, t in turns.items()),
            flush=True,
        )
    return turns, loads


def _paired(new: list[tt.Turn], base: list[tt.Turn], new_work: float, base_work: float) -> dict:
    """Per-round ratios of the rates ``new / base`` (``*_work``: the work of one turn)."""
    ratios = [(new_work / n.seconds) / (base_work / b.seconds)
              for n, b in zip(new, base, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "rounds": ratios}


# Rows: label -> (worker, runner, members, description), in the order of a round. Each pair is
# adjacent, and so are the sweep and the new 1 run it is compared with (the order is reversed
# every other round, so each pair's turns are always next to each other).
ROWS = {
    "baseline_peak": ("baseline", "peak", None, "baseline peak (2048² matmul)"),
    "new_peak": ("new", "peak", None, "new peak (2048² matmul)"),
    "baseline_5": ("baseline", "many", None, "baseline {members} seeds"),
    "new_5": ("new", "many", None, "new {members} seeds"),
    "baseline_1": ("baseline", "single", 1, "baseline 1 run"),
    "new_1": ("new", "single", 1, "new 1 run"),
    "new_sweep": ("sweep", "sweep", None, "new sweep: " + SWEEP_RUNNERS["sweep"][1]),
}
DIAGNOSTIC_ROWS = {
    "new_dropout15": ("sweep", "dropout15", None, DIAGNOSTIC_RUNNERS["dropout15"][1]),
    "new_seeds15": ("sweep", "seeds15", None, DIAGNOSTIC_RUNNERS["seeds15"][1]),
}
PAIRS = {"1 run": ("new_1", "baseline_1"), "5 seeds": ("new_5", "baseline_5"),
         "peak (control)": ("new_peak", "baseline_peak")}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Starts the workers, runs the round robin, and returns the result (rates, ratios, loads,
    compile counts)."""
    baseline = Path(args.baseline).resolve()
    seeds = list(range(args.members))
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": common.machine_load(),
        "steps": args.steps,
        "sweep_steps": args.sweep_steps,
        "repeats": args.repeats,
        "members": args.members,
        "trees": {"baseline": _tree(baseline), "new": _tree(REPO)},
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
        "other_load": tt.other_load(("train_throughput", "engine_ab")),
    }
    extra = ["--diagnostics"] if args.diagnostics else []
    workers = {
        "baseline": tt.RemoteWorker(args, seeds, {}, single=True, repo=baseline),
        "new": tt.RemoteWorker(args, seeds, {}, single=True),
        "sweep": tt.RemoteWorker(args, list(SWEEP_SEEDS), {}, single=False,
                                 module="benchmarks.engine_ab", extra=extra),
    }
    for worker in workers.values():
        worker.wait_ready()
    print("all workers ready", flush=True)
    rows = dict(ROWS, **(DIAGNOSTIC_ROWS if args.diagnostics else {}))
    schedule = {label: ("remote", [workers[w]], runner) for label, (w, runner, *_) in rows.items()}
    steps = {label: args.sweep_steps if worker == "sweep" else args.steps
             for label, (worker, *_) in rows.items()}
    turns, loads = round_robin(schedule, steps, args.repeats)
    infos = {name: worker.close() for name, worker in workers.items()}
    result["workers"] = infos
    result["loadavg_rounds"] = loads
    result["rates"] = {}
    work: dict[str, float] = {}  # label -> the work of one turn (member-steps, or FLOPs)
    for label, (worker, runner, count, description) in rows.items():
        if runner == "peak":
            work[label] = tt.PEAK_FLOPS_PER_TURN
            summary = tt.summarize(turns[label], work[label])
            result["rates"][label] = {"description": description, "worker": worker,
                                      "steps": 0, "gflops": summary["rate"] / 1e9, **summary}
            continue
        if count is None:
            count = infos[worker]["members"]
            count = count[runner] if isinstance(count, dict) else count
        work[label] = steps[label] * count
        summary = tt.summarize(turns[label], steps[label])
        result["rates"][label] = {
            "description": description.format(members=args.members),
            "worker": worker,
            "members": count,
            "steps": steps[label],
            "steps_per_s": summary["rate"],
            "member_steps_per_s": summary["rate"] * count,
            **summary,
        }
    rates = result["rates"]

    def value(label: str) -> float:
        entry = rates[label]
        return entry["gflops"] if "gflops" in entry else entry["member_steps_per_s"]

    def ratio(new: str, base: str) -> dict[str, Any]:
        return {"new": new, "baseline": base, "of_medians": value(new) / value(base),
                "paired": _paired(turns[new], turns[base], work[new], work[base])}

    result["ratios"] = {name: ratio(new, base) for name, (new, base) in PAIRS.items()}
    result["sweep_vs_1_run"] = ratio("new_sweep", "new_1")
    if args.diagnostics:
        result["diagnostics_vs_1_run"] = {
            label: ratio(label, "new_1") for label in DIAGNOSTIC_ROWS
        }
    sweep = infos["sweep"]
    chunk_compiles = {
        name: {phase: tally.get(CHUNK_NAME, 0) for phase, tally in phases.items()}
        for name, phases in sweep["compiles"].items()
    }
    result["sweep_compiles"] = {
        "chunk": chunk_compiles,
        "chunk_total": {name: sum(phases.values()) for name, phases in chunk_compiles.items()},
        "chunk_cache_size": sweep["chunk_cache_size"],
    }
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _ratio_cells(ratio: dict[str, Any], prefix: str = "") -> list[str]:
    p = ratio["paired"]
    return [f"{prefix}**{p['median']:.3f}** ({p['min']:.3f}–{p['max']:.3f})",
            f"{ratio['of_medians']:.3f}"]


def write_report(result: dict[str, Any]) -> str:
    rates, ratios = result["rates"], result["ratios"]
    compared = {ratio["new"]: ratio for ratio in ratios.values()}
    compared["new_sweep"] = result["sweep_vs_1_run"]
    compared.update(result.get("diagnostics_vs_1_run", {}))
    rows = []
    for label, entry in rates.items():
        peak = "gflops" in entry
        cells = ["—", "—"]
        if label in compared:
            against = "" if label in (r["new"] for r in ratios.values()) else "vs new 1 run: "
            cells = _ratio_cells(compared[label], against)
        work = tt.PEAK_FLOPS_PER_TURN / 1e9 if peak else entry["steps"] * entry["members"]
        rows.append([
            entry["description"],
            "—" if peak else entry["members"],
            "—" if peak else entry["steps"],
            "—" if peak else f"{entry['steps_per_s']:.0f}",
            f"{entry['gflops']:.0f} GFLOP/s" if peak else f"{entry['member_steps_per_s']:.0f}",
            tt.turn_range(entry, work),
            *cells,
            f"{entry['cores_used']:.2f}",
        ])
    trees = result["trees"]
    compiles = result["sweep_compiles"]
    sweep = compiles["chunk"]["sweep"]
    lines = [
        "# The engine against the commit before it, and a 15-member dropout sweep",
        "",
        f"Measured {result['date']} on {result['machine']['processor']} "
        f"({result['machine']['cpus']} cores), XLA defaults (one host device). Baseline: "
        f"`{trees['baseline']['path']}` at {trees['baseline']['commit']}"
        + (" (with uncommitted changes)" if trees["baseline"]["uncommitted_changes"] else "")
        + f"; new: this tree at {trees['new']['commit']}"
        + (" with uncommitted changes (the work measured)" if trees["new"]["uncommitted_changes"]
           else "")
        + ". Each side's own `benchmarks.train_throughput --worker --single` (rows (a) and (e) "
        "of `train_throughput.md`), the sweep in a worker of its own. Load average (1/5/15 "
        f"min) before: {result['loadavg_before']}, after: {result['loadavg_after']} (1-min after "
        f"each round: {', '.join(f'{load[0]:.2f}' for load in result['loadavg_rounds'])}); other "
        f"processes at the start: {result['other_load']}. Every row took {result['repeats']} "
        "turns (of *steps* steps), round robin after warm-up/compilation, the order reversed "
        "every other round so that the two rows of each comparison always run next to each "
        "other; rates are the median turn, *turns* the slowest and fastest turn. *new / "
        "baseline*: the median (min–max) over rounds of the ratio of the two rows' rates in the "
        "same round — what the targets use, since the load changes between rounds but little "
        "between adjacent turns; *of medians*: the ratio of the median rates.",
        "",
        "784-100-100-100-10 sigmoid, BN before each sigmoid (the BN study's BN net, momentum "
        "0.9), batch 60, SGD lr 0.1, N(0, 0.1²) init; synthetic binarized data 60000×784 on the "
        "device; scan-fused chunks of 500 steps.",
        "",
        common.markdown_table(
            ["row", "members", "steps", "steps/s", "member-steps/s", "turns",
             "new / baseline (per round)", "of medians", "cores used"],
            rows,
        ),
        "",
        "Targets:",
        "",
    ]
    for name in ("1 run", "5 seeds"):
        p = ratios[name]["paired"]
        lines.append(
            f"- new {name} within 5% of the baseline (≥ 0.95×): **{p['median']:.3f}×** "
            f"({_met(p['median'] >= 0.95)}; rounds {p['min']:.3f}–{p['max']:.3f}; ratio of "
            f"medians {ratios[name]['of_medians']:.3f})."
        )
    total = compiles["chunk_total"]["sweep"]
    s = result["sweep_vs_1_run"]["paired"]
    lines += [
        f"- the 15-member sweep compiles once: **{total}** compilation(s) of the training chunk "
        f"(`{CHUNK_NAME}`: {sweep.get('warm_up', 0)} in the warm-up, {sweep.get('turns', 0)} in "
        f"the {result['repeats']} timed turns; the jitted chunk's cache holds "
        f"{compiles['chunk_cache_size']['sweep']} entry) ({_met(total == 1)}).",
        f"- the sweep's member-steps/s ≥ the 1-run rate: **{s['median']:.2f}×** the new 1 run "
        f"({_met(s['median'] >= 1)}; rounds {s['min']:.2f}–{s['max']:.2f}; ratio of medians "
        f"{result['sweep_vs_1_run']['of_medians']:.2f}).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="/tmp/before",
                        help="the baseline checkout (a tree with the old benchmarks/)")
    parser.add_argument("--steps", type=int, default=2000,
                        help="steps per timed turn of the 1-run, 5-seed and peak rows")
    parser.add_argument("--sweep-steps", type=int, default=500,
                        help="steps per timed turn of the 15-member rows (7500 member-steps)")
    parser.add_argument("--repeats", type=int, default=21, help="timed turns per row")
    parser.add_argument("--members", type=int, default=5, help="seeds of the 5-seed rows")
    parser.add_argument("--diagnostics", action="store_true",
                        help="also 15 seeds without dropout and with a fixed rate")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "engine_ab",
        help="results path without suffix (.json and .md are written)",
    )
    # Worker mode (internal; --seeds and --single are train_throughput's worker arguments).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", default="0", help=argparse.SUPPRESS)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps % tt.CHUNK_STEPS or args.sweep_steps % tt.CHUNK_STEPS:
        parser.error(f"--steps and --sweep-steps must be multiples of {tt.CHUNK_STEPS} (the "
                     "chunk size).")
    if args.worker:
        sweep_worker(args)
        return
    result = measure(args)
    common.write_results(args.output, result, write_report)


if __name__ == "__main__":
    main()
