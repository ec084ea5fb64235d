"""Probes of hidden layers, computed inside the compiled evaluation.

* Percentiles of a unit's pre-activation over the evaluation set: Ioffe & Szegedy 2015, Fig. 1b,c
  show the {15, 50, 85}th percentiles of the input to one sigmoid of the last hidden layer over
  training — drifting without BN, stable with BN.
* Histograms and the mean of hidden activations: Srivastava et al. 2014, Fig. 8 — dropout makes
  the activations of an autoencoder's hidden units sparser (mean ≈ 0.7 vs ≈ 2.0 without).

Two measures of sparsity go with Fig. 8, on recorded activations (host arrays, NumPy):
:func:`fraction_at_zero` and :func:`hoyer_sparsity`.

The models (:mod:`bnreg.models`) sow each hidden layer's pre-activation as ``preactivation_{i}``
and activation as ``activation_{i}`` in the ``intermediates`` collection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def sown(intermediates: Mapping[str, Any], kind: str) -> list[jax.Array]:
    """The sown arrays of one kind (``"preactivation"`` or ``"activation"``), by layer index.

    Args:
      intermediates: the ``intermediates`` collection returned by ``model.apply``.
      kind: the name prefix.

    Raises:
      ValueError: the model sowed no array of that kind.
    """
    arrays = {
        int(name.rsplit("_", 1)[1]): value[0]
        for name, value in intermediates.items()
        if name.rsplit("_", 1)[0] == kind
    }
    if not arrays:
        raise ValueError(
            f"No '{kind}_<i>' arrays in the intermediates collection; probes need a model from "
            "bnreg.models (or one that sows them) applied with mutable=['intermediates']."
        )
    return [arrays[index] for index in sorted(arrays)]


def unit_columns(x: jax.Array, units: Sequence[int]) -> jax.Array:
    """The values of the chosen units (features on the last axis) as ``(samples, len(units))``.

    For conv feature maps every spatial position of an example is a sample of the unit's input,
    the same population BN normalises over (``m' = m·p·q``).
    """
    num_features = x.shape[-1]
    bad = [u for u in units if not -num_features <= u < num_features]
    if bad:
        raise ValueError(f"probe units {bad} out of range for a layer of {num_features} units.")
    return x.reshape(-1, num_features)[:, jnp.asarray(units)]


def percentiles(samples: jax.Array, q: Sequence[float]) -> jax.Array:
    """Per-column percentiles ``q`` of ``samples`` ``(n, units)``, as ``(units, len(q))``.

    .. math:: P_q = (1 - w)\\, x_{(\\lfloor r \\rfloor)} + w\\, x_{(\\lfloor r \\rfloor + 1)},
              \\qquad r = \\tfrac{q}{100}(n - 1), \\quad w = r - \\lfloor r \\rfloor

    with :math:`x_{(i)}` the column's :math:`i`-th smallest value (0-based): numpy's default
    ("linear") method, as ``jnp.percentile``. Only the order statistics up to the largest rank
    needed are found (``lax.top_k``), which on XLA:CPU takes 40% less time than
    ``jnp.percentile``'s full sort for the BN study's {15, 50, 85} of 10,000 samples.

    Integer samples are converted to float first; a column with a NaN gives NaN percentiles.

    Raises:
      ValueError: a percentile outside [0, 100], or no samples.
    """
    samples = jnp.asarray(samples)
    if not jnp.issubdtype(samples.dtype, jnp.floating):
        samples = samples.astype(jnp.result_type(float))
    q = np.asarray(q, dtype=np.float64)
    if q.size == 0 or np.any((q < 0) | (q > 100)):
        raise ValueError(f"percentiles must be in [0, 100], got {q.tolist()}.")
    num = samples.shape[0]
    if num == 0:
        raise ValueError("percentiles of no samples are undefined.")
    rank = q / 100 * (num - 1)
    below = np.floor(rank).astype(np.int64)
    above = np.minimum(below + 1, num - 1)
    weight = jnp.asarray(rank - below, samples.dtype)
    smallest = -jax.lax.top_k(-samples.T, int(above.max()) + 1)[0]  # ascending, (units, k)
    result = smallest[:, below] * (1 - weight) + smallest[:, above] * weight
    # top_k ranks NaN above every number, so a NaN would go unseen below the top rank.
    return jnp.where(jnp.isnan(samples).any(0)[:, None], jnp.nan, result)


def histogram(
    x: jax.Array,
    *,
    bins: int,
    value_range: tuple[float, float],
    weights: jax.Array | None = None,
) -> jax.Array:
    """Counts of ``x``'s values in ``bins`` equal bins over ``value_range``, each value counted
    with its weight (1 by default; 0 masks padding).

    Bin ``i`` holds ``low + i·w ≤ x < low + (i+1)·w`` (``w = (high − low)/bins``) with the index
    computed as ``floor((x − low)/w)`` in float32, so a value within rounding of an edge may land
    in the neighbouring bin; values outside the range go to the end bins, so the counts add up to
    ``weights.sum()`` (``x.size`` unweighted); a NaN has no bin and is counted in whichever bin
    XLA's float-to-int conversion sends it to. A ``bincount``, several times faster on CPU than
    ``jnp.histogram``'s search over the edges (benchmarks/README.md).
    """
    low, high = value_range
    if isinstance(bins, bool) or not isinstance(bins, int):
        raise TypeError(f"bins must be a Python int, got {bins!r}.")
    if bins < 1:
        raise ValueError(f"bins must be ≥ 1, got {bins}.")
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}.")
    index = jnp.floor((x.reshape(-1) - low) * (bins / (high - low))).astype(jnp.int32)
    flat_weights = None if weights is None else weights.reshape(-1)
    return jnp.bincount(jnp.clip(index, 0, bins - 1), weights=flat_weights, length=bins)


def fraction_at_zero(activations: np.ndarray) -> float:
    """The fraction of ``activations``' entries that are exactly 0 (a ReLU unit that is off)."""
    activations = np.asarray(activations)
    if activations.size == 0:
        raise ValueError("fraction_at_zero of no activations is undefined.")
    return float(np.mean(activations == 0))


def hoyer_sparsity(activations: np.ndarray) -> np.ndarray:
    """Hoyer's (2004) sparsity of each row of ``activations`` ``(..., units)``, over its units:

    .. math:: H(a) = \\frac{\\sqrt{n} - \\lVert a \\rVert_1 / \\lVert a \\rVert_2}{\\sqrt{n} - 1}

    with :math:`n` the units (the last axis). :math:`H` is 0 when every unit is equally active,
    1 when one unit alone is, and does not change when ``a`` is scaled — unlike the mean
    activation, it compares networks whose activations differ in scale. A row of zeros (no unit
    active) has no direction; it is counted as 1, maximally sparse.

    Raises:
      ValueError: fewer than two units (H is undefined for one).
    """
    activations = np.asarray(activations, dtype=np.float64)
    units = activations.shape[-1] if activations.ndim else 0
    if units < 2:
        raise ValueError(f"hoyer_sparsity needs rows of at least 2 units, got shape "
                         f"{activations.shape}.")
    l1 = np.abs(activations).sum(-1)
    l2 = np.sqrt(np.square(activations).sum(-1))
    ratio = np.divide(l1, l2, out=np.ones_like(l1), where=l2 > 0)
    return (np.sqrt(units) - ratio) / (np.sqrt(units) - 1)
