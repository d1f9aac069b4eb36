r"""Binary convolution layers: larq's quantized convolutions, optionally with XNOR-Net's
activation scaling.

XNOR-Net (Rastegari et al., ECCV 2016, Sec. 3.2) approximates a convolution of a real
input $I$ with a real kernel $W$ by

$$
I * W \approx \left(\operatorname{sign}(I) \circledast \operatorname{sign}(W)\right)
    \odot K\,\alpha,
\qquad K = A * k, \quad A = \tfrac{1}{c} \textstyle\sum_c |I_c|,
$$

with $\alpha$ the kernel scale (the kernel quantizer's job), $k$ a $k \times k$
averaging filter and $\circledast$ the binary (XNOR-popcount) convolution. $K$ multiplies
the *output*, so it cannot live in an input quantizer: the ``XnorScaled*`` layers
below are larq layers whose ``call`` multiplies the convolution of the binarized input
by ``K`` of the same real input. ``binary_conv2d`` / ``binary_depthwise_conv2d``
pick the plain or the scaled layer from a [`Binarization`][bnas_tf.quantizers.Binarization]:

```python
>>> from bnas_tf.quantizers import get_binarization
>>> b = get_binarization("xnor", xnor_activation_scale=True)
>>> type(binary_conv2d(b, 16, 3, padding="same")).__name__
'XnorScaledQuantConv2D'

```
"""

from __future__ import annotations

from bnas_tf.quantizers import Binarization, get_binarization, xnor_scaling_map

import larq as lq
import tensorflow as tf

__all__ = [
    "XnorScaledQuantConv2D",
    "XnorScaledQuantDepthwiseConv2D",
    "binary_conv2d",
    "binary_depthwise_conv2d",
]


class _XnorScalingMixin:
    """``call(x) = conv(x) * K(x)``: XNOR-Net's scaling map of the real input ``x``.

    The layer's input quantizer binarizes ``x`` inside the convolution; ``K`` is
    computed from the same ``x`` before binarization, with the layer's own kernel
    size, strides and dilation (``padding="same"``, zero padding not counted).
    Straight-through: gradients flow into ``x`` through both the binary convolution
    (the input quantizer's STE) and ``K`` (the mean of ``|x|``), as in XNOR-Net.
    """

    _depthwise = False

    def _check_scaling(self) -> None:
        if self.padding != "same":
            raise ValueError(
                f"{self.name}: XNOR-Net activation scaling needs padding='same', got "
                f"{self.padding!r}."
            )
        if self.activation is not tf.keras.activations.linear:
            raise ValueError(f"{self.name}: XNOR-Net activation scaling needs activation=None.")
        if self.input_quantizer is None:
            raise ValueError(
                f"{self.name}: XNOR-Net activation scaling needs the real-valued input, so the "
                "layer must binarize it itself (input_quantizer must be set)."
            )

    def call(self, inputs):
        outputs = super().call(inputs)
        scale = xnor_scaling_map(
            inputs, self.kernel_size, self.strides, self.dilation_rate, depthwise=self._depthwise
        )
        return outputs * tf.cast(scale, outputs.dtype)


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class XnorScaledQuantConv2D(_XnorScalingMixin, lq.layers.QuantConv2D):
    """``larq.layers.QuantConv2D`` whose output is multiplied by XNOR-Net's scaling map
    ``K = (mean_c |x|) * k``, ``k`` the ``kernel_size`` averaging filter."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_scaling()


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class XnorScaledQuantDepthwiseConv2D(_XnorScalingMixin, lq.layers.QuantDepthwiseConv2D):
    """``larq.layers.QuantDepthwiseConv2D`` times XNOR-Net's scaling map, computed per
    channel (``K_c = |x_c| * k``: a depthwise filter sees one channel)."""

    _depthwise = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.depth_multiplier != 1:
            raise ValueError(f"{self.name}: the depthwise scaling map needs depth_multiplier=1.")
        self._check_scaling()


def binary_conv2d(
    binarization: str | Binarization, filters: int, kernel_size, **kwargs
) -> lq.layers.QuantConv2D:
    """A binary ``QuantConv2D`` with the quantizers of ``binarization`` (scaled by
    XNOR-Net's K when ``binarization.xnor_activation_scale``). ``kwargs`` go to the
    layer and may override the quantizers (e.g. ``input_quantizer=None``)."""
    binarization = get_binarization(binarization)
    kwargs = {**binarization.layer_kwargs(), **kwargs}
    layer_cls = (
        XnorScaledQuantConv2D if binarization.xnor_activation_scale else lq.layers.QuantConv2D
    )
    return layer_cls(filters, kernel_size, **kwargs)


def binary_depthwise_conv2d(
    binarization: str | Binarization, kernel_size, **kwargs
) -> lq.layers.QuantDepthwiseConv2D:
    """A binary ``QuantDepthwiseConv2D`` (``kwargs`` must carry ``depthwise_quantizer``),
    scaled by XNOR-Net's per-channel K when ``binarization.xnor_activation_scale``."""
    binarization = get_binarization(binarization)
    scaled = binarization.xnor_activation_scale
    layer_cls = XnorScaledQuantDepthwiseConv2D if scaled else lq.layers.QuantDepthwiseConv2D
    return layer_cls(kernel_size, **kwargs)
