"""Evaluators: functions from a trained state to per-member metrics on a whole split.

By name (``config.evaluation.during`` / ``final``, :func:`expand`):

* ``"deterministic"`` — the network with the noise off: the paper's weight scaling, which with
  inverted dropout is the network as it is; BN in inference mode with
  ``config.evaluation.bn_statistics``. Its column suffix is the statistics' kind on a net with
  BN (``population`` or ``ema``), ``deterministic`` without.
* ``"ema"``, ``"population"``, ``"settled_ema"`` — the deterministic network with those BN
  statistics (:mod:`bnreg.engine.bn_statistics`); nets with BN only (left out for others).
* ``"monte_carlo"`` — model averaging over ``k`` sampled thinned nets (Srivastava et al. 2014,
  Sec. 7, Fig. 11): noise on, BN in inference mode, the class probabilities averaged; one result
  per ``k`` of ``config.evaluation.monte_carlo_samples`` (suffix ``mc_k<k>``), all from the first
  ``max(k)`` samples. Sample ``i`` is the thinned net of key ``fold_in(MONTE_CARLO stream, i)``;
  its masks on evaluation batch ``b`` come from ``fold_in(that key, b)``. (The core's
  :func:`bnreg.core.dropout.monte_carlo_average` splits its key into ``k`` instead; folding in
  the sample's index makes the first ``k`` samples of a larger set the ``k``-sample average.)
* ``"gaussian"`` — DropConnect's moment-matching inference (Wan et al. 2013, Sec. 3) with ``Z``
  samples per pre-activation, one result per ``Z`` of ``config.evaluation.gaussian_samples``
  (suffix ``gaussian_z<Z>``); nets with DropConnect and without BN. Batch ``b``'s samples come
  from ``fold_in(GAUSSIAN stream, b)``.

* ``"on_train"`` — added after the primary when ``config.evaluation.train_examples`` is N > 0:
  the primary (deterministic) evaluator on the first N examples of the training split (of each
  member's own training subset, ``train_subset``), without probes (suffix ``on_train``):
  training error beside test error, the overfitting curves.
* ``"full"`` — with ``config.evaluation.subset`` (the evaluations during training score a fixed
  subset of the evaluation split): the primary on the whole split at the steps of
  ``config.evaluation.full_steps`` (suffix ``full``); the final evaluation always scores the
  whole split.
* ``"on_test"`` — added after them when ``config.evaluation.test_too`` (a run on a validation
  split): the primary evaluator on the test split (suffix ``on_test``), to stop early on the
  validation error and read the test error at that step.

Each returns the task's metrics (:mod:`bnreg.engine.tasks`); the primary evaluator (the first
of ``during``) also the probes (:mod:`bnreg.probes`) when it is a deterministic one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from bnreg import probes
from bnreg.engine.members import Stream, stream_key
from bnreg.engine.step import Network, TrainState
from bnreg.engine.tasks import finish

BN_KINDS = ("ema", "population", "settled_ema")


class ProbeSpec(NamedTuple):
    """What the evaluation records of the hidden layers (see :mod:`bnreg.probes`)."""

    layers: tuple[int, ...]
    units: tuple[int, ...]
    percentiles: tuple[float, ...]
    histogram_bins: int
    histogram_range: tuple[float, float]

    @classmethod
    def from_config(cls, probe_config: Any) -> ProbeSpec:
        return cls(
            layers=tuple(int(layer) for layer in probe_config.layers),
            units=tuple(int(u) for u in probe_config.units),
            percentiles=tuple(float(q) for q in probe_config.percentiles),
            histogram_bins=int(probe_config.histogram_bins),
            histogram_range=tuple(float(v) for v in probe_config.histogram_range),
        )


class Evaluator(NamedTuple):
    """One evaluator of a run.

    Attributes:
      name: its name in the config (``"deterministic"`` becomes the BN statistics' kind on a
        net with BN).
      kind: ``"deterministic"``, ``"monte_carlo"`` or ``"gaussian"``.
      bn_statistics: the BN statistics it evaluates with (``None`` without BN).
      samples: the ``k`` (Monte-Carlo) or the ``Z`` (Gaussian) it reports; ``()`` otherwise.
      split: the examples it scores: ``"evaluation"`` (the run's validation or test split),
        ``"subset"`` (``config.evaluation.subset`` of them, during training), ``"train"`` (the
        first ``config.evaluation.train_examples`` of the training split, or of each member's
        subset) or ``"test"`` (the test split beside a validation split,
        ``config.evaluation.test_too``).
    """

    name: str
    kind: str
    bn_statistics: str | None
    samples: tuple[int, ...] = ()
    source: str = ""  # its name in the config, when that differs (``"deterministic"``)
    split: str = "evaluation"

    @property
    def columns(self) -> tuple[str, ...]:
        """The suffixes of its metrics' columns (``accuracy_<suffix>``), one per result."""
        if self.kind == "monte_carlo":
            return tuple(f"mc_k{k}" for k in self.samples)
        if self.kind == "gaussian":
            return tuple(f"gaussian_z{z}" for z in self.samples)
        return (self.name,)


def expand(
    names: Sequence[str],
    *,
    has_bn: bool,
    bn_statistics: str,
    monte_carlo_samples: Sequence[int],
    gaussian_samples: Sequence[int],
    train_examples: int = 0,
    test_too: bool = False,
) -> list[Evaluator]:
    """The evaluators of ``names`` (see the module docstring), in order, each once; the
    BN-statistics ones are left out on a net without BN; with ``train_examples``, the primary's
    ``on_train`` twin follows it, and with ``test_too`` its ``on_test`` twin."""
    statistics = bn_statistics if has_bn else None
    evaluators: dict[str, Evaluator] = {}
    for name in names:
        if name == "deterministic":
            evaluator = Evaluator(statistics or name, "deterministic", statistics, source=name)
        elif name in BN_KINDS:
            if not has_bn:
                continue
            evaluator = Evaluator(name, "deterministic", name)
        elif name == "monte_carlo":
            evaluator = Evaluator(name, "monte_carlo", statistics, tuple(monte_carlo_samples))
        else:
            evaluator = Evaluator(name, "gaussian", statistics, tuple(gaussian_samples))
        evaluators.setdefault(evaluator.name, evaluator)
    found = list(evaluators.values())
    twins = [("on_train", "train")] if train_examples else []
    twins += [("on_test", "test")] if test_too else []
    for index, (name, split) in enumerate(twins, 1):
        if found:
            found.insert(index, found[0]._replace(name=name, source=name, split=split))
    return found


def _map_batches(one_batch: Callable, images: jax.Array, labels: jax.Array, batch_size: int):
    """``lax.map`` of ``one_batch((index, images, labels, weights))`` over a split cut into
    padded batches of ``batch_size`` (each padded example's weight 0, the others' 1)."""
    num_examples = images.shape[0]
    num_batches = math.ceil(num_examples / batch_size)
    padding = num_batches * batch_size - num_examples

    def pad(x):
        return jnp.pad(x, [(0, padding)] + [(0, 0)] * (x.ndim - 1)).reshape(
            (num_batches, batch_size, *x.shape[1:])
        )

    weights = pad(jnp.ones((num_examples,), jnp.float32))
    return jax.lax.map(one_batch, (jnp.arange(num_batches), pad(images), pad(labels), weights))


def _weighted(weights: jax.Array, x: jax.Array) -> jax.Array:
    """Per-example ``weights`` broadcast over the trailing axes of ``x``."""
    return jnp.broadcast_to(weights.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape)


def _probe_sums(intermediates, probe: ProbeSpec, weights: jax.Array) -> dict[str, Any]:
    activations = probes.sown(intermediates, "activation")
    preactivations = probes.sown(intermediates, "preactivation")
    num_hidden = len(preactivations)
    if not all(-num_hidden <= layer < num_hidden for layer in probe.layers):
        raise ValueError(
            f"config.probe.layers {list(probe.layers)} must index the model's "
            f"{num_hidden} hidden layers (negative indices count from the last)."
        )
    if len({layer % num_hidden for layer in probe.layers}) < len(probe.layers):
        raise ValueError(
            f"config.probe.layers {list(probe.layers)} names a hidden layer twice (of "
            f"{num_hidden}; negative indices count from the last)."
        )
    sums = {
        "probed": [probes.unit_columns(preactivations[layer], probe.units)
                   for layer in probe.layers],
        "activation_sum": jnp.stack(
            [jnp.sum(a * _weighted(weights, a)) / (a.size // a.shape[0]) for a in activations]
        ),
    }
    if probe.histogram_bins:
        sums["histogram"] = jnp.stack([
            probes.histogram(a, bins=probe.histogram_bins, value_range=probe.histogram_range,
                             weights=_weighted(weights, a))
            for a in activations
        ])
    return sums


def _probe_results(totals, probe: ProbeSpec, num_examples: int, batch_size: int):
    def layer_percentiles(probed):  # (batches, batch_size · samples per example, units)
        samples_per_example = probed.shape[1] // batch_size
        probed = probed.reshape(-1, probed.shape[-1])[: num_examples * samples_per_example]
        return probes.percentiles(probed, probe.percentiles)

    result = {
        "probe_percentiles": jnp.stack([layer_percentiles(p) for p in totals["probed"]]),
        "mean_activation": totals["activation_sum"].sum(0) / num_examples,
    }
    if probe.histogram_bins:
        result["activation_histogram"] = totals["histogram"].sum(0)
    return result


def _bn_parameters(params: Mapping[str, Any], probe: ProbeSpec) -> dict[str, jax.Array]:
    """The probed units' BN scale γ and offset β (``BatchNorm_<layer>``'s ``scale`` and ``bias``)
    per probed layer, ``(layers, units)``; nothing for a net without BN. With BN the probed
    pre-activation is γ·x̂ + β, so its percentiles move with γ and β (Ioffe & Szegedy 2015,
    Fig. 1b,c)."""
    names = sorted((name for name in params if name.startswith("BatchNorm_")),
                   key=lambda name: int(name.rsplit("_", 1)[1]))
    if not names:
        return {}
    layers = [names[layer % len(names)] for layer in probe.layers]
    units = jnp.asarray(probe.units)
    return {f"probe_bn_{part}": jnp.stack([params[name][part][units] for name in layers])
            for part in ("scale", "bias")}


def evaluate(
    network: Network,
    state: TrainState,
    batch_stats: Any,
    images: jax.Array,
    labels: jax.Array,
    *,
    batch_size: int,
    probe: ProbeSpec | None = None,
) -> dict[str, jax.Array]:
    """The deterministic network of one member on a whole split, in batches of ``batch_size``.

    BN uses ``batch_stats``; the noise is off.

    Returns:
      The task's metrics over the split and, with ``probe``: ``probe_percentiles`` ``(layers,
      units, percentiles)`` of the chosen units' pre-activations in each of ``probe.layers``
      (a conv layer's unit is a feature map, sampled at every position); per hidden layer,
      ``mean_activation`` and, unless ``probe.histogram_bins`` is 0,
      ``activation_histogram`` ``(layers, bins)``; on a net with BN, ``probe_bn_scale`` and
      ``probe_bn_bias`` ``(layers, units)``: the probed units' γ and β.
    """
    model = network.member_model(state.hyperparameters)
    variables = {"params": state.params, "batch_stats": batch_stats}

    def one_batch(batch):
        _, batch_images, batch_labels, batch_weights = batch
        outputs, collections = model.apply(
            variables, batch_images, bn_mode="inference", noise=False, mutable=["intermediates"]
        )
        values = network.task.per_example(outputs, batch_images, batch_labels)
        sums = {name: jnp.sum(value * batch_weights) for name, value in values.items()}
        if probe is None:
            return sums, {}
        return sums, _probe_sums(collections.get("intermediates", {}), probe, batch_weights)

    sums, probe_sums = _map_batches(one_batch, images, labels, batch_size)
    num_examples = images.shape[0]
    metrics = finish(network.task, {n: total.sum() for n, total in sums.items()}, num_examples)
    if probe is not None:
        metrics.update(_probe_results(probe_sums, probe, num_examples, batch_size))
        metrics.update(_bn_parameters(state.params, probe))
    return metrics


def evaluate_monte_carlo(
    network: Network,
    state: TrainState,
    batch_stats: Any,
    images: jax.Array,
    labels: jax.Array,
    *,
    batch_size: int,
    samples: Sequence[int],
) -> dict[str, jax.Array]:
    """Monte-Carlo model averaging of one member (classification): for each ``k`` of
    ``samples``, the split's ``loss`` (negative log of the averaged probability of the label),
    ``accuracy`` and ``error`` of

    .. math:: \\hat P(y \\mid x) = \\frac{1}{k} \\sum_{i=1}^{k}
              \\mathrm{softmax}\\big(f(\\kappa_i, x)\\big)

    with thinned nets :math:`\\kappa_i` as in the module docstring; arrays ``(len(samples),)``.
    """
    model = network.member_model(state.hyperparameters)
    variables = {"params": state.params, "batch_stats": batch_stats}
    sample_keys = stream_key(state.key, Stream.MONTE_CARLO)
    positions = jnp.asarray(samples) - 1

    def one_batch(batch):
        index, batch_images, batch_labels, batch_weights = batch

        def one_sample(log_total, sample):
            key = jax.random.fold_in(jax.random.fold_in(sample_keys, sample), index)
            logits = model.apply(variables, batch_images, bn_mode="inference", noise=True,
                                 rngs={"dropout": key})
            # The sum of the samples' probabilities, in log space: a label's probability that
            # underflows in every sample is a large finite loss, as in the deterministic one.
            log_total = jnp.logaddexp(log_total, jax.nn.log_softmax(logits, axis=-1))
            log_average = log_total - jnp.log(sample + 1.0)
            label_log_probability = jnp.take_along_axis(log_average, batch_labels[:, None], 1)
            return log_total, (
                jnp.sum(-label_log_probability[:, 0] * batch_weights),
                jnp.sum((jnp.argmax(log_average, -1) == batch_labels) * batch_weights),
            )

        start = jnp.full((batch_images.shape[0], network.model.num_outputs), -jnp.inf)
        _, (loss, correct) = jax.lax.scan(one_sample, start, jnp.arange(max(samples)))
        return loss[positions], correct[positions]

    loss, correct = _map_batches(one_batch, images, labels, batch_size)
    return finish(
        network.task, {"loss": loss.sum(0), "accuracy": correct.sum(0)}, images.shape[0]
    )


def evaluate_gaussian(
    network: Network,
    state: TrainState,
    batch_stats: Any,
    images: jax.Array,
    labels: jax.Array,
    *,
    batch_size: int,
    samples: int,
) -> dict[str, jax.Array]:
    """The task's metrics of one member with its DropConnect layers evaluated by Gaussian
    moment matching over ``samples`` samples (:class:`bnreg.layers.DropConnectDense`)."""
    model = network.member_model(state.hyperparameters).clone(
        dropconnect_gaussian_samples=samples
    )
    variables = {"params": state.params, "batch_stats": batch_stats}
    gaussian_key = stream_key(state.key, Stream.GAUSSIAN)

    def one_batch(batch):
        index, batch_images, batch_labels, batch_weights = batch
        outputs = model.apply(variables, batch_images, bn_mode="inference", noise=False,
                              rngs={"dropout": jax.random.fold_in(gaussian_key, index)})
        values = network.task.per_example(outputs, batch_images, batch_labels)
        return {name: jnp.sum(value * batch_weights) for name, value in values.items()}

    totals = _map_batches(one_batch, images, labels, batch_size)
    return finish(network.task, {n: t.sum() for n, t in totals.items()}, images.shape[0])


def hidden_values(
    network: Network,
    state: TrainState,
    batch_stats: Any,
    images: jax.Array,
    *,
    layer: int,
    kind: str,
    batch_size: int,
) -> jax.Array:
    """Hidden layer ``layer``'s values of one member on every example of ``images``, from the
    deterministic network (noise off, BN in inference mode with ``batch_stats``): ``kind``
    ``"activation"`` (the nonlinearity's output, before dropout) or ``"preactivation"`` (its
    input). Returns ``(examples, units)`` (a conv layer's ``(examples, h, w, features)``).
    """
    model = network.member_model(state.hyperparameters)
    variables = {"params": state.params, "batch_stats": batch_stats}

    def one_batch(batch):
        _, batch_images, _, _ = batch
        _, collections = model.apply(
            variables, batch_images, bn_mode="inference", noise=False, mutable=["intermediates"]
        )
        return probes.sown(collections.get("intermediates", {}), kind)[layer]

    labels = jnp.zeros((images.shape[0],), jnp.int32)
    values = _map_batches(one_batch, images, labels, batch_size)
    return values.reshape((-1, *values.shape[2:]))[: images.shape[0]]


EvaluateFn = Callable[[TrainState, Any, jax.Array, jax.Array], Mapping[str, Any]]


def member_function(
    network: Network, evaluator: Evaluator, *, batch_size: int, probe: ProbeSpec | None
) -> EvaluateFn:
    """``fn(state, batch_stats, images, labels) -> {column suffix: metrics}`` of one member for
    ``evaluator`` (``probe``: the probes, for a deterministic evaluator).

    Raises:
      ValueError: a Monte-Carlo evaluator for a task without classes.
    """
    if evaluator.kind == "monte_carlo":
        if network.task.name != "classification":
            raise ValueError("The Monte-Carlo evaluator averages class probabilities: it needs "
                             "the classification task.")

        def monte_carlo(*args):
            metrics = evaluate_monte_carlo(
                network, *args, batch_size=batch_size, samples=evaluator.samples
            )
            return {column: {name: value[i] for name, value in metrics.items()}
                    for i, column in enumerate(evaluator.columns)}

        return monte_carlo
    if evaluator.kind == "gaussian":
        return lambda *args: {
            column: evaluate_gaussian(network, *args, batch_size=batch_size, samples=z)
            for column, z in zip(evaluator.columns, evaluator.samples, strict=True)
        }
    return lambda *args: {
        evaluator.name: evaluate(network, *args, batch_size=batch_size, probe=probe)
    }
