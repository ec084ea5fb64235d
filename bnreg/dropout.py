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
* Hyperparameters (``rate``, ``scaling``, ``deterministic``, ``broadcast_dims``, ``num_samples``)
  are static: under :func:`jax.jit` pass them as Python values (closure, ``functools.partial`` or
  ``static_argnames``), never as traced arrays.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["dropout", "gaussian_dropout", "monte_carlo_average"]

Scaling = Literal["inverted", "paper"]
_SCALINGS = ("inverted", "paper")


def _check_rate(rate: Any) -> float:
    """Returns ``rate`` as a Python float after checking ``0 <= rate < 1``.

    Shared by :mod:`bnreg.dropout` and :mod:`bnreg.dropconnect`.

    Raises:
      TypeError: if ``rate`` is traced (e.g. an argument of a jitted function) or not a number.
      ValueError: if ``rate`` is outside ``[0, 1)``.
    """
    if isinstance(rate, jax.core.Tracer):
        raise TypeError(
            "rate must be a concrete Python number, got a traced value. Under jax.jit make it "
            "static: close over it, use functools.partial, or list it in static_argnames."
        )
    try:
        value = float(rate)
    except (TypeError, ValueError) as err:
        raise TypeError(f"rate must be a Python float in [0, 1), got {rate!r}.") from err
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"rate is the drop probability and must lie in [0, 1), got {value}. "
            "(The paper's retain probability is p = 1 - rate.)"
        )
    return value


def _check_static_bool(value: Any, name: str) -> bool:
    """Returns ``value`` as a Python bool; flags like ``deterministic`` select code paths, so they
    must be static.

    Shared by :mod:`bnreg.dropout` and :mod:`bnreg.dropconnect`.
    """
    if not isinstance(value, bool | np.bool_):
        raise TypeError(
            f"{name} must be a Python (or NumPy) bool, static under jax.jit; got {value!r}."
        )
    return bool(value)


def _check_key(key: Any, function_name: str) -> None:
    """Raises a ValueError that says what to do when a stochastic call gets no key."""
    if key is None:
        raise ValueError(
            f"{function_name} needs a jax.random key when deterministic=False: pass a key "
            "(e.g. jax.random.key(0)), or deterministic=True for evaluation."
        )


def _check_positive_int(value: Any, name: str) -> int:
    """Returns ``value`` as an int after checking it is a static integer ``>= 1``."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a Python int (static under jax.jit), got {value!r}.")
    try:
        value = operator.index(value)
    except TypeError as err:
        raise TypeError(
            f"{name} must be a Python int (static under jax.jit), got {value!r}."
        ) from err
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}.")
    return value


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


def dropout(
    key: jax.Array | None,
    x: jax.typing.ArrayLike,
    *,
    rate: float,
    deterministic: bool = False,
    broadcast_dims: Sequence[int] = (),
    scaling: Scaling = "inverted",
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

    Args:
      key: a ``jax.random`` key (typed or legacy ``uint32``). May be ``None`` when
        ``deterministic=True`` or ``rate == 0``.
      x: floating-point array of units.
      rate: drop probability in ``[0, 1)``; static (a Python number) under :func:`jax.jit`.
      deterministic: ``True`` for evaluation (no noise; see the table above).
      broadcast_dims: axes of ``x`` along which the mask is shared.
      scaling: ``"inverted"`` (default) or ``"paper"``.

    Returns:
      An array with the shape and dtype of ``x``. ``rate == 0`` returns ``x`` unchanged (for both
      scalings, and without needing a key).

    Raises:
      TypeError: traced ``rate``/``deterministic``, non-integer ``broadcast_dims``, integer ``x``.
      ValueError: ``rate`` outside ``[0, 1)``; unknown ``scaling``; ``broadcast_dims`` out of
        range; ``key is None`` with ``deterministic=False`` and ``rate > 0``.
    """
    rate = _check_rate(rate)
    deterministic = _check_static_bool(deterministic, "deterministic")
    if scaling not in _SCALINGS:
        raise ValueError(f"scaling must be one of {_SCALINGS}, got {scaling!r}.")
    x = _floating(x, "dropout")
    mask_shape = _mask_shape(x.shape, broadcast_dims)
    keep = 1.0 - rate
    if rate == 0.0:
        return x
    if deterministic:
        return x if scaling == "inverted" else x * keep
    _check_key(key, "dropout")
    mask = jax.random.bernoulli(key, keep, mask_shape)
    kept = x / keep if scaling == "inverted" else x
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

    Args:
      key: a ``jax.random`` key (typed or legacy); may be ``None`` when ``deterministic=True`` or
        ``rate == 0``.
      x: floating-point array of units.
      rate: the equivalent drop probability in ``[0, 1)``; static under :func:`jax.jit`.
      deterministic: ``True`` for evaluation (returns ``x``).

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: traced ``rate`` or ``deterministic``, integer ``x``.
      ValueError: ``rate`` outside ``[0, 1)``; ``key is None`` with ``deterministic=False`` and
        ``rate > 0``.
    """
    rate = _check_rate(rate)
    deterministic = _check_static_bool(deterministic, "deterministic")
    x = _floating(x, "gaussian_dropout")
    if rate == 0.0 or deterministic:
        return x
    _check_key(key, "gaussian_dropout")
    std = (rate / (1.0 - rate)) ** 0.5
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x * (1.0 + std * noise)


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
    num_samples = _check_positive_int(num_samples, "num_samples")
    if batch_size is not None:
        batch_size = _check_positive_int(batch_size, "batch_size")
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
