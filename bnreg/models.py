"""Configurable networks for the studies: an MLP and a small ConvNet.

Placement follows Ioffe & Szegedy 2015, Sec. 3.2: ``z = g(BN(W u))`` — BN goes between the linear
map and the nonlinearity, and the linear map then has no bias, since BN's ``β`` replaces it.
Dropout (Srivastava et al. 2014) is applied to a layer's *output*: to the input image and after
each hidden nonlinearity. DropConnect (Wan et al. 2013) replaces the hidden dense layers.

Both models record, via ``self.sow("intermediates", ...)``, each hidden layer's pre-activation
(the nonlinearity's input, BN paper Fig. 1b,c) as ``preactivation_{i}`` and its activation
(dropout paper Fig. 8) as ``activation_{i}``; pass ``mutable=["intermediates"]`` to read them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnreg.dropout import _check_rate
from bnreg.layers import BatchNorm, DropConnectDense, Dropout
from bnreg.max_norm import is_kernel

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}
NORMS = (None, "batch")
# The name of every classifier's output layer; all other weight layers are hidden.
OUTPUT_LAYER = "Dense_out"


def is_hidden_kernel(path: tuple, leaf: jax.Array) -> bool:
    """A kernel of a hidden layer (:func:`bnreg.max_norm.is_kernel`, not the output layer's): the
    weights max-norm constrains, "the incoming weight vector at each hidden unit" (Srivastava et
    al. 2014, Sec. 5.1)."""
    return is_kernel(path, leaf) and all(getattr(k, "key", None) != OUTPUT_LAYER for k in path)


def kernel_initializer(name: str, stddev: float = 0.1) -> Callable[..., jax.Array]:
    """Returns a weight initialiser by name.

    Args:
      name: ``"normal"`` — the BN paper's "small random Gaussian", N(0, stddev²) — or one of
        ``"lecun_normal"``, ``"glorot_uniform"``, ``"he_normal"``.
      stddev: the standard deviation for ``"normal"``.

    Raises:
      ValueError: an unknown name.
    """
    initializers = {
        "normal": nn.initializers.normal(stddev),
        "lecun_normal": nn.initializers.lecun_normal(),
        "glorot_uniform": nn.initializers.glorot_uniform(),
        "he_normal": nn.initializers.he_normal(),
    }
    if name not in initializers:
        raise ValueError(f"kernel_init must be one of {sorted(initializers)}, got {name!r}.")
    return initializers[name]


def _check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _finish_hidden(module: _Classifier, h: jax.Array, index: int, train: bool) -> jax.Array:
    """The part of hidden layer ``index`` after its linear map: BN, probes, nonlinearity, dropout.

    Called from inside ``module``'s compact ``__call__``, so the submodules it creates belong to
    ``module``.
    """
    if module.norm == "batch":
        h = BatchNorm(
            momentum=module.bn_momentum,
            epsilon=module.bn_epsilon,
            axis_name=module.bn_axis_name,
            backward=module.bn_backward,
            name=f"BatchNorm_{index}",
        )(h, train=train)
    module.sow("intermediates", f"preactivation_{index}", h)
    h = ACTIVATIONS[module.activation](h)
    module.sow("intermediates", f"activation_{index}", h)
    return Dropout(module.hidden_dropout, name=f"Dropout_hidden_{index}")(
        h, deterministic=not train
    )


class _Classifier(nn.Module):
    """The fields every classifier here shares; see :class:`MLP` for their meaning."""

    hidden_sizes: Sequence[int] = (100, 100, 100)
    num_classes: int = 10
    activation: str = "sigmoid"
    norm: str | None = None
    input_dropout: float = 0.0
    hidden_dropout: float = 0.0
    kernel_init: str = "lecun_normal"
    init_stddev: float = 0.1
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-5
    bn_axis_name: str | None = None
    bn_backward: str = "autodiff"


class MLP(_Classifier):
    """A fully connected classifier: ``[dropout] → (dense → [BN] → act → [dropout]) × L → dense``.

    Attributes:
      hidden_sizes: units per hidden layer (the BN paper's MNIST net: ``(100, 100, 100)``).
      num_classes: outputs (logits).
      activation: ``"sigmoid"``, ``"relu"`` or ``"tanh"``.
      norm: ``None`` or ``"batch"`` (BN before every hidden nonlinearity; dense has no bias).
      input_dropout: drop rate on the input (the dropout paper's p = 0.8 retain is rate 0.2).
      hidden_dropout: drop rate after each hidden nonlinearity (p = 0.5 is rate 0.5).
      dropconnect: drop rate of each hidden weight (0 disables DropConnect).
      kernel_init: initialiser name, see :func:`kernel_initializer`.
      init_stddev: standard deviation for ``kernel_init="normal"``.
      bn_momentum, bn_epsilon, bn_axis_name, bn_backward: passed to :class:`bnreg.layers.BatchNorm`.
    """

    dropconnect: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        _check_choice("activation", self.activation, list(ACTIVATIONS))
        _check_choice("norm", self.norm, NORMS)
        dropconnect = _check_rate(self.dropconnect)  # a negative or NaN rate is an error, not "off"
        init = kernel_initializer(self.kernel_init, self.init_stddev)
        use_bias = self.norm is None
        h = x.reshape((x.shape[0], -1))
        h = Dropout(self.input_dropout, name="Dropout_input")(h, deterministic=not train)
        for index, width in enumerate(self.hidden_sizes):
            if dropconnect > 0.0:
                h = DropConnectDense(
                    width, dropconnect, use_bias=use_bias, kernel_init=init,
                    name=f"Dense_{index}",
                )(h, deterministic=not train)
            else:
                h = nn.Dense(width, use_bias=use_bias, kernel_init=init, name=f"Dense_{index}")(h)
            h = _finish_hidden(self, h, index, train)
        return nn.Dense(self.num_classes, kernel_init=init, name=OUTPUT_LAYER)(h)


class ConvNet(_Classifier):
    """A small convolutional classifier: ``(conv3×3 → [BN] → act → [dropout] → maxpool2) × C →
    (dense → [BN] → act → [dropout]) × L → dense``.

    BN in a conv block normalises each feature map over batch and spatial positions
    (``m' = m·p·q``) with one ``γ, β`` per map (Ioffe & Szegedy 2015, Sec. 3.2).

    Attributes:
      conv_features: output channels of each conv block.
      hidden_sizes: units of the dense hidden layers after the conv blocks.
      num_classes, activation, norm, input_dropout, hidden_dropout, kernel_init, init_stddev,
      bn_momentum, bn_epsilon, bn_axis_name, bn_backward: as in :class:`MLP`.
    """

    conv_features: Sequence[int] = (32, 64)
    hidden_sizes: Sequence[int] = ()
    activation: str = "relu"
    kernel_init: str = "he_normal"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        _check_choice("activation", self.activation, list(ACTIVATIONS))
        _check_choice("norm", self.norm, NORMS)
        if x.ndim != 4:
            raise ValueError(f"ConvNet expects images (N, H, W, C), got shape {x.shape}.")
        init = kernel_initializer(self.kernel_init, self.init_stddev)
        use_bias = self.norm is None
        h = Dropout(self.input_dropout, name="Dropout_input")(x, deterministic=not train)
        layer = 0
        for features in self.conv_features:
            h = nn.Conv(
                features, (3, 3), use_bias=use_bias, kernel_init=init, name=f"Conv_{layer}"
            )(h)
            h = _finish_hidden(self, h, layer, train)
            h = nn.max_pool(h, (2, 2), strides=(2, 2))
            layer += 1
        h = h.reshape((h.shape[0], -1))
        for width in self.hidden_sizes:
            h = nn.Dense(width, use_bias=use_bias, kernel_init=init, name=f"Dense_{layer}")(h)
            h = _finish_hidden(self, h, layer, train)
            layer += 1
        return nn.Dense(self.num_classes, kernel_init=init, name=OUTPUT_LAYER)(h)
