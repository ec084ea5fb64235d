"""Wall time of the BN study's main phase: bnreg's engine against a plain PyTorch eager script.

The phase (``experiments/bn_mnist.py``'s config): 2 nets (no BN, BN before every sigmoid) × 3
seeds × ``--steps`` (50000) SGD steps of 60 examples at one learning rate, with an evaluation on
the 10k test set at step 0 and every 500 steps, checkpoints every 5000 steps.

* **bnreg** — ``bnreg.engine.train_and_evaluate`` of the study's config (one run per net, its
  seeds vmapped in one program, progress bar off), in a fresh worker process per variant; the
  wall time includes loading the data, compiling, evaluating (with the study's probes and Alg.
  2's statistics), checkpointing. Variants: ``engine`` — the nets one after another, XLA
  defaults; ``concurrent`` — ``bnreg.engine.train_group`` as the study runs its nets: both at
  once in one process, one XLA CPU device each; ``parallel_nets`` — the two nets in two
  processes started together, each pinned to its own core; ``engine_no_evals`` (not run by
  default) — evaluations only at step 0 and the end. The variants take turns over ``--rounds``
  (``--repeats``)
  (``benchmarks.runner``, no warm-up: every turn is a fresh process); the median round stands.
* **PyTorch** — ``benchmarks.torch_peers.bn_study``: the same arrays, network, batches, the same
  evaluation schedule and work (``--torch-eval study``: the BN net with Alg. 2 statistics at
  every evaluation, the probes; ``running``: the running statistics only) and ``torch.save``
  checkpoints; nets and seeds one after another, once per ``--torch-threads`` setting, after the
  bnreg rounds.

Commands (from the repository root)::

  # the full size in the background (bash tools time out): ~15 min on 2 cores
  nohup .venv/bin/python -m benchmarks.bn_mnist_study > /tmp/bn_mnist_study.log 2>&1 &
  .venv/bin/python -m benchmarks.bn_mnist_study --steps 2000 --variants engine   # quick
  .venv/bin/python -m benchmarks.bn_mnist_study --smoke --out /tmp/smoke   # seconds, digits

Results: ``<out>/bn_mnist_study.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common, report, runner, torch_peers
from benchmarks.runner import Peer, Turn

NAME = "bn_mnist_study"
NETS = {"no_bn": {"model.norm": None}, "bn": {"model.norm": "batch"}}
VARIANTS: dict[str, dict[str, Any]] = {
    "engine": {"description": "bnreg engine as it is, XLA defaults, nets one after another"},
    "concurrent": {"description": "bnreg.engine.train_group (as the study runs its nets): the 2 "
                   "nets at once in one process, one XLA CPU device each", "concurrent": True},
    "parallel_nets": {"description": "engine; the 2 nets in 2 processes at once, pinned to core "
                      "0 / core 1", "parallel": True},
    "engine_no_evals": {"description": "DIAGNOSTIC: engine, evaluations only at step 0 and at "
                        "the end (eval_every = checkpoint_every = steps)", "no_evals": True},
}
DEFAULT_VARIANTS = ("engine", "concurrent", "parallel_nets")
SMOKE = {"steps": 40, "seeds": "0", "dataset": "digits", "variants": "concurrent",
         "repeats": 1, "torch_threads": "", "population_batches": 5}


def study_config(args: argparse.Namespace, net: str | None = None) -> Any:
    """The study's config (``experiments.bn_mnist.get_config()``) at one learning rate with the
    benchmark's dataset, steps and seeds, progress bar off; with ``net``, that net's."""
    from bnreg.config import override
    from experiments.bn_mnist import get_config

    config = get_config()
    overrides: dict[str, Any] = {
        "dataset": args.dataset, "num_steps": args.steps, "progress": False,
        "sweep.seed": tuple(int(s) for s in args.seeds.split(",")),
        "sweep.learning_rate": (args.lr,)}
    if getattr(args, "no_evals", False) or args.steps < config.eval_every:
        overrides["eval_every"] = overrides["checkpoint_every"] = args.steps
    if args.population_batches:
        overrides["evaluation.population_batches"] = args.population_batches
    return override(config, {**overrides, **(NETS[net] if net else {})})


def bnreg_worker(args: argparse.Namespace) -> None:
    """Trains the nets of ``args.nets`` in this process; prints ``RESULT {json}``."""
    if args.cpus:  # before jax's backend starts: XLA's thread pool inherits it
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    from absl import logging

    from bnreg import engine

    logging.set_verbosity(logging.WARNING)
    nets = args.nets.split(",")
    configs = [study_config(args, net) for net in nets]
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        if args.concurrent:
            group = engine.train_group(study_config(args), {net: NETS[net] for net in nets},
                                       workdir)
            runs, walls = [group[net] for net in nets], [time.perf_counter() - start] * len(nets)
        else:
            runs, walls = [], []
            for net, config in zip(nets, configs, strict=True):
                start = time.perf_counter()
                runs.append(engine.train_and_evaluate(config, Path(workdir) / net))
                walls.append(time.perf_counter() - start)
    results = {}
    for net, config, run, wall in zip(nets, configs, runs, walls, strict=True):
        members = run.summary["members"]
        results[net] = {
            "wall_s": wall, "finished_at": time.time(), "members": len(run.members),
            # The EMA's accuracy (BN net), the plain net's (no BN: no EMA evaluator).
            "final_test_accuracy": [m.get("accuracy_ema", m["accuracy"]) for m in members],
            "source": run.summary["source"].split(" prepared")[0],
            "bn_eval_statistics": config.evaluation.bn_statistics}
        print(f"  bnreg {net}: {wall:.1f} s", flush=True)
    print("RESULT " + json.dumps(results), flush=True)


def variant_peer(args: argparse.Namespace, name: str) -> Peer:
    """A variant as a peer: a turn starts its worker process(es) and lasts until the last
    net is done; its CPU seconds are the workers'; its ``info`` their results."""
    spec = VARIANTS[name]
    command = [sys.executable, "-m", "benchmarks.bn_mnist_study", "--worker", "--steps",
               str(args.steps), "--seeds", args.seeds, "--lr", str(args.lr), "--dataset",
               args.dataset, "--population-batches", str(args.population_batches or 0)]
    command += ["--no-evals"] * bool(spec.get("no_evals"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(common.REPO), os.environ.get("PYTHONPATH")])))
    if spec.get("concurrent"):
        command.append("--concurrent")  # one XLA CPU device per core, as the study's command
        if "xla_force_host_platform_device_count" not in env.get("XLA_FLAGS", ""):
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                                f"device_count={os.cpu_count()}").strip()
    groups = ([[net] for net in NETS] if spec.get("parallel") else [list(NETS)])

    def run(num_steps: int) -> Turn:
        del num_steps  # a turn is the whole phase
        before, start = os.times(), time.time()
        processes = [subprocess.Popen(
            [*command, "--nets", ",".join(nets),
             *(["--cpus", str(core)] if spec.get("parallel") else [])],
            cwd=common.REPO, env=env, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT) for core, nets in enumerate(groups)]
        nets: dict[str, Any] = {}
        for process in processes:
            output = process.communicate()[0]
            found = [line for line in output.splitlines() if line.startswith("RESULT ")]
            if process.returncode or not found:
                raise RuntimeError("bnreg worker failed:\n" + output[-4000:])
            nets.update(json.loads(found[-1][len("RESULT "):]))
        after = os.times()
        cpu = (after.children_user + after.children_system
               - before.children_user - before.children_system)
        # From the workers' start to the last net's end: start-up, imports, data count.
        wall = max(net["finished_at"] for net in nets.values()) - start
        return Turn(wall, cpu, {"nets": nets, "load_before": os.getloadavg()[0]})

    return Peer(run, spec["description"], work_per_turn=1.0, unit="phases/s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.arguments(__doc__, steps=50_000, repeats=1)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lr", type=float, default=0.1, help="the one learning rate")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--population-batches", type=int, default=0,
                        help="Alg. 2's batches (0: the study's)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"bnreg variants, comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--rounds", type=int, dest="repeats", help="= --repeats: rounds of the "
                        "bnreg variants")
    parser.add_argument("--torch-threads", default="1,0",
                        help="torch.set_num_threads settings, one PyTorch run each (0: its "
                        "default); '' skips PyTorch")
    parser.add_argument("--torch-eval", choices=("study", "running"), default="study",
                        help="the PyTorch script's evaluations: as the study's, or the running "
                        "statistics only")
    for flag in ("--worker", "--no-evals", "--concurrent"):  # a worker's (internal)
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nets", default=",".join(NETS), help=argparse.SUPPRESS)
    parser.add_argument("--cpus", default="", help=argparse.SUPPRESS)
    args = common.parse(parser, argv, SMOKE)
    if args.worker:
        bnreg_worker(args)
        return
    variants = list(dict.fromkeys(v for v in args.variants.split(",") if v))
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    bn_config = study_config(args, "bn")
    result = report.start(NAME, "The BN study's main phase: wall time, bnreg vs PyTorch eager",
                          steps=args.steps, seeds=args.seeds, lr=args.lr, dataset=args.dataset,
                          bn_momentum=bn_config.model.bn_momentum,
                          bn_statistics=bn_config.evaluation.bn_statistics)
    result["measurement"] = runner.measure({name: variant_peer(args, name) for name in variants},
                                           1, args.repeats, warm_up_steps=0)
    result["torch"] = {}
    thread_settings = [int(t) for t in args.torch_threads.split(",") if t]
    torch, where = torch_peers.load(args.torch_path) if thread_settings else (None, "not run")
    if thread_settings and torch is None:
        print(f"NOTE: {where}", flush=True)
    for threads in thread_settings if torch else ():
        with tempfile.TemporaryDirectory() as checkpoints:
            found = torch_peers.bn_study(
                torch, bn_config, list(NETS), thread_count=threads,
                study_evaluation=args.torch_eval == "study", checkpoint_dir=Path(checkpoints))
        name = f"{threads} thread{'s' * (threads > 1)}" if threads else "default threads"
        result["torch"][name] = found
    describe(result)
    report.finish(result, args.out, args.name or NAME)


def describe(result: dict[str, Any]) -> None:
    """The report's text and tables: wall times, then final accuracies."""
    rows, torch = result["measurement"]["rows"], result["torch"]
    entries = {}
    for name, row in rows.items():  # a variant's median round
        turn = row["turns"][row["median_turn"]]
        entries[f"bnreg: {name}"] = (row["label"], turn["seconds"], turn["info"]["nets"],
                                     [t["seconds"] for t in row["turns"]])
    for name, found in torch.items():
        entries[f"PyTorch eager, {name}"] = (
            f"torch.set_num_threads({found['threads']}), nets and seeds one after another, "
            f"{found['evaluation']} evaluation", found["wall_s"], found["nets"], [])
    shown = []
    for label, (setting, wall, nets, rounds) in entries.items():
        shown.append({"row": label, "setting": setting, "wall": wall,
                      "rounds": ", ".join(f"{w:.0f}" for w in rounds) if len(rounds) > 1 else "",
                      "per_net": ", ".join(f"{n} {v['wall_s']:.0f} s" for n, v in nets.items()),
                      **{f"vs {name}": found["wall_s"] / wall for name, found in torch.items()}})
    result["text"] = [
        f"Dataset **{result['dataset']}**, 2 nets × seeds {result['seeds']} × {result['steps']} "
        f"steps, lr {result['lr']}, batch 60, evaluations and checkpoints on the study's "
        f"schedule, BN momentum {result['bn_momentum']:g}; bnreg's BN net evaluates with "
        f"`evaluation.bn_statistics={result['bn_statistics']!r}` and the study's probes. Wall "
        "times include process start, data loading, compilation, evaluations and checkpoints; "
        "the bnreg variants took turns over the rounds (the median round is shown), PyTorch ran "
        "after them."]
    result["tables"] = [report.table(
        [("row", "implementation", "{}"), ("setting", "setting", "{}"),
         ("wall", "wall s", "{:.0f}"), ("rounds", "rounds", "{}"), ("per_net", "per net", "{}"),
         *((f"vs {name}", f"speed-up vs PyTorch {name}", "{:.2f}×") for name in torch)], shown)]
    accuracies = []
    for net in NETS:
        row = {"net": net}
        for label, (_, _, nets, _) in entries.items():
            values = np.asarray(nets[net]["final_test_accuracy"], dtype=float)
            row[label] = (f"{values.mean():.4f} ± {values.std():.4f} "
                          f"({', '.join(f'{v:.4f}' for v in values)})")
        accuracies.append(row)
    result["tables"].append(report.table(
        [("net", "net", "{}"), *((label, label, "{}") for label in entries)], accuracies,
        title="Final test accuracy (EMA / running statistics; mean ± std over seeds, each seed)"))


if __name__ == "__main__":
    main()
