"""Binarization of weights and activations as larq quantizers.

Each quantizer is a small registered ``larq.quantizers.Quantizer`` with
``precision = 1``, so it can be named in any larq layer and is counted as 1-bit by
``larq.models.summary``:

```python
import bnas_tf
import larq as lq

conv = lq.layers.QuantConv2D(
    16, 3, input_quantizer="ste_sign", kernel_quantizer="sign_scale", use_bias=False
)
```

A *binarization* bundles the kernel and input quantizer of one method (XNOR-Net,
PCNN, Kim et al.'s sign + scale); ``get_binarization`` resolves the names used by
the ``--binarization`` flag.

Two methods need more than an element-wise quantizer:

* **PCNN** (``PcnnWeight``, ``"pcnn"``) learns a projection parameter per layer
  and adds its projection loss with ``add_loss``; it reaches ``model.losses`` (and so
  the training objective) when the quantizer is the ``kernel_quantizer`` of a larq
  layer. Name it by its string, so that every layer gets its own instance.
* **XNOR-Net activation scaling** multiplies the output of a binary convolution by
  a scaling map K computed from the real-valued input (``xnor_scaling_map``,
  ``XnorScalingMap``, ``xnor_scaled_conv``); the input quantizer itself is a
  plain sign (``XnorActivation``). It is switched on per binarization with
  ``Binarization.xnor_activation_scale``.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from larq import math as lq_math
from larq import utils
from larq.quantizers import Quantizer, SteSign, ste_sign

__all__ = [
    "XnorWeight",
    "SignScaleWeight",
    "PcnnWeight",
    "XnorActivation",
    "XnorScalingMap",
    "xnor_scaling_map",
    "xnor_scaled_conv",
    "Binarization",
    "BINARIZATIONS",
    "BINARIZATION_HELP",
    "FULL_PRECISION",
    "get_binarization",
    "binarization_of",
    "quantizer_variables",
]


def _per_output_channel_axes(kernel: tf.Tensor, depthwise: bool = False) -> list[int]:
    """The axes to average over for one scale per filter.

    All axes but the last (the output channels of a conv or dense kernel); for a
    depthwise kernel ``(kh, kw, C, 1)`` all axes but the channel axis ``-2``.
    """
    keep = kernel.shape.rank - (2 if depthwise else 1)
    return [axis for axis in range(kernel.shape.rank) if axis != keep]


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

    c being ``clip_value`` (``None``: no clipping). With ``depthwise=True`` the
    kernel is a depthwise one, ``(kh, kw, C, 1)``, and each of its C filters gets
    its own scale.

    References:
        - Rastegari et al., XNOR-Net: ImageNet Classification Using Binary
          Convolutional Neural Networks, ECCV 2016, https://arxiv.org/abs/1603.05279
    """

    precision = 1

    def __init__(self, clip_value: float | None = 1.0, depthwise: bool = False, **kwargs):
        self.clip_value = clip_value
        self.depthwise = bool(depthwise)
        super().__init__(**kwargs)

    def call(self, inputs):
        axes = _per_output_channel_axes(inputs, self.depthwise)
        scale = tf.reduce_mean(tf.abs(inputs), axis=axes, keepdims=True)
        return scale * ste_sign(inputs, clip_value=self.clip_value)

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value, "depthwise": self.depthwise}


@utils.register_alias("sign_scale")
@utils.register_keras_custom_object
class SignScaleWeight(Quantizer):
    r"""Sign + scale weight binarization of Kim, Singh and Choi (ECCV 2020).

    The kernel is first mean-centred over the input channels and clipped, then
    binarized with a per-output-channel scale:

    \[
    \tilde W = \operatorname{clip}\!\left(W - \tfrac{1}{C_{in}}
        \textstyle\sum_{c} W_{\cdot,c,\cdot}, \,-1,\, 1\right), \qquad
    q(W)_{\cdot,o} = \alpha_o \operatorname{sign}(\tilde W_{\cdot,o}), \qquad
    \alpha_o = \frac{1}{n} \lVert \tilde W_{\cdot,o} \rVert_1 .
    \]

    The reference code (gistvision/bnas, after the XNOR-Net PyTorch code) centres and
    clamps the stored weights in place before each forward pass; here the same
    transform is part of the quantizer, so the stored kernel stays untouched. The
    gradient is the straight-through estimator through the sign, zero where the
    centred weight was clipped, and exact through the centring and the scale.

    With ``depthwise=True`` (a kernel ``(kh, kw, C, 1)``, whose filters have one
    input channel each) there is nothing to centre over: the kernel is clipped and
    each of the C filters gets its own scale.

    References:
        - Kim, Singh, Choi, Learning Architectures for Binary Networks, ECCV 2020,
          https://arxiv.org/abs/2002.06963
    """

    precision = 1

    def __init__(self, depthwise: bool = False, **kwargs):
        self.depthwise = bool(depthwise)
        super().__init__(**kwargs)

    def call(self, inputs):
        if self.depthwise:
            centred = inputs
        else:
            input_channel_axis = inputs.shape.rank - 2
            centred = inputs - tf.reduce_mean(inputs, axis=input_channel_axis, keepdims=True)
        clipped = tf.clip_by_value(centred, -1.0, 1.0)
        axes = _per_output_channel_axes(inputs, self.depthwise)
        scale = tf.reduce_mean(tf.abs(clipped), axis=axes, keepdims=True)
        return scale * ste_sign(clipped, clip_value=None)

    def get_config(self):
        return {**super().get_config(), "depthwise": self.depthwise}


def _pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints as a pair of positive ints (Keras' ``kernel_size`` style)."""
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}.")
    return pair


def _eager_value(tensor: tf.Tensor) -> tf.Tensor | None:
    """The current value of ``tensor`` as an eager tensor, or ``None``.

    ``tensor`` is eager, or a read (through ``Identity``/``Cast``) of a variable that
    lives outside the function being traced: larq quantizes a kernel by calling the
    quantizer on such a read, also inside Keras' functional construction and inside
    ``tf.function``. The captured handle is followed out to the eager variable.
    """
    if not tf.is_symbolic_tensor(tensor):
        return tensor
    try:
        op = tensor.op
        while op.type in ("Identity", "Cast"):
            op = op.inputs[0].op
        if op.type != "ReadVariableOp":
            return None
        handle = op.inputs[0]
        while tf.is_symbolic_tensor(handle):
            captured = {id(inner): outer for outer, inner in getattr(handle.graph, "captures", ())}
            if id(handle) not in captured:
                return None
            handle = captured[id(handle)]
        with tf.init_scope():
            return tf.raw_ops.ReadVariableOp(resource=handle, dtype=op.get_attr("dtype"))
    except (AttributeError, TypeError, ValueError, tf.errors.OpError):
        return None


@utils.register_alias("pcnn")
@utils.register_keras_custom_object
class PcnnWeight(Quantizer):
    r"""PCNN weight binarization with a learned projection parameter (Gu et al., AAAI 2019).

    Each layer learns its own projection parameter $\tilde W \in \mathbb{R}^{C_{out}}$,
    one value per output channel (the last kernel axis), which is the binary level
    $a$ of the projection of the kernel $C$ onto $\Omega = \{a, -a\}$:

    \[
    \hat C_{\cdot,o} = P_{\Omega}(C_{\cdot,o})
        = \operatorname*{arg\,min}_{a_i \in \{a_o, -a_o\}} \lvert C_{\cdot,o} - a_i \rvert
        = a_o \operatorname{sign}(C_{\cdot,o}), \qquad a_o = \tilde W_o ,
    \]

    and the forward pass is $q(C) = \hat C$. Every call adds the projection loss

    \[
    L_P = \frac{\lambda}{2} \sum_{o} \sum_{i}
        \bigl(\tilde W_o \operatorname{sign}(C_{i,o}) - C_{i,o}\bigr)^2
    \]

    with ``self.add_loss``, so it reaches ``model.losses`` and the training objective
    $L_S + L_P$. Gradients: through the forward pass, the straight-through estimator
    to the kernel and the exact derivative to the projection,

    \[
    \frac{\partial q_{i,o}}{\partial C_{i,o}} = \tilde W_o\, 1_{\lvert C_{i,o} \rvert \le c},
    \qquad
    \frac{\partial q_{i,o}}{\partial \tilde W_o} = \operatorname{sign}(C_{i,o}),
    \]

    (c is ``clip_value``); through the projection loss, with the sign held fixed as
    PCNN holds the projection $\hat C$ fixed in its kernel update,

    \[
    \frac{\partial L_P}{\partial C_{i,o}} = \lambda \bigl(C_{i,o} - \hat C_{i,o}\bigr),
    \qquad
    \frac{\partial L_P}{\partial \tilde W_o} = \lambda \sum_i
        \bigl(\tilde W_o - \lvert C_{i,o} \rvert\bigr),
    \]

    which pulls the latent weights towards the two binary levels (the bimodal weight
    distribution of the paper) and the level towards the mean $\lvert C_{\cdot,o}
    \rvert$, while the task loss moves the level through the forward pass.

    **Relation to the paper.** PCNN writes
    $L_P = \frac{\lambda}{2}\sum \lVert \hat C - \tilde W \circ C \rVert^2$ with
    $\hat C = P_\Omega(\tilde W, C) = a \operatorname{sign}(\tilde W \circ C)$, a fixed
    level $a$ (the mean absolute value of the layer's kernels) and the mean of the
    learned projection $\tilde W$ in the forward pass. With one projection value
    $\omega_o$ per output channel,
    $\lVert a \operatorname{sign}(C) - \omega_o C \rVert^2 =
    \omega_o^2 \lVert (a / \omega_o) \operatorname{sign}(C) - C \rVert^2$: the same
    loss measured in latent-weight units, whose level $a/\omega_o$ is the parameter
    learned here and used as the forward level. The forward levels differ from the
    paper's by the per-channel factor $\omega_o$, which the batch normalization after
    every binary convolution absorbs. Taking the paper's formula literally with
    $a = \tilde W$ (level and projection the same variable) would give
    $L_P = \frac{\lambda}{2}\sum_o \tilde W_o^2 \lVert \operatorname{sign}(C) - C
    \rVert^2$, whose gradient drives the level to zero (or, with $\hat C$ held fixed,
    makes it grow without bound). Not implemented: several projections per layer
    ($J = 1$ here), the look-ahead term $\eta\,\delta_{\hat C}$ inside the loss (it needs
    the task gradient before the loss exists; $\eta = 0$) and the center loss.

    **Initialization.** $\tilde W_o$ starts at the mean $\lvert C_{\cdot,o} \rvert$ of
    the kernel it first quantizes (XNOR-Net's $\alpha$: the minimizer of $L_P$ at that
    point, and the paper's level taken per output channel). Keras builds the quantizer
    from the kernel shape only, so the value is assigned when the quantizer first runs,
    normally when the layer is first called (also symbolically, in the functional API):
    the kernel variable is read eagerly then. The non-trainable flag
    ``projection_initialized`` records it and is saved with the model; functions traced
    afterwards read the projection only, so the Larq Compute Engine converter sees a
    plain per-channel scale. (Setting the flag to ``False`` initializes again at the
    next eager call or new trace.)

    Name the quantizer by its string (``kernel_quantizer="pcnn"``): larq creates one
    instance, hence one projection, per layer. The loss is added once per call of the
    layer (a layer applied twice in one step contributes twice). Before the model is
    first called, ``model.losses`` holds only Keras' symbolic placeholder from the
    functional construction. For a depthwise kernel the last axis is the depth
    multiplier, so the level is per layer there, as in the paper.

    Args:
        pcnn_lambda: $\lambda$, the weight of the projection loss; default 1e-4, the
            value of PCNN's experiments (its kernel-weight distributions are shown for
            $\lambda$ = 1e-4).
        clip_value: threshold of the straight-through estimator (``None``: no clip).

    References:
        - Gu, Li, Zhang, Han, Cao, Liu, Doermann, Projection Convolutional Neural
          Networks for 1-bit CNNs via Discrete Back Propagation, AAAI 2019,
          https://arxiv.org/abs/1811.12755
        - Chen et al., Binarized Neural Architecture Search, AAAI 2020,
          https://arxiv.org/abs/1911.10862
    """

    precision = 1

    def __init__(self, pcnn_lambda: float = 1e-4, clip_value: float | None = 1.0, **kwargs):
        self.pcnn_lambda = float(pcnn_lambda)
        self.clip_value = clip_value
        super().__init__(**kwargs)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        self.projection = self.add_weight(
            name="projection", shape=(input_shape[-1],), initializer="ones", trainable=True
        )
        self.projection_initialized = self.add_weight(
            name="projection_initialized",
            shape=(),
            dtype=tf.bool,
            initializer="zeros",
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        super().build(input_shape)

    def _known_initialized(self) -> bool:
        """Whether the projection is already initialized, read when a function is traced."""
        with tf.init_scope():
            if tf.executing_eagerly():
                return bool(self.projection_initialized.numpy())
        return False

    def binary_level(self, kernel: tf.Tensor) -> tf.Tensor:
        """The level $a$ per output channel, initializing the projection on the first run.

        The kernel's current value is used right away when it can be read eagerly (an
        eager call, or the read of a kernel variable inside a function being traced, as
        when larq calls the quantizer); otherwise the assignment is part of the traced
        function, guarded by ``projection_initialized``.
        """
        if self._known_initialized():
            return self.projection.read_value()

        def initial_level(value):
            level = tf.reduce_mean(tf.abs(value), axis=_per_output_channel_axes(value))
            return tf.cast(level, self.projection.dtype)

        value = _eager_value(kernel)
        if value is not None:
            with tf.init_scope():
                self.projection.assign(initial_level(value))
                self.projection_initialized.assign(True)
            return self.projection.read_value()

        def initialize():
            updates = [
                self.projection.assign(initial_level(kernel), read_value=False),
                self.projection_initialized.assign(True, read_value=False),
            ]
            with tf.control_dependencies(updates):
                return self.projection.read_value()

        return tf.cond(self.projection_initialized, self.projection.read_value, initialize)

    def projection_loss(self, kernel: tf.Tensor, level: tf.Tensor | None = None) -> tf.Tensor:
        """$L_P$ of ``kernel`` (without adding it to the layer's losses)."""
        kernel = tf.cast(kernel, tf.float32)
        level = self.binary_level(kernel) if level is None else tf.cast(level, tf.float32)
        target = level * tf.stop_gradient(lq_math.sign(kernel))
        return 0.5 * self.pcnn_lambda * tf.reduce_sum(tf.square(target - kernel))

    def call(self, inputs):
        level = self.binary_level(inputs)
        if self.pcnn_lambda:
            self.add_loss(self.projection_loss(inputs, level))
        return tf.cast(level, inputs.dtype) * ste_sign(inputs, clip_value=self.clip_value)

    def get_config(self):
        return {
            **super().get_config(),
            "pcnn_lambda": self.pcnn_lambda,
            "clip_value": self.clip_value,
        }


def xnor_scaling_map(
    inputs: tf.Tensor,
    kernel_size=3,
    strides=1,
    dilation_rate=1,
    *,
    depthwise: bool = False,
    count_include_pad: bool = False,
) -> tf.Tensor:
    r"""XNOR-Net's scaling map K of an NHWC input (Rastegari et al., Sec. 3.2).

    \[
    A = \frac{1}{c} \sum_{i=1}^{c} \lvert I_{:,:,i} \rvert, \qquad K = A * k, \qquad
    k = \tfrac{1}{n}\,\mathbf{1}_{k_h \times k_w},
    \]

    evaluated with the window, stride, dilation and ``'same'`` zero padding of the
    binary convolution it scales, so that K has that convolution's output grid:
    shape ``(N, ceil(H / s_h), ceil(W / s_w), 1)``. Then
    $I * W \approx (\operatorname{sign}(I) \circledast \operatorname{sign}(W)) \odot K
    \alpha$.

    ``count_include_pad=False`` (default) divides each window sum by the number of
    input positions inside the image (``tf.nn.avg_pool2d`` with ``'SAME'``): larq pads
    the binarized input with zeros, and for a window whose padded entries are 0 in both
    $I$ and $\operatorname{sign}(I)$ the least-squares $\beta$ of
    $X \approx \beta \operatorname{sign}(X)$ is the mean of $\lvert X \rvert$ over the
    valid entries; so K is exact at the borders too when $\lvert I \rvert$ is constant.
    ``count_include_pad=True`` divides by $n = k_h k_w$: the literal zero-padded
    convolution $A * k$ of XNOR-Net. ``depthwise=True`` skips the channel mean (shape
    ``(N, H', W', C)``): each output channel of a depthwise convolution sees one input
    channel only. The gradient is exact (K is built from the real-valued input).
    """
    kernel_size = _pair(kernel_size, "kernel_size")
    strides = _pair(strides, "strides")
    dilation_rate = _pair(dilation_rate, "dilation_rate")
    if max(strides) > 1 and max(dilation_rate) > 1:
        raise ValueError(
            "strides > 1 together with dilation_rate > 1 is not supported (as in Keras' "
            f"Conv2D), got strides={strides}, dilation_rate={dilation_rate}."
        )
    inputs = tf.convert_to_tensor(inputs)
    magnitude = tf.abs(inputs)
    if not depthwise:
        magnitude = tf.reduce_mean(magnitude, axis=-1, keepdims=True)

    def window_sum(x):
        ones = tf.ones((*kernel_size, x.shape[-1], 1), x.dtype)
        return tf.nn.depthwise_conv2d(
            x, ones, strides=(1, *strides, 1), padding="SAME", dilations=dilation_rate
        )

    total = window_sum(magnitude)
    if count_include_pad:
        return total / float(kernel_size[0] * kernel_size[1])
    return total / window_sum(tf.ones_like(magnitude[:1, :, :, :1]))


@utils.register_alias("xnor_activation")
@utils.register_keras_custom_object
class XnorActivation(SteSign):
    r"""XNOR-Net input binarization: the sign, with the scaling map of Sec. 3.2 alongside.

    \[
    q(x) = \operatorname{sign}(x), \qquad
    \frac{\partial q}{\partial x} = 1_{\lvert x \rvert \le c}
    \]

    (larq's ``ste_sign``: $\operatorname{sign}(0) = 1$, recognised by the Larq Compute
    Engine converter). XNOR-Net approximates a convolution of real inputs as
    $I * W \approx (\operatorname{sign}(I) \circledast \operatorname{sign}(W)) \odot K
    \alpha$ with $K = A * k$, $A = \frac{1}{c}\sum_i \lvert I_{:,:,i} \rvert$ and $k$ the
    $k \times k$ averaging filter. K multiplies the *output* of the convolution, so an
    input quantizer cannot apply it: ``scaling_map`` (or the layer
    ``XnorScalingMap``, or ``xnor_scaled_conv``) computes it from the same
    real-valued input.

    Args:
        kernel_size: $k$, the window of the scaling map (that of the convolution).
        clip_value: threshold of the straight-through estimator (``None``: no clip).

    References:
        - Rastegari et al., XNOR-Net: ImageNet Classification Using Binary
          Convolutional Neural Networks, ECCV 2016, https://arxiv.org/abs/1603.05279
    """

    precision = 1

    def __init__(
        self, kernel_size: int | tuple[int, int] = 3, clip_value: float | None = 1.0, **kwargs
    ):
        self.kernel_size = _pair(kernel_size, "kernel_size")
        super().__init__(clip_value=clip_value, **kwargs)

    def scaling_map(self, inputs, strides=1, dilation_rate=1, **kwargs) -> tf.Tensor:
        """K of ``inputs`` for a convolution of this kernel size (``xnor_scaling_map``)."""
        return xnor_scaling_map(inputs, self.kernel_size, strides, dilation_rate, **kwargs)

    def get_config(self):
        return {**super().get_config(), "kernel_size": list(self.kernel_size)}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class XnorScalingMap(tf.keras.layers.Layer):
    """XNOR-Net's scaling map K as a layer: ``xnor_scaling_map`` of its input.

    Give it the kernel size, strides and dilation of the binary convolution whose
    output it scales, and the same real-valued input (before the sign):

    ```python
    y = conv(x) * XnorScalingMap(conv.kernel_size, conv.strides, conv.dilation_rate)(x)
    ```

    which is what ``xnor_scaled_conv`` builds. No weights.
    """

    def __init__(
        self,
        kernel_size=3,
        strides=1,
        dilation_rate=1,
        depthwise: bool = False,
        count_include_pad: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError("strides > 1 together with dilation_rate > 1 is not supported.")
        self.depthwise = bool(depthwise)
        self.count_include_pad = bool(count_include_pad)

    def call(self, inputs):
        return xnor_scaling_map(
            inputs,
            self.kernel_size,
            self.strides,
            self.dilation_rate,
            depthwise=self.depthwise,
            count_include_pad=self.count_include_pad,
        )

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        for axis, stride in zip((1, 2), self.strides):
            if shape[axis] is not None:
                shape[axis] = -(-shape[axis] // stride)
        if not self.depthwise:
            shape[-1] = 1
        return tf.TensorShape(shape)

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "dilation_rate": list(self.dilation_rate),
            "depthwise": self.depthwise,
            "count_include_pad": self.count_include_pad,
        }


def xnor_scaled_conv(
    x,
    conv_layer: tf.keras.layers.Layer,
    kernel_size=None,
    strides=None,
    *,
    dilation_rate=None,
    scale_input=None,
    count_include_pad: bool = False,
    name: str | None = None,
):
    r"""``conv_layer(x)`` times XNOR-Net's scaling map K: $(\operatorname{sign}(I)
    \circledast \operatorname{sign}(W)) \odot K \alpha$.

    ``conv_layer`` is a binary ``QuantConv2D`` or ``QuantDepthwiseConv2D`` with
    ``padding="same"`` (zero padding), whose input quantizer binarizes ``x``. K is
    computed from ``scale_input`` (default: ``x``), which must be the real-valued tensor
    that is binarized, for example the batch-normalized input when ``x`` was already
    binarized by the caller. Kernel size, strides and dilation default to the layer's.
    Works in the functional API (two layers are added: ``XnorScalingMap`` and a
    ``Multiply``) and eagerly.
    """
    if getattr(conv_layer, "padding", "same") != "same":
        raise ValueError(
            f"The XNOR-Net scaling map needs padding='same', got {conv_layer.padding!r}."
        )
    depthwise = isinstance(conv_layer, tf.keras.layers.DepthwiseConv2D)
    if depthwise and conv_layer.depth_multiplier != 1:
        raise ValueError("The depthwise XNOR-Net scaling map needs depth_multiplier=1.")
    scaling = XnorScalingMap(
        conv_layer.kernel_size if kernel_size is None else kernel_size,
        conv_layer.strides if strides is None else strides,
        conv_layer.dilation_rate if dilation_rate is None else dilation_rate,
        depthwise=depthwise,
        count_include_pad=count_include_pad,
        name=None if name is None else f"{name}_scaling_map",
    )
    scale = scaling(x if scale_input is None else scale_input)
    multiply = tf.keras.layers.Multiply(name=None if name is None else f"{name}_scaled")
    return multiply([conv_layer(x), scale])


@dataclasses.dataclass(frozen=True)
class Binarization:
    """The kernel and input quantizers of one binarization method.

    Example:
        >>> b = get_binarization("xnor")
        >>> b.kernel_quantizer, b.input_quantizer
        ('xnor', 'ste_sign')

    ``xnor_activation_scale`` (default ``False``) asks the binary convolutions built for
    this method to multiply their output by XNOR-Net's activation scaling map K
    (``xnor_scaled_conv``); it is not a layer keyword argument, so
    ``layer_kwargs`` does not change. Switch it on with
    ``get_binarization("xnor", xnor_activation_scale=True)``. ``pcnn_lambda`` (PCNN only)
    sets the projection-loss weight of every layer's ``PcnnWeight`` (``None``: its
    default).
    """

    name: str
    kernel_quantizer: str
    input_quantizer: str
    citation: str
    xnor_activation_scale: bool = False
    pcnn_lambda: float | None = None

    def layer_kwargs(self) -> dict:
        """Keyword arguments for ``larq.layers.QuantConv2D`` and friends.

        The latent weights are clipped to [-1, 1] (``weight_clip``), as the reference
        implementations clamp them, so that the straight-through gradient never
        starves a weight. The quantizers are given by name, so larq creates a fresh
        quantizer for every layer (PCNN's projection is per layer).
        """
        kernel_quantizer = self.kernel_quantizer
        if self.pcnn_lambda is not None:
            # A fresh instance per call: one learned projection per layer.
            kernel_quantizer = PcnnWeight(pcnn_lambda=self.pcnn_lambda)
        return {
            "kernel_quantizer": kernel_quantizer,
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
    "pcnn": Binarization(
        "pcnn", "pcnn", "ste_sign", "Gu et al., AAAI 2019; Chen et al., AAAI 2020"
    ),
}


#: Help of the binarization settings, shared by the search and training configs (their flags).
BINARIZATION_HELP = {
    "binarization": "sign_scale, xnor or pcnn.",
    "xnor_activation_scale": "XNOR-Net's activation scaling map K on every binary convolution "
    "(xnor only).",
    "pcnn_lambda": "Weight lambda of PCNN's projection loss (pcnn only).",
}


@dataclasses.dataclass(frozen=True)
class _FullPrecision(Binarization):
    def layer_kwargs(self) -> dict:
        return {"kernel_quantizer": None, "input_quantizer": None}


FULL_PRECISION: Binarization = _FullPrecision("full_precision", None, None, "quantizers off")
"""No binarization: every ``QuantConv2D`` a float convolution (no kernel or input quantizer, no
weight clipping). The full-precision parent of CP-NAS and the full-precision twin of the
benchmarks; not one of the ``BINARIZATIONS`` a user picks."""


def get_binarization(
    name: str | Binarization,
    *,
    xnor_activation_scale: bool | None = None,
    pcnn_lambda: float | None = None,
) -> Binarization:
    """Look up a binarization method by name (``xnor``, ``sign_scale``, ``pcnn``).

    ``xnor_activation_scale=True`` (XNOR-Net's scaling map K on the convolution
    outputs, see [`bnas_tf.layers`][bnas_tf.layers]) applies to ``xnor`` only; ``None`` keeps the
    method's setting. ``pcnn_lambda`` (the weight of PCNN's projection loss, ``>= 0``)
    applies to ``pcnn`` only.
    """
    if isinstance(name, Binarization):
        binarization = name
    else:
        try:
            binarization = BINARIZATIONS[name]
        except KeyError:
            raise ValueError(
                f"Unknown binarization {name!r}; choose one of {sorted(BINARIZATIONS)}."
            ) from None
    if pcnn_lambda is not None:
        if binarization.name != "pcnn":
            raise ValueError(
                f"--pcnn_lambda applies to --binarization=pcnn only, got {binarization.name!r}."
            )
        if not pcnn_lambda >= 0:
            raise ValueError(f"--pcnn_lambda must be >= 0, got {pcnn_lambda}.")
        binarization = dataclasses.replace(binarization, pcnn_lambda=float(pcnn_lambda))
    if xnor_activation_scale is None or xnor_activation_scale == binarization.xnor_activation_scale:
        return binarization
    if xnor_activation_scale and binarization.name != "xnor":
        raise ValueError(
            "--xnor_activation_scale is XNOR-Net's activation scaling and applies to "
            f"--binarization=xnor only, got {binarization.name!r}."
        )
    return dataclasses.replace(binarization, xnor_activation_scale=bool(xnor_activation_scale))


def binarization_of(config) -> Binarization:
    """The ``Binarization`` of a training config or a ``network.json`` spec dict: its
    ``binarization`` name, ``xnor_activation_scale`` and, for PCNN, ``pcnn_lambda`` (the search
    asks its own config: ``SearchConfig.binarization_method``)."""
    get = (
        config.get
        if isinstance(config, dict)
        else lambda key, default: getattr(config, key, default)
    )
    name = get("binarization", "sign_scale")
    return get_binarization(
        name,
        xnor_activation_scale=get("xnor_activation_scale", False),
        pcnn_lambda=get("pcnn_lambda", None) if name == "pcnn" else None,
    )


def quantizer_variables(module: tf.Module) -> list[tf.Variable]:
    """The trainable variables that belong to larq quantizers inside ``module`` (e.g. the
    per-channel binary level of ``PcnnWeight``).

    They are parameters of the binarization, not weights: the search and final training
    leave them out of weight decay (which would pull PCNN's level to zero, against its
    projection loss), as larq keeps its quantizers' state apart from the kernels.

        >>> layer = tf.keras.layers.Dense(3)
        >>> quantizer_variables(layer)
        []
    """
    seen: dict[int, tf.Variable] = {}
    for sub in module.submodules:
        if isinstance(sub, Quantizer):
            for variable in sub.trainable_variables:
                seen.setdefault(id(variable), variable)
    return list(seen.values())
