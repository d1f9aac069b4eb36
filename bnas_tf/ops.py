"""Candidate operations and the named search spaces.

This module is the one place where an op name becomes Keras layers. Every op maps
``C`` channels to ``C`` channels and reduces the spatial size by ``stride``. An op
is a *flat list of layers applied in sequence* (see ``op_layers``), so that the
final network is a flat functional model whose ``QuantConv2D`` layers are visible
to ``larq.models.summary`` and to the Larq Compute Engine converter; the
supernet wraps the same list in a ``tf.keras.Sequential``.

Binary convolutions follow the Kim et al. reference order
BN -> sign (straight-through) -> binary conv (no bias) -> ReLU:

    >>> x = tf.keras.Input((16, 16, 8))
    >>> y = apply_op(x, "bin_conv_3x3", channels=8, stride=2, binarization="sign_scale")
    >>> tuple(y.shape)
    (None, 8, 8, 8)

**One sampling grid for every stride-2 op** (``STRIDE2_GRIDS``). A node of a
reduction cell sums the outputs of several stride-2 ops, so they must read windows
centred on the same input pixels. Every strided op uses TensorFlow's ``same`` grid:
on an input of size ``n`` output pixel ``i`` is centred on input pixel

    c(i) = 2 i + (1 if n is even else 0)

for every odd kernel size >= 3 (``same`` pads ``(k - 2) // 2`` before and the rest
after on even sizes, symmetrically on odd ones). Keras refuses ``strides > 1``
together with ``dilation_rate > 1``, so a strided dilated convolution is computed as
subsample-then-conv, ``conv_s2_d2(x, k) == conv_d1(x[o::2, o::2], k)``, with the
subsampling offset ``o = c(0)`` of that grid (``Subsample``); the equality is
exact, zero padding included. The grid ``legacy`` (before bnas-tf 0.2) subsampled at
``o = 0``, so on even sizes its dilated ops read windows one pixel off the others';
it is kept only to load networks trained with it (a ``network.json`` without
``stride2_grid``). ``same`` rather than the PyTorch reference's symmetric padding
(centre ``2 i``): the Larq Compute Engine's binary convolution implements ``same``
padding natively (a bitpacked input cannot hold an explicit zero), so the strided
binary convolutions still convert to ``LceBconv2d``, and BNAS-A/B/C, whose strided
ops are pools and Zeroise, keep their trained behaviour.
"""

from __future__ import annotations

from bnas_tf.layers import binary_conv2d, binary_depthwise_conv2d
from bnas_tf.quantizers import Binarization, get_binarization

from collections.abc import Callable

import larq as lq
import tensorflow as tf

__all__ = [
    "SEARCH_SPACES",
    "OP_NAMES",
    "BINARY_CONV_OPS",
    "STRIDE2_GRIDS",
    "Zeroise",
    "FactorizedReduce",
    "Subsample",
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
        # DARTS' dil_conv is the dilated *separable* convolution (DilConv: depthwise
        # dilated k x k, pointwise 1 x 1, BN), binarized; not Kim et al.'s dense one.
        "bin_dil_sep_conv_3x3",
        "bin_dil_sep_conv_5x5",
    ),
}

STRIDE2_GRIDS = ("same", "legacy")
"""Sampling grids of the stride-2 ops (see the module docstring): ``same`` is the one
every new network uses; ``legacy`` only rebuilds networks trained before it."""

# (kernel size, dilation, separable) of each binary convolution op; the separable
# ones are Chen et al.'s (binary depthwise -> BN -> binary pointwise -> BN) and the
# dilated separable ones DARTS' DilConv (binary depthwise -> binary pointwise -> BN).
_CONV_SPECS: dict[str, tuple[int, int, bool]] = {
    "bin_conv_3x3": (3, 1, False),
    "bin_conv_5x5": (5, 1, False),
    "bin_dil_conv_3x3": (3, 2, False),
    "bin_dil_conv_5x5": (5, 2, False),
    "bin_sep_conv_3x3": (3, 1, True),
    "bin_sep_conv_5x5": (5, 1, True),
    "bin_dil_sep_conv_3x3": (3, 2, True),
    "bin_dil_sep_conv_5x5": (5, 2, True),
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
        self._float_macs = 0

    def build(self, input_shape):
        height, width, in_channels = input_shape[1:]
        # two 1x1 stride-2 convolutions of C/2 outputs each, on ceil(H/2) x ceil(W/2) pixels
        if height is not None and width is not None:
            self._float_macs = -(-height // 2) * -(-width // 2) * self.channels * in_channels
        super().build(input_shape)

    def mac_count(self) -> dict[int, int]:
        """``{bits: MACs}`` per image: larq's profile counts the MACs of top-level layers
        only, so [`model_summary`][bnas_tf.export.model_summary] adds these (full precision).
        0 until the layer is built on a known spatial size.

            >>> layer = FactorizedReduce(8)
            >>> _ = layer(tf.zeros((1, 6, 6, 4)))
            >>> layer.mac_count()  # 3 x 3 pixels x 8 outputs x 4 inputs
            {32: 288}
        """
        return {32: self._float_macs}

    def call(self, inputs, training=None):
        x = tf.nn.relu(inputs)
        shifted = tf.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
        out = tf.concat([self.conv_even(x), self.conv_odd(shifted)], axis=-1)
        return self.bn(out, training=training)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "affine": self.affine}


def _bn(affine: bool, name: str | None) -> tf.keras.layers.Layer:
    return tf.keras.layers.BatchNormalization(center=affine, scale=affine, name=name)


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class Subsample(tf.keras.layers.Layer):
    """``x[:, o::s, o::s]``: the input pixels a stride-``s`` op of ``grid`` centres on.

    ``grid="same"``: ``o = 1`` on an even size with ``s = 2`` (TensorFlow's ``same``
    grid, ``STRIDE2_GRIDS``), else 0; ``grid="legacy"``: ``o = 0``. Height and
    width are handled separately; unknown sizes are read at run time.

        >>> x = tf.reshape(tf.range(16.0), (1, 4, 4, 1))
        >>> Subsample(2)(x)[0, :, :, 0].numpy().tolist()
        [[5.0, 7.0], [13.0, 15.0]]
        >>> Subsample(2)(x[:, :3, :3])[0, :, :, 0].numpy().tolist()
        [[0.0, 2.0], [8.0, 10.0]]
    """

    def __init__(self, stride: int = 2, grid: str = "same", **kwargs):
        super().__init__(**kwargs)
        if grid not in STRIDE2_GRIDS:
            raise ValueError(f"Unknown stride-2 grid {grid!r}; choose one of {STRIDE2_GRIDS}.")
        self.stride = int(stride)
        self.grid = grid

    def _offset(self, size):
        if self.grid == "legacy" or self.stride != 2:
            return 0
        return 1 - size % 2  # an int, or a scalar tensor when the size is known only at run time

    def call(self, inputs):
        s = self.stride
        static = inputs.shape
        dynamic = tf.shape(inputs)
        oh = self._offset(static[1] if static[1] is not None else dynamic[1])
        ow = self._offset(static[2] if static[2] is not None else dynamic[2])
        if isinstance(oh, int) and isinstance(ow, int):
            return inputs[:, oh::s, ow::s, :]
        return tf.strided_slice(inputs, tf.stack([0, oh, ow, 0]), tf.shape(inputs), [1, s, s, 1])

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        for axis in (1, 2):
            if shape[axis] is not None:
                shape[axis] = -(-(shape[axis] - self._offset(shape[axis])) // self.stride)
        return tf.TensorShape(shape)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "grid": self.grid}


def _depthwise_quantizer(name):
    """The kernel quantizer ``name`` (a name or an instance), one scale per depthwise filter.

    Quantizers without that option, such as PCNN's, keep one scale per layer; ``None`` (full
    precision) stays ``None``.
    """
    quantizer = lq.quantizers.get(name)
    if quantizer is not None and "depthwise" in quantizer.get_config():
        quantizer = type(quantizer).from_config({**quantizer.get_config(), "depthwise": True})
    return quantizer


def _binary_conv_layers(
    op: str,
    channels: int,
    stride: int,
    binarization: Binarization,
    affine: bool,
    shared_input: bool,
    grid: str,
    name: Callable[[str], str | None],
) -> list[tf.keras.layers.Layer]:
    kernel, dilation, separable = _CONV_SPECS[op]
    quant = binarization.layer_kwargs()
    if shared_input:
        # The edge's BN(affine=False) + sign are computed once by the caller.
        quant = {**quant, "input_quantizer": None}
    head: list[tf.keras.layers.Layer] = [] if shared_input else [_bn(affine, name("bn"))]
    if dilation > 1 and stride > 1:
        # conv_same(x, k, stride s, dilation s) == conv_same(x[o::s, o::s], k), o the grid's offset.
        head.append(Subsample(stride, grid, name=name("subsample")))
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
    # Chen et al.: binary depthwise k x k -> BN -> binary pointwise 1 x 1 -> BN; the
    # dilated one (DARTS' DilConv): binary depthwise dilated k x k -> binary pointwise -> BN.
    depthwise = binary_depthwise_conv2d(
        binarization,
        kernel,
        strides=stride,
        dilation_rate=dilation,
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
    if op.startswith("bin_dil_sep"):
        return head + [depthwise, pointwise, _bn(affine, name("bn_pointwise"))]
    return head + [
        depthwise,
        _bn(affine, name("bn_depthwise")),
        pointwise,
        _bn(affine, name("bn_pointwise")),
    ]


def op_layers(
    op: str,
    channels: int,
    stride: int = 1,
    *,
    binarization: str | Binarization = "sign_scale",
    affine: bool = True,
    shared_input: bool = False,
    grid: str = "same",
    name: str | None = None,
) -> list[tf.keras.layers.Layer]:
    """The layers of op ``op`` (``C -> C`` channels, spatial size divided by ``stride``).

    Args:
        op: an op name from ``OP_NAMES``.
        channels: input and output channels.
        stride: 1, or 2 in reduction cells.
        binarization: ``xnor`` or ``sign_scale`` (see [`bnas_tf.quantizers`][bnas_tf.quantizers]).
        affine: learnable BN scale and offset (``False`` while searching).
        shared_input: binary conv ops only: the input is already BN + sign, as
            prepared once per edge by the supernet's ``MixedOp``.
        grid: the stride-2 sampling grid (``STRIDE2_GRIDS``); ``legacy`` only to
            rebuild networks trained before ``same`` became the only one.
        name: prefix for the layer names (``None``: Keras picks names).

    Pools are followed by a BN without affine parameters while searching
    (``affine=False``), as in DARTS, to rescale them next to the convolutions.
    """
    if op not in OP_NAMES:
        raise ValueError(f"Unknown op {op!r}; known ops: {', '.join(OP_NAMES)}.")
    if grid not in STRIDE2_GRIDS:
        raise ValueError(f"Unknown stride-2 grid {grid!r}; choose one of {STRIDE2_GRIDS}.")
    if stride not in (1, 2):
        raise ValueError(f"Op {op!r}: stride must be 1 or 2, got {stride}.")

    def layer_name(suffix: str) -> str | None:
        return f"{name}_{suffix}" if name else None

    if op in _CONV_SPECS:
        return _binary_conv_layers(
            op,
            channels,
            stride,
            get_binarization(binarization),
            affine,
            shared_input,
            grid,
            layer_name,
        )
    if shared_input:
        raise ValueError(f"Op {op!r} is not a binary convolution: shared_input does not apply.")
    if op == "none":
        return [Zeroise(stride, name=layer_name("zeroise"))]
    if op == "skip_connect":
        if stride == 1:
            return []
        return [FactorizedReduce(channels, affine=affine, name=layer_name("reduce"))]
    pool_cls = {
        "max_pool_3x3": tf.keras.layers.MaxPool2D,
        "avg_pool_3x3": tf.keras.layers.AveragePooling2D,
    }[op]
    pool = pool_cls(3, strides=stride, padding="same", name=layer_name("pool"))
    return [pool] if affine else [pool, _bn(False, layer_name("bn"))]


def apply_op(x: tf.Tensor, op: str, channels: int, stride: int = 1, **kwargs) -> tf.Tensor:
    """Apply ``op_layers`` to ``x`` in sequence (functional API)."""
    for layer in op_layers(op, channels, stride, **kwargs):
        x = layer(x)
    return x
