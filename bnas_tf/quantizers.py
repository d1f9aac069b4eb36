"""Binarization of weights and activations as larq quantizers.

Each quantizer is a small registered :class:`larq.quantizers.Quantizer` with
``precision = 1``, so it can be named in any larq layer and is counted as 1-bit by
:func:`larq.models.summary`::

    import bnas_tf
    import larq as lq

    conv = lq.layers.QuantConv2D(
        16, 3, input_quantizer="ste_sign", kernel_quantizer="sign_scale", use_bias=False
    )

A *binarization* bundles the kernel and input quantizer of one method (XNOR-Net,
Kim et al.'s sign + scale); :func:`get_binarization` resolves the names used by the
``--binarization`` flag.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from larq import utils
from larq.quantizers import Quantizer, ste_sign

__all__ = [
    "XnorWeight",
    "SignScaleWeight",
    "Binarization",
    "BINARIZATIONS",
    "get_binarization",
]


def _per_output_channel_axes(kernel: tf.Tensor) -> list[int]:
    """All axes but the last: the output channels of a conv or dense kernel."""
    return list(range(kernel.shape.rank - 1))


@utils.register_alias("xnor")
@utils.register_keras_custom_object
class XnorWeight(Quantizer):
    r"""XNOR-Net weight binarization with a per-output-channel scale.

    \[
    q(W)_{\cdot,o} = \alpha_o \operatorname{sign}(W_{\cdot,o}), \qquad
    \alpha_o = \frac{1}{n}\,\lVert W_{\cdot,o} \rVert_1
    \]

    with n the number of weights of filter o. The gradient follows XNOR-Net: the
    scale is differentiated exactly and the sign by the straight-through estimator,

    \[
    \frac{\partial q_{i}}{\partial W_{j}} = \frac{\operatorname{sign}(W_i)
    \operatorname{sign}(W_j)}{n} + \alpha\, \delta_{ij}\, 1_{|W_j| \le c},
    \]

    c being ``clip_value`` (``None``: no clipping).

    # References
        - Rastegari et al., XNOR-Net: ImageNet Classification Using Binary
          Convolutional Neural Networks, ECCV 2016, https://arxiv.org/abs/1603.05279
    """

    precision = 1

    def __init__(self, clip_value: float | None = 1.0, **kwargs):
        self.clip_value = clip_value
        super().__init__(**kwargs)

    def call(self, inputs):
        scale = tf.reduce_mean(tf.abs(inputs), axis=_per_output_channel_axes(inputs))
        return scale * ste_sign(inputs, clip_value=self.clip_value)

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@utils.register_alias("sign_scale")
@utils.register_keras_custom_object
class SignScaleWeight(Quantizer):
    r"""Sign + scale weight binarization of Kim, Singh and Choi (ECCV 2020).

    The kernel is first mean-centred over the input channels and clipped, then
    binarized with a per-output-channel scale:

    \[
    \tilde W = \operatorname{clip}\!\left(W - \tfrac{1}{C_{in}} \textstyle\sum_{c} W_{\cdot,c,\cdot},
    \,-1,\, 1\right), \qquad
    q(W)_{\cdot,o} = \alpha_o \operatorname{sign}(\tilde W_{\cdot,o}), \qquad
    \alpha_o = \frac{1}{n} \lVert \tilde W_{\cdot,o} \rVert_1 .
    \]

    The reference code (gistvision/bnas, after the XNOR-Net PyTorch code) centres and
    clamps the stored weights in place before each forward pass; here the same
    transform is part of the quantizer, so the stored kernel stays untouched. The
    gradient is the straight-through estimator through the sign, zero where the
    centred weight was clipped, and exact through the centring and the scale.

    # References
        - Kim, Singh, Choi, Learning Architectures for Binary Networks, ECCV 2020,
          https://arxiv.org/abs/2002.06963
    """

    precision = 1

    def call(self, inputs):
        input_channel_axis = inputs.shape.rank - 2
        centred = inputs - tf.reduce_mean(inputs, axis=input_channel_axis, keepdims=True)
        clipped = tf.clip_by_value(centred, -1.0, 1.0)
        scale = tf.reduce_mean(tf.abs(clipped), axis=_per_output_channel_axes(inputs))
        return scale * ste_sign(clipped, clip_value=None)


@dataclasses.dataclass(frozen=True)
class Binarization:
    """The kernel and input quantizers of one binarization method.

    Example:
        >>> b = get_binarization("xnor")
        >>> b.kernel_quantizer, b.input_quantizer
        ('xnor', 'ste_sign')
    """

    name: str
    kernel_quantizer: str
    input_quantizer: str
    citation: str

    def layer_kwargs(self) -> dict:
        """Keyword arguments for ``larq.layers.QuantConv2D`` and friends.

        The latent weights are clipped to [-1, 1] (``weight_clip``), as the reference
        implementations clamp them, so that the straight-through gradient never
        starves a weight.
        """
        return {
            "kernel_quantizer": self.kernel_quantizer,
            "input_quantizer": self.input_quantizer,
            "kernel_constraint": "weight_clip",
        }


BINARIZATIONS: dict[str, Binarization] = {
    "xnor": Binarization(
        "xnor", "xnor", "ste_sign", "Rastegari et al., ECCV 2016; Chen et al., AAAI 2020"
    ),
    "sign_scale": Binarization(
        "sign_scale", "sign_scale", "ste_sign", "Kim, Singh, Choi, ECCV 2020"
    ),
}


def get_binarization(name: str | Binarization) -> Binarization:
    """Look up a binarization method by name (``xnor``, ``sign_scale``)."""
    if isinstance(name, Binarization):
        return name
    try:
        return BINARIZATIONS[name]
    except KeyError:
        raise ValueError(
            f"Unknown binarization {name!r}; choose one of {sorted(BINARIZATIONS)}."
        ) from None
