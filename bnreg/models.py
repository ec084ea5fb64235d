"""The studies' networks and their registry: an MLP, a small ConvNet, a small Inception-style
net and an autoencoder.

Placement follows Ioffe & Szegedy 2015, Sec. 3.2: ``z = g(BN(W u))`` — BN goes between the linear
map and the nonlinearity, and the linear map then has no bias, since BN's ``β`` replaces it.
Dropout (Srivastava et al. 2014) is applied to a layer's *output*: to the input image and after
each hidden nonlinearity. DropConnect (Wan et al. 2013) replaces the hidden dense layers.

Every model is called as ``model.apply(variables, x, bn_mode=..., noise=...)``
(:mod:`bnreg.layers`): training is ``bn_mode="batch", noise=True``; the deterministic network
``bn_mode="inference", noise=False``; Monte-Carlo averaging samples ``bn_mode="inference",
noise=True``. Rates and the BN momentum may be traced (the engine's members differ in them).

Every model records, via ``self.sow("intermediates", ...)``, each hidden layer's pre-activation
(the nonlinearity's input, BN paper Fig. 1b,c) as ``preactivation_{i}`` and its activation
(dropout paper Fig. 8) as ``activation_{i}``; pass ``mutable=["intermediates"]`` to read them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from bnreg._checks import check_choice, check_rate
from bnreg.core.max_norm import is_kernel
from bnreg.layers import BatchNorm, DropConnectDense, Dropout, is_off

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}
NORMS = (None, "batch")
BRANCH_POOLS = ("max", "avg")
# The name of every model's output layer; all other weight layers are hidden.
OUTPUT_LAYER = "Dense_out"


def is_hidden_kernel(path: tuple, leaf: jax.Array) -> bool:
    """A kernel of a hidden layer (:func:`bnreg.core.max_norm.is_kernel`, not the output
    layer's): the weights max-norm constrains, "the incoming weight vector at each hidden unit"
    (Srivastava et al. 2014, Sec. 5.1)."""
    return is_kernel(path, leaf) and all(getattr(k, "key", None) != OUTPUT_LAYER for k in path)


def kernel_initializer(name: str, stddev: float = 0.1) -> Callable[..., jax.Array]:
    """Returns a weight initialiser by name.

    Args:
      name: ``"normal"`` — the BN paper's "small random Gaussian", N(0, stddev²) —;
        ``"fan_in_normal"`` — the dropout paper's released recipe, N(0, stddev²/fan_in), an
        untruncated Gaussian (flax's ``lecun_normal`` is truncated) —; or one of
        ``"lecun_normal"``, ``"glorot_uniform"``, ``"he_normal"``.
      stddev: the standard deviation for ``"normal"``, its σ for ``"fan_in_normal"``.

    Raises:
      ValueError: an unknown name.
    """
    initializers = {
        "normal": nn.initializers.normal(stddev),
        "fan_in_normal": nn.initializers.variance_scaling(stddev**2, "fan_in", "normal"),
        "lecun_normal": nn.initializers.lecun_normal(),
        "glorot_uniform": nn.initializers.glorot_uniform(),
        "he_normal": nn.initializers.he_normal(),
    }
    check_choice("kernel_init", name, sorted(initializers))
    return initializers[name]


class _Network(nn.Module):
    """The fields every network here shares; see :class:`MLP` for their meaning."""

    hidden_sizes: Sequence[int] = (100, 100, 100)
    num_outputs: int = 10
    activation: str = "sigmoid"
    norm: str | None = None
    input_dropout: Any = 0.0
    hidden_dropout: Any = 0.0
    dropout_noise: str = "bernoulli"
    dropout_mask_bits: int = 32
    dropout_scaling: str = "inverted"
    kernel_init: str = "lecun_normal"
    init_stddev: float = 0.1
    bn_momentum: Any = 0.99
    bn_epsilon: float = 1e-5
    bn_axis_name: str | None = None
    bn_backward: str = "autodiff"
    bn_ghost_size: int = 0

    def _check(self) -> None:
        check_choice("activation", self.activation, list(ACTIVATIONS))
        check_choice("norm", self.norm, NORMS)
        for name in ("input_dropout", "hidden_dropout"):
            check_rate(getattr(self, name), name)

    def _input(self, x: jax.Array, noise: bool) -> jax.Array:
        return Dropout(self.input_dropout, kind=self.dropout_noise,
                       mask_bits=self.dropout_mask_bits, scaling=self.dropout_scaling,
                       name="Dropout_input")(x, noise=noise)

    def _images(self, x: jax.Array) -> None:
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects images (N, H, W, C), got shape "
                             f"{x.shape}.")

    def _norm(self, h: jax.Array, index: int, *, bn_mode: str) -> jax.Array:
        """BN of layer ``index``'s linear map (``BatchNorm_{index}``) when the net has BN."""
        if self.norm != "batch":
            return h
        return BatchNorm(
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            axis_name=self.bn_axis_name,
            backward=self.bn_backward,
            ghost_size=self.bn_ghost_size,
            name=f"BatchNorm_{index}",
        )(h, bn_mode=bn_mode)

    def _finish_hidden(self, h: jax.Array, index: int, *, bn_mode: str, noise: bool,
                       activated: bool = False) -> jax.Array:
        """Hidden layer ``index`` after its linear map: BN, probes, nonlinearity, dropout
        (``activated``: the linear map already applied the nonlinearity)."""
        h = self._norm(h, index, bn_mode=bn_mode)
        if not activated:
            self.sow("intermediates", f"preactivation_{index}", h)
            h = ACTIVATIONS[self.activation](h)
        self.sow("intermediates", f"activation_{index}", h)
        return Dropout(
            self.hidden_dropout, kind=self.dropout_noise, mask_bits=self.dropout_mask_bits,
            scaling=self.dropout_scaling,
            name=f"Dropout_hidden_{index}",
        )(h, noise=noise)


class _DropConnectNetwork(_Network):
    """A network whose dense hidden layers may be DropConnect layers; see :class:`MLP` for the
    fields."""

    dropconnect: Any = 0.0
    dropconnect_per_example: bool = True
    dropconnect_mask_bits: int = 32
    dropconnect_gaussian_samples: int = 0

    def _gaussian(self, noise: bool) -> bool:
        """Whether the DropConnect layers are evaluated by Gaussian moment matching."""
        check_rate(self.dropconnect, "dropconnect")  # a negative or NaN rate is an error
        gaussian = bool(self.dropconnect_gaussian_samples) and not noise
        if gaussian and (self.norm is not None or is_off(self.dropconnect)):
            raise ValueError(
                "Gaussian DropConnect inference needs DropConnect layers without BN "
                "(dropconnect > 0, norm=None)."
            )
        return gaussian

    def _dense_hidden(self, h: jax.Array, index: int, width: int, *, bn_mode: str,
                      noise: bool) -> jax.Array:
        """Hidden dense layer ``index`` (``Dense_{index}``, a DropConnect layer when the net has
        DropConnect), then :meth:`_finish_hidden`."""
        gaussian = self._gaussian(noise)
        init = kernel_initializer(self.kernel_init, self.init_stddev)
        use_bias = self.norm is None
        if is_off(self.dropconnect):
            h = nn.Dense(width, use_bias=use_bias, kernel_init=init, name=f"Dense_{index}")(h)
        else:
            h = DropConnectDense(
                width, self.dropconnect, use_bias=use_bias, kernel_init=init,
                per_example=self.dropconnect_per_example,
                mask_bits=self.dropconnect_mask_bits, scaling=self.dropout_scaling,
                gaussian_samples=self.dropconnect_gaussian_samples, name=f"Dense_{index}",
            )(h, noise=noise, activation=ACTIVATIONS[self.activation])
        return self._finish_hidden(h, index, bn_mode=bn_mode, noise=noise, activated=gaussian)


class MLP(_DropConnectNetwork):
    """A fully connected classifier: ``[dropout] → (dense → [BN] → act → [dropout]) × L → dense``.

    Attributes:
      hidden_sizes: units per hidden layer (the BN paper's MNIST net: ``(100, 100, 100)``).
      num_outputs: outputs (the classes' logits).
      activation: ``"sigmoid"``, ``"relu"`` or ``"tanh"``.
      norm: ``None`` or ``"batch"`` (BN before every hidden nonlinearity; dense has no bias).
      input_dropout: drop rate on the input (the dropout paper's p = 0.8 retain is rate 0.2).
      hidden_dropout: drop rate after each hidden nonlinearity (p = 0.5 is rate 0.5).
      dropout_noise: ``"bernoulli"`` or ``"gaussian"`` (Srivastava et al. 2014, Sec. 10).
      dropout_mask_bits: random bits per Bernoulli mask entry, 32 or 16
        (:func:`bnreg.core.dropout.bernoulli_mask`: p resolved to 2⁻¹⁶, half the bits).
      dropout_scaling: ``"inverted"`` (kept units or weights ×1/p in training) or ``"paper"``
        (outputs ×p with the noise off), for dropout (:func:`bnreg.core.dropout.dropout`) and
        DropConnect (:func:`bnreg.core.dropconnect.dropconnect_dense`) alike.
      dropconnect: drop rate of each hidden weight (a concrete 0 leaves DropConnect out).
      dropconnect_per_example: a fresh weight mask per example (the paper) or one per batch.
      dropconnect_mask_bits: random bits per DropConnect mask entry, 32 or 16.
      dropconnect_gaussian_samples: 0, or Z > 0 to evaluate the DropConnect layers by the paper's
        Gaussian moment matching with Z samples (with the noise off; needs ``norm=None``).
      kernel_init: initialiser name, see :func:`kernel_initializer`.
      init_stddev: standard deviation for ``kernel_init="normal"``.
      bn_momentum, bn_epsilon, bn_axis_name, bn_backward, bn_ghost_size: passed to
        :class:`bnreg.layers.BatchNorm` (its ``ghost_size``: ghost BN in training).
    """

    @nn.compact
    def __call__(self, x: jax.Array, *, bn_mode: str, noise: bool) -> jax.Array:
        self._check()
        h = self._input(x.reshape((x.shape[0], -1)), noise)
        for index, width in enumerate(self.hidden_sizes):
            h = self._dense_hidden(h, index, width, bn_mode=bn_mode, noise=noise)
        init = kernel_initializer(self.kernel_init, self.init_stddev)
        return nn.Dense(self.num_outputs, kernel_init=init, name=OUTPUT_LAYER)(h)


class ConvNet(_DropConnectNetwork):
    """A small convolutional classifier: ``(conv3×3 → [BN] → act → [dropout] → maxpool2) × C →
    (dense → [BN] → act → [dropout]) × L → dense``.

    BN in a conv block normalises each feature map over batch and spatial positions
    (``m' = m·p·q``) with one ``γ, β`` per map (Ioffe & Szegedy 2015, Sec. 3.2).

    Attributes:
      conv_features: output channels of each conv block.
      hidden_sizes: units of the dense hidden layers after the conv blocks.
      The others: as in :class:`MLP`.
    """

    conv_features: Sequence[int] = (32, 64)
    hidden_sizes: Sequence[int] = ()
    activation: str = "relu"
    kernel_init: str = "he_normal"

    @nn.compact
    def __call__(self, x: jax.Array, *, bn_mode: str, noise: bool) -> jax.Array:
        self._check()
        self._images(x)
        init = kernel_initializer(self.kernel_init, self.init_stddev)
        use_bias = self.norm is None
        h = self._input(x, noise)
        layer = 0
        for features in self.conv_features:
            h = nn.Conv(
                features, (3, 3), use_bias=use_bias, kernel_init=init, name=f"Conv_{layer}"
            )(h)
            h = self._finish_hidden(h, layer, bn_mode=bn_mode, noise=noise)
            h = nn.max_pool(h, (2, 2), strides=(2, 2))
            layer += 1
        h = h.reshape((h.shape[0], -1))
        for width in self.hidden_sizes:
            h = self._dense_hidden(h, layer, width, bn_mode=bn_mode, noise=noise)
            layer += 1
        return nn.Dense(self.num_outputs, kernel_init=init, name=OUTPUT_LAYER)(h)


class Inception(_Network):
    """A small Inception-style classifier (Szegedy et al. 2015), with the BN paper's change of
    each 5×5 convolution into two 3×3 (Ioffe & Szegedy 2015, Sec. 4.2): ``stem conv3×3 →
    [2×2 max-pool] → inception modules (a 2×2 max-pool after those in pool_after) → global
    average pool → [dropout] → dense``. GoogLeNet's stem pools twice before its first module
    (224 → 28 pixels); ``stem_pool`` is that pooling at this scale (28 → 14).

    An inception module concatenates four branches on the feature axis: ``1×1``; ``1×1 → 3×3``;
    ``1×1 → 3×3 → 3×3`` (the 5×5); ``3×3 pool (stride 1) → 1×1`` — a max-pool as GoogLeNet's,
    or an average pool, as most of BN-Inception's modules have (Ioffe & Szegedy 2015, Fig. 5).
    Every convolution is ``conv → [BN] → act`` (BN over batch and positions, Sec. 3.2; the
    convolution then has no bias). Dropout (``hidden_dropout``) acts only before the classifier,
    where the Inception net has it. Any image size works (the pool is global): 28×28×1 or
    CIFAR-10's 32×32×3.

    Attributes:
      stem_features: channels of the stem's 3×3 convolution.
      stem_pool: a 2×2 max-pool (stride 2) after the stem.
      modules: per module ``(b1, b3_reduce, b3, b5_reduce, b5, pool_proj)``, the channels of
        its 1×1 branch, of its 3×3 branch's 1×1 reduction and 3×3, of its 5×5 branch's
        reduction and two 3×3, and of the pooling branch's projection.
      pool_after: indices of the modules followed by a 2×2 max-pool (stride 2).
      branch_pool: the pooling branch's 3×3 pool, ``"max"`` or ``"avg"`` (padded positions
        not counted in the average).
      The others: as in :class:`MLP` (``hidden_sizes`` unused).
    """

    stem_features: int = 32
    stem_pool: bool = False
    modules: Sequence[Sequence[int]] = ((16, 16, 24, 8, 12, 8), (32, 24, 48, 12, 24, 16))
    pool_after: Sequence[int] = (0,)
    branch_pool: str = "max"
    hidden_sizes: Sequence[int] = ()
    activation: str = "relu"
    kernel_init: str = "he_normal"

    @nn.compact
    def __call__(self, x: jax.Array, *, bn_mode: str, noise: bool) -> jax.Array:
        self._check()
        check_choice("branch_pool", self.branch_pool, BRANCH_POOLS)
        self._images(x)
        init = kernel_initializer(self.kernel_init, self.init_stddev)
        convs = itertools.count()  # Conv_i and BatchNorm_i, in the order they are built

        def conv(h, features, size):
            index = next(convs)
            h = nn.Conv(features, (size, size), use_bias=self.norm is None, kernel_init=init,
                        name=f"Conv_{index}")(h)
            return ACTIVATIONS[self.activation](self._norm(h, index, bn_mode=bn_mode))

        h = conv(self._input(x, noise), self.stem_features, 3)
        if self.stem_pool:
            h = nn.max_pool(h, (2, 2), strides=(2, 2))
        for index, (b1, b3_reduce, b3, b5_reduce, b5, pool_proj) in enumerate(self.modules):
            if self.branch_pool == "max":
                pooled = nn.max_pool(h, (3, 3), strides=(1, 1), padding="SAME")
            else:
                pooled = nn.avg_pool(h, (3, 3), strides=(1, 1), padding="SAME",
                                     count_include_pad=False)
            h = jnp.concatenate([
                conv(h, b1, 1),
                conv(conv(h, b3_reduce, 1), b3, 3),
                conv(conv(conv(h, b5_reduce, 1), b5, 3), b5, 3),
                conv(pooled, pool_proj, 1),
            ], axis=-1)
            if index in self.pool_after:
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = jnp.mean(h, axis=(1, 2))
        h = Dropout(self.hidden_dropout, kind=self.dropout_noise,
                    mask_bits=self.dropout_mask_bits, scaling=self.dropout_scaling,
                    name="Dropout_classifier")(h, noise=noise)
        return nn.Dense(self.num_outputs, kernel_init=init, name=OUTPUT_LAYER)(h)


class Autoencoder(_Network):
    """A fully connected autoencoder (Srivastava et al. 2014, Fig. 7/8: one hidden layer of 256
    ReLU units): ``flatten → [dropout] → (dense → [BN] → act → [dropout]) × L → dense``, the
    output the flattened input's size (``num_outputs``): the reconstruction, or its logits for a
    Bernoulli cross-entropy (the task decides, :mod:`bnreg.engine.tasks`).

    Attributes: as in :class:`MLP`; ``hidden_sizes`` are the encoder's layers.
    """

    hidden_sizes: Sequence[int] = (256,)
    num_outputs: int = 784
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, *, bn_mode: str, noise: bool) -> jax.Array:
        self._check()
        init = kernel_initializer(self.kernel_init, self.init_stddev)
        h = self._input(x.reshape((x.shape[0], -1)), noise)
        for index, width in enumerate(self.hidden_sizes):
            h = nn.Dense(width, use_bias=self.norm is None, kernel_init=init,
                         name=f"Dense_{index}")(h)
            h = self._finish_hidden(h, index, bn_mode=bn_mode, noise=noise)
        return nn.Dense(self.num_outputs, kernel_init=init, name=OUTPUT_LAYER)(h)


MODELS: Mapping[str, type[_Network]] = {
    "mlp": MLP, "convnet": ConvNet, "inception": Inception, "autoencoder": Autoencoder,
}


def build_model(
    model_config: ml_collections.ConfigDict, image_shape: Sequence[int], num_classes: int
) -> nn.Module:
    """The network named by ``model_config.name`` (:data:`MODELS`), for inputs of
    ``image_shape`` and ``num_classes`` classes (an autoencoder outputs one value per pixel)."""
    check_choice("model.name", model_config.name, list(MODELS))
    fields: dict[str, Any] = dict(
        hidden_sizes=tuple(model_config.hidden_sizes),
        num_outputs=math.prod(image_shape) if model_config.name == "autoencoder" else num_classes,
        activation=model_config.activation,
        norm=model_config.norm,
        input_dropout=model_config.input_dropout,
        hidden_dropout=model_config.hidden_dropout,
        dropout_noise=model_config.dropout_noise,
        dropout_mask_bits=model_config.dropout_mask_bits,
        dropout_scaling=model_config.dropout_scaling,
        kernel_init=model_config.kernel_init,
        init_stddev=model_config.init_stddev,
        bn_momentum=model_config.bn_momentum,
        bn_epsilon=model_config.bn_epsilon,
        bn_backward=model_config.bn_backward,
        bn_ghost_size=model_config.bn_ghost_size,
    )
    if model_config.name in ("mlp", "convnet"):
        fields.update(dropconnect=model_config.dropconnect,
                      dropconnect_per_example=model_config.dropconnect_per_example,
                      dropconnect_mask_bits=model_config.dropconnect_mask_bits)
    elif model_config.dropconnect:
        raise ValueError("model.dropconnect is implemented for the dense hidden layers of the "
                         "mlp and the convnet only.")
    if model_config.name == "convnet":
        fields["conv_features"] = tuple(model_config.conv_features)
    if model_config.name == "inception":
        fields.update(stem_features=model_config.inception_stem,
                      stem_pool=model_config.inception_stem_pool,
                      modules=tuple(tuple(m) for m in model_config.inception_modules),
                      pool_after=tuple(model_config.inception_pool_after),
                      branch_pool=model_config.inception_branch_pool)
    return MODELS[model_config.name](**fields)
