"""Wall time of the BN study's main phase: bnreg's engine against a plain PyTorch eager script.

The phase (``experiments/bn_mnist.py``, ``study_config``): 2 nets (no BN, BN before every
sigmoid) × 3 seeds × ``--steps`` (50000) SGD steps of 60 examples at one learning rate, with an
evaluation on the 10k test set at step 0 and every 500 steps, checkpoints every 5000 steps.

* **bnreg** — ``bnreg.engine.train_and_evaluate`` with the study's engine configs
  (``study_config`` with the study's ``NETS`` overrides: one run per net, its 3 seeds vmapped in
  one program, progress bar off), in a fresh worker process per variant; wall time includes
  loading the data, compiling, evaluating (with the study's probes), checkpointing and Alg. 2's
  population statistics, i.e. everything the study runs. Variants: ``engine`` — the engine as it
  is, XLA defaults, the nets one after another; ``concurrent`` — ``bnreg.engine.train_group`` as
  the study runs its nets: both at once in one process, one XLA CPU device per core, one device
  each; ``parallel_nets`` — the two nets in two processes started together, each pinned to its
  own core with ``os.sched_setaffinity``.
* **PyTorch** — written for this benchmark: the same arrays (``bnreg.engine.load_run_data``), the
  same network (:func:`benchmarks.common.torch_mlp`), BN, plain SGD, batch 60, shuffled epochs,
  the same evaluation schedule and work (``--torch-eval study``, the default: test loss and
  accuracy in eval mode, batches of 2000, the BN net with Alg. 2 statistics from 100 fixed
  training batches at every evaluation, and the study's probes; ``--torch-eval running``: the
  running statistics only, no probes) and ``torch.save`` checkpoints every 5000 steps; 3 seeds ×
  2 nets one after another.

Commands (from the repository root)::

  # the full size in the background (bash tools time out): ~15 min on 2 cores
  nohup .venv/bin/python -m benchmarks.bn_mnist_study > /tmp/bn_mnist_study.log 2>&1 &
  # a quick run
  .venv/bin/python -m benchmarks.bn_mnist_study --steps 2000 --variants engine

Results: ``benchmarks/results/bn_mnist_study.json`` and ``.md`` (``--output`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
NETS = ("no_bn", "bn")

VARIANTS: dict[str, dict[str, Any]] = {
    "engine": {"description": "bnreg engine as it is, XLA defaults, nets one after another"},
    "concurrent": {
        "description": "bnreg.engine.train_group (as the study runs its nets): the 2 nets at "
        "once in one process, one XLA CPU device each (per-net times: the pair's)",
        "concurrent": True,
    },
    "parallel_nets": {
        "description": "engine; the 2 nets in 2 processes at once, pinned to core 0 / core 1",
        "parallel": True,
    },
    # Not run by default: sizes the evaluations' share of the engine's wall time.
    "engine_no_evals": {
        "description": "DIAGNOSTIC: engine, evaluations only at step 0 and at the end "
        "(eval_every = checkpoint_every = steps)",
        "no_evals": True,
    },
}
DEFAULT_VARIANTS = ("engine", "concurrent", "parallel_nets")


def base_engine_config(args: argparse.Namespace) -> Any:
    """The study's engine config of its main phase (``experiments.bn_mnist.study_config``) at
    one learning rate, with the benchmark's dataset, steps and seeds, progress bar off; the
    nets are its ``NETS`` overrides (:func:`study_engine_config`)."""
    from bnreg.config import override
    from experiments.bn_mnist import get_config, study_config

    overrides: dict[str, Any] = {
        "dataset": args.dataset,
        "num_steps": args.steps,
        "sweep.seed": tuple(int(s) for s in args.seeds.split(",")),
        "progress": False,
    }
    if getattr(args, "no_evals", False):
        overrides["eval_every"] = overrides["checkpoint_every"] = args.steps
    return override(study_config(get_config(), (args.lr,)), overrides)


def study_engine_config(net: str, args: argparse.Namespace) -> Any:
    """The engine config of ``net`` (``experiments.bn_mnist.NETS``) in
    :func:`base_engine_config`."""
    from bnreg.config import override
    from experiments.bn_mnist import NETS as STUDY_NETS

    return override(base_engine_config(args), STUDY_NETS[net])


# --------------------------------------------------------------------------------------------
# bnreg
# --------------------------------------------------------------------------------------------


def bnreg_worker(args: argparse.Namespace) -> None:
    """Runs ``train_and_evaluate`` for the nets in ``args.nets`` in this process; prints
    ``RESULT {json}``."""
    if args.cpus:
        # Before jax's backend starts: XLA's thread pool inherits this affinity.
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    from absl import logging

    from bnreg import engine
    from experiments.bn_mnist import NETS as STUDY_NETS

    logging.set_verbosity(logging.WARNING)
    nets = args.nets.split(",")
    configs = [study_engine_config(net, args) for net in nets]
    with tempfile.TemporaryDirectory() as workdir:
        if args.concurrent:
            start = time.perf_counter()
            group = engine.train_group(
                base_engine_config(args), {net: STUDY_NETS[net] for net in nets}, workdir
            )
            runs = [group[net] for net in nets]
            walls = [time.perf_counter() - start] * len(nets)
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
            "wall_s": wall,
            "finished_at": time.time(),
            "members": len(run.members),
            # The EMA's accuracy (BN net), the plain net's (no BN: no EMA evaluator).
            "final_test_accuracy": [m.get("accuracy_ema", m["accuracy"]) for m in members],
            "final_test_accuracy_population": [m.get("accuracy_population") for m in members],
            "source": run.summary["source"].split(" prepared")[0],
            "bn_eval_statistics": config.evaluation.bn_statistics,
        }
        print(f"  bnreg {net}: {wall:.1f} s", flush=True)
    print("RESULT " + json.dumps(results), flush=True)


def _worker_process(
    args: argparse.Namespace,
    nets: list[str],
    *,
    cpus: list[int] | None,
    no_evals: bool = False,
    concurrent: bool = False,
) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "benchmarks.bn_mnist_study",
        "--worker",
        "--nets",
        ",".join(nets),
        "--steps",
        str(args.steps),
        "--seeds",
        args.seeds,
        "--lr",
        str(args.lr),
        "--dataset",
        args.dataset,
    ]
    if cpus:
        command += ["--cpus", ",".join(map(str, cpus))]
    if no_evals:
        command.append("--no-evals")
    env = dict(os.environ)
    if concurrent:
        command.append("--concurrent")
        # One XLA CPU device per core, as experiments/bn_mnist.sh sets it.
        env.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        command, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _result_of(process: subprocess.Popen) -> dict[str, Any]:
    output = process.communicate()[0]
    for line in output.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError("bnreg worker failed:\n" + output[-4000:])


def run_bnreg_variant(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """One variant's wall time for both nets (processes started together for parallel ones)."""
    spec = VARIANTS[name]
    load = [round(v, 2) for v in os.getloadavg()]
    start = time.time()
    if spec.get("parallel"):
        processes = [
            _worker_process(args, [net], cpus=[core])
            for core, net in enumerate(NETS)
        ]
        nets = {}
        for process in processes:
            nets.update(_result_of(process))
    else:
        nets = _result_of(
            _worker_process(
                args,
                list(NETS),
                cpus=None,
                no_evals=spec.get("no_evals", False),
                concurrent=spec.get("concurrent", False),
            )
        )
    # From the workers' start to the last run's end: process start-up, imports and data loading
    # count.
    wall = max(net["finished_at"] for net in nets.values()) - start
    print(f"bnreg {name}: {wall:.1f} s", flush=True)
    return {
        "description": spec["description"],
        "wall_s": wall,
        "nets": nets,
        "loadavg_before": load,
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }


# --------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------


def torch_study(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """The study's phase in PyTorch eager, 2 nets × seeds one after another, with ``threads``
    intra-op threads (0: PyTorch's default)."""
    import torch

    from bnreg import engine

    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    load = [round(v, 2) for v in os.getloadavg()]
    start = time.perf_counter()
    config = study_engine_config("bn", args)
    run_data = engine.load_run_data(config)
    images, labels = torch_split(torch, run_data.train)
    test_images, test_labels = torch_split(torch, run_data.evaluation)
    nets: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        for net in NETS:
            net_start = time.perf_counter()
            accuracies, histories = [], []
            for seed in config.sweep.seed:
                history, final_accuracy = torch_run(
                    torch,
                    images,
                    labels,
                    test_images,
                    test_labels,
                    net=net,
                    seed=int(seed),
                    config=config,
                    checkpoint_dir=Path(checkpoint_dir),
                    study_evaluation=args.torch_eval == "study",
                )
                histories.append(history)
                accuracies.append(final_accuracy)
            nets[net] = {
                "wall_s": time.perf_counter() - net_start,
                "final_test_accuracy": accuracies,
                "evaluations": len(histories[0]),
            }
            print(f"  torch {net}: {nets[net]['wall_s']:.1f} s, {accuracies}", flush=True)
    wall = time.perf_counter() - start
    print(f"torch ({torch.get_num_threads()} threads): {wall:.1f} s", flush=True)
    result = {
        "wall_s": wall,
        "evaluation": args.torch_eval,
        "threads": torch.get_num_threads(),
        "nets": nets,
        "loadavg_before": load,
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }
    torch.set_num_threads(default_threads)
    return result


def torch_split(torch: Any, split: Any) -> tuple[Any, Any]:
    """A bnreg ``Split`` as flattened float32 images and int64 labels (the same arrays)."""
    images = np.ascontiguousarray(split.images.reshape(len(split.images), -1))
    return torch.from_numpy(images), torch.from_numpy(split.labels.astype(np.int64))


def torch_run(
    torch: Any,
    images: Any,
    labels: Any,
    test_images: Any,
    test_labels: Any,
    *,
    net: str,
    seed: int,
    config: Any,
    checkpoint_dir: Path | None,
    study_evaluation: bool,
) -> tuple[list[dict[str, Any]], float]:
    """One seed of one net; returns the evaluation history and the final test accuracy with the
    running (EMA) statistics, which the sanity table compares with bnreg's. Checkpoints go to
    ``checkpoint_dir`` every ``config.checkpoint_every`` steps (0: none, and no directory)."""
    model = common.torch_mlp(
        batch_norm=net == "bn", seed=seed, bn_momentum=config.model.bn_momentum
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=config.sweep.learning_rate[0])
    generator = torch.Generator().manual_seed(seed)
    batch_size = config.batch_size
    steps_per_epoch = len(images) // batch_size
    # Alg. 2's training batches, drawn once per run as bnreg draws them, from a generator of
    # their own so that the training order is the same in both evaluation protocols.
    population_generator = torch.Generator().manual_seed(1_000_003 + seed)
    population_batches = torch.randperm(len(images), generator=population_generator)[
        : config.evaluation.population_batches * batch_size
    ].reshape(config.evaluation.population_batches, batch_size)

    def evaluate(step: int) -> dict[str, Any]:
        if study_evaluation and net == "bn":
            with _torch_population_statistics(torch, model, images, population_batches):
                return _torch_evaluate(torch, model, test_images, test_labels, config, step, True)
        return _torch_evaluate(
            torch, model, test_images, test_labels, config, step, study_evaluation
        )

    history = [evaluate(0)]
    permutation = None
    for step in range(config.num_steps):
        position = step % steps_per_epoch
        if position == 0:
            permutation = torch.randperm(len(images), generator=generator)
        batch = permutation[position * batch_size : (position + 1) * batch_size]
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
        loss.backward()
        optimizer.step()
        done = step + 1
        if done % config.eval_every == 0 or done == config.num_steps:
            history.append(evaluate(done))
            if not np.isfinite(loss.item()):
                raise FloatingPointError(f"PyTorch {net} seed {seed}: non-finite loss at {done}")
        if config.checkpoint_every and (
            done % config.checkpoint_every == 0 or done == config.num_steps
        ):
            torch.save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": done},
                checkpoint_dir / f"{net}_{seed}.pt",
            )
    final = _torch_evaluate(torch, model, test_images, test_labels, config, done, False)
    return history, final["test_accuracy"]


@contextlib.contextmanager
def _torch_population_statistics(
    torch: Any, model: Any, images: Any, batches: Any
) -> Iterator[None]:
    """Within the block, every BatchNorm1d holds Alg. 2's statistics over ``batches`` (the
    network run in training mode with frozen weights; ``momentum=None`` makes PyTorch keep a
    cumulative average of the batch means and unbiased variances); after it, the EMA again."""
    norms = [m for m in model if isinstance(m, torch.nn.BatchNorm1d)]
    saved = [(n.running_mean.clone(), n.running_var.clone(), n.momentum) for n in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(images[batch])
    try:
        yield
    finally:
        for norm, (mean, var, momentum) in zip(norms, saved, strict=True):
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.momentum = momentum


def _torch_evaluate(
    torch: Any,
    model: Any,
    images: Any,
    labels: Any,
    config: Any,
    step: int,
    probes: bool,
) -> dict[str, Any]:
    """Test loss and accuracy in eval mode; with ``probes``, also the study's probes (the
    percentiles of the chosen units' input to the last hidden sigmoid, each hidden layer's
    mean activation and, if the config has histogram bins, histogram), as bnreg's evaluation
    computes them."""
    model.eval()
    loss_sum, correct = 0.0, 0
    probed, histograms, activation_sums = [], 0, 0
    with torch.no_grad():
        for start in range(0, len(images), config.eval_batch_size):
            x = images[start : start + config.eval_batch_size]
            preactivations, activations = [], []
            for module in model:
                if isinstance(module, torch.nn.Sigmoid):
                    preactivations.append(x)
                x = module(x)
                if isinstance(module, torch.nn.Sigmoid):
                    activations.append(x)
            target = labels[start : start + config.eval_batch_size]
            loss_sum += torch.nn.functional.cross_entropy(x, target, reduction="sum").item()
            correct += int((x.argmax(-1) == target).sum())
            if probes:
                probed.append(
                    [preactivations[layer][:, list(config.probe.units)]
                     for layer in config.probe.layers]
                )
                if config.probe.histogram_bins:
                    low, high = config.probe.histogram_range
                    batch_histograms = torch.stack(
                        [
                            torch.histc(a, bins=config.probe.histogram_bins, min=low, max=high)
                            for a in activations
                        ]
                    )
                    histograms = histograms + batch_histograms
                batch_sums = torch.stack([a.mean(1).sum() for a in activations])
                activation_sums = activation_sums + batch_sums
    record: dict[str, Any] = {
        "step": step,
        "test_loss": loss_sum / len(images),
        "test_accuracy": correct / len(images),
    }
    if probes:
        q = torch.tensor(config.probe.percentiles) / 100.0
        record["probe_percentiles"] = [
            torch.quantile(torch.cat(per_layer), q, dim=0).T.tolist()
            for per_layer in zip(*probed, strict=True)
        ]
        if config.probe.histogram_bins:
            record["activation_histogram"] = histograms.tolist()
        record["mean_activation"] = (activation_sums / len(images)).tolist()
    return record


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _accuracy_cell(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std():.4f} ({', '.join(f'{v:.4f}' for v in values)})"


def _bn_eval_statistics(result: dict[str, Any]) -> str | None:
    first = next(iter(result["bnreg"].values()), None)
    return first["nets"]["bn"].get("bn_eval_statistics") if first else None


def _torch_evaluation_text(torch_results: dict[str, Any]) -> str:
    modes = {t.get("evaluation", "running") for t in torch_results.values()}
    if modes == {"study"}:
        return (
            "The PyTorch script evaluates as the study does: the BN net with Alg. 2 statistics "
            "from 100 fixed training batches at every evaluation (BatchNorm1d with "
            "`momentum=None`, weights frozen, the EMA restored after), and the same probes "
            "(`torch.quantile`, mean activation; `torch.histc` only where the config asks for "
            "activation histograms)."
        )
    if modes == {"running"}:
        return "The PyTorch script evaluates loss and accuracy with its running statistics only."
    return "The PyTorch rows evaluate as their setting says."


def write_report(result: dict[str, Any]) -> str:
    """The markdown tables of ``result``."""
    torch_results = result.get("torch", {})
    rows = []

    def add_row(label: str, setting: str, entry: dict[str, Any]) -> None:
        per_net = ", ".join(f"{net} {entry['nets'][net]['wall_s']:.0f} s" for net in NETS)
        ratios = [f"{t['wall_s'] / entry['wall_s']:.2f}×" for t in torch_results.values()]
        wall = f"{entry['wall_s']:.0f}"
        if len(entry.get("wall_s_rounds", [])) > 1:
            wall += " (rounds: " + ", ".join(f"{w:.0f}" for w in entry["wall_s_rounds"]) + ")"
        rows.append([label, setting, wall, per_net, *ratios, entry["loadavg_before"][0]])

    for name, variant in result["bnreg"].items():
        add_row(f"bnreg: {name}", variant["description"], variant)
    for name, torch_result in torch_results.items():
        add_row(
            f"PyTorch eager, {name}",
            f"torch.set_num_threads({torch_result['threads']}), nets and seeds one after "
            f"another, {torch_result.get('evaluation', 'running')} evaluation",
            torch_result,
        )
    members = len(result["seeds"].split(","))
    lines = [
        "# The BN study's main phase: wall time, bnreg vs PyTorch eager",
        "",
        f"Measured {result['date']} on {result['machine']['processor']} "
        f"({result['machine']['cpus']} cores). Dataset **{result['dataset']}** "
        f"({result['source']}), 2 nets × {members} seeds × {result['steps']} steps, lr "
        f"{result['lr']}, batch 60, evaluation on the 10k test set at step 0 and every 500 steps, "
        "checkpoints every 5000 steps"
        + (f", BN momentum {result['bn_momentum']:g} (flax's convention; the sanity table's EMA "
           "and running statistics)" if "bn_momentum" in result else "")
        + ". Wall times include data loading, compilation, "
        "evaluations and checkpoints; the parts ran one after another, so each saw its own "
        f"background load. Load average before / after: {result['loadavg_before']} / "
        f"{result['loadavg_after']}. bnreg's BN net evaluates with the study's "
        f"`evaluation.bn_statistics={_bn_eval_statistics(result)!r}`"
        + (
            " (Alg. 2 statistics recomputed from 100 training batches at every evaluation)"
            if _bn_eval_statistics(result) == "population"
            else ""
        )
        + " and records the study's probes (percentiles, mean activations; histograms where "
        "`probe.histogram_bins` > 0). "
        + _torch_evaluation_text(torch_results),
        "",
        common.markdown_table(
            [
                "implementation",
                "setting",
                "wall s",
                "per net",
                *(f"speed-up vs PyTorch {name}" for name in torch_results),
                "load (1 min) at start",
            ],
            rows,
        ),
        "",
        "## Final test accuracy (sanity check; mean ± std over seeds, then each seed)",
        "",
    ]
    header = ["net"] + [f"bnreg {name} (EMA stats)" for name in result["bnreg"]]
    header += [f"PyTorch {name} (running stats)" for name in torch_results]
    accuracy_rows = []
    for net in NETS:
        row = [net]
        row += [
            _accuracy_cell(v["nets"][net]["final_test_accuracy"]) for v in result["bnreg"].values()
        ]
        row += [
            _accuracy_cell(t["nets"][net]["final_test_accuracy"]) for t in torch_results.values()
        ]
        accuracy_rows.append(row)
    lines += [common.markdown_table(header, accuracy_rows), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50_000, help="SGD steps per run")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lr", type=float, default=0.1, help="the one learning rate")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"bnreg variants, comma-separated, of {list(VARIANTS)}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the bnreg variants this many times, taking turns; the median round is reported "
        "(with an even count the slower of the two middle ones)",
    )
    parser.add_argument(
        "--torch-threads",
        default="1,0",
        help="comma-separated torch.set_num_threads settings for the PyTorch "
        "script, each a full run (0: PyTorch's default); '' skips PyTorch. With "
        "its default threads PyTorch collapses when another process is busy "
        "(benchmarks/README.md): use 1 on a shared machine",
    )
    parser.add_argument(
        "--torch-eval",
        choices=("study", "running"),
        default="study",
        help="the PyTorch script's evaluations: 'study' — as the study's (Alg. 2 statistics for "
        "the BN net at every evaluation, the probes); 'running' — loss and accuracy with the "
        "running statistics only (the session 1 protocol)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / "bn_mnist_study",
        help="results path without suffix (.json and .md are written)",
    )
    # Worker mode (internal).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nets", default=",".join(NETS), help=argparse.SUPPRESS)
    parser.add_argument("--cpus", default="", help=argparse.SUPPRESS)
    parser.add_argument("--no-evals", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--concurrent", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        bnreg_worker(args)
        return
    variants = list(dict.fromkeys(v for v in args.variants.split(",") if v))
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")

    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": common.machine_load(),
        "steps": args.steps,
        "seeds": args.seeds,
        "lr": args.lr,
        "bn_momentum": study_engine_config("bn", args).model.bn_momentum,
        "dataset": args.dataset,
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
        "bnreg": {},
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name in variants:
            runs[name].append(run_bnreg_variant(args, name))
    for name, variant_runs in runs.items():
        # The median round stands for the variant (with an even count, the slower middle one:
        # the conservative choice for bnreg); every round's wall time is kept.
        ordered = sorted(variant_runs, key=lambda run: run["wall_s"])
        result["bnreg"][name] = {
            **ordered[len(ordered) // 2],
            "wall_s_rounds": [run["wall_s"] for run in variant_runs],
        }
    result["torch"] = {}
    for threads in (int(t) for t in args.torch_threads.split(",") if t):
        name = f"{threads} thread{'s' if threads > 1 else ''}" if threads else "default threads"
        result["torch"][name] = torch_study(args, threads)
    first = next(iter(result["bnreg"].values()), None)
    result["source"] = first["nets"]["bn"]["source"] if first else args.dataset
    common.write_results(args.output, result, write_report)


if __name__ == "__main__":
    main()
