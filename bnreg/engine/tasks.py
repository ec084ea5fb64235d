"""Tasks: what a network's outputs are scored against — a loss and its evaluation metrics.

* **classification**: softmax cross-entropy of the integer labels; metrics ``loss``,
  ``accuracy`` and ``error`` (``1 − accuracy``).
* **reconstruction** (an autoencoder, Srivastava et al. 2014, Fig. 7/8): the target is the
  flattened input ``x``. ``"bernoulli"``: the outputs are logits of a sigmoid and the loss
  per example is the Bernoulli cross-entropy ``−Σ_j x_j log σ(o_j) + (1 − x_j) log(1 − σ(o_j))``
  (valid for grey levels in [0, 1]); ``"squared_error"``: the outputs are the reconstruction
  and the loss per example is ``Σ_j (o_j − x_j)²``. Metrics ``loss`` and
  ``reconstruction_error``, the per-example squared error of the reconstruction (``σ(o)`` for
  Bernoulli), whichever the loss.

Losses are means over the batch of per-example values; evaluation metrics are means over the
split of :meth:`Task.per_example` values (``error`` derived from ``accuracy``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

PerExample = Callable[[jax.Array, jax.Array, jax.Array], Mapping[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Task:
    """A loss and its metrics.

    Attributes:
      name: ``"classification"`` or ``"reconstruction"``.
      per_example: ``per_example(outputs, images, labels) -> {metric: (batch,)}``; the first
        metric is the loss.
      metrics: the names :func:`finish` returns, in order.
    """

    name: str
    per_example: PerExample
    metrics: tuple[str, ...]

    def loss(self, outputs: jax.Array, images: jax.Array, labels: jax.Array) -> jax.Array:
        """The training loss: the batch mean of the per-example loss."""
        return self.per_example(outputs, images, labels)["loss"].mean()


def _classification(outputs, images, labels):
    del images
    return {
        "loss": optax.softmax_cross_entropy_with_integer_labels(outputs, labels),
        "accuracy": jnp.argmax(outputs, -1) == labels,
    }


def _reconstruction(loss: str) -> PerExample:
    def per_example(outputs, images, labels):
        del labels
        targets = images.reshape((images.shape[0], -1))
        if loss == "bernoulli":
            values = optax.sigmoid_binary_cross_entropy(outputs, targets).sum(-1)
            reconstruction = jax.nn.sigmoid(outputs)
        else:
            values = jnp.square(outputs - targets).sum(-1)
            reconstruction = outputs
        return {
            "loss": values,
            "reconstruction_error": jnp.square(reconstruction - targets).sum(-1),
        }

    return per_example


def build_task(task_config: ml_collections.ConfigDict) -> Task:
    """The task named by ``task_config.name``."""
    if task_config.name == "classification":
        return Task("classification", _classification, ("loss", "accuracy", "error"))
    return Task(
        "reconstruction",
        _reconstruction(task_config.reconstruction_loss),
        ("loss", "reconstruction_error"),
    )


def finish(task: Task, sums: Mapping[str, jax.Array], num_examples: int) -> dict[str, jax.Array]:
    """Split means from sums of :attr:`Task.per_example` values (``error`` = 1 − accuracy).

    A network whose loss is not finite (a diverged member) has NaN accuracy and error too: the
    argmax of NaN outputs is class 0, which would read as a finite error of about 0.9."""
    means = {name: total / num_examples for name, total in sums.items()}
    if "accuracy" in means:
        means["accuracy"] = jnp.where(jnp.isfinite(means["loss"]), means["accuracy"], jnp.nan)
    if "accuracy" in task.metrics:
        means["error"] = 1.0 - means["accuracy"]
    return {name: means[name] for name in task.metrics}
