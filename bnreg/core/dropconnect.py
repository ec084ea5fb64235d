r"""DropConnect (Wan, Zeiler, Zhang, LeCun & Fergus, ICML 2013): a dense layer with masked weights.

Conventions (shared with :mod:`bnreg.core.dropout`):

* ``rate`` is the *drop* probability of each weight; the paper's retain probability is
  :math:`p = 1 - \text{rate}`.
* Scaling: ``scaling="inverted"`` (the default, as for dropout) divides the masked
  pre-activation by :math:`p` at train time, so the deterministic (evaluation) layer is the plain
  dense layer ``x @ kernel + bias`` and the paper's "mean inference" :math:`a(pWv)` becomes
  ``activation(x @ kernel + bias)``. ``scaling="paper"`` is the paper's form: the masked sum
  unscaled in training, :math:`p\,(x K + \text{bias})` at evaluation. A paper-form layer with
  kernel :math:`K` computes exactly the inverted layer with kernel :math:`pK` (and bias
  :math:`p\,\text{bias}`), but SGD's step on :math:`K` is :math:`1/p^2` times smaller in the
  paper's form, so a learning rate shared across drop rates means one step only there
  (design §3).
* ``kernel`` has shape ``(in, out)`` (flax's layout) and ``x`` has shape ``(batch, in)``; the
  paper writes :math:`W v` with :math:`W` of shape ``(out, in)``, i.e. ``W = kernel.T``.
* The bias is masked too, as in the paper (Wan et al. 2013, Sec. 2, where the biases are masked
  out in training like the weights): it is the weight of a constant input of 1, with its own
  Bernoulli mask. ``mask_bias=False`` leaves it unmasked (a common variant).
* ``rate`` may be concrete (checked to lie in ``[0, 1)``; a concrete 0 is the plain dense layer
  and needs no key) or a *traced* scalar, so that one compiled program can be vmapped over members
  that differ in their rate. A traced rate is unchecked, needs a key unless
  ``deterministic=True``, draws the same masks as the concrete rate with the same key, and a
  traced rate of exactly 0 gives the plain dense layer ``x @ kernel + bias`` bit for bit.
  The flags (``deterministic``, ``per_example``, ``mask_bias``) and ``chunk_size``,
  ``num_samples`` select code paths or shapes and are static.

One module for the layer, its moments and both inferences from them (mean, Gaussian sampling,
the local reparameterization), longer than ~450 lines: they share the shape checks, the
conventions above and the moments, and split apart they would restate them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bnreg._checks import (
    check_choice,
    check_key,
    check_positive_int,
    check_rate,
    check_static_bool,
    is_traced,
)
from bnreg.core.dropout import (
    MASK_BITS,
    SCALINGS,
    Scaling,
    bernoulli_mask,
    check_mask_resolution,
    keep_probability,
)

__all__ = [
    "dropconnect_dense",
    "dropconnect_gaussian_inference",
    "dropconnect_moments",
    "gaussian_dropconnect_dense",
]

# Default bound on the mask entries drawn at once in per-example mode: a chunk's random bits,
# masks and masked kernel stay within the CPU's caches (larger chunks were measured slower).
DEFAULT_MASK_BUDGET = 2**17


def _check_dense_shapes(
    x: jax.typing.ArrayLike, kernel: jax.typing.ArrayLike, bias: jax.typing.ArrayLike | None
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    if kernel.ndim != 2:
        raise ValueError(f"kernel must have shape (in, out), got shape {kernel.shape}.")
    if x.ndim != 2 or x.shape[1] != kernel.shape[0]:
        raise ValueError(
            f"x must have shape (batch, in) = (batch, {kernel.shape[0]}) to match kernel "
            f"{kernel.shape}, got {x.shape}. Reshape a single example with x[None]."
        )
    for name, array in (("x", x), ("kernel", kernel)):
        if not jnp.issubdtype(array.dtype, jnp.inexact):
            raise TypeError(f"{name} must be floating point, got dtype {array.dtype}.")
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (kernel.shape[1],):
            raise ValueError(
                f"bias must have shape (out,) = ({kernel.shape[1]},), got {bias.shape}."
            )
    return x, kernel, bias


def _add_bias(y: jax.Array, bias: jax.Array | None) -> jax.Array:
    return y if bias is None else y + bias


def _expected(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, keep: jax.Array,
              *, scaling: str, mask_bias: bool) -> jax.Array:
    """The pre-activation's expectation over masks: ``x @ kernel + bias`` (inverted), or
    ``p · (x @ kernel [+ bias if masked])`` [+ an unmasked bias] (the paper's form)."""
    if scaling == "inverted":
        return _add_bias(x @ kernel, bias)
    factor = keep.astype(kernel.dtype)
    if mask_bias:
        return factor * _add_bias(x @ kernel, bias)
    return _add_bias(factor * (x @ kernel), bias)


def _bias_as_weight(
    x: jax.Array, kernel: jax.Array, bias: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(x', K')`` with ``x' K' = x K + bias``: the bias as the kernel row of a constant input 1,
    so one weight mask over ``K'`` masks it like every other weight."""
    ones = jnp.ones((x.shape[0], 1), x.dtype)
    return (
        jnp.concatenate([x, ones], axis=1),
        jnp.concatenate([kernel, bias[None].astype(kernel.dtype)], axis=0),
    )


def dropconnect_dense(
    key: jax.Array | None,
    x: jax.typing.ArrayLike,
    kernel: jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike | None = None,
    *,
    rate: float,
    deterministic: bool = False,
    per_example: bool = True,
    mask_bias: bool = True,
    chunk_size: int | None = None,
    mask_bits: int = 32,
    scaling: Scaling = "inverted",
) -> jax.Array:
    r"""Pre-activations of a DropConnect dense layer (Wan et al. 2013, Sec. 2, Eq. 1).

    The paper's layer is :math:`r = a\big((M \star W) v\big)` with
    :math:`M_{ij} \sim \mathrm{Bernoulli}(p)` per *weight*. With inverted scaling this function
    returns the pre-activation (apply the activation yourself):

    .. math::

        u_b = \frac{1}{p}\, \big(x_b \,(M_b \odot K) + m_b \odot \text{bias}\big), \qquad
        M_{b,ij},\ m_{b,j} \sim \mathrm{Bernoulli}(p)

    where :math:`x_b` is row ``b`` of ``x``, :math:`K` is ``kernel`` (``(in, out)``, so the
    paper's :math:`W = K^\top` and :math:`v = x_b^\top`), :math:`m_b` masks the bias (the paper's
    bias is a weight like the others; ``mask_bias=False``: :math:`m_b = p`, an unmasked bias) and
    :math:`p = 1 - \text{rate}`. :math:`\mathbb{E}_M[u_b] = x_b K + \text{bias}`, which is what
    ``deterministic=True`` returns. ``scaling="paper"`` leaves out the :math:`1/p` (the paper's
    :math:`(M \star W) v`) and returns the expectation
    :math:`p\,(x_b K + \text{bias})` (an unmasked bias: :math:`p\, x_b K + \text{bias}`) when
    deterministic: the paper's mean network :math:`pWv`.

    ``per_example=True`` (the paper) draws a fresh mask :math:`M_b` for every example;
    ``per_example=False`` draws one mask for the whole batch (one matmul, ``in × out`` memory).

    Memory and time of per-example masks: the masks hold ``batch × in × out`` entries (``in + 1``
    rows with a masked bias). They are drawn by :func:`jax.lax.map` in chunks of ``chunk_size``
    examples (default: as many as fit in ``DEFAULT_MASK_BUDGET = 2**17`` mask entries, at least
    one), so the random bits of only one chunk are alive at once, and kept as one byte per entry
    for the backward pass, which reads them (a custom VJP, chunk by chunk) instead of drawing them
    again: random bits are most of a mask's cost on a CPU. Time scales with
    ``batch × in × out``; ``mask_bits=16`` (:func:`bnreg.core.dropout.bernoulli_mask`: p
    resolved to 2⁻¹⁶) draws half the bits of 32. The mask of example ``b`` depends only on
    ``key``, ``b`` and ``mask_bits``, so results do not depend on ``chunk_size``
    (``benchmarks/dropconnect_throughput.py`` measures speed and memory).

    A traced ``rate`` (e.g. vmapped over the members of a sweep) takes the masked path even when
    it is 0, and ``B`` per-example matvecs (or a matmul with the bias folded into the kernel)
    round differently from the one matmul ``x @ kernel + bias``. A member with rate 0 must be
    exactly the plain network, so on that path the result is
    ``where(rate == 0, x @ kernel + bias, masked)``; every mask entry is kept at rate 0, so this
    changes rounding only, not the value.

    Args:
      key: a ``jax.random`` key (typed or legacy); may be ``None`` when ``deterministic=True`` or
        ``rate`` is a concrete 0.
      x: inputs, shape ``(batch, in)``.
      kernel: weights, shape ``(in, out)``.
      bias: optional bias, shape ``(out,)``.
      rate: drop probability of each weight, in ``[0, 1)``: a concrete number (checked) or a
        traced scalar (unchecked).
      deterministic: ``True`` for evaluation: returns ``x @ kernel + bias``.
      per_example: fresh mask per example (paper) or one mask per batch.
      mask_bias: mask the bias like the weights (paper) or add it unmasked.
      chunk_size: examples whose masks are alive at once in per-example mode (``None``: chosen
        from ``DEFAULT_MASK_BUDGET``).
      mask_bits: random bits per mask entry, 32 (:func:`jax.random.bernoulli`) or 16
        (:func:`bnreg.core.dropout.bernoulli_mask`); static.
      scaling: ``"inverted"`` (default; ×1/p in training) or ``"paper"`` (×p at evaluation).

    Returns:
      Pre-activations, shape ``(batch, out)``.

    Raises:
      TypeError: non-scalar ``rate``; traced ``deterministic``/``per_example``/``mask_bias``;
        non-float ``x``/``kernel``; non-int ``chunk_size``.
      ValueError: ``mask_bits`` not 32 or 16; unknown ``scaling``; a concrete ``rate`` outside
        ``[0, 1)``; shapes of
        ``x``/``kernel``/``bias`` that do not match; ``chunk_size < 1``; ``key is None`` with
        ``deterministic=False`` and a traced or non-zero ``rate``.
    """
    rate = check_rate(rate)
    deterministic = check_static_bool(deterministic, "deterministic")
    per_example = check_static_bool(per_example, "per_example")
    mask_bias = check_static_bool(mask_bias, "mask_bias")
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size")
    check_choice("mask_bits", mask_bits, MASK_BITS)
    check_choice("scaling", scaling, SCALINGS)
    x, kernel, bias = _check_dense_shapes(x, kernel, bias)
    if not is_traced(rate) and rate == 0.0:
        return _add_bias(x @ kernel, bias)
    keep = keep_probability(rate)
    if deterministic:
        return _expected(x, kernel, bias, keep, scaling=scaling, mask_bias=mask_bias)
    check_key(key, "dropconnect_dense")
    check_mask_resolution(keep, mask_bits)
    masked_x, masked_kernel, unmasked_bias = x, kernel, bias
    if mask_bias and bias is not None:
        (masked_x, masked_kernel), unmasked_bias = _bias_as_weight(x, kernel, bias), None
    if per_example:
        if chunk_size is None:
            chunk_size = max(1, DEFAULT_MASK_BUDGET // max(1, masked_kernel.size))
        y = _per_example_masked_matmul(
            key, masked_x, masked_kernel, keep, chunk_size=min(chunk_size, len(x)),
            mask_bits=mask_bits, inverted=scaling == "inverted",
        )
    else:
        mask = bernoulli_mask(key, keep, masked_kernel.shape, bits=mask_bits)
        y = masked_x @ jnp.where(mask, masked_kernel, jnp.zeros((), masked_kernel.dtype))
        if scaling == "inverted":
            y = y / keep.astype(y.dtype)
    y = _add_bias(y, unmasked_bias)
    if not is_traced(rate):
        return y
    # A traced rate of 0 keeps every weight; return the plain layer so that such a member of a
    # sweep rounds exactly like the unregularised network (see the docstring).
    return jnp.where(rate == 0, _add_bias(x @ kernel, bias), y)


# Jitted so that eager calls reuse one compilation per shape: ``keep`` is a traced argument, so
# neither a new rate nor a traced one retraces lax.map.
@functools.partial(jax.jit, static_argnames=("chunk_size", "mask_bits", "inverted"))
def _per_example_masked_matmul(
    key: jax.Array, x: jax.Array, kernel: jax.Array, keep: jax.Array, *, chunk_size: int,
    mask_bits: int, inverted: bool,
) -> jax.Array:
    keys = jax.random.split(key, len(x))
    rows = _masked_rows(keys, x, kernel, keep, chunk_size, mask_bits)
    return rows / keep.astype(rows.dtype) if inverted else rows


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _masked_rows(keys: jax.Array, x: jax.Array, kernel: jax.Array, keep: jax.Array,
                 chunk_size: int, mask_bits: int) -> jax.Array:
    """Row ``b`` is ``x[b] @ (M_b ⊙ kernel)``, ``M_b`` drawn from ``keys[b]``; the backward pass
    reads the forward's masks, kept as one byte per entry, instead of drawing them again."""
    return _masked_rows_forward(keys, x, kernel, keep, chunk_size, mask_bits)[0]


def _masked_rows_forward(keys, x, kernel, keep, chunk_size, mask_bits):
    zero = jnp.zeros((), kernel.dtype)

    def masked_row(args: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        example_key, row = args
        mask = bernoulli_mask(example_key, keep, kernel.shape, bits=mask_bits)
        return row @ jnp.where(mask, kernel, zero), mask

    rows, masks = jax.lax.map(masked_row, (keys, x), batch_size=chunk_size)
    return rows, (x, kernel, masks, keep)


def _masked_rows_backward(chunk_size, mask_bits, residuals, cotangent):
    del mask_bits
    x, kernel, masks, keep = residuals
    zero = jnp.zeros((), kernel.dtype)
    batch = len(x)
    chunks = -(-batch // chunk_size)

    def in_chunks(a: jax.Array) -> jax.Array:
        # Padded rows carry a zero cotangent and an all-dropped mask: they add nothing.
        a = jnp.pad(a, [(0, chunks * chunk_size - batch)] + [(0, 0)] * (a.ndim - 1))
        return a.reshape(chunks, chunk_size, *a.shape[1:])

    def chunk_gradients(kernel_gradient, args):
        mask, rows, row_cotangents = args
        x_gradient = jnp.einsum("cio,co->ci", jnp.where(mask, kernel, zero), row_cotangents)
        outer = rows[:, :, None] * row_cotangents[:, None, :]
        return kernel_gradient + jnp.sum(jnp.where(mask, outer, zero), axis=0), x_gradient

    kernel_gradient, x_gradient = jax.lax.scan(
        chunk_gradients, jnp.zeros_like(kernel), (in_chunks(masks), in_chunks(x),
                                                  in_chunks(cotangent)))
    return None, x_gradient.reshape(-1, x.shape[1])[:batch], kernel_gradient, jnp.zeros_like(keep)


_masked_rows.defvjp(_masked_rows_forward, _masked_rows_backward)


def dropconnect_moments(
    x: jax.typing.ArrayLike,
    kernel: jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike | None = None,
    *,
    rate: float,
    mask_bias: bool = True,
    scaling: Scaling = "inverted",
) -> tuple[jax.Array, jax.Array]:
    r"""Mean and variance of each DropConnect pre-activation over masks (Wan et al. 2013, Sec. 3).

    For the inverted-scaled pre-activation :math:`u = (x (M \odot K) + m \odot \text{bias})/p` of
    :func:`dropconnect_dense`, with independent :math:`M_{ij}, m_j \sim \mathrm{Bernoulli}(p)`:

    .. math::

        \mathbb{E}[u] = x K + \text{bias}, \qquad
        \mathrm{Var}[u] = \frac{1 - p}{p}\, \big((x \odot x)(K \odot K)
            + \text{bias} \odot \text{bias}\big)

    (without the bias term for ``mask_bias=False``). These are the paper's moments
    :math:`\mathbb{E} = pWv`, :math:`\mathrm{Var} = p(1-p)(W \odot W)(v \odot v)`, with the bias
    a column of :math:`W` on a constant input 1, divided by :math:`p` (mean) and :math:`p^2`
    (variance) — the inverted-scaling convention. ``scaling="paper"`` returns the paper's
    moments themselves (an unmasked bias added to the mean unscaled).

    Args:
      x: inputs, shape ``(batch, in)``.
      kernel: weights, shape ``(in, out)``.
      bias: optional bias, shape ``(out,)``.
      rate: drop probability of each weight, in ``[0, 1)``: a concrete number (checked) or a
        traced scalar (unchecked; the moments are arithmetic in it).
      mask_bias: whether the bias is masked (paper) or added unmasked (mean only).
      scaling: ``"inverted"`` (default) or ``"paper"``, as in :func:`dropconnect_dense`.

    Returns:
      ``(mean, var)``, each of shape ``(batch, out)``.

    Raises:
      TypeError: non-scalar ``rate``; non-bool ``mask_bias``; non-float ``x``/``kernel``.
      ValueError: a concrete ``rate`` outside ``[0, 1)``; unknown ``scaling``; mismatched
        shapes.
    """
    rate = check_rate(rate)
    mask_bias = check_static_bool(mask_bias, "mask_bias")
    check_choice("scaling", scaling, SCALINGS)
    x, kernel, bias = _check_dense_shapes(x, kernel, bias)
    keep = keep_probability(rate)
    mean = _expected(x, kernel, bias, keep, scaling=scaling, mask_bias=mask_bias)
    second_moment = jnp.square(x) @ jnp.square(kernel)
    if mask_bias and bias is not None:
        second_moment = second_moment + jnp.square(bias)
    rate = jnp.asarray(rate, float)
    # Var of a Bernoulli(p) mask entry: p(1 − p); inverted scaling divides it by p².
    factor = rate / (1 - rate) if scaling == "inverted" else rate * (1 - rate)
    return mean, factor.astype(second_moment.dtype) * second_moment


def gaussian_dropconnect_dense(
    key: jax.Array | None,
    x: jax.typing.ArrayLike,
    kernel: jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike | None = None,
    *,
    rate: float,
    deterministic: bool = False,
    mask_bias: bool = True,
    scaling: Scaling = "inverted",
) -> jax.Array:
    r"""Pre-activations of a dense layer with Gaussian DropConnect, sampled by the local
    reparameterization trick (Kingma, Salimans & Welling 2015, Sec. 2.3 and 3.2).

    Multiplicative noise :math:`\xi_{ij} \sim \mathcal{N}(1, \alpha)` on every weight, with
    :math:`\alpha = \text{rate}/(1 - \text{rate})` — the variance of DropConnect's inverted mask
    entry :math:`M_{ij}/p` — is not drawn per weight and example: the pre-activation it induces
    is Gaussian given :math:`x_b`, and is drawn directly,

    .. math::

        u_b = x_b K + \text{bias}
              + \sqrt{\alpha\,\big((x_b \odot x_b)(K \odot K) + \text{bias} \odot
              \text{bias}\big)} \odot \varepsilon_b, \qquad
        \varepsilon_b \sim \mathcal{N}(0, I),

    one :math:`\varepsilon` per example and unit: two matmuls a step and no per-example masks,
    with DropConnect's mean and variance per pre-activation (:func:`dropconnect_moments`, whose
    moments this samples; ``scaling="paper"``: the paper's :math:`\mathcal{N}(pWv,
    p(1-p)(W \odot W)(v \odot v))`, Wan et al. 2013, Sec. 3). ``deterministic=True`` returns the
    mean, as :func:`dropconnect_dense` does. ``mask_bias=False`` leaves the bias noise-free.

    Args:
      key: a ``jax.random`` key; may be ``None`` when ``deterministic=True`` or ``rate`` is a
        concrete 0.
      x: inputs, shape ``(batch, in)``.
      kernel: weights, shape ``(in, out)``.
      bias: optional bias, shape ``(out,)``.
      rate: the DropConnect drop rate whose moments the noise matches, in ``[0, 1)``; concrete
        (checked) or traced (e.g. vmapped over members; a traced 0 is the plain layer exactly).
      deterministic: ``True`` for evaluation: the mean pre-activation.
      mask_bias: whether the bias carries noise (as DropConnect masks it) or not.
      scaling: ``"inverted"`` (default) or ``"paper"``, as in :func:`dropconnect_dense`.

    Returns:
      Pre-activations, shape ``(batch, out)``.

    Raises:
      TypeError: non-scalar ``rate``; traced ``deterministic``; non-float ``x``/``kernel``.
      ValueError: a concrete ``rate`` outside ``[0, 1)``; unknown ``scaling``; mismatched
        shapes; ``key is None`` in training with a traced or non-zero ``rate``.
    """
    rate = check_rate(rate)
    deterministic = check_static_bool(deterministic, "deterministic")
    mean, variance = dropconnect_moments(x, kernel, bias, rate=rate, mask_bias=mask_bias,
                                         scaling=scaling)
    if deterministic or (not is_traced(rate) and rate == 0.0):
        return mean
    check_key(key, "gaussian_dropconnect_dense")
    # sqrt's gradient is infinite at 0 (a rate of 0, or an input row of zeros): there the
    # noise is 0 and so is its gradient.
    positive = variance > 0
    deviation = jnp.where(positive, jnp.sqrt(jnp.where(positive, variance, 1.0)), 0.0)
    return mean + deviation * jax.random.normal(key, mean.shape, mean.dtype)


def dropconnect_gaussian_inference(
    key: jax.Array,
    x: jax.typing.ArrayLike,
    kernel: jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike | None = None,
    *,
    rate: float,
    activation: Callable[[jax.Array], jax.Array],
    num_samples: int,
    mask_bias: bool = True,
    scaling: Scaling = "inverted",
) -> jax.Array:
    r"""The paper's DropConnect inference by moment matching (Wan et al. 2013, Sec. 3, Alg. 2).

    Each pre-activation is replaced by a Gaussian with the mean and variance of the masked
    pre-activation (see :func:`dropconnect_moments`), then the activation is averaged over samples:

    .. math::

        u^{(z)} \sim \mathcal{N}\Big(x K + \text{bias},\;
            \tfrac{1 - p}{p}\,\big((x \odot x)(K \odot K) + \text{bias} \odot \text{bias}\big)
            \Big), \qquad
        r = \frac{1}{Z} \sum_{z=1}^{Z} a\big(u^{(z)}\big)

    with :math:`a` = ``activation``, :math:`Z` = ``num_samples``, :math:`K` = ``kernel``,
    :math:`p = 1 - \text{rate}`. The paper states the same with its own (non-inverted) scaling,
    :math:`u \sim \mathcal{N}(pWv,\, p(1-p)(W \odot W)(v \odot v))`, the bias a column of
    :math:`W` on a constant input 1 (``mask_bias=False`` drops its variance); with inverted scaling
    (this module) both moments are divided by :math:`p` and :math:`p^2`, matching
    :func:`dropconnect_dense`. All ``num_samples × batch × out`` samples are drawn at once.

    Args:
      key: a ``jax.random`` key (typed or legacy).
      x: inputs, shape ``(batch, in)``.
      kernel: weights, shape ``(in, out)``.
      bias: optional bias, shape ``(out,)``.
      rate: drop probability of each weight, in ``[0, 1)``: a concrete number (checked) or a
        traced scalar (unchecked).
      activation: elementwise nonlinearity :math:`a` (e.g. ``jax.nn.relu``).
      num_samples: :math:`Z \ge 1`, a Python int.
      mask_bias: whether the training layer masked the bias (paper), as in
        :func:`dropconnect_dense`.
      scaling: the training layer's, ``"inverted"`` (default) or ``"paper"`` (the paper's
        moments themselves).

    Returns:
      The average of ``activation(u)`` over samples, shape ``(batch, out)``.

    Raises:
      TypeError: non-scalar ``rate``; non-int ``num_samples``; non-bool ``mask_bias``; non-float
        ``x``/``kernel``.
      ValueError: a concrete ``rate`` outside ``[0, 1)``; ``num_samples < 1``; mismatched
        shapes; ``key is None``.
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    mean, var = dropconnect_moments(x, kernel, bias, rate=rate, mask_bias=mask_bias,
                                    scaling=scaling)
    if key is None:
        raise ValueError("dropconnect_gaussian_inference needs a jax.random key to sample u.")
    noise = jax.random.normal(key, (num_samples, *mean.shape), mean.dtype)
    samples = mean + jnp.sqrt(var) * noise
    return jnp.mean(activation(samples), axis=0)
