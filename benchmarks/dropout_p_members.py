"""Members as one compiled program against the same members one by one: the Fig. 9a program of
``experiments/dropout_p.py`` (every retain p × seed of 784-256-256-256-10 ReLU, dropout on the
hidden units, max-norm, the dropout recipe, batches of 100, 16-bit masks), side by side.

Rows, each trained with ``Engine.train`` in chunks of ``--chunk`` steps (no evaluations):

(a) one program: the study's final ``fixed_n`` run, its ``len(p) × len(seeds)`` members
    vmapped together (p a traced drop rate);
(b) one by one: the same members as single-member engines (each p its own static rate, so its
    own compiled program), trained one after the other for the same steps.

Both are built, compiled and warmed up first (one chunk each; the compile times are reported
separately); then they take turns, ``--repeats`` rounds of ``--steps`` steps per member, the
order reversed every other round. A rate is member-steps/s of the median turn; the ratio of the
two turns of a round is shown beside the ratio of the medians.

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.dropout_p_members                 # 3 rounds of 200 steps
  .venv/bin/python -m benchmarks.dropout_p_members --steps 20 --repeats 1 --out /tmp/members

Results: ``<out>/dropout_p_members.json`` (every turn) and ``.md`` (``--out`` defaulting to
``benchmarks/results``). Needs Fashion-MNIST (Debian's dataset-fashion-mnist).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine_load, markdown_table, timed_turn, write_results
from benchmarks.dropout_throughput import per_round_ratio
from bnreg import engine
from bnreg.config import override
from experiments import dropout_p


def members_config(retains: tuple[float, ...]) -> Any:
    """The study's ``fixed_n`` run on Fashion-MNIST at lr0 0.3 and c 2, no progress bar."""
    config = dropout_p.get_config()
    with config.unlocked():
        config.study.retain_probabilities = retains
    runs = dropout_p.final_runs(config, {"learning_rate": 0.3, "max_norm": 2.0})
    return override(config, {**runs["fixed_n"], "dataset": "fashion_mnist", "progress": False})


def one_program(config: Any, chunk: int):
    """Row (a): a runner and the compile-and-first-chunk seconds."""
    start = time.perf_counter()
    built = engine.build(config)
    holder = [built.init(), built.empty_order()]

    def run(num_steps: int) -> None:
        for _ in range(num_steps // chunk):
            holder[0], holder[1], losses = built.train(holder[0], holder[1], chunk)
        losses.block_until_ready()

    run(chunk)
    return run, time.perf_counter() - start, len(built.members)


def one_by_one(config: Any, chunk: int):
    """Row (b): every member of ``config`` as its own single-member engine, in turn."""
    start = time.perf_counter()
    singles = []
    for rate in config.sweep.hidden_dropout:
        for seed in config.sweep.seed:
            single = override(config, {"model.hidden_dropout": rate, "seed": seed,
                                       "sweep.hidden_dropout": (rate,), "sweep.seed": (seed,)})
            built = engine.build(single)
            singles.append([built, built.init(), built.empty_order()])

    def run(num_steps: int) -> None:
        for holder in singles:
            for _ in range(num_steps // chunk):
                holder[1], holder[2], losses = holder[0].train(holder[1], holder[2], chunk)
            losses.block_until_ready()

    run(chunk)
    return run, time.perf_counter() - start, len(singles)


def write_report(result: dict[str, Any]) -> str:
    rows = []
    for name, label in (("one_program", "(a) one program, every p × seed"),
                        ("one_by_one", "(b) the same members one by one")):
        entry = result[name]
        rows.append([label, entry["members"], f"{entry['member_steps_per_s']:.0f}",
                     f"{entry['slowest']:.0f}–{entry['fastest']:.0f}",
                     f"{entry['build_and_compile_s']:.1f}"])
    ratio = result["one_program"]["member_steps_per_s"] / result["one_by_one"]["member_steps_per_s"]
    rounds, machine = result["per_round_ratio"], result["machine"]
    return "\n".join([
        "# Members as one program vs one by one (the Fig. 9a program)", "",
        f"{machine['processor']} ({len(machine['cpus_allowed'])} CPUs); {result['repeats']} "
        f"rounds of {result['steps']} steps per member "
        f"(chunks of {result['chunk']}); load before {result['loadavg_before']}, after "
        f"{result['loadavg_after']}.", "",
        markdown_table(["row", "members", "member-steps/s (median turn)", "range over turns",
                        "build + compile + first chunk (s)"], rows), "",
        f"(a)/(b): **{ratio:.2f}×** (ratio of the medians); per round {rounds['median']:.2f}× "
        f"(min {rounds['min']:.2f}, max {rounds['max']:.2f}).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.steps % args.chunk:
        parser.error(f"--steps ({args.steps}) must be a multiple of --chunk ({args.chunk}).")
    config = members_config(tuple(dropout_p.get_config().study.retain_probabilities))
    rows = {"one_program": one_program(config, args.chunk),
            "one_by_one": one_by_one(config, args.chunk)}
    result: dict[str, Any] = {"machine": machine_load(), "steps": args.steps,
                              "repeats": args.repeats, "chunk": args.chunk}
    turns = {name: [] for name in rows}
    for index in range(args.repeats):
        order = list(rows) if index % 2 == 0 else list(reversed(rows))
        for name in order:
            turns[name].append(timed_turn(rows[name][0], args.steps))
        print(f"round {index + 1}/{args.repeats}: " + ", ".join(
            f"{name} {rows[name][2] * args.steps / t[-1].seconds:.0f} member-steps/s"
            for name, t in turns.items()), flush=True)
    for name, (_, compile_seconds, members) in rows.items():
        rates = [members * args.steps / t.seconds for t in turns[name]]
        result[name] = {
            "members": members, "build_and_compile_s": compile_seconds,
            "member_steps_per_s": members * args.steps / statistics.median(
                t.seconds for t in turns[name]),
            "slowest": min(rates), "fastest": max(rates),
            "turns": [t._asdict() for t in turns[name]],
        }
    result["per_round_ratio"] = per_round_ratio(turns, "one_program", "one_by_one")
    result["loadavg_before"] = result["machine"].get("loadavg")
    write_results(args.out / "dropout_p_members", result, write_report)


if __name__ == "__main__":
    main()
