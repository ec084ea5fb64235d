r"""Dropout (Srivastava et al. 2014): Bernoulli and Gaussian noise, Monte-Carlo model averaging.

Conventions used throughout this module (see ``design.md`` §3):

* ``rate`` is the *drop* probability, as in flax and PyTorch. The paper's *retain* probability is
  :math:`p = 1 - \text{rate}`.
* The default scaling is *inverted*: kept units are multiplied by :math:`1/p` at train time and the
  network is used unchanged at test time. ``scaling="paper"`` is the paper's form: no train-time
  scaling, outputs multiplied by :math:`p` at test time. Both have the same expectation
  :math:`\mathbb{E}[\text{train output}] = \text{test output}`.
* Every stochastic function takes a ``jax.random`` key first; new-style typed keys
  (``jax.random.key``) and legacy ``uint32`` keys (``jax.random.PRNGKey``) are both accepted.
* ``rate`` may be concrete (a Python or NumPy number, or a concrete array scalar) or a *traced*
  scalar, so that one compiled program can be vmapped over members that differ in their rate. A
  concrete rate is checked to lie in ``[0, 1)`` and ``rate == 0`` returns ``x`` without needing a
  key. A traced rate cannot be checked (the caller checks it before tracing) and always takes the
  general path, so it needs a key unless ``deterministic=True``; a traced rate of exactly 0 still
  returns ``x`` bit for bit (every unit is kept and divided by 1). Both kinds compute
  :math:`p = 1 - \text{rate}` with the same array arithmetic, so a member of a vmapped sweep
  equals the call with its concrete rate and the same key bit for bit.
* The flags and shapes (``scaling``, ``deterministic``, ``broadcast_dims``, ``num_samples``,
  ``batch_size``) select code paths and are static: under :func:`jax.jit` pass them as Python
  values (closure, ``functools.partial`` or ``static_argnames``), never as traced arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from bnreg._checks import (
    check_choice,
    check_key,
    check_positive_int,
    check_rate,
    check_static_bool,
    is_traced,
)

__all__ = ["bernoulli_mask", "dropout", "gaussian_dropout", "monte_carlo_average"]

Scaling = Literal["inverted", "paper"]
SCALINGS = ("inverted", "paper")
MASK_BITS = (32, 16)


def keep_probability(rate: float | jax.Array) -> jax.Array:
    r"""The papers' retain probability :math:`p = 1 - \text{rate}` as a default-float array,
    computed the same way for a concrete and a traced rate so that both draw the same mask and
    scale by the same number (shared with :mod:`bnreg.core.dropconnect`)."""
    return 1 - jnp.asarray(rate, float)


def check_mask_resolution(keep: float | jax.Array, bits: int) -> None:
    """Refuses a concrete keep probability in :math:`(0, 2^{-16})` for a 16-bit mask
    (:func:`bernoulli_mask`), which would drop every entry; a traced one cannot be checked."""
    if bits == 16 and not is_traced(keep) and np.any((0 < np.asarray(keep)) &
                                                     (np.asarray(keep) < 2.0**-16)):
        raise ValueError(f"a 16-bit mask resolves the keep probability to 2⁻¹⁶ and would drop "
                         f"every entry at p = {keep}: use mask_bits=32 for such a rate.")


def _floating(x: jax.typing.ArrayLike, function_name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(f"{function_name} needs a floating-point x, got dtype {x.dtype}.")
    return x


def _mask_shape(shape: tuple[int, ...], broadcast_dims: Sequence[int]) -> tuple[int, ...]:
    mask_shape = list(shape)
    for dim in broadcast_dims:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"broadcast_dims must hold Python ints, got {broadcast_dims!r}.")
        if not -len(shape) <= dim < len(shape):
            raise ValueError(
                f"broadcast_dims entry {dim} is out of range for x of rank {len(shape)}."
            )
        mask_shape[dim] = 1
    return tuple(mask_shape)


def bernoulli_mask(
    key: jax.Array, keep: jax.Array, shape: tuple[int, ...], *, bits: int = 32
) -> jax.Array:
    r"""A boolean mask of independent :math:`\mathrm{Bernoulli}(p)` draws, ``p = keep``.

    ``bits=32`` is :func:`jax.random.bernoulli` (a 32-bit uniform per entry, compared with
    :math:`p`). ``bits=16`` draws half as many 32-bit words and uses each word's two 16-bit
    halves as two independent uniform integers :math:`u \in \{0, \dots, 2^{16}-1\}`, keeping an
    entry when :math:`u < \mathrm{round}(p \cdot 2^{16})`: a Bernoulli draw with :math:`p`
    resolved to :math:`2^{-16}` (exact for the papers' 0.5 and 0.8; :math:`p = 1` keeps every
    entry), for half the random bits — about twice as fast on a CPU, where threefry's bits are
    most of a mask's cost. The two samplers draw different masks from one key.

    Raises:
      ValueError: ``bits=16`` with a concrete :math:`0 < p < 2^{-16}`, which it would resolve to
        0 (every entry dropped, no longer unbiased): use ``bits=32``. A traced :math:`p` cannot
        be checked.
    """
    check_choice("bits", bits, MASK_BITS)
    check_mask_resolution(keep, bits)
    if bits == 32:
        return jax.random.bernoulli(key, keep, shape)
    size = math.prod(shape)
    words = jax.random.bits(key, ((size + 1) // 2,), jnp.uint32)
    uniforms = jnp.concatenate([words & 0xFFFF, words >> 16])[:size].reshape(shape)
    threshold = jnp.round(jnp.asarray(keep, jnp.float32) * 65536.0).astype(jnp.uint32)
    return uniforms < threshold


def dropout(
    key: jax.Array | None,
    x: jax.typing.ArrayLike,
    *,
    rate: float,
    deterministic: bool = False,
    broadcast_dims: Sequence[int] = (),
    scaling: Scaling = "inverted",
    mask_bits: int = 32,
) -> jax.Array:
    r"""Bernoulli dropout of the units ``x`` (Srivastava et al. 2014, Sec. 4).

    The paper's feed-forward operation with retain probability :math:`p`:

    .. math::

        r_j \sim \mathrm{Bernoulli}(p), \qquad \tilde{y} = r \odot y .

    Here :math:`y` is ``x``, :math:`p = 1 - \text{rate}`, and :math:`r` is drawn from ``key``.
    The two scalings differ only by where the factor :math:`p` goes:

    ========== ================================= ==========================
    scaling    train (``deterministic=False``)    test (``deterministic=True``)
    ========== ================================= ==========================
    inverted   :math:`r \odot y / p`             :math:`y`
    paper      :math:`r \odot y`                 :math:`p\, y` (Sec. 4, weight scaling)
    ========== ================================= ==========================

    so in both cases :math:`\mathbb{E}_r[\text{train}] = \text{test}`. Scaling the output of a
    layer by :math:`p` equals scaling the outgoing weights by :math:`p`, as the paper does.

    ``broadcast_dims`` shares one mask entry along those axes (as ``flax.linen.Dropout``), e.g.
    ``broadcast_dims=(1, 2)`` on ``(batch, h, w, c)`` drops whole feature maps.

    ``rate`` may be traced (see the module conventions): the mask is then drawn with keep
    probability :math:`p = 1 - \text{rate}` exactly as for the concrete rate, so with the same
    key a vmap over rates equals the separate calls bit for bit; a traced ``rate == 0`` keeps
    every unit and returns ``x`` bit for bit (:math:`x / 1 = x`, :math:`1 \cdot x = x`), but
    needs a key when ``deterministic=False``.

    Args:
      key: a ``jax.random`` key (typed or legacy ``uint32``). May be ``None`` when
        ``deterministic=True`` or ``rate`` is a concrete 0.
      x: floating-point array of units.
      rate: drop probability in ``[0, 1)``: a concrete number (checked) or a traced scalar
        (unchecked).
      deterministic: ``True`` for evaluation (no noise; see the table above); a static bool.
      broadcast_dims: axes of ``x`` along which the mask is shared.
      scaling: ``"inverted"`` (default) or ``"paper"``.
      mask_bits: random bits per mask entry, 32 (default) or 16 (:func:`bernoulli_mask`).

    Returns:
      An array with the shape and dtype of ``x``. A rate of 0 returns ``x`` unchanged (for both
      scalings; a concrete 0 also without needing a key).

    Raises:
      TypeError: non-scalar ``rate``, traced ``deterministic``, non-integer ``broadcast_dims``,
        integer ``x``.
      ValueError: a concrete ``rate`` outside ``[0, 1)``; unknown ``scaling``;
        ``broadcast_dims`` out of range; ``key is None`` with ``deterministic=False`` and a
        traced or non-zero ``rate``.
    """
    rate = check_rate(rate)
    deterministic = check_static_bool(deterministic, "deterministic")
    check_choice("scaling", scaling, SCALINGS)
    x = _floating(x, "dropout")
    mask_shape = _mask_shape(x.shape, broadcast_dims)
    if not is_traced(rate) and rate == 0.0:
        return x
    keep = keep_probability(rate)
    # Scaling by p in x's dtype, as a Python-number p would be, keeps the output dtype x's.
    keep_as_x = keep.astype(x.dtype)
    if deterministic:
        return x if scaling == "inverted" else x * keep_as_x
    check_key(key, "dropout")
    mask = bernoulli_mask(key, keep, mask_shape, bits=mask_bits)
    kept = x / keep_as_x if scaling == "inverted" else x
    return jnp.where(mask, kept, jnp.zeros((), x.dtype))


def gaussian_dropout(
    key: jax.Array | None,
    x: jax.typing.ArrayLike,
    *,
    rate: float,
    deterministic: bool = False,
) -> jax.Array:
    r"""Multiplicative Gaussian noise, same variance as dropout (Srivastava et al. 2014, Sec. 10).

    .. math::

        \tilde{y} = r \odot y, \qquad r_j \sim \mathcal{N}(1, \sigma^2), \qquad
        \sigma^2 = \frac{1 - p}{p} = \frac{\text{rate}}{1 - \text{rate}} .

    :math:`y` is ``x`` and :math:`p = 1 - \text{rate}`. The noise has mean one, so, like inverted
    dropout, no scaling is needed at test time: ``deterministic=True`` returns ``x``. Its variance
    matches inverted Bernoulli dropout, whose factor :math:`r/p` has variance :math:`(1-p)/p`.

    ``rate`` may be traced (see the module conventions); :math:`\sigma` is computed the same way
    for both kinds, so with the same key a vmap over rates equals the separate calls bit for bit,
    and a traced ``rate == 0`` returns :math:`x (1 + 0 \cdot \text{noise}) = x` bit for bit
    (with a key when ``deterministic=False``).

    Args:
      key: a ``jax.random`` key (typed or legacy); may be ``None`` when ``deterministic=True`` or
        ``rate`` is a concrete 0.
      x: floating-point array of units.
      rate: the equivalent drop probability in ``[0, 1)``: a concrete number (checked) or a
        traced scalar (unchecked).
      deterministic: ``True`` for evaluation (returns ``x``); a static bool.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: non-scalar ``rate``, traced ``deterministic``, integer ``x``.
      ValueError: a concrete ``rate`` outside ``[0, 1)``; ``key is None`` with
        ``deterministic=False`` and a traced or non-zero ``rate``.
    """
    rate = check_rate(rate)
    deterministic = check_static_bool(deterministic, "deterministic")
    x = _floating(x, "gaussian_dropout")
    if deterministic or (not is_traced(rate) and rate == 0.0):
        return x
    check_key(key, "gaussian_dropout")
    rate = jnp.asarray(rate, float)
    std = jnp.sqrt(rate / (1 - rate)).astype(x.dtype)
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x * (1 + std * noise)


def monte_carlo_average(
    fn: Callable[[jax.Array, jax.Array], jax.Array],
    key: jax.Array,
    x: Any,
    num_samples: int,
    *,
    batch_size: int | None = None,
) -> jax.Array:
    r"""Model averaging by sampling thinned networks (Srivastava et al. 2014, Sec. 7, Fig. 11).

    .. math::

        \hat{P}(y \mid x) = \frac{1}{k} \sum_{i=1}^{k} \mathrm{softmax}\big(f(\kappa_i, x)\big)

    :math:`f` is ``fn``, a stochastic network mapping ``(key, x)`` to logits (last axis = classes,
    e.g. a model applied with dropout on); :math:`k` is ``num_samples``; the keys
    :math:`\kappa_i` come from ``jax.random.split(key, num_samples)``. The paper compares this
    average with the weight-scaling approximation (the deterministic network) and finds them equal
    at :math:`k \approx 50`.

    Samples are evaluated with :func:`jax.vmap` over the keys, so peak memory is ``num_samples``
    times that of one forward pass. Give ``batch_size`` to use :func:`jax.lax.map` instead:
    ``batch_size`` samples run in parallel at a time (peak memory ``batch_size`` forward passes
    plus the stacked ``(num_samples, *probs.shape)`` probabilities), with results identical up to
    floating-point summation order.

    Args:
      fn: ``fn(key, x) -> logits``; it must be traceable (it is vmapped).
      key: a ``jax.random`` key (typed or legacy).
      x: the input (an array or any pytree) passed unchanged to every sample.
      num_samples: :math:`k \ge 1`, a Python int.
      batch_size: optional number of samples evaluated in parallel (``None``: all at once).

    Returns:
      The averaged class probabilities, shaped like ``fn(key, x)``.

    Raises:
      TypeError: ``num_samples`` or ``batch_size`` not a Python int.
      ValueError: ``num_samples < 1``, ``batch_size < 1`` or ``key is None``.
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    if key is None:
        raise ValueError("monte_carlo_average needs a jax.random key to sample thinned networks.")
    keys = jax.random.split(key, num_samples)

    def probabilities(sample_key: jax.Array) -> jax.Array:
        return jax.nn.softmax(fn(sample_key, x), axis=-1)

    if batch_size is None:
        probs = jax.vmap(probabilities)(keys)
    else:
        probs = jax.lax.map(probabilities, keys, batch_size=batch_size)
    return jnp.mean(probs, axis=0)
