"""BN's inference statistics three ways: the EMA tracked in training, Alg. 2's population
statistics of the final weights (Ioffe & Szegedy 2015), and the EMA *settled* on the final
weights (a diagnostic of the EMA's lag).

Both recomputed kinds run the network as in training (BN normalises with each batch's
statistics, noise on) with frozen weights over batches of the member's training data that
depend only on its key (:func:`population_batch_indices`), so successive evaluations differ only
through the weights and a run draws the batches once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnreg import data as data_lib
from bnreg.core.batch_norm import PopulationStatsAccumulator, population_stats_finalize
from bnreg.engine.members import Stream, stream_key
from bnreg.engine.step import Network, TrainState

KINDS = ("ema", "population", "settled_ema")


def population_batch_indices(
    key: jax.Array, num_examples: int, *, batch_size: int, num_batches: int
) -> jax.Array:
    """The training batches, ``(num_batches, batch_size)`` example indices, over which a member
    with ``key`` computes its inference statistics: those :func:`bnreg.data.batch_at_step` draws
    at steps ``0 … num_batches − 1`` from the member's ``POPULATION`` key stream."""
    return data_lib.batch_indices(
        stream_key(key, Stream.POPULATION), num_examples, num_batches, batch_size=batch_size
    )


def ema_settling_batches(momentum: float, residual: float = 1e-3) -> int:
    """The number of EMA updates after which the statistics' starting value weighs at most
    ``residual``: the smallest ``n ≥ 1`` with ``momentum**n ≤ residual`` (688 for 0.99).

    Raises:
      ValueError: ``momentum`` outside [0, 1) — with 1 the EMA never moves, so never settles.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"An EMA settles only for a momentum in [0, 1), got {momentum}.")
    if momentum == 0.0:
        return 1
    return max(1, math.ceil(math.log(residual) / math.log(momentum)))


def _finalize_accumulators(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Maps the ``population_stats`` collection to the ``batch_stats`` layout."""
    result = {}
    for name, value in tree.items():
        if isinstance(value, PopulationStatsAccumulator):
            return dict(population_stats_finalize(value)._asdict())
        result[name] = _finalize_accumulators(value)
    return result


def _frozen_training_passes(
    network: Network, state: TrainState, images: jax.Array, batch_indices: jax.Array
) -> dict[str, Any]:
    """Runs one member as in training with frozen weights over the batches
    ``images[batch_indices[i]]`` in order; returns the last ``batch_stats`` (the EMA, updated
    once per batch) and ``population_stats`` (Alg. 2's sums)."""
    population_key = stream_key(state.key, Stream.POPULATION)
    model = network.member_model(state.hyperparameters)

    def one_batch(position, variables):
        _, updates = model.apply(
            {"params": state.params, **variables},
            jnp.take(images, batch_indices[position], axis=0),
            bn_mode="batch",
            noise=True,
            rngs={"dropout": jax.random.fold_in(population_key, position)},
            mutable=["batch_stats", "population_stats"],
        )
        return updates

    # The first pass creates the population_stats collection; the loop carries it.
    variables = one_batch(0, {"batch_stats": state.batch_stats})
    return jax.lax.fori_loop(1, batch_indices.shape[0], one_batch, variables)


def population_statistics(
    network: Network, state: TrainState, images: jax.Array, batch_indices: jax.Array
) -> dict[str, Any]:
    """BN's inference statistics of one member by Alg. 2 (Ioffe & Szegedy 2015).

    .. math::
        E[x] = E_B[\\mu_B], \\qquad \\mathrm{Var}[x] = \\frac{m}{m-1} E_B[\\sigma_B^2]

    over the training batches ``images[batch_indices[i]]``, ``m`` being the examples per
    normalisation group: ``batch_indices.shape[1]`` for a dense layer, times the positions for a
    conv layer. The network runs as in training (BN normalises with each batch's statistics,
    noise on, its masks from the member's ``POPULATION`` stream) with frozen parameters; this is
    the distribution the EMA statistics track too.

    Returns:
      A collection in the layout of ``batch_stats`` (``{"BatchNorm_i": {"mean", "var"}}``).
    """
    variables = _frozen_training_passes(network, state, images, batch_indices)
    return _finalize_accumulators(variables["population_stats"])


def settled_ema_statistics(
    network: Network, state: TrainState, images: jax.Array, batch_indices: jax.Array
) -> dict[str, Any]:
    """The EMA statistics after one more update per batch of ``batch_indices`` with the weights
    frozen: what the EMA tracked in training would become if the weights stopped moving.

    A diagnostic of the EMA's lag. During training the EMA averages statistics of *past*
    weights; Alg. 2 measures the final ones. When the two inference networks differ, this says
    whether the cause is that lag (the settled EMA then agrees with Alg. 2) or the estimators
    themselves (it does not). Give it :func:`ema_settling_batches` batches.
    """
    variables = _frozen_training_passes(network, state, images, batch_indices)
    return variables["batch_stats"]


StatisticsFn = Callable[[TrainState, str], Any]


def make_inference_statistics(
    network: Network,
    train_images: jax.Array,
    member_batches: Callable[[int], jax.Array],
    *,
    population_batches: int,
    settling_momentum: float,
    vmapped: Callable[[Callable], Callable],
) -> StatisticsFn:
    """``statistics(state, kind)``: the BN statistics (``batch_stats`` layout, all members) with
    which to evaluate ``state``: ``"ema"``, its own; ``"population"``, Alg. 2's over
    ``population_batches`` batches; or ``"settled_ema"`` over
    :func:`ema_settling_batches` batches of ``settling_momentum`` (the members' largest BN
    momentum; not available when it is 1, an EMA that never moves).

    ``member_batches(num_batches)`` draws every member's batches ``(members, num_batches, B)``;
    the two recomputed kinds run the first batches of that one stream, which depends only on the
    members' keys, so it is drawn once, as long as the longer kind needs, at the first call —
    later calls must come from the same run. ``vmapped`` turns a one-member function of
    ``(state, images, batch_indices)`` into the jitted all-members one.
    """
    recomputed = {
        "population": vmapped(functools.partial(population_statistics, network)),
        "settled_ema": vmapped(functools.partial(settled_ema_statistics, network)),
    }
    num_batches = {"population": population_batches}
    if settling_momentum < 1.0:
        num_batches["settled_ema"] = ema_settling_batches(settling_momentum)
    drawn: list[jax.Array] = []

    def statistics(state: TrainState, kind: str) -> Any:
        if kind == "ema":
            return state.batch_stats
        if kind not in num_batches or not num_batches[kind]:
            raise ValueError(f"BN statistics {kind!r} are not available for this run.")
        if not drawn:
            drawn.append(member_batches(max(num_batches.values())))
        return recomputed[kind](state, train_images, drawn[0][:, : num_batches[kind]])

    return statistics


def member_batch_indices(
    keys: jax.Array,
    num_examples: int,
    batch_size: int,
    subsets: Sequence[np.ndarray] | None,
) -> Callable[[int], jax.Array]:
    """``draw(num_batches)``: every member's :func:`population_batch_indices`, as indices into
    the training split, ``(members, num_batches, batch_size)``; a member with a subset draws
    positions in its subset."""

    def draw(num_batches: int) -> jax.Array:
        if subsets is None:
            draw_one = functools.partial(
                population_batch_indices, num_examples=num_examples, batch_size=batch_size,
                num_batches=num_batches,
            )
            return jax.jit(jax.vmap(draw_one))(keys)
        return jnp.stack([
            jnp.take(jnp.asarray(subset), population_batch_indices(
                key, len(subset), batch_size=batch_size, num_batches=num_batches
            ))
            for key, subset in zip(keys, subsets, strict=True)
        ])

    return draw
