"""What the benchmarks share besides the runner, the report and the PyTorch peers: the BN
paper's MNIST MLP, the dropout paper's MLP, synthetic data, FLOP counts, host-drawn batches and
the command line.

The BN paper's MLP (Ioffe & Szegedy 2015, Sec. 4.1): 784-100-100-100-10, sigmoid hidden units,
BN before each sigmoid (the dense layer then has no bias), weights from N(0, 0.1²), softmax
cross-entropy, plain SGD at lr 0.1, batches of 60; BN momentum 0.99 in flax's convention
(PyTorch's ``momentum=0.01``), ε = 1e-5.

The dropout paper's MLP (``dropout_throughput``, ``data_parallel``): 784-1024-1024-1024-10 ReLU,
dropout on the input (drop rate 0.2) and after every hidden layer (0.5), max-norm c = 3 on the
hidden units' incoming weights, lecun-normal weights, SGD at lr 0.1 with momentum 0.95, batches
of 100.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

INPUT_SIZE = 784
HIDDEN_SIZES = (100, 100, 100)
NUM_CLASSES = 10
BATCH_SIZE = 60
LEARNING_RATE = 0.1
INIT_STDDEV = 0.1
BN_MOMENTUM = 0.99  # flax convention; PyTorch's momentum is 1 - 0.99 = 0.01
BN_EPSILON = 1e-5
DROPOUT_MLP = {"hidden_sizes": (1024, 1024, 1024), "input_dropout": 0.2, "hidden_dropout": 0.5,
               "max_norm": 3.0, "learning_rate": 0.1, "momentum": 0.95, "batch_size": 100}
DATASET = "fashion_mnist"  # the throughput benchmarks' dataset (--synthetic: synthetic_run_data)
RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def matmul_flops_per_step(
    sizes: Sequence[int] = (INPUT_SIZE, *HIDDEN_SIZES, NUM_CLASSES),
    batch_size: int = BATCH_SIZE,
) -> int:
    """FLOPs of one SGD step's matrix products, forward and backward, counted analytically:
    ``2·B·Σ fan_in·fan_out`` forward, the same again for the weight gradients, plus the input
    gradients of every layer but the first. Element-wise work is not counted."""
    layer_macs = [a * b for a, b in itertools.pairwise(sizes)]
    forward = 2 * batch_size * sum(layer_macs)
    return 2 * forward + 2 * batch_size * sum(layer_macs[1:])


def dropout_mlp_config(*, dropout: bool, num_steps: int, mask_bits: int = 32,
                       hidden_sizes: Sequence[int] = DROPOUT_MLP["hidden_sizes"]) -> Any:
    """The engine config of the dropout paper's MLP (drop rates 0 without ``dropout``; max-norm
    on either way), ``mask_bits`` random bits per dropout mask entry."""
    from bnreg.config import default_config, override

    net = DROPOUT_MLP
    return override(default_config(), {
        "dataset": DATASET, "model.hidden_sizes": tuple(hidden_sizes), "model.activation": "relu",
        "model.input_dropout": net["input_dropout"] if dropout else 0.0,
        "model.hidden_dropout": net["hidden_dropout"] if dropout else 0.0,
        "model.dropout_mask_bits": mask_bits, "model.kernel_init": "lecun_normal",
        "optimizer.learning_rate": net["learning_rate"], "optimizer.momentum": net["momentum"],
        "optimizer.max_norm": net["max_norm"], "batch_size": net["batch_size"],
        "num_steps": num_steps, "eval_every": num_steps, "checkpoint_every": 0,
        "progress": False, "probe.layers": (),
    })


def synthetic_mnist(
    num_examples: int = 60_000, *, seed: int = 0, on_fraction: float = 0.13
) -> tuple[np.ndarray, np.ndarray]:
    """Binarized-MNIST-shaped data: ``(N, 784)`` float32 in {0, 1} (about MNIST's 13% ink) and
    ``(N,)`` int32 labels. Content does not affect the speed of dense layers."""
    rng = np.random.default_rng(seed)
    images = (rng.random((num_examples, INPUT_SIZE)) < on_fraction).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, num_examples).astype(np.int32)
    return images, labels


def synthetic_run_data(num_train: int = 60_000, num_test: int = 10_000) -> Any:
    """:func:`synthetic_mnist` as a run's data (``bnreg.engine.RunData``, images ``(N, 28, 28,
    1)`` as the dataset loader's), for ``bnreg.engine.build(config, data=...)``."""
    from bnreg import engine
    from bnreg.data import Split

    images, labels = synthetic_mnist(num_train + num_test)
    images = images.reshape(-1, 28, 28, 1)
    return engine.RunData(
        train=Split(images[:num_train], labels[:num_train]),
        evaluation=Split(images[num_train:], labels[num_train:]),
        evaluation_split="test",
        num_classes=NUM_CLASSES,
        source="benchmarks.common.synthetic_mnist: binarized-MNIST-shaped, random labels",
    )


def host_batch_indices(num_examples: int, batch_size: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Batch index arrays of shuffled epochs (drop remainder), drawn on the host."""
    rng = np.random.default_rng(seed)
    steps_per_epoch = num_examples // batch_size
    while True:
        permutation = rng.permutation(num_examples)[: steps_per_epoch * batch_size]
        yield from permutation.reshape(steps_per_epoch, batch_size)


def arguments(description: str, *, steps: int, repeats: int = 3) -> argparse.ArgumentParser:
    """A parser with the flags every benchmark has: ``--steps`` per turn, ``--repeats`` rounds,
    ``--synthetic`` data, ``--out`` (a directory, default ``benchmarks/results``), ``--name``
    (the results' file name, default the benchmark's), ``--torch-path`` (where PyTorch is, when
    the environment has none) and ``--smoke`` (seconds, synthetic data, no PyTorch)."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=steps, help="steps per timed turn")
    parser.add_argument("--repeats", type=int, default=repeats, help="rounds (turns per row)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic data, no dataset")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the results' directory")
    parser.add_argument("--name", default=None, help="the results' file name (no suffix)")
    parser.add_argument("--torch-path", default="/tmp/torch_site",
                        help="added to sys.path when the environment has no PyTorch")
    parser.add_argument("--smoke", action="store_true",
                        help="a seconds-long run at tiny sizes on synthetic data, no PyTorch")
    return parser


def parse(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, smoke: dict[str, Any]
) -> argparse.Namespace:
    """``parser``'s arguments; with ``--smoke``, ``smoke``'s values replace theirs, the data is
    synthetic and PyTorch is off (``args.torch`` False)."""
    args = parser.parse_args(argv)
    args.torch = not args.smoke
    if args.smoke:
        for key, value in {"synthetic": True, **smoke}.items():
            setattr(args, key, value)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be ≥ 1.")
    return args
