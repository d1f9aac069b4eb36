"""Candidate operations and the named search spaces.

This module is the one place where an op name becomes Keras layers. Every op maps
``C`` channels to ``C`` channels and reduces the spatial size by ``stride``. An op
is a *flat list of layers applied in sequence* (see :func:`op_layers`), so that the
final network is a flat functional model whose ``QuantConv2D`` layers are visible
to :func:`larq.models.summary` and to the Larq Compute Engine converter; the
supernet wraps the same list in a ``tf.keras.Sequential``.

Binary convolutions follow the Kim et al. reference order
BN -> sign (straight-through) -> binary conv (no bias) -> ReLU::

    x = apply_op("bin_conv_3x3", x, channels=16, stride=1, binarization="sign_scale")

Strided dilated convolutions are computed as subsample-then-conv: for symmetric
padding ``conv(x, k, stride=2, dilation=2)`` equals ``conv(x[::2, ::2], k)``
exactly, and Keras refuses ``strides > 1`` together with ``dilation_rate > 1``.
"""

from __future__ import annotations

from collections.abc import Callable

import larq as lq
import tensorflow as tf

from bnas_tf.layers import binary_conv2d, binary_depthwise_conv2d
from bnas_tf.quantizers import Binarization, get_binarization

__all__ = [
    "SEARCH_SPACES",
    "OP_NAMES",
    "BINARY_CONV_OPS",
    "Zeroise",
    "FactorizedReduce",
    "op_layers",
    "apply_op",
    "search_space",
]

SEARCH_SPACES: dict[str, tuple[str, ...]] = {
    # Kim, Singh, Choi (ECCV 2020), gistvision/bnas `PRIMITIVES`: Zeroise kept, no
    # skip-connect, no separable convolutions.
    "bnas_kim": (
        "none",
        "max_pool_3x3",
        "avg_pool_3x3",
        "bin_dil_conv_3x3",
        "bin_dil_conv_5x5",
        "bin_conv_3x3",
        "bin_conv_5x5",
    ),
    # Chen et al. (AAAI 2020): the 8 DARTS operations with binarized convolutions.
    "bnas_darts": (
        "none",
        "skip_connect",
        "max_pool_3x3",
        "avg_pool_3x3",
        "bin_sep_conv_3x3",
        "bin_sep_conv_5x5",
        "bin_dil_conv_3x3",
        "bin_dil_conv_5x5",
    ),
}

# (kernel size, dilation, separable) of each binary convolution op.
_CONV_SPECS: dict[str, tuple[int, int, bool]] = {
    "bin_conv_3x3": (3, 1, False),
    "bin_conv_5x5": (5, 1, False),
    "bin_dil_conv_3x3": (3, 2, False),
    "bin_dil_conv_5x5": (5, 2, False),
    "bin_sep_conv_3x3": (3, 1, True),
    "bin_sep_conv_5x5": (5, 1, True),
}
BINARY_CONV_OPS: frozenset[str] = frozenset(_CONV_SPECS)
OP_NAMES: tuple[str, ...] = tuple(
    sorted({op for ops in SEARCH_SPACES.values() for op in ops} | BINARY_CONV_OPS)
)


def search_space(name: str) -> tuple[str, ...]:
    """The op names of a named search space, in alpha-column order."""
    try:
        return SEARCH_SPACES[name]
    except KeyError:
        raise ValueError(
            f"Unknown search space {name!r}; choose one of {sorted(SEARCH_SPACES)}."
        ) from None


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class Zeroise(tf.keras.layers.Layer):
    """The Zeroise (``none``) op: ``0 * x``, spatially subsampled when ``stride > 1``.

    Kim et al. keep it in the binary search space: a cell may choose to drop an edge.
    """

    def __init__(self, stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, inputs):
        if self.stride > 1:
            inputs = inputs[:, :: self.stride, :: self.stride, :]
        return tf.zeros_like(inputs)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        for axis in (1, 2):
            if shape[axis] is not None:
                shape[axis] = -(-shape[axis] // self.stride)
        return tf.TensorShape(shape)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class FactorizedReduce(tf.keras.layers.Layer):
    """DARTS' factorized reduce: ``BN(concat(conv1x1_s2(relu x), conv1x1_s2(relu x[1:, 1:])))``.

    Halves the spatial size without losing the odd pixels; full precision, as in
    DARTS and the BNAS references (it is the stride-2 form of ``skip_connect``).
    """

    def __init__(self, channels: int, affine: bool = True, **kwargs):
        super().__init__(**kwargs)
        if channels % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {channels}.")
        self.channels = int(channels)
        self.affine = bool(affine)
        self.conv_even = tf.keras.layers.Conv2D(channels // 2, 1, strides=2, use_bias=False)
        self.conv_odd = tf.keras.layers.Conv2D(channels // 2, 1, strides=2, use_bias=False)
        self.bn = tf.keras.layers.BatchNormalization(center=affine, scale=affine)

    def call(self, inputs, training=None):
        x = tf.nn.relu(inputs)
        shifted = tf.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
        out = tf.concat([self.conv_even(x), self.conv_odd(shifted)], axis=-1)
        return self.bn(out, training=training)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "affine": self.affine}


def _bn(affine: bool, name: str | None) -> tf.keras.layers.Layer:
    return tf.keras.layers.BatchNormalization(center=affine, scale=affine, name=name)


def _subsample(stride: int, name: str | None) -> tf.keras.layers.Layer:
    """``x[:, ::s, ::s]`` as a standard layer (a 1x1 average pool with stride s)."""
    return tf.keras.layers.AveragePooling2D(pool_size=1, strides=stride, name=name)


def _depthwise_quantizer(name):
    """The kernel quantizer ``name`` (a name or an instance) set to scale each depthwise filter on its own
    (quantizers without that option, such as PCNN's, keep one scale per layer)."""
    quantizer = lq.quantizers.get(name)
    if "depthwise" in quantizer.get_config():
        quantizer = type(quantizer).from_config({**quantizer.get_config(), "depthwise": True})
    return quantizer


def _binary_conv_layers(
    op: str,
    channels: int,
    stride: int,
    binarization: Binarization,
    affine: bool,
    shared_input: bool,
    name: Callable[[str], str | None],
) -> list[tf.keras.layers.Layer]:
    kernel, dilation, separable = _CONV_SPECS[op]
    quant = binarization.layer_kwargs()
    if shared_input:
        # The edge's BN(affine=False) + sign are computed once by the caller.
        quant = {**quant, "input_quantizer": None}
    head: list[tf.keras.layers.Layer] = [] if shared_input else [_bn(affine, name("bn"))]
    if dilation > 1 and stride > 1:
        # conv(x, k, stride s, dilation s) == conv(x[::s, ::s], k) for symmetric padding.
        head.append(_subsample(stride, name("subsample")))
        stride, dilation = 1, dilation // stride
    if not separable:
        conv = binary_conv2d(
            binarization,
            channels,
            kernel,
            strides=stride,
            dilation_rate=dilation,
            padding="same",
            use_bias=False,
            name=name("conv"),
            **quant,
        )
        return head + [conv, tf.keras.layers.ReLU(name=name("relu"))]
    # Chen et al.: binary depthwise k x k -> BN -> binary pointwise 1 x 1 -> BN.
    depthwise = binary_depthwise_conv2d(
        binarization,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        depthwise_quantizer=_depthwise_quantizer(binarization.layer_kwargs()["kernel_quantizer"]),
        depthwise_constraint="weight_clip",
        input_quantizer=quant["input_quantizer"],
        name=name("depthwise"),
    )
    pointwise = binary_conv2d(
        binarization, channels, 1, padding="same", use_bias=False, name=name("pointwise")
    )
    return head + [depthwise, _bn(affine, name("bn_depthwise")), pointwise, _bn(affine, name("bn_pointwise"))]


def op_layers(
    op: str,
    channels: int,
    stride: int = 1,
    *,
    binarization: str | Binarization = "sign_scale",
    affine: bool = True,
    shared_input: bool = False,
    name: str | None = None,
) -> list[tf.keras.layers.Layer]:
    """The layers of op ``op`` (``C -> C`` channels, spatial size divided by ``stride``).

    Args:
        op: an op name from :data:`OP_NAMES`.
        channels: input and output channels.
        stride: 1, or 2 in reduction cells.
        binarization: ``xnor`` or ``sign_scale`` (see :mod:`bnas_tf.quantizers`).
        affine: learnable BN scale and offset (``False`` while searching).
        shared_input: binary conv ops only: the input is already BN + sign, as
            prepared once per edge by the supernet's ``MixedOp``.
        name: prefix for the layer names (``None``: Keras picks names).

    Pools are followed by a BN without affine parameters while searching
    (``affine=False``), as in DARTS, to rescale them next to the convolutions.
    """
    if op not in OP_NAMES:
        raise ValueError(f"Unknown op {op!r}; known ops: {', '.join(OP_NAMES)}.")
    if stride not in (1, 2):
        raise ValueError(f"Op {op!r}: stride must be 1 or 2, got {stride}.")

    def layer_name(suffix: str) -> str | None:
        return f"{name}_{suffix}" if name else None

    if op in _CONV_SPECS:
        return _binary_conv_layers(
            op, channels, stride, get_binarization(binarization), affine, shared_input, layer_name
        )
    if shared_input:
        raise ValueError(f"Op {op!r} is not a binary convolution: shared_input does not apply.")
    if op == "none":
        return [Zeroise(stride, name=layer_name("zeroise"))]
    if op == "skip_connect":
        if stride == 1:
            return []
        return [FactorizedReduce(channels, affine=affine, name=layer_name("reduce"))]
    pool_cls = {"max_pool_3x3": tf.keras.layers.MaxPool2D, "avg_pool_3x3": tf.keras.layers.AveragePooling2D}[op]
    pool = pool_cls(3, strides=stride, padding="same", name=layer_name("pool"))
    return [pool] if affine else [pool, _bn(False, layer_name("bn"))]


def apply_op(x: tf.Tensor, op: str, channels: int, stride: int = 1, **kwargs) -> tf.Tensor:
    """Apply :func:`op_layers` to ``x`` in sequence (functional API)."""
    for layer in op_layers(op, channels, stride, **kwargs):
        x = layer(x)
    return x

