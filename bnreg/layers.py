"""Thin ``flax.linen`` wrappers over the functional core.

Each module holds parameters and state in flax collections and calls one pure function from
:mod:`bnreg.batch_norm`, :mod:`bnreg.dropout` or :mod:`bnreg.dropconnect`; the math, the paper
anchors and the conventions live there.

Collections and rng streams:

* ``params``: learnable weights (``scale``/``bias`` of :class:`BatchNorm`, ``kernel``/``bias`` of
  :class:`DropConnectDense`).
* ``batch_stats``: the running (EMA) mean and variance of :class:`BatchNorm`, updated in
  training, which therefore needs ``mutable=["batch_stats"]`` (without it flax raises an
  error); evaluation leaves them unchanged.
* ``population_stats``: Alg. 2's accumulator of :class:`BatchNorm`, filled only when the caller
  passes ``mutable=["population_stats"]`` (see :func:`bnreg.train.population_statistics`).
* ``"dropout"`` rng stream: the keys of :class:`Dropout` and :class:`DropConnectDense`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnreg.batch_norm import (
    BatchNormParams,
    BatchNormState,
    batch_norm,
    population_stats_init,
    population_stats_update,
)
from bnreg.dropconnect import dropconnect_dense
from bnreg.dropout import dropout

Initializer = Callable[..., jax.Array]


class BatchNorm(nn.Module):
    """Batch Normalization over the last axis (Ioffe & Szegedy 2015, Alg. 1); see
    :func:`bnreg.batch_norm.batch_norm` for the math and the conventions.

    Attributes:
      momentum: EMA momentum, flax convention ``running = momentum*running + (1-momentum)*batch``.
      epsilon: added to the variance for numerical stability.
      axis_name: mapped axis over which batch moments are averaged (synchronised BN).
      backward: ``"autodiff"`` or ``"paper"`` (the paper's Sec. 3 backward formulas).
    """

    momentum: float = 0.99
    epsilon: float = 1e-5
    axis_name: str | None = None
    backward: str = "autodiff"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        num_features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (num_features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (num_features,), jnp.float32)
        mean = self.variable("batch_stats", "mean", jnp.zeros, (num_features,), jnp.float32)
        var = self.variable("batch_stats", "var", jnp.ones, (num_features,), jnp.float32)
        y, new_state = batch_norm(
            x,
            BatchNormParams(scale, bias),
            BatchNormState(mean.value, var.value),
            train=train,
            momentum=self.momentum,
            epsilon=self.epsilon,
            axis_name=self.axis_name,
            backward=self.backward,
        )
        if train and not self.is_initializing():
            mean.value, var.value = new_state.mean, new_state.var
        if self.is_mutable_collection("population_stats") and not self.is_initializing():
            accumulator = self.variable(
                "population_stats", "accumulator", population_stats_init, num_features
            )
            accumulator.value = population_stats_update(
                accumulator.value, x, axis_name=self.axis_name
            )
        return y


class Dropout(nn.Module):
    """Bernoulli dropout with keys from the ``"dropout"`` rng stream; see
    :func:`bnreg.dropout.dropout`.

    Attributes:
      rate: drop probability (the paper's retain probability is ``p = 1 - rate``).
      broadcast_dims: axes along which one mask is shared.
      scaling: ``"inverted"`` (default) or ``"paper"``.
    """

    rate: float
    broadcast_dims: Sequence[int] = ()
    scaling: str = "inverted"

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        key = None if deterministic or self.rate == 0.0 else self.make_rng("dropout")
        return dropout(
            key,
            x,
            rate=self.rate,
            deterministic=deterministic or self.rate == 0.0,
            broadcast_dims=tuple(self.broadcast_dims),
            scaling=self.scaling,
        )


class DropConnectDense(nn.Module):
    """A dense layer whose weights are masked by DropConnect in training; keys from the
    ``"dropout"`` rng stream. See :func:`bnreg.dropconnect.dropconnect_dense`.

    Attributes:
      features: number of output units.
      rate: drop probability of each weight.
      use_bias: whether to add a bias.
      per_example: a fresh weight mask per example (as in Wan et al. 2013) or one per batch.
      mask_bias: mask the bias like the weights (as in Wan et al. 2013) or add it unmasked.
      kernel_init, bias_init: initialisers.
    """

    features: int
    rate: float
    use_bias: bool = True
    per_example: bool = True
    mask_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        kernel = self.param(
            "kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), jnp.float32)
            if self.use_bias
            else None
        )
        key = None if deterministic or self.rate == 0.0 else self.make_rng("dropout")
        return dropconnect_dense(
            key,
            x,
            kernel,
            bias,
            rate=self.rate,
            deterministic=deterministic or self.rate == 0.0,
            per_example=self.per_example,
            mask_bias=self.mask_bias,
        )
