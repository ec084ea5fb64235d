"""The dropout paper's training recipe, shared by the dropout studies.

The authors' released MNIST recipe (their ``deepnet`` configs; design §4): batches of 100; SGD
with momentum as App. A.1 writes it (the gradient enters ×(1 − m_t), ``optimizer.dampening``),
the momentum rising from 0.5 to 0.95 as ``0.95 − 0.45·exp(−t/T_m)``; the learning rate
``lr0/(1 + t/T)``; weights from N(0, 1/fan_in). The recipe runs 1,000,000 updates with
T = 10,000 and T_m = 100,000; a study states T and T_m as fractions of its run
(``config.study.decay_fraction`` and ``momentum_fraction``, :func:`schedule_overrides`), since
its CPU runs are far shorter (``experiments/dropout_nets.py`` says why T is 10% there).
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

RECIPE: dict[str, Any] = {
    "binarize": False, "model.kernel_init": "fan_in_normal", "model.init_stddev": 1.0,
    "optimizer.momentum": 0.95, "optimizer.dampening": True,
    "optimizer.momentum_schedule": "exponential", "optimizer.initial_momentum": 0.5,
    "optimizer.schedule": "inverse_time", "batch_size": 100,
}


def schedule_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """T (``optimizer.decay_steps``) and T_m (``optimizer.momentum_steps``) as
    ``config.study``'s fractions of ``config.num_steps`` (at least one step each)."""
    steps = config.num_steps
    return {"optimizer.decay_steps": max(1, round(config.study.decay_fraction * steps)),
            "optimizer.momentum_steps": max(1, round(config.study.momentum_fraction * steps))}


def nearest_unit(width: float) -> int:
    """A layer width (the paper's × a width scale, or over a retain probability) rounded to the
    nearest whole unit, halves up, at least 1."""
    return max(1, math.floor(width + 0.5))
