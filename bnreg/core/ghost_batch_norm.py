r"""Ghost Batch Normalization: Alg. 1 on each group of ``G`` consecutive examples of a batch.

Hoffer, Hubara & Soudry (NeurIPS 2017, "Train longer, generalize better", Alg. 1) normalise a
large batch of ``N = K·G`` examples as ``K`` *ghost batches* of ``G``. Ioffe & Szegedy's Alg. 1
(:func:`bnreg.core.batch_norm.batch_norm`) runs on each ghost :math:`\mathcal{G}_k` alone:

.. math::

    \mu_k = \frac{1}{G}\sum_{i\in\mathcal{G}_k} x_i, \qquad
    \sigma^2_k = \frac{1}{G}\sum_{i\in\mathcal{G}_k} (x_i - \mu_k)^2, \qquad
    y_i = \gamma\,\frac{x_i - \mu_k}{\sqrt{\sigma^2_k + \epsilon}} + \beta
    \quad (i \in \mathcal{G}_k),

and the EMA takes one step with the ghosts' mean moments:

.. math::

    \text{mean}' = \rho\,\text{mean} + (1-\rho)\,\frac{1}{K}\sum_k \mu_k, \qquad
    \text{var}' = \rho\,\text{var} + (1-\rho)\,\frac{1}{K}\sum_k \frac{m}{m-1}\sigma^2_k,

with :math:`\gamma` = ``params.scale``, :math:`\beta` = ``params.bias``, :math:`\rho` =
``momentum`` (flax convention, as :func:`~bnreg.core.batch_norm.batch_norm`) and ``m`` the
values per feature in one ghost (``G`` dense, ``G·H·W`` conv).

Conventions: the EMA tracks the mean of the ghosts' *unbiased* variances, each Bessel-corrected
for its ``m``; the mean is the batch's either way. For examples drawn independently each ghost's
unbiased variance estimates the same ``Var[x]`` as the whole batch's unbiased variance does (the
whole batch's adds the spread of the ghosts' means, which its larger ``m`` corrects for), so the
EMA and Alg. 2's statistics — which :class:`bnreg.layers.BatchNorm` accumulates over the whole
batch — estimate the same population moments; they differ batch to batch only. One EMA step
per batch, not one per ghost, so ``momentum`` means what it means without ghosts.
Inference (``train=False``) is :func:`~bnreg.core.batch_norm.batch_norm`'s affine map: ghosts
only exist in training. ``G = N`` is plain Alg. 1.

On a device mesh whose data axis splits the batch (``bnreg.engine.devices``), a ghost size that
divides each device's share keeps every ghost on one device: the ghosts' statistics are then the
per-device ("unsynchronised") BN of data-parallel training, without its dependence on the
device count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bnreg.core.batch_norm import BatchNormParams, BatchNormState, batch_norm


def ghost_batch_norm(
    x: jax.Array,
    params: BatchNormParams,
    state: BatchNormState,
    *,
    ghost_size: int,
    train: bool,
    momentum: float = 0.99,
    epsilon: float = 1e-5,
    backward: str = "autodiff",
) -> tuple[jax.Array, BatchNormState]:
    """Ghost BN of ``x`` (``(N, ..., F)``) in ghosts of ``ghost_size`` examples (the module's
    equations); ``momentum``, ``epsilon`` and ``backward`` as in
    :func:`bnreg.core.batch_norm.batch_norm`.

    Returns:
      ``(y, new_state)``; ``y`` has the shape and dtype of ``x``.

    Raises:
      ValueError: ``ghost_size`` < 1 or not dividing ``N``; every error of ``batch_norm``
        (e.g. a conv-free ghost of one example).
    """
    if not train:
        return batch_norm(x, params, state, train=False, momentum=momentum, epsilon=epsilon)
    if x.ndim < 2 or ghost_size < 1 or x.shape[0] % ghost_size:
        raise ValueError(f"ghost_size ({ghost_size}) must be ≥ 1 and divide the batch's "
                         f"{x.shape[0] if x.ndim else 0} examples (x.shape={x.shape}).")
    ghosts = x.reshape(x.shape[0] // ghost_size, ghost_size, *x.shape[1:])
    y, states = jax.vmap(
        lambda ghost: batch_norm(ghost, params, state, train=True, momentum=momentum,
                                 epsilon=epsilon, backward=backward)
    )(ghosts)
    # Each ghost's state is ρ·old + (1−ρ)·moments_k, so their mean is one step with the mean
    # of the moments.
    new_state = BatchNormState(mean=jnp.mean(states.mean, axis=0),
                               var=jnp.mean(states.var, axis=0))
    return y.reshape(x.shape), new_state
