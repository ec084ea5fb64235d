"""A cross-check in PyTorch: do BatchNorm1d's running statistics trail Alg. 2's as bnreg's EMA does?

``experiments/bn_ema_momentum.py`` finds bnreg's EMA tracked in training behind Alg. 2's
population statistics at every momentum from 0.5 to 0.999. This script trains the BN study's BN
net with the benchmarks' plain PyTorch eager code (``benchmarks.torch_peers.study_run``: plain
SGD, batch 60, the study's data arrays) and compares, on the test set after the last step,
``BatchNorm1d``'s running statistics with Alg. 2's (100 training batches, weights frozen,
``momentum=None``) — an implementation that shares no code with bnreg's. Not a speed benchmark;
it lives here because PyTorch is a peer of the benchmarks only (``.venv/bin/pip install
torch==2.13.0``), and it needs PyTorch even with ``--smoke``.

Command (from the repository root; ~45 s per run on one core, so ~15 min for the default 20)::

  nohup .venv/bin/python -m benchmarks.torch_ema_vs_alg2 > /tmp/torch_ema_vs_alg2.log 2>&1 &
  .venv/bin/python -m benchmarks.torch_ema_vs_alg2 --smoke --out /tmp/smoke   # seconds, digits

Results: ``<out>/torch_ema_vs_alg2.json`` and ``.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import common, report, torch_peers

NAME = "torch_ema_vs_alg2"
SMOKE = {"steps": 40, "momenta": "0.9", "lrs": "0.1", "seeds": "0,1", "dataset": "digits",
         "population_batches": 5}


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.arguments(__doc__, steps=50_000, repeats=1)
    parser.add_argument("--momenta", default="0.99,0.9", help="flax convention, comma-separated")
    parser.add_argument("--lrs", default="0.1,2", help="learning rates, comma-separated")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--population-batches", type=int, default=100, help="Alg. 2's batches")
    args = common.parse(parser, argv, SMOKE)
    torch, where = torch_peers.load(args.torch_path)
    if torch is None:
        raise SystemExit(f"benchmarks.torch_ema_vs_alg2 needs PyTorch: {where}")
    from bnreg import engine
    from bnreg.config import override
    from experiments.bn_mnist import get_config

    torch.set_num_threads(1)
    # Alg. 2 is needed after the last step only (and at step 0, the first evaluation).
    config = override(get_config(), {
        "model.norm": "batch", "dataset": args.dataset, "num_steps": args.steps,
        "eval_every": args.steps, "checkpoint_every": 0,
        "evaluation.population_batches": args.population_batches})
    run_data = engine.load_run_data(config)
    images, labels = torch_peers.study_split(torch, run_data.train)
    test_images, test_labels = torch_peers.study_split(torch, run_data.evaluation)
    result = report.start(NAME, "PyTorch cross-check: BatchNorm1d running statistics vs Alg. 2",
                          dataset=args.dataset, source=run_data.source, steps=args.steps,
                          population_batches=args.population_batches, runs=[])
    for momentum in (float(m) for m in args.momenta.split(",")):
        for lr in (float(lr) for lr in args.lrs.split(",")):
            run_config = override(config, {"model.bn_momentum": momentum,
                                           "sweep.learning_rate": (lr,)})
            for seed in (int(s) for s in args.seeds.split(",")):
                history, running = torch_peers.study_run(
                    torch, images, labels, test_images, test_labels, net="bn", seed=seed,
                    config=run_config, checkpoint_dir=None, study_evaluation=True)
                run = {"momentum": momentum, "lr": lr, "seed": seed,
                       "alg2": history[-1]["test_accuracy"], "running": running}
                print(run, flush=True)
                result["runs"].append(run)
    describe(result)
    report.finish(result, args.out, args.name or NAME)


def describe(result: dict[str, Any]) -> None:
    """The table: per momentum and learning rate, Alg. 2's and the running statistics'
    accuracy and their gap, over seeds."""
    rows = []
    for momentum, lr in dict.fromkeys((r["momentum"], r["lr"]) for r in result["runs"]):
        runs = [r for r in result["runs"] if (r["momentum"], r["lr"]) == (momentum, lr)]
        alg2, running = (100 * np.asarray([r[k] for r in runs]) for k in ("alg2", "running"))
        gaps, ddof = alg2 - running, int(len(runs) > 1)
        rows.append({"momentum": momentum, "torch": 1 - momentum, "lr": lr,
                     "alg2": [alg2.mean(), alg2.std(ddof=ddof)],
                     "running": [running.mean(), running.std(ddof=ddof)],
                     "gap": [gaps.mean(), gaps.std(ddof=ddof)],
                     "per_seed": ", ".join(f"{g:+.2f}" for g in gaps)})
    result["text"] = [
        f"Dataset **{result['dataset']}** ({result['source']}), test set; the BN study's BN net "
        f"in PyTorch eager (1 thread), plain SGD, batch 60, {result['steps']} steps; Alg. 2 over "
        f"{result['population_batches']} training batches after the last step. Test accuracy "
        "in %, gaps in points, mean ± std over seeds."]
    result["tables"] = [report.table([
        ("momentum", "momentum (flax)", "{:g}"), ("torch", "BatchNorm1d `momentum`", "{:.3g}"),
        ("lr", "lr", "{:g}"), ("alg2", "Alg. 2", "{:.2f} ± {:.2f}"),
        ("running", "running stats", "{:.2f} ± {:.2f}"),
        ("gap", "Alg. 2 − running", "{:+.2f} ± {:.2f}"), ("per_seed", "per seed", "{}")], rows)]


if __name__ == "__main__":
    main()
