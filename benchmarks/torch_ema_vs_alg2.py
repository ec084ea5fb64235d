"""A cross-check in PyTorch: do BatchNorm1d's running statistics trail Alg. 2's as bnreg's EMA does?

``experiments/bn_ema_momentum.py`` finds bnreg's EMA tracked in training behind Alg. 2's
population statistics by 0.36–1.17 points at every momentum from 0.5 to 0.999 (5 seeds,
Fashion-MNIST validation split). This
script trains the same network with the benchmark's plain PyTorch eager code
(``benchmarks/bn_mnist_study.py``: BN net, plain SGD, batch 60, the study's data arrays) and
compares, on the test set after the last step, ``BatchNorm1d``'s running statistics with Alg. 2's
(100 training batches, weights frozen, ``momentum=None``) — an implementation that shares no code
with bnreg's. Not a speed benchmark; it lives here because PyTorch is a peer of the benchmarks
only (``.venv/bin/pip install torch==2.13.0``).

Command (from the repository root; ~45 s per run on one core, so ~15 min for the default 20)::

  nohup .venv/bin/python -m benchmarks.torch_ema_vs_alg2 > /tmp/torch_ema_vs_alg2.log 2>&1 &

Results: ``benchmarks/results/torch_ema_vs_alg2.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.bn_mnist_study import RESULTS_DIR, torch_run, torch_split


def cross_check(args: argparse.Namespace) -> dict[str, Any]:
    """Trains the BN net per momentum, learning rate and seed; returns the final test accuracies
    with the running statistics and with Alg. 2's."""
    import torch

    from bnreg import engine
    from bnreg.config import override
    from experiments.bn_mnist import NETS, get_config, study_config

    torch.set_num_threads(1)
    config = override(study_config(get_config(), (args.lrs[0],)), {
        **NETS["bn"],
        "dataset": args.dataset,
        "num_steps": args.steps,
        # Alg. 2 is needed after the last step only (and the first evaluation, at step 0).
        "eval_every": args.steps,
        "checkpoint_every": 0,
    })
    run_data = engine.load_run_data(config)
    images, labels = torch_split(torch, run_data.train)
    test_images, test_labels = torch_split(torch, run_data.evaluation)
    runs = []
    for momentum in args.momenta:
        for lr in args.lrs:
            run_config = override(
                config, {"model.bn_momentum": momentum, "sweep.learning_rate": (lr,)}
            )
            for seed in args.seeds:
                history, running = torch_run(
                    torch, images, labels, test_images, test_labels, net="bn", seed=seed,
                    config=run_config, checkpoint_dir=None, study_evaluation=True,
                )
                run = {"momentum": momentum, "lr": lr, "seed": seed,
                       "alg2": history[-1]["test_accuracy"], "running": running}
                print(run, flush=True)
                runs.append(run)
    return {
        "source": run_data.source,
        "population_batches": config.evaluation.population_batches,
        "runs": runs,
    }


def write_report(result: dict[str, Any]) -> str:
    rows = []
    for momentum in result["momenta"]:
        for lr in result["lrs"]:
            runs = [r for r in result["runs"] if (r["momentum"], r["lr"]) == (momentum, lr)]
            alg2, running = (100 * np.asarray([r[k] for r in runs]) for k in ("alg2", "running"))
            gaps = alg2 - running
            rows.append([
                f"{momentum:g}", f"{1 - momentum:.3g}", f"{lr:g}",
                f"{alg2.mean():.2f} ± {alg2.std(ddof=1):.2f}",
                f"{running.mean():.2f} ± {running.std(ddof=1):.2f}",
                f"{gaps.mean():+.2f} ± {gaps.std(ddof=1):.2f}",
                ", ".join(f"{g:+.2f}" for g in gaps),
            ])
    header = ["momentum (flax)", "BatchNorm1d `momentum`", "lr", "Alg. 2", "running stats",
              "Alg. 2 − running", "per seed"]
    return "\n".join([
        "# PyTorch cross-check: BatchNorm1d running statistics vs Alg. 2",
        "",
        f"Measured {result['date']} ({result['machine']['processor']}). Dataset "
        f"**{result['dataset']}** ({result['source']}), test set; the BN study's BN net in "
        f"PyTorch eager (1 thread), plain SGD, batch 60, {result['steps']} steps, seeds "
        f"{result['seeds']}; Alg. 2 over {result['population_batches']} training batches after "
        "the last step. Test "
        "accuracy in %, gaps in points, mean ± std over seeds.",
        "",
        common.markdown_table(header, rows),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--momenta", default="0.99,0.9", help="flax convention, comma-separated")
    parser.add_argument("--lrs", default="0.1,2", help="learning rates, comma-separated")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "torch_ema_vs_alg2")
    args = parser.parse_args()
    args.momenta = [float(m) for m in args.momenta.split(",")]
    args.lrs = [float(lr) for lr in args.lrs.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": common.machine_load(),
        "dataset": args.dataset,
        "steps": args.steps,
        "seeds": args.seeds,
        "momenta": args.momenta,
        "lrs": args.lrs,
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
        **cross_check(args),
    }
    common.write_results(args.output, result, write_report)


if __name__ == "__main__":
    main()
