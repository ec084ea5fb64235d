r"""Batch Normalization as pure functions (Ioffe & Szegedy, ICML 2015, arXiv:1502.03167).

Features live on the last axis of ``x``; statistics are taken over every other axis, so a dense
activation ``(N, F)`` is normalised over its ``m = N`` examples and a convolutional activation
``(N, H, W, C)`` over its ``m' = m·p·q = N·H·W`` positions, with one ``γ, β`` per feature map
(Sec. 3.2). Under a mapped axis (``axis_name``) the group is the global batch across that axis.

**Alg. 1 (training)**, per feature, over a mini-batch :math:`\mathcal{B} = \{x_1, \dots, x_m\}`:

.. math::

    \mu_\mathcal{B} = \frac{1}{m}\sum_{i=1}^m x_i, \qquad
    \sigma^2_\mathcal{B} = \frac{1}{m}\sum_{i=1}^m (x_i - \mu_\mathcal{B})^2, \qquad
    \hat{x}_i = \frac{x_i - \mu_\mathcal{B}}{\sqrt{\sigma^2_\mathcal{B} + \epsilon}}, \qquad
    y_i = \gamma \hat{x}_i + \beta.

**Alg. 2 (inference)**: over many training mini-batches :math:`\mathcal{B}` of size ``m``,

.. math::

    \mathrm{E}[x] = \mathrm{E}_\mathcal{B}[\mu_\mathcal{B}], \qquad
    \mathrm{Var}[x] = \frac{m}{m-1}\,\mathrm{E}_\mathcal{B}[\sigma^2_\mathcal{B}], \qquad
    y = \frac{\gamma}{\sqrt{\mathrm{Var}[x] + \epsilon}}\,x
        + \Big(\beta - \frac{\gamma\,\mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}\Big),

a fixed affine map that :func:`fold_batch_norm` folds into the preceding linear layer.

Conventions (chosen once, tested in ``tests/test_batch_norm.py``):

* **Static and traced arguments**: ``train``, ``axis_name`` and ``backward`` select code paths
  and must be static; ``momentum`` and ``epsilon`` may be traced scalars (e.g. vmapped over the
  members of a sweep) and are checked only when concrete.

* **Momentum** follows flax: ``running = momentum * running + (1 - momentum) * batch``
  (default 0.99). PyTorch's ``momentum`` argument is the other weight:
  ``torch_momentum = 1 - momentum`` (flax 0.99 == PyTorch 0.01).
* **Variance**: training normalises with the *biased* batch variance :math:`\sigma^2_\mathcal{B}`
  (Alg. 1). Both population estimates — the EMA in :func:`batch_norm` and the exact Alg. 2
  accumulator — track the *unbiased* variance :math:`\frac{m}{m-1}\sigma^2_\mathcal{B}`, so the two
  estimate the same quantity (as PyTorch's running variance does; flax tracks the biased one).
  They differ in *whose* statistics: the EMA averages batches of past weights, Alg. 2 measures
  the final ones. While a constant learning rate keeps the weights moving that lag can cost
  accuracy: about 0.4 to 1.2 points in a pilot with the BN paper's MNIST net on Fashion-MNIST,
  at every momentum from 0.5 to 0.999 (``experiments/bn_ema_momentum.py``). Report the network
  with Alg. 2's statistics.
* **Moments** are computed as :math:`\mathrm{E}[x]` and :math:`\mathrm{E}[x^2]` in one pass (one
  collective under ``axis_name``), with
  :math:`\sigma^2 = \max(\mathrm{E}[x^2] - \mathrm{E}[x]^2, 0)`, as flax's default does. This
  loses precision when :math:`|\mu| \gg \sigma` (centre such inputs first); ``bfloat16`` and
  ``float16`` inputs are reduced in ``float32``.

The module runs past 500 lines because its docstrings carry Alg. 1, Alg. 2, the folding and the
Sec. 3 backward formulas in full, beside the code that implements them.

Longer than the project's ~450 lines because its docstrings carry the paper's equations;
Alg. 2's population statistics are the part that could become a module of their own.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bnreg._checks import check_choice, check_static_bool, is_traced

__all__ = [
    "BatchNormParams",
    "BatchNormState",
    "PopulationStatsAccumulator",
    "batch_norm",
    "fold_batch_norm",
    "init_batch_norm",
    "population_stats_finalize",
    "population_stats_init",
    "population_stats_update",
]

AxisName = str | tuple[str, ...] | None

# The gradients batch_norm can take: JAX differentiating the forward, or the Sec. 3 formulas.
BACKWARDS = ("autodiff", "paper")


class BatchNormParams(NamedTuple):
    """Learnable per-feature ``γ`` (``scale``) and ``β`` (``bias``), each of shape ``(F,)``."""

    scale: jax.Array
    bias: jax.Array


class BatchNormState(NamedTuple):
    """Per-feature population statistics ``E[x]`` (``mean``), ``Var[x]`` (``var``), each ``(F,)``.

    ``var`` is the unbiased population variance (see the module docstring).
    """

    mean: jax.Array
    var: jax.Array


class PopulationStatsAccumulator(NamedTuple):
    r"""Running sums for Alg. 2, a pytree that can be carried through ``jax.lax.scan``.

    Attributes:
      sum_batch_mean: :math:`\sum_\mathcal{B} \mu_\mathcal{B}`, shape ``(F,)``.
      sum_unbiased_batch_var: :math:`\sum_\mathcal{B} \frac{m_\mathcal{B}}{m_\mathcal{B}-1}
        \sigma^2_\mathcal{B}`, shape ``(F,)``.
      num_batches: number of mini-batches accumulated, an int32 scalar.
    """

    sum_batch_mean: jax.Array
    sum_unbiased_batch_var: jax.Array
    num_batches: jax.Array


def init_batch_norm(
    num_features: int, dtype: jnp.dtype = jnp.float32
) -> tuple[BatchNormParams, BatchNormState]:
    """Initial parameters ``γ = 1, β = 0`` and statistics ``mean = 0, var = 1``.

    Args:
      num_features: ``F``, the size of the feature (last) axis.
      dtype: dtype of all four arrays.

    Returns:
      ``(params, state)``.

    Raises:
      ValueError: if ``num_features`` is not a positive int.
    """
    _check_num_features(num_features)
    ones = jnp.ones((num_features,), dtype)
    zeros = jnp.zeros((num_features,), dtype)
    return BatchNormParams(scale=ones, bias=zeros), BatchNormState(mean=zeros, var=ones)


def batch_norm(
    x: jax.Array,
    params: BatchNormParams,
    state: BatchNormState,
    *,
    train: bool,
    momentum: float = 0.99,
    epsilon: float = 1e-5,
    axis_name: AxisName = None,
    backward: str = "autodiff",
) -> tuple[jax.Array, BatchNormState]:
    r"""Batch-normalising transform, Ioffe & Szegedy 2015, Alg. 1 (train) / Alg. 2 step 11 (eval).

    With ``train=True``, per feature over the ``m`` values of all axes but the last (and across
    ``axis_name`` when given):

    .. math::

        y = \gamma \frac{x - \mu_\mathcal{B}}{\sqrt{\sigma^2_\mathcal{B} + \epsilon}} + \beta,
        \qquad
        \text{mean}' = \rho\,\text{mean} + (1-\rho)\,\mu_\mathcal{B}, \qquad
        \text{var}' = \rho\,\text{var} + (1-\rho)\,\frac{m}{m-1}\sigma^2_\mathcal{B},

    where :math:`\gamma` = ``params.scale``, :math:`\beta` = ``params.bias``, :math:`\rho` =
    ``momentum`` (flax convention; PyTorch's ``momentum`` is ``1 - momentum``),
    :math:`\sigma^2_\mathcal{B}` is the biased batch variance and the EMA tracks the unbiased one
    (so it estimates the same ``Var[x]`` as Alg. 2). The statistics update is wrapped in
    ``stop_gradient``. With ``train=False`` this is the affine map
    :math:`y = \frac{\gamma}{\sqrt{\text{var}+\epsilon}} x + \beta
    - \frac{\gamma\,\text{mean}}{\sqrt{\text{var}+\epsilon}}` and ``state`` is returned unchanged.

    ``backward="paper"`` differentiates with the paper's Sec. 3 formulas (a ``jax.custom_vjp``),
    sums over the normalisation axes and ``psum`` over ``axis_name``:

    .. math::

        \frac{\partial\ell}{\partial\hat{x}} = \frac{\partial\ell}{\partial y}\gamma, \quad
        \frac{\partial\ell}{\partial\sigma^2} = \sum \frac{\partial\ell}{\partial\hat{x}}
            (x-\mu)\tfrac{-1}{2}(\sigma^2+\epsilon)^{-3/2}, \quad
        \frac{\partial\ell}{\partial\mu} = \sum \frac{\partial\ell}{\partial\hat{x}}
            \frac{-1}{\sqrt{\sigma^2+\epsilon}}
            + \frac{\partial\ell}{\partial\sigma^2}\frac{\sum -2(x-\mu)}{m},

    .. math::

        \frac{\partial\ell}{\partial x} = \frac{\partial\ell}{\partial\hat{x}}
            \frac{1}{\sqrt{\sigma^2+\epsilon}} + \frac{\partial\ell}{\partial\sigma^2}
            \frac{2(x-\mu)}{m} + \frac{\partial\ell}{\partial\mu}\frac{1}{m}, \quad
        \frac{\partial\ell}{\partial\gamma} = \sum \frac{\partial\ell}{\partial y}\hat{x}, \quad
        \frac{\partial\ell}{\partial\beta} = \sum \frac{\partial\ell}{\partial y}.

    The ``x`` gradient accounts for every shard's use of the shared statistics. The ``γ, β``
    gradients are what autodiff gives: under ``vmap`` each shard's own sum (``in_axes=None``
    adds them up when differentiated from outside the ``vmap``); under ``shard_map`` a parameter
    replicated over the axis gets the sum over all shards. ``backward`` is ignored when
    ``train=False``.

    Args:
      x: activations, ``(..., F)`` with at least 2 dims: ``(N, F)`` dense, ``(N, H, W, F)`` conv.
      params: ``γ, β`` of shape ``(F,)``.
      state: running ``mean, var`` of shape ``(F,)``.
      train: normalise with batch statistics and update ``state`` (Alg. 1), else use ``state``;
        a Python bool (static under ``jax.jit``).
      momentum: EMA weight of the old statistics, in ``[0, 1]`` (flax convention). It may be a
        traced scalar (e.g. vmapped over the members of a sweep); only a concrete value is
        checked.
      epsilon: ``ε > 0`` added to the variance.
      axis_name: name(s) of a mapped axis (``vmap``, ``shard_map``) to synchronise statistics
        over; the batch is then the concatenation of all shards.
      backward: ``"autodiff"`` (JAX differentiates the forward) or ``"paper"`` (Sec. 3 formulas).

    Returns:
      ``(y, new_state)``; ``y`` has the shape and dtype of ``x``.

    Raises:
      TypeError: if ``x`` is not a floating-point array; if ``train`` is not a static bool.
      ValueError: if ``x.ndim < 2``; if a params/state array is not ``(F,)``; if ``epsilon <= 0``;
        if ``momentum`` is outside ``[0, 1]``; if ``backward`` is unknown; if ``train=True`` with
        fewer than two values per feature (``m < 2``). All of these fire under ``jax.jit``;
        ``epsilon`` and ``momentum`` are only checked when they are concrete (not traced).
    """
    _check_input(x, "batch_norm")
    _check_feature_arrays(x, {"params.scale": params.scale, "params.bias": params.bias})
    _check_feature_arrays(x, {"state.mean": state.mean, "state.var": state.var})
    _check_epsilon(epsilon)
    _check_momentum(momentum)
    check_choice("backward", backward, BACKWARDS)
    # train selects Alg. 1 or the inference transform, so it must be static.
    train = check_static_bool(train, "train")
    if not train:
        inv_std = jax.lax.rsqrt(state.var + epsilon)
        multiplier = params.scale * inv_std
        offset = params.bias - state.mean * multiplier
        return (x * multiplier + offset).astype(x.dtype), state

    group_size = _group_size(x, axis_name)
    if group_size < 2:
        # One value: the batch variance is 0 and the output is all β; none: the moments (and
        # with them the running statistics) are NaN.
        raise ValueError(
            f"batch_norm(train=True) got {group_size} value(s) per feature (x.shape={x.shape}, "
            f"axis_name={axis_name!r}): Alg. 1 needs a batch mean and variance. "
            "Use a batch with more than 1 example per feature, or train=False "
            "(PyTorch: 'Expected more than 1 value per channel when training')."
        )
    if backward == "paper":
        y, batch_mean, batch_var = _paper_normalize(
            x, params.scale, params.bias, epsilon, axis_name
        )
    else:
        batch_mean, batch_var = _batch_moments(x, axis_name)
        inv_std = jax.lax.rsqrt(batch_var + epsilon)
        multiplier = params.scale * inv_std
        y = x * multiplier + (params.bias - batch_mean * multiplier)
    batch_mean = jax.lax.stop_gradient(batch_mean)
    unbiased_var = jax.lax.stop_gradient(batch_var) * (group_size / (group_size - 1))
    new_state = BatchNormState(
        mean=(momentum * state.mean + (1 - momentum) * batch_mean).astype(state.mean.dtype),
        var=(momentum * state.var + (1 - momentum) * unbiased_var).astype(state.var.dtype),
    )
    return y.astype(x.dtype), new_state


def population_stats_init(
    num_features: int, dtype: jnp.dtype = jnp.float32
) -> PopulationStatsAccumulator:
    """An empty Alg. 2 accumulator (zero sums, zero batches).

    Args:
      num_features: ``F``, the size of the feature (last) axis.
      dtype: dtype of the running sums.

    Returns:
      A :class:`PopulationStatsAccumulator`.

    Raises:
      ValueError: if ``num_features`` is not a positive int.
    """
    _check_num_features(num_features)
    zeros = jnp.zeros((num_features,), dtype)
    return PopulationStatsAccumulator(
        sum_batch_mean=zeros, sum_unbiased_batch_var=zeros, num_batches=jnp.zeros((), jnp.int32)
    )


def population_stats_update(
    acc: PopulationStatsAccumulator, x: jax.Array, axis_name: AxisName = None
) -> PopulationStatsAccumulator:
    r"""Adds one training mini-batch to the Alg. 2 sums (Ioffe & Szegedy 2015, Alg. 2, step 10).

    .. math::

        S_\mu \mathrel{+}= \mu_\mathcal{B}, \qquad
        S_{\sigma^2} \mathrel{+}= \frac{m}{m-1}\sigma^2_\mathcal{B}, \qquad K \mathrel{+}= 1,

    with :math:`\mu_\mathcal{B}, \sigma^2_\mathcal{B}` the batch mean and biased variance of ``x``
    over all axes but the last and ``m`` the number of values per feature (``N`` dense,
    ``N·H·W`` conv, times the axis size under ``axis_name``). Each batch is Bessel-corrected with
    its own ``m`` before averaging, so batches of different sizes may be mixed: every batch
    contributes an unbiased estimate of ``Var[x]`` with equal weight, and with equal ``m`` the
    result is exactly the paper's :math:`\frac{m}{m-1}\mathrm{E}_\mathcal{B}[\sigma^2_\mathcal{B}]`.

    Args:
      acc: the accumulator so far.
      x: a mini-batch of activations, ``(..., F)`` with at least 2 dims.
      axis_name: name(s) of a mapped axis whose shards together form the batch.

    Returns:
      The updated accumulator.

    Raises:
      TypeError: if ``x`` is not a floating-point array.
      ValueError: if ``x.ndim < 2``, if the feature sizes of ``x`` and ``acc`` differ, or if
        ``m < 2`` (the unbiased variance is undefined). These fire under ``jax.jit``.
    """
    _check_input(x, "population_stats_update")
    _check_feature_arrays(
        x,
        {
            "acc.sum_batch_mean": acc.sum_batch_mean,
            "acc.sum_unbiased_batch_var": acc.sum_unbiased_batch_var,
        },
    )
    group_size = _group_size(x, axis_name)
    if group_size < 2:
        raise ValueError(
            f"population_stats_update got {group_size} value(s) per feature (x.shape={x.shape}, "
            f"axis_name={axis_name!r}), so m/(m-1) is undefined. "
            "Accumulate batches with more than 1 example per feature."
        )
    batch_mean, batch_var = _batch_moments(jax.lax.stop_gradient(x), axis_name)
    dtype = acc.sum_batch_mean.dtype
    return PopulationStatsAccumulator(
        sum_batch_mean=acc.sum_batch_mean + batch_mean.astype(dtype),
        sum_unbiased_batch_var=acc.sum_unbiased_batch_var
        + (batch_var * (group_size / (group_size - 1))).astype(dtype),
        num_batches=acc.num_batches + 1,
    )


def population_stats_finalize(acc: PopulationStatsAccumulator) -> BatchNormState:
    r"""Population statistics of Alg. 2, step 10 (Ioffe & Szegedy 2015).

    .. math::

        \mathrm{E}[x] = \frac{S_\mu}{K}, \qquad \mathrm{Var}[x] = \frac{S_{\sigma^2}}{K}
        \;\Big(= \frac{m}{m-1}\,\mathrm{E}_\mathcal{B}[\sigma^2_\mathcal{B}]
        \text{ for equal } m\Big).

    Args:
      acc: an accumulator that has seen ``K >= 1`` batches.

    Returns:
      A :class:`BatchNormState` to pass to ``batch_norm(..., train=False)``.

    Raises:
      ValueError: if ``acc.num_batches`` is concretely 0. Under ``jax.jit`` the count is traced,
        the check cannot fire, and an empty accumulator yields NaN statistics.
    """
    if not is_traced(acc.num_batches) and int(acc.num_batches) == 0:
        raise ValueError(
            "population_stats_finalize got an empty accumulator (num_batches == 0). "
            "Call population_stats_update on at least one training batch first."
        )
    count = acc.num_batches.astype(acc.sum_batch_mean.dtype)
    return BatchNormState(mean=acc.sum_batch_mean / count, var=acc.sum_unbiased_batch_var / count)


def fold_batch_norm(
    kernel: jax.Array,
    bias: jax.Array | None,
    params: BatchNormParams,
    state: BatchNormState,
    epsilon: float = 1e-5,
) -> tuple[jax.Array, jax.Array]:
    r"""Folds inference BN into the preceding dense or conv layer (Ioffe & Szegedy 2015, Alg. 2).

    For ``z = x·W + b`` followed by ``BN(z)`` with ``state`` statistics of BN's input :math:`z`,

    .. math::

        s = \frac{\gamma}{\sqrt{\mathrm{Var}[z] + \epsilon}}, \qquad
        W' = W \cdot \mathrm{diag}(s), \qquad b' = s\,(b - \mathrm{E}[z]) + \beta,

    so ``x·W' + b' == BN_inference(x·W + b)``. The output features are ``kernel``'s last axis.

    Args:
      kernel: ``(in, out)`` dense or ``(h, w, in, out)`` conv kernel (any rank ``>= 2``, output
        features last).
      bias: ``(out,)`` bias of the layer, or ``None`` for a bias-free layer (treated as 0, the
        paper's placement ``BN(Wu)``).
      params: ``γ, β`` of shape ``(out,)``.
      state: population ``mean, var`` of shape ``(out,)``.
      epsilon: the ``ε > 0`` used by ``batch_norm``.

    Returns:
      ``(folded_kernel, folded_bias)`` with the shapes of ``kernel`` and ``(out,)``.

    Raises:
      ValueError: if ``kernel.ndim < 2``, if ``bias``/``params``/``state`` are not ``(out,)``, or
        if ``epsilon <= 0``.
    """
    if kernel.ndim < 2:
        raise ValueError(
            f"fold_batch_norm needs a dense (in, out) or conv (h, w, in, out) kernel, "
            f"got shape {kernel.shape}."
        )
    arrays = {
        "params.scale": params.scale,
        "params.bias": params.bias,
        "state.mean": state.mean,
        "state.var": state.var,
    }
    if bias is not None:
        arrays["bias"] = bias
    _check_feature_arrays(kernel, arrays)
    _check_epsilon(epsilon)
    multiplier = params.scale * jax.lax.rsqrt(state.var + epsilon)
    layer_bias = jnp.zeros_like(state.mean) if bias is None else bias
    return kernel * multiplier, (layer_bias - state.mean) * multiplier + params.bias


def _check_num_features(num_features: int) -> None:
    if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features < 1:
        raise ValueError(f"num_features must be a positive int, got {num_features!r}.")


def _check_input(x: jax.Array, caller: str) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(
            f"{caller} needs a floating-point x, got dtype {jnp.result_type(x)}; "
            "cast it, e.g. x.astype(jnp.float32)."
        )
    if jnp.ndim(x) < 2:
        raise ValueError(
            f"{caller} needs x with a batch axis and a feature axis (ndim >= 2), got shape "
            f"{jnp.shape(x)}. Add a batch axis, e.g. x[None], or reshape to (N, F)."
        )


def _check_feature_arrays(x: jax.Array, arrays: dict[str, jax.Array]) -> None:
    num_features = x.shape[-1]
    for name, array in arrays.items():
        if jnp.shape(array) != (num_features,):
            raise ValueError(
                f"{name} has shape {jnp.shape(array)} but the last (feature) axis of the input "
                f"has size {num_features}; create it for {num_features} features "
                "(init_batch_norm, population_stats_init) or move the features to the last axis."
            )


def _check_epsilon(epsilon: float) -> None:
    if not is_traced(epsilon) and not float(epsilon) > 0:
        raise ValueError(f"epsilon must be > 0 (e.g. 1e-5), got {epsilon!r}.")


def _check_momentum(momentum: float) -> None:
    if not is_traced(momentum) and not 0 <= float(momentum) <= 1:
        raise ValueError(
            f"momentum must be in [0, 1] (flax convention: weight of the old statistics, e.g. "
            f"0.99; PyTorch's momentum=0.1 is 0.9 here), got {momentum!r}."
        )


def _group_size(x: jax.Array, axis_name: AxisName) -> int:
    """``m``: values per feature in one normalisation group, across ``axis_name`` if given."""
    local = math.prod(x.shape[:-1])
    return local if axis_name is None else local * jax.lax.axis_size(axis_name)


def _reduction_dtype(x: jax.Array) -> jnp.dtype:
    return jnp.promote_types(x.dtype, jnp.float32)


def _batch_moments(x: jax.Array, axis_name: AxisName) -> tuple[jax.Array, jax.Array]:
    """Batch mean and biased variance over all axes but the last, from E[x] and E[x²]."""
    axes = tuple(range(x.ndim - 1))
    x = x.astype(_reduction_dtype(x))
    moments = jnp.stack([jnp.mean(x, axis=axes), jnp.mean(jnp.square(x), axis=axes)])
    if axis_name is not None:
        moments = jax.lax.pmean(moments, axis_name)
    mean, mean_of_square = moments[0], moments[1]
    return mean, jnp.maximum(mean_of_square - jnp.square(mean), 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _paper_normalize(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, axis_name: AxisName
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Alg. 1 forward returning ``(y, μ_B, σ²_B)``, differentiated by the Sec. 3 formulas."""
    return _paper_forward(x, scale, bias, epsilon, axis_name)[0]


def _paper_forward(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, axis_name: AxisName
) -> tuple[tuple[jax.Array, jax.Array, jax.Array], tuple[jax.Array, ...]]:
    mean, var = _batch_moments(x, axis_name)
    x_centered = x - mean
    x_hat = x_centered * jax.lax.rsqrt(var + epsilon)
    # y carries x's dtype, so the cotangent dy (and hence dx) does too.
    y = (scale * x_hat + bias).astype(x.dtype)
    # m is a residual: under vmap the backward may run after the axis name is unbound.
    group_size = jnp.asarray(_group_size(x, axis_name), var.dtype)
    return (y, mean, var), (x_centered, x_hat, var, scale, bias, epsilon, group_size)


def _paper_backward(
    axis_name: AxisName, residuals: tuple[jax.Array, ...], cotangents: tuple[jax.Array, ...]
) -> tuple[jax.Array, ...]:
    # The μ_B and σ²_B outputs only feed the stop_gradient'ed statistics update, so their
    # cotangents are zero and the paper's formulas (which have no such outputs) are exact.
    x_centered, x_hat, var, scale, bias, epsilon, m = residuals
    dy = cotangents[0]
    axes = tuple(range(dy.ndim - 1))
    dx_hat = dy * scale
    # The three statistics sums are independent, so they share one collective.
    sums = jnp.stack(
        [
            jnp.sum(dx_hat * x_centered, axis=axes),
            jnp.sum(dx_hat, axis=axes),
            jnp.sum(-2 * x_centered, axis=axes),
        ]
    )
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    sum_dx_hat_centered, sum_dx_hat, sum_minus_two_centered = sums[0], sums[1], sums[2]
    var_eps = var + epsilon
    inv_std = jax.lax.rsqrt(var_eps)
    d_var = sum_dx_hat_centered * -0.5 * var_eps ** (-1.5)
    d_mean = sum_dx_hat * -inv_std + d_var * sum_minus_two_centered / m
    dx = dx_hat * inv_std + d_var * 2 * x_centered / m + d_mean / m
    d_scale = _as_cotangent_of(jnp.sum(dy * x_hat, axis=axes), scale)
    d_bias = _as_cotangent_of(jnp.sum(dy, axis=axes), bias)
    return dx.astype(dy.dtype), d_scale, d_bias, jnp.zeros_like(epsilon)


def _as_cotangent_of(local_sum: jax.Array, param: jax.Array) -> jax.Array:
    """Casts a per-shard parameter-gradient sum to the type JAX expects for ``param``.

    Under ``shard_map`` a parameter replicated over a mesh axis meets the varying activations
    through an implicit cast to varying, whose transpose is a ``psum``; a custom backward must
    apply it itself, and the pullback of that same implicit cast does exactly that (and is the
    identity under ``vmap``, without a mesh, or for a parameter that already varies).
    """
    local_sum = local_sum.astype(param.dtype)
    _, pullback = jax.vjp(lambda p: p + local_sum * 0, param)
    (cotangent,) = pullback(local_sum)
    return cotangent


_paper_normalize.defvjp(_paper_forward, _paper_backward)
