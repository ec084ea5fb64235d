"""On-device batching as pure jax functions, usable inside ``jit`` and ``lax.scan``.

:func:`epoch_permutation` shuffles one epoch from the data-order key; :func:`batch_from_permutation`
slices a mini-batch out of it; :func:`batch_at_step` combines the two for a global step, so a
``lax.scan`` over training steps draws its mini-batches without returning to the host; and
:func:`batch_indices` lists the indices of the first steps' batches at once. The permutations
fix the data order of committed results, so the numbers they produce must stay bit-identical.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bnreg._checks import check_count

__all__ = ["batch_at_step", "batch_from_permutation", "batch_indices", "epoch_permutation"]


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """The shuffled order of the examples for one epoch.

    .. math:: \\pi_e = \\operatorname{argsort}(u_0, \\ldots, u_{N-1}), \\qquad
              u_i \\overset{iid}{\\sim} \\mathcal{U}\\{0, \\ldots, 2^{64} - 1\\}
              \\text{ drawn from } \\operatorname{fold\\_in}(k, e)

    with :math:`k` = ``key``, :math:`e` = ``epoch`` and :math:`N` = ``num_examples``: a fresh
    permutation per epoch, reproducible from the key alone. Sorting i.i.d. keys gives every
    permutation the same probability, but for ties, which keep index order; with 64-bit keys a
    tie has probability below :math:`N^2 / 2^{65}` (1e-10 at N = 60,000), about as in
    ``jax.random.permutation``, which for 60,000 examples sorts twice on 32-bit keys; one sort
    on two 32-bit key words takes 40% less time on XLA:CPU, where the shuffle is a measurable
    share of an epoch (benchmarks/README.md, items 8–9).

    Args:
      key: a ``jax.random`` key, typed (``jax.random.key``) or legacy uint32
        (``jax.random.PRNGKey``).
      epoch: epoch index :math:`e`; may be traced.
      num_examples: :math:`N`, a static Python int >= 1.

    Returns:
      int32 array of shape (N,), a permutation of ``0..N-1``.

    Raises:
      TypeError / ValueError: ``num_examples`` is not a positive int (fires under jit too).
    """
    num_examples = check_count(num_examples, "num_examples", 1, np.iinfo(np.int32).max)
    high, low = jax.random.bits(jax.random.fold_in(key, epoch), (2, num_examples), jnp.uint32)
    return lax.sort((high, low, lax.iota(jnp.int32, num_examples)), num_keys=2)[2]


def batch_from_permutation(
    images: jax.Array,
    labels: jax.Array,
    permutation: jax.Array,
    position: int | jax.Array,
    batch_size: int,
) -> tuple[jax.Array, jax.Array]:
    """The ``position``-th mini-batch of an epoch whose order is ``permutation``.

    .. math:: I_j = (\\pi[jB], \\ldots, \\pi[jB + B - 1]), \\qquad
              \\text{batch} = (X[I_j], y[I_j])

    with :math:`\\pi` = ``permutation``, :math:`j` = ``position`` and :math:`B` =
    ``batch_size``; :math:`I_j` is a ``lax.dynamic_slice`` of the permutation, so ``position``
    may be traced. Valid positions are ``0 <= j < N // B``; a concrete position outside that
    range raises, but a traced one cannot be checked — ``dynamic_slice`` clamps its start, so an
    out-of-range traced position silently yields the last full batch of the permutation.

    Args:
      images: (N, ...) array (on device for a compiled loop).
      labels: (N,) array.
      permutation: (N,) integer array, e.g. from :func:`epoch_permutation`.
      position: batch index :math:`j` within the epoch.
      batch_size: :math:`B`, a static Python int in [1, N].

    Returns:
      ``(images[I_j], labels[I_j])`` with leading dimension ``batch_size``.

    Raises:
      ValueError / TypeError: mismatched leading dimensions, ``batch_size`` outside [1, N], or a
        concrete ``position`` outside [0, N // B) (all fire under jit too).
    """
    num = _check_batching_shapes(images, labels, batch_size)
    if jnp.shape(permutation) != (num,):
        raise ValueError(f"permutation must have shape ({num},), got {jnp.shape(permutation)}")
    if isinstance(position, (int, np.integer)):
        position = check_count(position, "position", 0, num // batch_size - 1)
    start = jnp.asarray(position, dtype=jnp.int32) * batch_size
    indices = lax.dynamic_slice(permutation, (start,), (batch_size,))
    return jnp.take(images, indices, axis=0), jnp.take(labels, indices, axis=0)


def batch_at_step(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    step: int | jax.Array,
    *,
    batch_size: int,
) -> tuple[jax.Array, jax.Array]:
    """The mini-batch for training step ``step``: shuffled epochs, drop-remainder.

    .. math:: S = \\lfloor N / B \\rfloor, \\quad e = \\lfloor t / S \\rfloor, \\quad
              j = t \\bmod S, \\qquad \\text{batch}_t = \\text{batch } j
              \\text{ of } \\pi_e

    with :math:`t` = ``step``, :math:`N` examples, :math:`B` = ``batch_size``, and
    :math:`\\pi_e` from :func:`epoch_permutation`. Drop-remainder semantics: an epoch is
    :math:`S` steps, every example appears at most once per epoch and exactly once when
    :math:`B` divides :math:`N`; otherwise the :math:`N \\bmod B` examples left out are the tail
    of :math:`\\pi_e`, a different set each epoch.

    ``step`` may be traced (``jit``, ``lax.scan``); ``batch_size`` is static. The epoch's
    permutation is recomputed at every call — an :math:`O(N \\log N)` sort; a loop that wants to
    avoid it scans over epochs, calls :func:`epoch_permutation` once per epoch and
    :func:`batch_from_permutation` per step.

    Args:
      key: the data-order key (typed or legacy); the same key gives the same batches.
      images: (N, ...) array.
      labels: (N,) array.
      step: the global step :math:`t` >= 0.
      batch_size: :math:`B`, a static Python int in [1, N].

    Returns:
      ``(images_batch, labels_batch)`` with leading dimension ``batch_size``.

    Raises:
      ValueError / TypeError: mismatched leading dimensions or ``batch_size`` outside [1, N]
        (fires under jit too).
    """
    num = _check_batching_shapes(images, labels, batch_size)
    steps_per_epoch = num // batch_size
    step = jnp.asarray(step, dtype=jnp.int32)
    permutation = epoch_permutation(key, step // steps_per_epoch, num)
    return batch_from_permutation(images, labels, permutation, step % steps_per_epoch, batch_size)


def batch_indices(
    key: jax.Array, num_examples: int, num_steps: int, *, batch_size: int
) -> jax.Array:
    """The example indices of the mini-batches :func:`batch_at_step` draws at steps
    ``0 … num_steps − 1``, one row per step: :math:`I_0, \\ldots, I_{T-1}` with one
    :func:`epoch_permutation` per epoch, however many steps an epoch has.

    For a loop that visits the same batches many times (e.g. Alg. 2's population statistics at
    every evaluation): compute these once, then gather ``images[indices[t]]`` per step.

    Args:
      key: the data-order key, as for :func:`batch_at_step`.
      num_examples: :math:`N`, a static Python int >= 1.
      num_steps: :math:`T`, a static Python int >= 1.
      batch_size: :math:`B`, a static Python int in [1, N].

    Returns:
      int32 array of shape ``(num_steps, batch_size)``.

    Raises:
      TypeError / ValueError: a count that is not an int in its range.
    """
    num_examples = check_count(num_examples, "num_examples", 1, np.iinfo(np.int32).max)
    num_steps = check_count(num_steps, "num_steps", 1, np.iinfo(np.int32).max)
    batch_size = check_count(batch_size, "batch_size", 1, num_examples)
    steps_per_epoch = num_examples // batch_size
    epochs = -(-num_steps // steps_per_epoch)
    used = steps_per_epoch * batch_size
    permutations = jnp.stack(
        [epoch_permutation(key, epoch, num_examples)[:used] for epoch in range(epochs)]
    )
    return permutations.reshape(epochs * steps_per_epoch, batch_size)[:num_steps]


def _check_batching_shapes(images: jax.Array, labels: jax.Array, batch_size: int) -> int:
    images_shape, labels_shape = jnp.shape(images), jnp.shape(labels)
    if not images_shape or labels_shape[:1] != images_shape[:1]:
        raise ValueError(
            f"images and labels need the same leading (example) dimension, got "
            f"{images_shape} and {labels_shape}"
        )
    num = images_shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be a static Python int, got {batch_size!r}")
    if not 1 <= batch_size <= num:
        raise ValueError(
            f"batch_size must be in [1, N] with N = {num} examples, got "
            f"{batch_size}; use a smaller batch or more data"
        )
    return num
