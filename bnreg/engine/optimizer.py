r"""The optimizer of a member, built from its hyperparameters: ``[L2] → SGD(+momentum) or Adam →
[max-norm]``, with the papers' schedules as optax schedules.

:func:`build_optimizer` returns a function from one member's traced hyperparameters (the
:meth:`bnreg.engine.members.Members.traced` entries: the learning rate always, the other axes
when swept) to an ``optax.GradientTransformation``; the train step builds it inside the
compiled, member-``vmap``-ed program, so members differ in any of these values without a
Python ``if`` on them (an axis that every member shares is a constant; one that no member uses
is left out of the chain). The state's structure depends only on which parts are present.

* Learning rate: the member's base rate ``lr0`` times a schedule factor: constant; exponential
  ``decay_rate^(t/decay_steps)``; step (``step_factor`` at each boundary); or inverse time
  ``1 / (1 + t/decay_steps)`` — the dropout paper's released recipe ``lr0 / (1 + t/T)``.
* Momentum rises from ``initial_momentum`` to the member's final momentum ``m``: constant ``m``;
  linear over ``momentum_steps`` then constant; or exponential
  ``m − (m − m₀)·exp(−t/momentum_steps)`` (the released recipe's form). A scheduled momentum is
  ``optax.inject_hyperparams(optax.trace)`` with the schedule. With ``dampening`` the gradient
  enters the momentum ×(1 − m_t), as the dropout paper's App. A.1 writes SGD:

  .. math:: \Delta w_t = m_t \Delta w_{t-1} - (1 - m_t)\, \epsilon_t \nabla_w L, \qquad
            w_t = w_{t-1} + \Delta w_t

  (:math:`m_t` the momentum, :math:`\epsilon_t` the learning rate): the step's size is then
  that of plain SGD at rate :math:`\epsilon_t`, whatever the momentum; without it (optax's and
  PyTorch's default) the steady-state step is :math:`\epsilon_t / (1 - m)`. The rate scales
  the velocity (optax's order: trace, then rate), which is A.1 exactly at a constant rate;
  under a decaying one the velocity's past is rescaled by :math:`\epsilon_t/\epsilon_{t-1}`
  each step, at least :math:`1 - 1/T` for :math:`\epsilon_0/(1 + t/T)` (0.999 at T = 1000).
* L2 weight decay adds ``λ·w`` to the gradient of every kernel (an L2 penalty ``λ/2‖w‖²``).
* Max-norm (:func:`bnreg.core.max_norm.max_norm`) projects each hidden unit's incoming weights
  (:func:`bnreg.models.is_hidden_kernel`) onto ``‖w‖₂ ≤ c`` after every update, last in the
  chain; ``c = 0`` (off) becomes ``∞``, which leaves the update bit for bit unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from bnreg.core.max_norm import is_kernel, max_norm
from bnreg.engine.members import Members
from bnreg.models import is_hidden_kernel

Hyperparameters = Mapping[str, jax.Array]
OptimizerFactory = Callable[[Hyperparameters], optax.GradientTransformation]


def learning_rate_factor(optimizer_config: ml_collections.ConfigDict) -> optax.Schedule:
    """The learning-rate schedule as a factor of the base rate (1 at step 0)."""
    name, steps = optimizer_config.schedule, optimizer_config.decay_steps
    if name == "exponential":
        return optax.exponential_decay(1.0, steps, optimizer_config.decay_rate)
    if name == "step":
        return optax.piecewise_constant_schedule(
            1.0, {int(b): optimizer_config.step_factor for b in optimizer_config.step_boundaries}
        )
    if name == "inverse_time":
        return lambda count: 1.0 / (1.0 + count / steps)
    return optax.constant_schedule(1.0)


def momentum_schedule(
    optimizer_config: ml_collections.ConfigDict, final: jax.Array | float
) -> optax.Schedule:
    """The momentum at each step, rising from ``initial_momentum`` to ``final``."""
    initial, steps = optimizer_config.initial_momentum, optimizer_config.momentum_steps
    if optimizer_config.momentum_schedule == "linear":
        return optax.linear_schedule(initial, final, steps)
    if optimizer_config.momentum_schedule == "exponential":
        return lambda count: final - (final - initial) * jnp.exp(-count / steps)
    return optax.constant_schedule(final)


def build_optimizer(
    optimizer_config: ml_collections.ConfigDict, members: Members
) -> OptimizerFactory:
    """``optimizer(hyperparameters)``: one member's optimizer (see the module docstring)."""
    factor = learning_rate_factor(optimizer_config)
    scheduled_momentum = optimizer_config.momentum_schedule != "constant"
    dampening = optimizer_config.dampening
    uses_momentum = members.uses("final_momentum") or (
        scheduled_momentum and optimizer_config.initial_momentum > 0
    )
    uses = {axis: members.uses(axis) for axis in ("weight_decay", "max_norm")}

    def value(hyperparameters: Hyperparameters, axis: str):
        return hyperparameters[axis] if axis in hyperparameters else members.constant(axis)

    def optimizer(hyperparameters: Hyperparameters) -> optax.GradientTransformation:
        base_rate = hyperparameters["learning_rate"]
        schedule = lambda count: base_rate * factor(count)  # noqa: E731
        parts = []
        if uses["weight_decay"]:
            parts.append(optax.add_decayed_weights(
                value(hyperparameters, "weight_decay"),
                lambda params: jax.tree_util.tree_map_with_path(is_kernel, params),
            ))
        if optimizer_config.name == "adam":
            parts.append(optax.adam(schedule))
        elif uses_momentum and (scheduled_momentum or dampening):
            momentum = momentum_schedule(optimizer_config, value(hyperparameters, "final_momentum"))
            if dampening:
                parts.append(optax.scale_by_schedule(lambda count: 1.0 - momentum(count)))
            parts += [
                optax.inject_hyperparams(optax.trace, static_args="nesterov")(
                    decay=momentum, nesterov=optimizer_config.nesterov
                ),
                optax.scale_by_learning_rate(schedule),
            ]
        else:
            parts.append(optax.sgd(
                schedule,
                momentum=value(hyperparameters, "final_momentum") if uses_momentum else None,
                nesterov=optimizer_config.nesterov,
            ))
        if uses["max_norm"]:
            # Swept, c is traced and the members with c = 0 are unconstrained (bnreg.max_norm).
            parts.append(max_norm(value(hyperparameters, "max_norm"), predicate=is_hidden_kernel))
        return optax.chain(*parts)

    return optimizer
