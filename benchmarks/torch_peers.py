"""The benchmarks' PyTorch peers, all in one place: PyTorch eager versions of the nets bnreg is
timed against, and the BN study's main phase as a plain PyTorch script.

PyTorch (torch==2.13.0) is not a dependency of bnreg: nothing here imports it at import time.
:func:`load` finds it (the environment, else ``--torch-path`` appended to ``sys.path``) or says
why not, and the benchmarks skip their PyTorch rows with that message. Every peer takes the
``torch`` module :func:`load` returned.
"""

from __future__ import annotations

import contextlib
import itertools
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.runner import Peer

VERSION = "2.13.0"


def load(extra_path: str = "/tmp/torch_site") -> tuple[Any, str]:
    """``(torch, where it came from)``, or ``(None, why not)``."""
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
    return None, (f"PyTorch is not installed and {extra_path or '--torch-path'} does not hold "
                  f"it: its rows are skipped (`.venv/bin/pip install torch=={VERSION}`, or pass "
                  "--torch-path)")


@contextlib.contextmanager
def threads(torch: Any, count: int | None) -> Iterator[None]:
    """``count`` intra-op threads within the block (``None``/0: PyTorch's default)."""
    default = torch.get_num_threads()
    torch.set_num_threads(count or default)
    try:
        yield
    finally:
        torch.set_num_threads(default)


def _sgd_peer(torch: Any, model: Any, params: Any, images: np.ndarray, labels: np.ndarray, *,
              lr: float, momentum: float, batch_size: int, thread_count: int | None,
              after_step: Any = None, label: str = "") -> Peer:
    """Per step: the batch gathered with host-drawn epoch permutations, forward, cross-entropy,
    backward, ``SGD.step``, then ``after_step()``; the last loss in ``info``."""
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    torch_images = torch.from_numpy(np.ascontiguousarray(images))
    torch_labels = torch.from_numpy(np.asarray(labels)).long()
    indices = common.host_batch_indices(len(images), batch_size)
    info = {"last_loss": float("nan")}

    def run(num_steps: int) -> None:
        with threads(torch, thread_count):
            for _ in range(num_steps):
                batch = torch.from_numpy(next(indices))
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(torch_images[batch]),
                                                         torch_labels[batch])
                loss.backward()
                optimizer.step()
                if after_step:
                    after_step()
            info["last_loss"] = loss.item()

    return Peer(run, label, info=info)


def _linear_init(torch: Any, model: Any, init: str) -> None:
    """Linear layers' weights as flax's ``normal(0.1)`` (``"normal"``) or ``lecun_normal`` (a
    normal truncated at ±2σ, variance 1/fan_in after truncation); biases 0."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                if init == "normal":
                    torch.nn.init.normal_(module.weight, 0.0, common.INIT_STDDEV)
                else:
                    std = (1.0 / module.in_features) ** 0.5 / 0.87962566103423978
                    torch.nn.init.trunc_normal_(module.weight, 0.0, std, -2 * std, 2 * std)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------------
# The BN paper's MNIST MLP (train_throughput, bn_mnist_study, torch_ema_vs_alg2)
# --------------------------------------------------------------------------------------------


def bn_mlp(torch: Any, *, batch_norm: bool, seed: int, bn_momentum: float = common.BN_MOMENTUM):
    """``Linear(bias=not batch_norm) → [BatchNorm1d] → Sigmoid`` × 3 → ``Linear``, weights from
    N(0, 0.1²), biases 0, BN momentum ``bn_momentum`` in flax's convention (PyTorch's
    ``momentum=1 − bn_momentum``), ε = 1e-5."""
    torch.manual_seed(seed)
    layers: list[Any] = []
    fan_in = common.INPUT_SIZE
    for width in common.HIDDEN_SIZES:
        layers.append(torch.nn.Linear(fan_in, width, bias=not batch_norm))
        if batch_norm:
            layers.append(torch.nn.BatchNorm1d(width, eps=common.BN_EPSILON,
                                               momentum=1.0 - bn_momentum))
        layers.append(torch.nn.Sigmoid())
        fan_in = width
    model = torch.nn.Sequential(*layers, torch.nn.Linear(fan_in, common.NUM_CLASSES))
    _linear_init(torch, model, "normal")
    return model


def bn_mlp_peer(torch: Any, images: np.ndarray, labels: np.ndarray, *,
                thread_count: int | None, label: str = "") -> Peer:
    """The BN MLP trained by plain SGD, batches of 60, ``thread_count`` threads (``None``:
    PyTorch's default)."""
    model = bn_mlp(torch, batch_norm=True, seed=0).train()
    return _sgd_peer(torch, model, model.parameters(), images.reshape(len(images), -1), labels,
                     lr=common.LEARNING_RATE, momentum=0.0, batch_size=common.BATCH_SIZE,
                     thread_count=thread_count, label=label)


# --------------------------------------------------------------------------------------------
# The dropout paper's MLP (dropout_throughput)
# --------------------------------------------------------------------------------------------


def dropout_mlp_peer(torch: Any, images: np.ndarray, labels: np.ndarray, *,
                     hidden_sizes: Sequence[int], input_dropout: float, hidden_dropout: float,
                     max_norm: float, learning_rate: float, momentum: float, batch_size: int,
                     thread_count: int, label: str = "") -> Peer:
    """``Dropout(input_dropout) → (Linear → ReLU → Dropout(hidden_dropout)) × n → Linear``,
    lecun-normal weights, ``SGD(momentum)``, then ``renorm_(2, 0, max_norm)`` on the hidden
    layers' weights (each unit's incoming weights) after every step."""
    torch.manual_seed(0)
    layers: list[Any] = [torch.nn.Dropout(input_dropout)]
    fan_in = common.INPUT_SIZE
    for width in hidden_sizes:
        layers += [torch.nn.Linear(fan_in, width), torch.nn.ReLU(),
                   torch.nn.Dropout(hidden_dropout)]
        fan_in = width
    model = torch.nn.Sequential(*layers, torch.nn.Linear(fan_in, common.NUM_CLASSES)).train()
    _linear_init(torch, model, "lecun_normal")
    hidden = [m.weight for m in model if isinstance(m, torch.nn.Linear)][:-1]

    def max_norm_step() -> None:
        with torch.no_grad():
            for weight in hidden:
                weight.renorm_(2, 0, max_norm)

    return _sgd_peer(torch, model, model.parameters(), images.reshape(len(images), -1), labels,
                     lr=learning_rate, momentum=momentum, batch_size=batch_size,
                     thread_count=thread_count, after_step=max_norm_step, label=label)


# --------------------------------------------------------------------------------------------
# DropConnect with a mask per example (dropconnect_throughput)
# --------------------------------------------------------------------------------------------


def dropconnect_peer(torch: Any, images: np.ndarray, labels: np.ndarray, *,
                     sizes: Sequence[int], rate: float, lr: float, momentum: float,
                     batch_size: int, thread_count: int, label: str = "") -> tuple[Peer, int]:
    """Per example, the masks of the hidden layers' weights and biases sampled as
    ``torch.rand(B, in + 1, out) < p`` (the bias a row of a constant input), the masked weights
    ``(W ⊙ M_b) / p`` applied by one ``torch.bmm``, autograd for the backward. Returns the peer
    and the growth of the process's peak resident memory over its first step (made before
    anything else grows it)."""
    torch.manual_seed(0)
    keep = 1.0 - rate
    weights = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        weight = torch.randn(fan_in + 1, fan_out) / fan_in**0.5  # the last row is the bias
        weight[-1] = 0.0
        weights.append(weight.requires_grad_())

    def forward(x):
        for index, weight in enumerate(weights):
            x = torch.cat([x, torch.ones(len(x), 1)], dim=1)
            if index < len(weights) - 1:
                masks = torch.rand(len(x), *weight.shape) < keep
                x = torch.relu(torch.bmm(x[:, None, :], weight * masks / keep)[:, 0])
            else:
                x = x @ weight
        return x

    peer = _sgd_peer(torch, forward, weights, images.reshape(len(images), -1), labels, lr=lr,
                     momentum=momentum, batch_size=batch_size, thread_count=thread_count,
                     label=label)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peer.run(1)
    return peer, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


# --------------------------------------------------------------------------------------------
# The Inception-style BN convnet (convnet_throughput)
# --------------------------------------------------------------------------------------------


def inception_net(torch: Any, model: Any, image: Sequence[int] = (28, 28, 1)) -> Any:
    """The net of ``model`` (a bnreg model config of ``name="inception"``) in ``torch.nn``
    (NCHW): ``Conv2d(bias=False) → BatchNorm2d → ReLU`` units, inception modules of four
    branches (1×1; 1×1 → 3×3; 1×1 → 3×3 → 3×3; 3×3 max- or average-pool, as
    ``model.inception_branch_pool``, → 1×1), global average pooling, a dense layer."""
    nn = torch.nn

    def conv(cin, cout, size):
        return nn.Sequential(nn.Conv2d(cin, cout, size, padding=size // 2, bias=False),
                             nn.BatchNorm2d(cout, momentum=0.01), nn.ReLU())

    class Module(nn.Module):
        def __init__(self, cin, b1, b3r, b3, b5r, b5, proj):
            super().__init__()
            self.b1 = conv(cin, b1, 1)
            self.b3 = nn.Sequential(conv(cin, b3r, 1), conv(b3r, b3, 3))
            self.b5 = nn.Sequential(conv(cin, b5r, 1), conv(b5r, b5, 3), conv(b5, b5, 3))
            pool = (nn.MaxPool2d(3, 1, 1) if model.inception_branch_pool == "max"
                    else nn.AvgPool2d(3, 1, 1, count_include_pad=False))
            self.pool = nn.Sequential(pool, conv(cin, proj, 1))

        def forward(self, x):
            return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], dim=1)

    layers, channels = [conv(image[2], model.inception_stem, 3)], model.inception_stem
    if model.inception_stem_pool:
        layers.append(nn.MaxPool2d(2, 2))
    for index, spec in enumerate(model.inception_modules):
        layers.append(Module(channels, *spec))
        channels = spec[0] + spec[2] + spec[4] + spec[5]
        if index in model.inception_pool_after:
            layers.append(nn.MaxPool2d(2, 2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, common.NUM_CLASSES)]
    return nn.Sequential(*layers)


def inception_peer(torch: Any, model: Any, images: np.ndarray, labels: np.ndarray, *,
                   lr: float, momentum: float, batch_size: int, thread_count: int,
                   label: str = "") -> Peer:
    """The Inception-style net of ``model`` trained by ``SGD(momentum)`` on NCHW images."""
    torch.manual_seed(0)
    net = inception_net(torch, model).train()
    nchw = images.reshape(-1, 28, 28, 1).transpose(0, 3, 1, 2)
    return _sgd_peer(torch, net, net.parameters(), nchw, labels, lr=lr, momentum=momentum,
                     batch_size=batch_size, thread_count=thread_count, label=label)


# --------------------------------------------------------------------------------------------
# The BN study's main phase as a PyTorch script (bn_mnist_study, torch_ema_vs_alg2)
# --------------------------------------------------------------------------------------------


def study_split(torch: Any, split: Any) -> tuple[Any, Any]:
    """A bnreg ``Split`` as flattened float32 images and int64 labels (the same arrays)."""
    images = np.ascontiguousarray(split.images.reshape(len(split.images), -1))
    return torch.from_numpy(images), torch.from_numpy(split.labels.astype(np.int64))


def bn_study(torch: Any, config: Any, nets: Sequence[str], *, thread_count: int,
             study_evaluation: bool, checkpoint_dir: Path) -> dict[str, Any]:
    """The study's phase in PyTorch eager on ``config``'s data (``bnreg.engine.load_run_data``,
    the same arrays as bnreg's): ``nets`` × ``config.sweep.seed`` one after another
    (:func:`study_run`) with ``thread_count`` intra-op threads (0: PyTorch's default). Returns
    the wall time of all (data loading included) and of each net, and the final test
    accuracies."""
    from bnreg import engine

    found: dict[str, Any] = {}
    with threads(torch, thread_count):
        used, start = torch.get_num_threads(), time.perf_counter()
        run_data = engine.load_run_data(config)
        images, labels = study_split(torch, run_data.train)
        test_images, test_labels = study_split(torch, run_data.evaluation)
        for net in nets:
            net_start, accuracies, evaluations = time.perf_counter(), [], 0
            for seed in config.sweep.seed:
                history, accuracy = study_run(
                    torch, images, labels, test_images, test_labels, net=net, seed=int(seed),
                    config=config, checkpoint_dir=checkpoint_dir,
                    study_evaluation=study_evaluation)
                accuracies.append(accuracy)
                evaluations = len(history)
            found[net] = {"wall_s": time.perf_counter() - net_start,
                          "final_test_accuracy": accuracies, "evaluations": evaluations}
            print(f"  torch {net}: {found[net]['wall_s']:.1f} s, {accuracies}", flush=True)
        wall = time.perf_counter() - start
    return {"wall_s": wall, "threads": used, "nets": found,
            "evaluation": "study" if study_evaluation else "running"}


def study_run(torch: Any, images: Any, labels: Any, test_images: Any, test_labels: Any, *,
              net: str, seed: int, config: Any, checkpoint_dir: Path | None,
              study_evaluation: bool) -> tuple[list[dict[str, Any]], float]:
    """One seed of one net (``"bn"`` or ``"no_bn"``): plain SGD at the config's learning rate
    and batch, shuffled epochs, evaluations at step 0 and every ``eval_every`` steps
    (``study_evaluation``: the BN net with Alg. 2 statistics and the study's probes, as the
    study evaluates; else the running statistics only), ``torch.save`` checkpoints every
    ``checkpoint_every`` steps to ``checkpoint_dir``. Returns the evaluations and the final test
    accuracy with the running (EMA) statistics."""
    model = bn_mlp(torch, batch_norm=net == "bn", seed=seed, bn_momentum=config.model.bn_momentum)
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
            with _population_statistics(torch, model, images, population_batches):
                return _evaluate(torch, model, test_images, test_labels, config, step, True)
        return _evaluate(torch, model, test_images, test_labels, config, step, study_evaluation)

    history, permutation, done = [evaluate(0)], None, 0
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
        if checkpoint_dir and config.checkpoint_every and (
                done % config.checkpoint_every == 0 or done == config.num_steps):
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": done}, checkpoint_dir / f"{net}_{seed}.pt")
    final = _evaluate(torch, model, test_images, test_labels, config, done, False)
    return history, final["test_accuracy"]


@contextlib.contextmanager
def _population_statistics(torch: Any, model: Any, images: Any, batches: Any) -> Iterator[None]:
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


def _evaluate(torch: Any, model: Any, images: Any, labels: Any, config: Any, step: int,
              probes: bool) -> dict[str, Any]:
    """Test loss and accuracy in eval mode; with ``probes``, also the study's probes (the
    percentiles of the chosen units' input to the probed sigmoids, each hidden layer's mean
    activation and, if the config has histogram bins, histogram), as bnreg's evaluation
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
                probed.append([preactivations[layer][:, list(config.probe.units)]
                               for layer in config.probe.layers])
                if config.probe.histogram_bins:
                    low, high = config.probe.histogram_range
                    histograms = histograms + torch.stack([
                        torch.histc(a, bins=config.probe.histogram_bins, min=low, max=high)
                        for a in activations])
                activation_sums = activation_sums + torch.stack(
                    [a.mean(1).sum() for a in activations])
    record: dict[str, Any] = {"step": step, "test_loss": loss_sum / len(images),
                              "test_accuracy": correct / len(images)}
    if probes:
        q = torch.tensor(config.probe.percentiles) / 100.0
        record["probe_percentiles"] = [torch.quantile(torch.cat(per_layer), q, dim=0).T.tolist()
                                       for per_layer in zip(*probed, strict=True)]
        if config.probe.histogram_bins:
            record["activation_histogram"] = histograms.tolist()
        record["mean_activation"] = (activation_sums / len(images)).tolist()
    return record
