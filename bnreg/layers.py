"""Thin ``flax.linen`` wrappers over the functional core.

Each module holds parameters and state in flax collections and calls one pure function from
:mod:`bnreg.core`; the math, the paper anchors and the conventions live there.

Two switches replace a single ``train`` flag, because the evaluators need them apart
(Monte-Carlo averaging samples thinned nets with BN in inference mode):

* ``bn_mode``: ``"batch"`` normalises with the mini-batch's moments (Alg. 1) and updates the EMA
  statistics; ``"inference"`` uses the statistics in ``batch_stats`` (the EMA, or Alg. 2's when
  the caller puts them there).
* ``noise``: whether dropout and DropConnect sample their masks.

Rates and the BN momentum may be traced scalars (members of a sweep differ in them inside one
compiled program); a concrete rate of 0 leaves the layer out of the program.

Collections and rng streams:

* ``params``: learnable weights (``scale``/``bias`` of :class:`BatchNorm`, ``kernel``/``bias`` of
  :class:`DropConnectDense`).
* ``batch_stats``: the running (EMA) mean and variance of :class:`BatchNorm`, updated in
  ``bn_mode="batch"``, which therefore needs ``mutable=["batch_stats"]`` (without it flax raises
  an error); ``"inference"`` leaves them unchanged.
* ``population_stats``: Alg. 2's accumulator of :class:`BatchNorm`, filled only when the caller
  passes ``mutable=["population_stats"]`` (see :mod:`bnreg.engine.bn_statistics`).
* ``"dropout"`` rng stream: the keys of :class:`Dropout` and :class:`DropConnectDense`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnreg._checks import check_choice, check_static_bool, is_traced
from bnreg.core.batch_norm import (
    BatchNormParams,
    BatchNormState,
    batch_norm,
    population_stats_init,
    population_stats_update,
)
from bnreg.core.dropconnect import dropconnect_dense, dropconnect_gaussian_inference
from bnreg.core.dropout import dropout, gaussian_dropout
from bnreg.core.ghost_batch_norm import ghost_batch_norm

Initializer = Callable[..., jax.Array]
BN_MODES = ("batch", "inference")
NOISE_KINDS = ("bernoulli", "gaussian")


def is_off(rate: Any) -> bool:
    """Whether a rate is a concrete 0: the layer is then left out of the program. A traced rate
    is never off, even when its value is 0 (the layer is then exactly the identity)."""
    return not is_traced(rate) and float(rate) == 0.0


class BatchNorm(nn.Module):
    """Batch Normalization over the last axis (Ioffe & Szegedy 2015, Alg. 1); see
    :func:`bnreg.core.batch_norm.batch_norm` for the math and the conventions.

    Attributes:
      momentum: EMA momentum, flax convention ``running = momentum*running + (1-momentum)*batch``;
        may be traced.
      epsilon: added to the variance for numerical stability.
      axis_name: mapped axis over which batch moments are averaged (synchronised BN).
      backward: ``"autodiff"`` or ``"paper"`` (the paper's Sec. 3 backward formulas).
      ghost_size: 0, or ``G``: in training, ghost BN over each ``G`` consecutive examples
        (:func:`bnreg.core.ghost_batch_norm.ghost_batch_norm`; not with ``axis_name``). Alg. 2's
        accumulator still takes the whole batch's moments.
    """

    momentum: Any = 0.99
    epsilon: float = 1e-5
    axis_name: str | None = None
    backward: str = "autodiff"
    ghost_size: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, *, bn_mode: str) -> jax.Array:
        check_choice("bn_mode", bn_mode, BN_MODES)
        batch = bn_mode == "batch"
        num_features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (num_features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (num_features,), jnp.float32)
        mean = self.variable("batch_stats", "mean", jnp.zeros, (num_features,), jnp.float32)
        var = self.variable("batch_stats", "var", jnp.ones, (num_features,), jnp.float32)
        params, state = BatchNormParams(scale, bias), BatchNormState(mean.value, var.value)
        if self.ghost_size:
            if self.axis_name is not None:
                raise ValueError("BatchNorm takes ghost_size or axis_name, not both: ghosts are "
                                 "groups of one shard's examples.")
            y, new_state = ghost_batch_norm(
                x, params, state, ghost_size=self.ghost_size, train=batch,
                momentum=self.momentum, epsilon=self.epsilon, backward=self.backward,
            )
        else:
            y, new_state = batch_norm(
                x, params, state, train=batch, momentum=self.momentum, epsilon=self.epsilon,
                axis_name=self.axis_name, backward=self.backward,
            )
        if batch and not self.is_initializing():
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
    """Bernoulli (or Gaussian) dropout with keys from the ``"dropout"`` rng stream; see
    :func:`bnreg.core.dropout.dropout` and :func:`bnreg.core.dropout.gaussian_dropout`.

    Attributes:
      rate: drop probability (the paper's retain probability is ``p = 1 - rate``); may be traced.
      kind: ``"bernoulli"`` or ``"gaussian"`` (multiplicative N(1, rate/(1-rate)) noise).
      broadcast_dims: axes along which one mask is shared (Bernoulli only).
      scaling: ``"inverted"`` (default) or ``"paper"`` (Bernoulli only).
      mask_bits: random bits per mask entry, 32 or 16 (Bernoulli only;
        :func:`bnreg.core.dropout.bernoulli_mask`).
    """

    rate: Any
    kind: str = "bernoulli"
    broadcast_dims: Sequence[int] = ()
    scaling: str = "inverted"
    mask_bits: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, *, noise: bool) -> jax.Array:
        noise = check_static_bool(noise, "noise")
        check_choice("kind", self.kind, NOISE_KINDS)
        if is_off(self.rate):
            return x
        key = self.make_rng("dropout") if noise else None
        if self.kind == "gaussian":
            return gaussian_dropout(key, x, rate=self.rate, deterministic=not noise)
        return dropout(
            key,
            x,
            rate=self.rate,
            deterministic=not noise,
            broadcast_dims=tuple(self.broadcast_dims),
            scaling=self.scaling,
            mask_bits=self.mask_bits,
        )


class DropConnectDense(nn.Module):
    """A dense layer whose weights are masked by DropConnect when ``noise`` is on; keys from the
    ``"dropout"`` rng stream. See :func:`bnreg.core.dropconnect.dropconnect_dense`.

    With ``gaussian_samples > 0`` and the noise off, the layer is evaluated by the paper's
    moment-matching inference (Wan et al. 2013, Sec. 3;
    :func:`bnreg.core.dropconnect.dropconnect_gaussian_inference`) and returns the *activation*
    ``activation(u)`` averaged over that many Gaussian samples of each pre-activation ``u``, not
    the pre-activation; its keys come from the ``"dropout"`` stream.

    Attributes:
      features: number of output units.
      rate: drop probability of each weight; may be traced.
      use_bias: whether to add a bias.
      per_example: a fresh weight mask per example (as in Wan et al. 2013) or one per batch.
      mask_bias: mask the bias like the weights (as in Wan et al. 2013) or add it unmasked.
      gaussian_samples: 0 for mean inference (the deterministic layer), Z > 0 for Gaussian
        inference with Z samples.
      mask_bits: random bits per mask entry, 32 or 16 (:func:`bnreg.core.dropout.bernoulli_mask`).
      scaling: ``"inverted"`` (×1/p in training) or ``"paper"`` (the paper's form: ×p at
        evaluation).
      kernel_init, bias_init: initialisers.
    """

    features: int
    rate: Any
    use_bias: bool = True
    per_example: bool = True
    mask_bias: bool = True
    gaussian_samples: int = 0
    mask_bits: int = 32
    scaling: str = "inverted"
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        noise: bool,
        activation: Callable[[jax.Array], jax.Array] | None = None,
    ) -> jax.Array:
        noise = check_static_bool(noise, "noise")
        kernel = self.param(
            "kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), jnp.float32)
            if self.use_bias
            else None
        )
        if self.gaussian_samples and not noise:
            if activation is None:
                raise ValueError(
                    "Gaussian DropConnect inference returns activations: pass the layer's "
                    "activation (activation=...)."
                )
            return dropconnect_gaussian_inference(
                self.make_rng("dropout"),
                x,
                kernel,
                bias,
                rate=self.rate,
                activation=activation,
                num_samples=self.gaussian_samples,
                mask_bias=self.mask_bias,
                scaling=self.scaling,
            )
        return dropconnect_dense(
            self.make_rng("dropout") if noise else None,
            x,
            kernel,
            bias,
            rate=self.rate,
            deterministic=not noise,
            per_example=self.per_example,
            mask_bias=self.mask_bias,
            mask_bits=self.mask_bits,
            scaling=self.scaling,
        )
