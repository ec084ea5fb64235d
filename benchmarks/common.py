"""Shared pieces of the benchmarks: the BN paper's MNIST MLP's sizes and a PyTorch peer of it, the
synthetic data, FLOP count, timing, XLA compilations, and the machine's load (bnreg's engine
configuration of the network is the BN study's, ``benchmarks/train_throughput.py``).

The network (Ioffe & Szegedy 2015, Sec. 4.1): 784-100-100-100-10, sigmoid hidden units, BN before
each sigmoid (the dense layer then has no bias), weights from N(0, 0.1²), softmax cross-entropy,
plain SGD, batches of 60. BN momentum is flax's 0.99 (PyTorch ``momentum=0.01``) unless a script
passes its own (the study benchmark passes the BN study's), ε = 1e-5.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

INPUT_SIZE = 784
HIDDEN_SIZES = (100, 100, 100)
NUM_CLASSES = 10
BATCH_SIZE = 60
LEARNING_RATE = 0.1
INIT_STDDEV = 0.1
BN_MOMENTUM = 0.99  # flax convention; PyTorch's momentum is 1 - 0.99 = 0.01
BN_EPSILON = 1e-5


def matmul_flops_per_step(batch_size: int = BATCH_SIZE) -> int:
    """FLOPs of one SGD step's matrix products, forward and backward, counted analytically.

    Forward: ``2·B·Σ fan_in·fan_out`` over the four dense layers. Backward: the same again for the
    weight gradients, plus the input gradients of every layer but the first (the image needs none).
    Element-wise work (BN, sigmoid, softmax, the update) is a few percent and not counted.
    """
    sizes = (INPUT_SIZE, *HIDDEN_SIZES, NUM_CLASSES)
    layer_macs = [a * b for a, b in itertools.pairwise(sizes)]
    forward = 2 * batch_size * sum(layer_macs)
    input_gradients = 2 * batch_size * sum(layer_macs[1:])
    return 2 * forward + input_gradients


def synthetic_mnist(
    num_examples: int = 60_000, *, seed: int = 0, on_fraction: float = 0.13
) -> tuple[np.ndarray, np.ndarray]:
    """Binarized-MNIST-shaped data: ``(N, 784)`` float32 in {0, 1} (about MNIST's 13% ink after
    binarization) and ``(N,)`` int32 labels. Content does not affect the speed of dense layers."""
    rng = np.random.default_rng(seed)
    images = (rng.random((num_examples, INPUT_SIZE)) < on_fraction).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, num_examples).astype(np.int32)
    return images, labels


class Turn(NamedTuple):
    """One timed call: wall seconds and the CPU seconds its process(es) used meanwhile."""

    seconds: float
    cpu_seconds: float


def timed_turn(run: Callable[[int], None], num_steps: int) -> Turn:
    """``run(num_steps)``, timed in wall and process CPU seconds."""
    before_wall, before = time.perf_counter(), os.times()
    run(num_steps)
    after_wall, after = time.perf_counter(), os.times()
    cpu = (after.user + after.system) - (before.user + before.system)
    return Turn(after_wall - before_wall, cpu)


def peak_matmul_runner(size: int = 2048, per_turn: int = 8) -> Callable[[int], None]:
    """``per_turn`` jitted ``size × size`` float32 matmuls per call (``num_steps`` ignored):
    the fp32 peak the throughput benchmarks measure in their own rounds."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)

    def run(num_steps: int) -> None:
        del num_steps
        for _ in range(per_turn):
            out = matmul(a, b)
        out.block_until_ready()

    return run


def median_rate(seconds: list[float], work: float) -> float:
    """``work / median(seconds)``."""
    return work / statistics.median(seconds)


class CompileCounter:
    """Counts XLA compilations by function name (``jit(chunk)``, ...) from when it is made, with a
    ``jax.monitoring`` listener on JAX's backend-compile event (recorded once per executable that
    XLA compiles; a cache hit in jit records nothing)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self) -> None:
        import jax  # the PyTorch-only paths never load it

        self.counts: collections.Counter[str] = collections.Counter()
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs: Any) -> None:
        del duration
        if event == self.EVENT:
            self.counts[str(kwargs.get("fun_name", "?"))] += 1

    def snapshot(self) -> collections.Counter[str]:
        return collections.Counter(self.counts)


def machine_load() -> dict[str, Any]:
    """The 1/5/15-minute load averages and the CPUs this process may use."""
    return {
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "processor": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def thread_affinities() -> list[list[int]]:
    """The distinct CPU sets allowed to this process's threads (from ``/proc/self/task``), to
    show that pinning reached every thread, including the XLA thread pool."""
    sets = set()
    for task in os.listdir("/proc/self/task"):
        try:
            sets.add(tuple(sorted(os.sched_getaffinity(int(task)))))
        except OSError:
            continue
    return [list(s) for s in sorted(sets)]


def round_robin_arguments(description: str, *, steps: int, torch: bool) -> argparse.ArgumentParser:
    """A parser with the round-robin benchmarks' shared flags: ``--steps`` per turn,
    ``--repeats`` rounds, ``--synthetic`` data, ``--out`` (default ``benchmarks/results``) and,
    with ``torch``, ``--torch-path`` (where PyTorch is, when the environment has none)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help="steps per timed turn")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (turns per row)")
    parser.add_argument("--synthetic", action="store_true", help="without Fashion-MNIST")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    if torch:
        parser.add_argument("--torch-path", default="/tmp/torch_site")
    return parser


def write_results(
    output: Path, result: dict[str, Any], write_report: Callable[[dict[str, Any]], str]
) -> None:
    """Stamps the load after the run, writes ``output``.json and the report as ``output``.md,
    and prints the report."""
    result["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2))
    report = write_report(result)
    output.with_suffix(".md").write_text(report + "\n")
    print(report)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def torch_mlp(*, batch_norm: bool, seed: int, bn_momentum: float = BN_MOMENTUM) -> Any:
    """The network in PyTorch: ``Linear(bias=not batch_norm) → [BatchNorm1d] → Sigmoid`` × 3 →
    ``Linear``, weights from N(0, 0.1²) and biases 0 (as the flax models), BN momentum
    ``bn_momentum`` in flax's convention (PyTorch's ``momentum=1 − bn_momentum``) and ε = 1e-5."""
    import torch  # only the PyTorch peers need it; JAX worker processes never load it

    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    fan_in = INPUT_SIZE
    for width in HIDDEN_SIZES:
        layers.append(torch.nn.Linear(fan_in, width, bias=not batch_norm))
        if batch_norm:
            layers.append(torch.nn.BatchNorm1d(width, eps=BN_EPSILON, momentum=1.0 - bn_momentum))
        layers.append(torch.nn.Sigmoid())
        fan_in = width
    layers.append(torch.nn.Linear(fan_in, NUM_CLASSES))
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for module in model:
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, 0.0, INIT_STDDEV)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
    return model
