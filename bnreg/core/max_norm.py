r"""Max-norm regularisation (Srivastava et al. 2014, Sec. 5.1) as a projection and an optax step.

Each hidden unit's incoming weight vector is constrained to the ball :math:`\|w\|_2 \le c`, and the
constraint is kept by projecting onto the ball after every parameter update. The default predicate
(:func:`is_kernel`) selects every kernel, the output layer's too; to constrain hidden units only,
as the paper does, pass a predicate that leaves the output layer out (the engine uses
``bnreg.models.is_hidden_kernel``). The paper pairs it
with dropout and reports that it allows 10-100x larger learning rates; ``c`` is typically 3-4.

Layout convention: the *last* axis of a selected leaf indexes the units and all other axes hold the
unit's incoming weights — flax's dense kernel ``(in, out)`` (norm over ``in``) and conv kernel
``(h, w, in, out)`` (norm over ``h, w, in``). Kernels with another layout (e.g. a ``DenseGeneral``
kernel ``(in, heads, dim)``) need a predicate that excludes them.

The bound ``c`` may be a traced scalar (so that one compiled program can be vmapped over members
that differ in it) and may be :math:`\infty`, which means no constraint: a column inside the ball
is left bit for bit unchanged by the projection and keeps its incoming update bit for bit in the
optax transformation, so ``c = inf`` reproduces the unconstrained network exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bnreg._checks import is_traced

__all__ = ["is_kernel", "max_norm", "project_max_norm"]

Predicate = Callable[[tuple[Any, ...], jax.Array], bool]


def is_kernel(path: tuple[Any, ...], leaf: jax.Array) -> bool:
    """The default predicate: a leaf whose pytree path ends in the key ``"kernel"``, ndim >= 2.

    Matches flax's ``{'Dense_0': {'kernel': ...}}`` (dict keys) and attribute paths named
    ``kernel``; biases, BatchNorm ``scale``/``bias`` and embeddings are not selected.

    Args:
      path: the leaf's key path, as given by :func:`jax.tree_util.tree_map_with_path`.
      leaf: the array.

    Returns:
      Whether the leaf is a kernel to constrain.
    """
    if not path or jnp.ndim(leaf) < 2:
        return False
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", None))
    return name == "kernel"


def _checked_bound(max_value: Any) -> Any:
    """The bound ``c`` to project on: a concrete one checked (> 0), a traced one (whose sign
    cannot be checked) with ``c <= 0`` or NaN read as no constraint (``inf``), the engine's
    convention that a member's ``max_norm`` of 0 is off."""
    if isinstance(max_value, str | bytes | bool):
        raise TypeError(f"max_value must be a positive number, got {max_value!r}.")
    if jnp.ndim(max_value) != 0:
        raise TypeError(f"max_value must be a scalar, got shape {jnp.shape(max_value)}.")
    if is_traced(max_value):
        return jnp.where(max_value > 0, max_value, jnp.inf)
    try:
        value = float(max_value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"max_value must be a positive number, got {max_value!r}.") from err
    if not value > 0.0:
        raise ValueError(
            f"max_value is the norm bound c and must be > 0 (float('inf') for no constraint), "
            f"got {value}."
        )
    return max_value


def _project_leaf(w: jax.Array, max_value: Any) -> tuple[jax.Array, jax.Array]:
    """``(Π_c(w), outside)``: the projected leaf and, per column, whether it left the ball."""
    # Norms in at least float32 so that bfloat16 kernels are not projected on a coarse norm.
    wide = w.astype(jnp.promote_types(w.dtype, jnp.float32))
    norms = jnp.sqrt(jnp.sum(jnp.square(wide), axis=tuple(range(w.ndim - 1)), keepdims=True))
    # False for every column when max_value is inf, so c = inf selects w itself everywhere.
    outside = norms > max_value
    # Dividing by 1 where the column is inside keeps zero columns free of 0/0.
    scale = max_value / jnp.where(outside, norms, 1.0)
    return jnp.where(outside, wide * scale, wide).astype(w.dtype), outside


def project_max_norm(
    params: Any, max_value: float | jax.Array, *, predicate: Predicate = is_kernel
) -> Any:
    r"""Projects each selected unit's incoming weights onto the L2 ball of radius ``max_value``.

    Srivastava et al. 2014, Sec. 5.1: :math:`\|w\|_2 \le c` for the incoming weight vector
    :math:`w` of every hidden unit. The Euclidean projection of a column :math:`w` is

    .. math::

        \Pi_c(w) = \begin{cases} w & \|w\|_2 \le c \\ c\, w / \|w\|_2 & \text{otherwise,}
        \end{cases}

    with :math:`c` = ``max_value``. Columns inside the ball (zero columns included) are returned
    bit-for-bit unchanged; projected columns have norm :math:`c` up to floating-point rounding
    (a relative error of a few ulps, so a check should allow ``c * (1 + 1e-6)`` in float32).
    :math:`c = \infty` means no constraint and returns every selected leaf unchanged.

    Args:
      params: a pytree of arrays (e.g. flax ``params``).
      max_value: :math:`c > 0`, possibly ``inf``. A traced scalar is accepted (e.g. to vmap over
        ``c``); its sign cannot be checked, so a traced :math:`c \le 0` (or NaN) means no
        constraint, as a member's ``max_norm`` of 0 does in the engine.
      predicate: ``predicate(path, leaf) -> bool`` (a Python bool) selects the leaves to project;
        default :func:`is_kernel`. A predicate that selects nothing is allowed and returns
        ``params`` unchanged.

    Returns:
      A pytree like ``params``, selected leaves projected, others the same objects.

    Raises:
      TypeError: ``max_value`` is not a number or not a scalar.
      ValueError: a concrete ``max_value <= 0``.
    """
    max_value = _checked_bound(max_value)
    return jax.tree_util.tree_map_with_path(
        lambda path, w: _project_leaf(w, max_value)[0] if predicate(path, w) else w, params
    )


def max_norm(
    max_value: float | jax.Array, *, predicate: Predicate = is_kernel
) -> optax.GradientTransformation:
    r"""An optax transformation that keeps the max-norm constraint after each update.

    Place it **last** in the chain, e.g. ``optax.chain(optax.sgd(lr, momentum=0.95),
    bnreg.max_norm(3.0))``: for each unit (column) :math:`j` of a selected leaf it turns the
    incoming update :math:`\Delta_j` into

    .. math::

        \Delta'_j = \begin{cases} \Pi_c(\theta_j + \Delta_j) - \theta_j
            & \|\theta_j + \Delta_j\|_2 > c \\ \Delta_j & \text{otherwise}
        \end{cases}

    (other leaves pass through), so that ``optax.apply_updates(params, updates)`` yields the
    projected parameters :math:`\Pi_c(\theta + \Delta)` of :func:`project_max_norm` —
    Srivastava et al. 2014, Sec. 5.1: "projection after each update". Columns that stay inside
    the ball keep their update bit for bit: :math:`\Pi_c(\theta + \Delta) - \theta` is
    :math:`\Delta` in exact arithmetic but not always in floating point, and ``c = inf`` (no
    constraint, e.g. the members of a swept program that have max-norm off) must leave the
    updates, hence the training run, bit-identical to the chain without ``max_norm``. Because
    ``apply_updates`` adds :math:`\theta` back in floating point, projected norms can exceed
    :math:`c` by a few ulps (and the next step projects again, so this does not accumulate). Any
    transformation placed after it would break the constraint.

    Args:
      max_value: :math:`c > 0`, the bound on each incoming weight vector's L2 norm; ``inf`` for
        no constraint. A traced scalar is accepted (e.g. to vmap over ``c``); a traced
        :math:`c \le 0` (or NaN) means no constraint, as in :func:`project_max_norm`.
      predicate: selects the leaves to constrain; see :func:`project_max_norm`.

    Returns:
      An ``optax.GradientTransformation`` with an ``optax.EmptyState`` state whose ``update``
      requires ``params``.

    Raises:
      TypeError: ``max_value`` is not a scalar number.
      ValueError: a concrete ``max_value <= 0`` (or NaN); and, from ``update``,
        ``params is None``.
    """
    max_value = _checked_bound(max_value)

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(
        updates: optax.Updates, state: optax.EmptyState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, optax.EmptyState]:
        if params is None:
            raise ValueError(
                "max_norm projects the updated parameters, so it needs them: call "
                "update(updates, state, params), and place max_norm last in optax.chain."
            )

        def constrain(path: tuple[Any, ...], update: jax.Array, param: jax.Array) -> jax.Array:
            if not predicate(path, param):
                return update
            # Same arithmetic as optax.apply_updates, so the projected point is what it produces.
            updated = (param + update).astype(param.dtype)
            projected, outside = _project_leaf(updated, max_value)
            return jnp.where(outside, (projected - param).astype(update.dtype), update)

        return jax.tree_util.tree_map_with_path(constrain, updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)
