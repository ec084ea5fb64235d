"""Training throughput of the dropout paper's MNIST-style MLP: bnreg with and without dropout,
against PyTorch eager, side by side.

The network: 784-1024-1024-1024-10, ReLU hidden units, dropout on the input (drop rate 0.2,
retain p = 0.8) and after every hidden layer (drop rate 0.5, p = 0.5), max-norm c = 3 on each
hidden unit's incoming weights (projected after every update; the output layer is free),
lecun-normal weights, zero biases, softmax cross-entropy, SGD at lr 0.1 with momentum 0.95 (no
dampening), batches of 100 drawn from shuffled epochs of Fashion-MNIST's 60000 training images
(``--synthetic``: :func:`benchmarks.common.synthetic_mnist`'s binarized-MNIST-shaped 60000×784,
for machines without the dataset). Rows:

(a) bnreg's engine with dropout and max-norm, one member: ``bnreg.engine.build(config)``, then
    ``Engine.train(state, order, 500)`` chunk after chunk (the data order carried between
    chunks as ``train_and_evaluate`` does; no evaluations);
(a″) the same with ``model.dropout_mask_bits=16``: masks from half the random bits
    (:func:`bnreg.core.dropout.bernoulli_mask`, p resolved to 2⁻¹⁶);
(b) the same engine and config with drop rates 0 (max-norm still on): what dropout costs;
(c) PyTorch eager on CPU, ``torch.set_num_threads(2)``: ``nn.Sequential`` of ``nn.Dropout``,
    ``nn.Linear`` and ``nn.ReLU``, ``torch.optim.SGD(momentum=0.95)``, then
    ``Tensor.renorm_(2, 0, 3.0)`` on the hidden layers' weights after every step; the batch is
    gathered from the training tensor with host-drawn epoch permutations; (c′) one thread;
(d) the fp32 matmul peak: eight 2048×2048 ``jnp.matmul`` per turn, in the same rounds.

Everything is built, compiled and warmed up first (one turn each); then the rows take turns,
round robin, ``--repeats`` rounds of ``--steps`` steps per turn, the order reversed every other
round so that (a) and (b) stay next to each other and neither always goes first. A rate is the
median turn. GFLOP/s counts the forward+backward matrix products of a step analytically, as
:func:`benchmarks.common.matmul_flops_per_step` does, for this net's sizes (1.586 GFLOP per step
of 100 examples; dropout's masks and the element-wise work are not counted).

Targets: (a)/(b) ≥ 0.85 (dropout costs at most 15%); (a)/(c) ≥ 2.5; (a)'s GFLOP/s ≥ 0.6 of the
peak. The ratio of the medians decides; the median over rounds of the ratio of the two turns
of one round is shown beside it (less moved by the load between rounds, see
``benchmarks/engine_ab.py``).

PyTorch (torch==2.13.0) is not a dependency of bnreg; when ``import torch`` fails, the script
retries with ``--torch-path`` (default ``/tmp/torch_site``) appended to ``sys.path``, and
without it skips rows (c) and (c′) with a message.

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.dropout_throughput            # 3 rounds of 500 steps
  .venv/bin/python -m benchmarks.dropout_throughput --steps 50 --repeats 2 --out /tmp/dropout
  .venv/bin/python -m benchmarks.dropout_throughput --synthetic   # without Fashion-MNIST

``--steps`` must be a multiple of the chunk, ``min(500, steps)``. Results:
``<out>/dropout_throughput.json`` (every turn) and ``.md``, ``--out`` defaulting to
``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import jax
import numpy as np

from benchmarks import common
from benchmarks.common import Turn, timed_turn
from bnreg import data as data_lib
from bnreg import engine
from bnreg.config import default_config, override
from bnreg.engine import engine as engine_module

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS_NAME = "dropout_throughput"
TORCH_PATH = "/tmp/torch_site"
TORCH_VERSION = "2.13.0"

DATASET = "fashion_mnist"
HIDDEN_SIZES = (1024, 1024, 1024)
BATCH_SIZE = 100
LEARNING_RATE = 0.1
MOMENTUM = 0.95
INPUT_DROPOUT = 0.2  # drop rates: retain p = 0.8 on the input, 0.5 on hidden units
HIDDEN_DROPOUT = 0.5
MAX_NORM = 3.0
CHUNK_STEPS = 500  # steps per Engine.train call (the BN study's eval_every)
TORCH_THREADS = 2

PEAK_SIZE = 2048
PEAK_PER_TURN = 8
PEAK_FLOPS_PER_TURN = PEAK_PER_TURN * 2 * PEAK_SIZE**3

TARGET_DROPOUT = 0.85
TARGET_TORCH = 2.5
TARGET_PEAK = 0.6

Runner = Callable[[int], None]  # runs n training steps and blocks until they are done

ROWS = {
    "dropout": "(a) bnreg engine, dropout 0.2/0.5 + max-norm 3, chunks of Engine.train",
    "dropout_16bit": "(a″) the same with 16-bit masks (model.dropout_mask_bits=16)",
    "no_dropout": "(b) bnreg engine, drop rates 0 (max-norm 3), chunks of Engine.train",
    "torch_2threads": "(c) PyTorch eager, nn.Dropout + renorm_, 2 threads",
    "torch_1thread": "(c′) PyTorch eager, nn.Dropout + renorm_, 1 thread",
    "peak": "(d) peak: 2048² float32 jnp.matmul",
}


def matmul_flops_per_step(
    sizes: tuple[int, ...] = (common.INPUT_SIZE, *HIDDEN_SIZES, common.NUM_CLASSES),
    batch_size: int = BATCH_SIZE,
) -> int:
    """FLOPs of one step's matrix products, forward and backward, counted analytically as
    :func:`benchmarks.common.matmul_flops_per_step` does: ``2·B·Σ fan_in·fan_out`` forward, the
    same for the weight gradients, plus the input gradients of every layer but the first."""
    layer_macs = [a * b for a, b in itertools.pairwise(sizes)]
    forward = 2 * batch_size * sum(layer_macs)
    input_gradients = 2 * batch_size * sum(layer_macs[1:])
    return 2 * forward + input_gradients


def gflops(steps_per_second: float) -> float:
    return steps_per_second * matmul_flops_per_step() / 1e9


# --------------------------------------------------------------------------------------------
# (a, b) bnreg's engine
# --------------------------------------------------------------------------------------------


def engine_config(
    *, dropout: bool, num_steps: int, dataset: str = DATASET, mask_bits: int = 32
) -> Any:
    """The engine config of row (a) (``dropout``; (a″) with ``mask_bits=16``) or (b) (drop
    rates 0)."""
    return override(
        default_config(),
        {
            "dataset": dataset,
            "model.hidden_sizes": HIDDEN_SIZES,
            "model.activation": "relu",
            "model.input_dropout": INPUT_DROPOUT if dropout else 0.0,
            "model.hidden_dropout": HIDDEN_DROPOUT if dropout else 0.0,
            "model.dropout_mask_bits": mask_bits,
            "model.kernel_init": "lecun_normal",
            "optimizer.learning_rate": LEARNING_RATE,
            "optimizer.momentum": MOMENTUM,
            "optimizer.max_norm": MAX_NORM,
            "batch_size": BATCH_SIZE,
            "num_steps": num_steps,
            "eval_every": num_steps,
            "checkpoint_every": 0,
            "progress": False,
            "probe.layers": (),
        },
    )


def synthetic_run_data() -> engine.RunData:
    """:func:`benchmarks.common.synthetic_mnist` as a run's data (60000 train, 10000 test,
    shaped as the dataset loader's images, (N, 28, 28, 1))."""
    images, labels = common.synthetic_mnist(70_000)
    images = images.reshape(-1, 28, 28, 1)
    split = 60_000
    return engine.RunData(
        train=data_lib.Split(images[:split], labels[:split]),
        evaluation=data_lib.Split(images[split:], labels[split:]),
        evaluation_split="test",
        num_classes=common.NUM_CLASSES,
        source="benchmarks.common.synthetic_mnist: binarized-MNIST-shaped, random labels",
    )


def build_engine(config: Any, data: engine.RunData | None) -> engine.Engine:
    """``bnreg.engine.build(config)``; with ``data``, the engine's data loader is replaced by
    one that returns it (``--synthetic``), everything else as built for the dataset."""
    if data is None:
        return engine.build(config)
    with mock.patch.object(engine_module, "load_run_data", lambda _config: data):
        return engine.build(config)


class EngineRow(NamedTuple):
    run: Runner
    engine: engine.Engine
    last_loss: list[float]


def engine_runner(config: Any, data: engine.RunData | None, chunk_steps: int) -> EngineRow:
    """One member of ``config`` trained by ``Engine.train`` in calls of ``chunk_steps``."""
    built = build_engine(config, data)
    holder = [built.init(), built.empty_order()]
    last_loss = [float("nan")]

    def run(num_steps: int) -> None:
        for _ in range(num_steps // chunk_steps):
            holder[0], holder[1], losses = built.train(holder[0], holder[1], chunk_steps)
        last_loss[0] = float(losses[-1].mean())  # blocks until the chunk is done

    return EngineRow(run, built, last_loss)


# --------------------------------------------------------------------------------------------
# (c) PyTorch eager
# --------------------------------------------------------------------------------------------


def import_torch(extra_path: str) -> tuple[Any, str]:
    """``(torch, where)``, or ``(None, why)``; tries ``extra_path`` on ``sys.path`` when the
    environment has no PyTorch (it is not a dependency of bnreg)."""
    try:
        import torch

        return torch, "the environment"
    except ImportError:
        pass
    if extra_path and Path(extra_path).is_dir():
        sys.path.append(extra_path)
        try:
            import torch

            return torch, extra_path
        except ImportError as error:
            return None, f"import torch failed from {extra_path} too ({error})"
    return None, (
        f"PyTorch is not installed and {extra_path or '--torch-path'} does not hold it: rows (c)"
        f" and (c′) are skipped (`.venv/bin/pip install torch=={TORCH_VERSION}`, or pass "
        "--torch-path)"
    )


def host_batch_indices(num_examples: int, seed: int = 0):
    """Batch index arrays of shuffled epochs (drop remainder), drawn on the host."""
    rng = np.random.default_rng(seed)
    steps_per_epoch = num_examples // BATCH_SIZE
    while True:
        permutation = rng.permutation(num_examples)[: steps_per_epoch * BATCH_SIZE]
        yield from permutation.reshape(steps_per_epoch, BATCH_SIZE)


def torch_mlp(torch: Any, seed: int = 0) -> Any:
    """The net in PyTorch: ``Dropout(0.2) → (Linear → ReLU → Dropout(0.5)) × 3 → Linear``,
    weights as flax's ``lecun_normal`` (a normal truncated at ±2σ, variance 1/fan_in after
    truncation), biases 0."""
    torch.manual_seed(seed)
    layers: list[Any] = [torch.nn.Dropout(INPUT_DROPOUT)]
    fan_in = common.INPUT_SIZE
    for width in HIDDEN_SIZES:
        layers += [
            torch.nn.Linear(fan_in, width),
            torch.nn.ReLU(),
            torch.nn.Dropout(HIDDEN_DROPOUT),
        ]
        fan_in = width
    layers.append(torch.nn.Linear(fan_in, common.NUM_CLASSES))
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for module in model:
            if isinstance(module, torch.nn.Linear):
                std = (1.0 / module.in_features) ** 0.5 / 0.87962566103423978
                torch.nn.init.trunc_normal_(module.weight, 0.0, std, -2 * std, 2 * std)
                torch.nn.init.zeros_(module.bias)
    return model


class TorchRow(NamedTuple):
    run: Runner
    last_loss: list[float]


def torch_runner(torch: Any, images: np.ndarray, labels: np.ndarray, *, threads: int) -> TorchRow:
    """Per step: gather the batch, forward, backward, ``SGD.step``, then max-norm on the hidden
    layers' weights (``renorm_`` over each row, a unit's incoming weights) — with ``threads``
    intra-op threads during the turn."""
    model = torch_mlp(torch).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    hidden_weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)][:-1]
    torch_images = torch.from_numpy(np.ascontiguousarray(images.reshape(len(images), -1)))
    torch_labels = torch.from_numpy(labels).long()
    indices = host_batch_indices(len(images))
    default_threads = torch.get_num_threads()
    last_loss = [float("nan")]

    def run(num_steps: int) -> None:
        torch.set_num_threads(threads)
        try:
            for _ in range(num_steps):
                batch = torch.from_numpy(next(indices))
                optimizer.zero_grad(set_to_none=True)
                logits = model(torch_images[batch])
                loss = torch.nn.functional.cross_entropy(logits, torch_labels[batch])
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for weight in hidden_weights:
                        weight.renorm_(2, 0, MAX_NORM)
            last_loss[0] = loss.item()
        finally:
            torch.set_num_threads(default_threads)

    return TorchRow(run, last_loss)


# --------------------------------------------------------------------------------------------
# The measurement (the matmul peak, row (d), is benchmarks.common.peak_matmul_runner)
# --------------------------------------------------------------------------------------------


def round_robin(runners: dict[str, Runner], steps: int, repeats: int) -> dict[str, list[Turn]]:
    """``repeats`` rounds, every row one turn per round; every other round in reverse order."""
    turns: dict[str, list[Turn]] = {name: [] for name in runners}
    for index in range(repeats):
        order = list(runners) if index % 2 == 0 else list(reversed(runners))
        for name in order:
            turns[name].append(timed_turn(runners[name], steps))
        print(
            f"round {index + 1}/{repeats} (load {os.getloadavg()[0]:.2f}): "
            + ", ".join(
                f"{name} {rate_of(name, steps, t[-1].seconds):.1f}"
                + ("GFLOP/s" if name == "peak" else "/s")
                for name, t in turns.items()
            ),
            flush=True,
        )
    return turns


def rate_of(name: str, steps: int, seconds: float) -> float:
    """Steps/s of a turn, or GFLOP/s for the peak."""
    return PEAK_FLOPS_PER_TURN / seconds / 1e9 if name == "peak" else steps / seconds


def summarize(name: str, turns: list[Turn], steps: int) -> dict[str, Any]:
    rates = [rate_of(name, steps, t.seconds) for t in turns]
    return {
        "rate": rate_of(name, steps, statistics.median(t.seconds for t in turns)),
        "slowest": min(rates),
        "fastest": max(rates),
        "cores_used": sum(t.cpu_seconds for t in turns) / sum(t.seconds for t in turns),
        "turns": [t._asdict() for t in turns],
    }


def per_round_ratio(
    turns: dict[str, list[Turn]], numerator: str, denominator: str
) -> dict[str, float] | None:
    """The median, min and max over rounds of rate(numerator) / rate(denominator) in a round."""
    if numerator not in turns or denominator not in turns:
        return None
    ratios = [
        b.seconds / a.seconds for a, b in zip(turns[numerator], turns[denominator], strict=True)
    ]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def other_load() -> str:
    """The other busy processes (top CPU users), to record what the numbers competed with."""
    try:
        output = subprocess.run(
            ["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[1:]
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    busy = []
    for line in output:
        pid, pcpu, args = line.split(None, 2)
        if int(pid) != os.getpid() and float(pcpu) >= 20:
            busy.append(f"{args[:70]} ({pcpu}% CPU)")
    return "; ".join(busy[:4]) or "none above 20% CPU"


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}×" if value and base else "—"


def _verdict(value: float | None, target: float, *, percent: bool = False) -> str:
    if value is None:
        return "— (not measured)"
    shown = f"{100 * value:.0f}%" if percent else f"{value:.3f}×"
    return f"**{shown}** ({'met' if value >= target else 'NOT met'})"


def _round_ratio(entry: dict[str, float] | None) -> str:
    if not entry:
        return "—"
    return f"{entry['median']:.3f}× ({entry['min']:.3f}–{entry['max']:.3f})"


def write_report(result: dict[str, Any]) -> str:
    rates = result["rates"]
    peak = rates["peak"]["rate"]

    def rate(name: str) -> float | None:
        return rates[name]["rate"] if name in rates else None

    rows = []
    for name, description in ROWS.items():
        if name not in rates or name == "peak":
            continue
        entry = rates[name]
        rows.append(
            [
                description,
                f"{entry['rate']:.1f}",
                f"{entry['slowest']:.1f}–{entry['fastest']:.1f}",
                _ratio(entry["rate"], rate("no_dropout")),
                _ratio(entry["rate"], rate("torch_2threads")),
                _ratio(entry["rate"], rate("torch_1thread")),
                f"{gflops(entry['rate']):.1f}",
                f"{100 * gflops(entry['rate']) / peak:.0f}%",
                f"{entry['cores_used']:.2f}",
                f"{entry['last_loss']:.3f}",
            ]
        )
    entry = rates["peak"]
    rows.append(
        [
            ROWS["peak"],
            "—",
            f"{entry['slowest']:.0f}–{entry['fastest']:.0f} GFLOP/s",
            "—",
            "—",
            "—",
            f"{peak:.1f}",
            "100%",
            f"{entry['cores_used']:.2f}",
            "—",
        ]
    )
    machine, versions = result["machine"], result["versions"]
    targets = result["targets"]
    lines = [
        "# Training throughput: the dropout MLP (784-1024-1024-1024-10 ReLU)",
        "",
        f"Measured {result['date']} on {machine['processor']} ({machine['cpus']} cores), "
        f"jax {versions['jax']}, flax {versions['flax']}, torch {versions['torch'] or 'absent'}. "
        "Load "
        f"average (1/5/15 min) before: {result['loadavg_before']}, after: "
        f"{result['loadavg_after']}; other processes before: {result['other_load']}, after: "
        f"{result.get('other_load_after', 'not recorded')}. Every row took "
        f"{result['repeats']} turn(s) of {result['steps']} steps (bnreg: Engine.train calls of "
        f"{result['chunk_steps']} steps), round robin, every other round reversed, after a "
        "warm-up turn; rates are the median turn, *turns* the slowest and fastest. *cores used* "
        "= the process's CPU seconds / wall seconds over the row's turns; *last loss* = the "
        "training loss of the last step (a check that nothing diverged).",
        "",
        *(
            [
                "**Other processes were busy during this run**: the rates, the peak and above "
                "all PyTorch with 2 threads (its threads wait on each other when another process "
                "holds a core, benchmarks/README.md) are not those of an idle machine.",
                "",
            ]
            if any(
                not str(result.get(key, "")).startswith("none")
                for key in ("other_load", "other_load_after")
            )
            else []
        ),
        f"Data: {result['data_source']}. Dropout: drop rate {INPUT_DROPOUT} on the input, "
        f"{HIDDEN_DROPOUT} on hidden units (retain p {1 - INPUT_DROPOUT:g}/"
        f"{1 - HIDDEN_DROPOUT:g}); max-norm c = {MAX_NORM:g} on hidden units' incoming weights; "
        f"lecun-normal init; batch {BATCH_SIZE}; SGD lr {LEARNING_RATE}, momentum {MOMENTUM}. "
        f"GFLOP/s = steps/s × {matmul_flops_per_step() / 1e9:.4f} GFLOP (forward+backward "
        f"matmuls, analytic). Peak: {PEAK_SIZE}² float32 matmul in jax, same process and "
        f"rounds, **{peak:.0f} GFLOP/s**.",
        "",
        common.markdown_table(
            [
                "row",
                "steps/s",
                "turns",
                "vs (b) no dropout",
                "vs PyTorch 2 threads",
                "vs PyTorch 1 thread",
                "GFLOP/s",
                "of peak",
                "cores used",
                "last loss",
            ],
            rows,
        ),
        "",
        "Targets (the ratio of the medians decides; in brackets the median over rounds of the "
        "ratio of the two rows' turns in one round, and its range):",
        "",
        f"- (a) dropout / (b) no dropout ≥ {TARGET_DROPOUT}: "
        f"{_verdict(targets['dropout_vs_no_dropout'], TARGET_DROPOUT)} "
        f"[per round {_round_ratio(result['per_round']['dropout_vs_no_dropout'])}]; with "
        "16-bit masks (a″) "
        f"{_verdict(targets['dropout_16bit_vs_no_dropout'], TARGET_DROPOUT)} "
        f"[per round {_round_ratio(result['per_round']['dropout_16bit_vs_no_dropout'])}].",
        f"- (a) bnreg / (c) PyTorch 2 threads ≥ {TARGET_TORCH}: "
        + (
            f"{_verdict(targets['bnreg_vs_torch_2threads'], TARGET_TORCH)} "
            f"[per round {_round_ratio(result['per_round']['bnreg_vs_torch_2threads'])}]; "
            f"against 1 thread {_ratio(rate('dropout'), rate('torch_1thread'))}."
            if result["torch"]["available"]
            else f"— ({result['torch']['where']})."
        ),
        f"- (a) achieved GFLOP/s / peak ≥ {TARGET_PEAK:.0%}: "
        f"{_verdict(targets['gflops_of_peak'], TARGET_PEAK, percent=True)} "
        f"({gflops(rate('dropout')):.1f} of {peak:.1f} GFLOP/s; (b) "
        f"{100 * gflops(rate('no_dropout')) / peak:.0f}%).",
    ]
    if rate("torch_2threads"):
        needed = gflops(TARGET_TORCH * rate("torch_2threads"))
        lines.append(
            f"- Arithmetic limit: {TARGET_TORCH}× PyTorch (2 threads) is {needed:.0f} GFLOP/s of "
            f"{BATCH_SIZE}-row matmuls, {100 * needed / peak:.0f}% of the {PEAK_SIZE}² peak."
        )
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="steps per timed turn")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (turns per row)")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        help=f"results directory ({RESULTS_NAME}.json and .md are written)",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="synthetic binarized-MNIST-shaped data instead of Fashion-MNIST",
    )
    parser.add_argument(
        "--torch-path",
        default=TORCH_PATH,
        help="added to sys.path when the environment has no PyTorch",
    )
    args = parser.parse_args()
    chunk_steps = min(CHUNK_STEPS, args.steps)
    if args.steps < 1 or args.steps % chunk_steps:
        parser.error(f"--steps must be a multiple of {CHUNK_STEPS} (the chunk), or below it.")
    if args.repeats < 1:
        parser.error("--repeats must be ≥ 1.")

    import flax

    torch, torch_where = import_torch(args.torch_path)
    if torch is None:
        print(f"NOTE: {torch_where}", flush=True)
    elif not torch.__version__.startswith(TORCH_VERSION):
        print(
            f"NOTE: torch {torch.__version__} from {torch_where}; the issue asks for "
            f"{TORCH_VERSION}",
            flush=True,
        )
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": common.machine_load(),
        "versions": {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "torch": torch.__version__ if torch else None,
        },
        "torch": {
            "available": torch is not None,
            "where": torch_where,
            "default_threads": torch.get_num_threads() if torch else None,
        },
        "steps": args.steps,
        "repeats": args.repeats,
        "chunk_steps": chunk_steps,
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
        "other_load": other_load(),
        "matmul_flops_per_step": matmul_flops_per_step(),
    }

    data = synthetic_run_data() if args.synthetic else None
    dropout = engine_runner(engine_config(dropout=True, num_steps=args.steps), data, chunk_steps)
    dropout_16bit = engine_runner(
        engine_config(dropout=True, num_steps=args.steps, mask_bits=16), data, chunk_steps
    )
    no_dropout = engine_runner(
        engine_config(dropout=False, num_steps=args.steps), data, chunk_steps
    )
    run_data = dropout.engine.data
    result["data_source"] = (
        f"{DATASET if data is None else 'synthetic'} train split "
        f"{tuple(run_data.train.images.shape)} ({run_data.source})"
    )
    result["config"] = {
        "dropout": dropout.engine.config.to_dict(),
        "no_dropout": no_dropout.engine.config.to_dict(),
    }
    runners: dict[str, Runner] = {"dropout": dropout.run, "dropout_16bit": dropout_16bit.run,
                                  "no_dropout": no_dropout.run}
    losses: dict[str, list[float]] = {
        "dropout": dropout.last_loss,
        "dropout_16bit": dropout_16bit.last_loss,
        "no_dropout": no_dropout.last_loss,
    }
    if torch is not None:
        images = np.asarray(run_data.train.images, np.float32)
        labels = np.asarray(run_data.train.labels)
        for name, threads in (("torch_2threads", TORCH_THREADS), ("torch_1thread", 1)):
            row = torch_runner(torch, images, labels, threads=threads)
            runners[name], losses[name] = row.run, row.last_loss
    runners["peak"] = common.peak_matmul_runner(PEAK_SIZE, PEAK_PER_TURN)

    for name, run in runners.items():
        print(f"warm-up {name}: {timed_turn(run, args.steps).seconds:.1f} s", flush=True)
    turns = round_robin(runners, args.steps, args.repeats)

    result["rates"] = {}
    for name in runners:
        result["rates"][name] = summarize(name, turns[name], args.steps)
        if name in losses:
            result["rates"][name]["last_loss"] = losses[name][0]
    rates = {name: entry["rate"] for name, entry in result["rates"].items()}
    torch_rate = rates.get("torch_2threads")
    result["targets"] = {
        "dropout_vs_no_dropout": rates["dropout"] / rates["no_dropout"],
        "dropout_16bit_vs_no_dropout": rates["dropout_16bit"] / rates["no_dropout"],
        "bnreg_vs_torch_2threads": rates["dropout"] / torch_rate if torch_rate else None,
        "gflops_of_peak": gflops(rates["dropout"]) / rates["peak"],
    }
    result["per_round"] = {
        "dropout_vs_no_dropout": per_round_ratio(turns, "dropout", "no_dropout"),
        "dropout_16bit_vs_no_dropout": per_round_ratio(turns, "dropout_16bit", "no_dropout"),
        "bnreg_vs_torch_2threads": per_round_ratio(turns, "dropout", "torch_2threads"),
    }
    result["other_load_after"] = other_load()
    common.write_results(args.out / RESULTS_NAME, result, write_report)


if __name__ == "__main__":
    main()
