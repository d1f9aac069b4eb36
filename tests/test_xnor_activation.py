"""Tests of XNOR-Net's activation binarization and scaling map in :mod:`bnas_tf.quantizers`."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf.quantizers import (
    XnorActivation,
    XnorScalingMap,
    get_binarization,
    xnor_scaled_conv,
    xnor_scaling_map,
)

import dataclasses

import larq as lq
import numpy as np
import pytest
import tensorflow as tf


# ----------------------------------------------------------------------------- references
def _same_windows(size, kernel, stride, dilation):
    """Input positions of each output of a 'SAME' convolution along one axis (TF's rule:
    ceil(size / stride) outputs, total padding split with the smaller half before)."""
    out = -(-size // stride)
    effective = (kernel - 1) * dilation + 1
    before = max((out - 1) * stride + effective - size, 0) // 2
    return [[i * stride - before + j * dilation for j in range(kernel)] for i in range(out)]


def ref_scaling_map(x, kernel, stride=1, dilation=1, count_include_pad=False, depthwise=False):
    """A = mean_c |x| (or |x| per channel), then the k x k window mean on the conv's grid.

    Padded positions count as zeros; ``count_include_pad=False`` divides by the number of
    positions inside the image, ``True`` by k * k.
    """
    magnitude = np.abs(x) if depthwise else np.abs(x).mean(axis=-1, keepdims=True)
    n, h, w, c = magnitude.shape
    rows = _same_windows(h, kernel, stride, dilation)
    cols = _same_windows(w, kernel, stride, dilation)
    out = np.zeros((n, len(rows), len(cols), c))
    for i, rs in enumerate(rows):
        for j, cs in enumerate(cols):
            valid_r = [r for r in rs if 0 <= r < h]
            valid_c = [q for q in cs if 0 <= q < w]
            total = magnitude[:, valid_r][:, :, valid_c].sum(axis=(1, 2))
            count = kernel * kernel if count_include_pad else len(valid_r) * len(valid_c)
            out[:, i, j] = total / count
    return out


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ----------------------------------------------------------------------------- scaling map
@pytest.mark.parametrize(
    "size, kernel, stride, dilation",
    [(7, 3, 1, 1), (6, 3, 2, 1), (7, 3, 2, 1), (8, 5, 2, 1), (7, 5, 1, 2), (6, 1, 2, 1)],
)
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_scaling_map_equals_the_numpy_reference(size, kernel, stride, dilation, count_include_pad):
    x = _inputs((2, size, size + 1, 3))
    got = xnor_scaling_map(x, kernel, stride, dilation, count_include_pad=count_include_pad)
    want = ref_scaling_map(x, kernel, stride, dilation, count_include_pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_depthwise_scaling_map_keeps_the_channels():
    x = _inputs((1, 6, 6, 4), seed=1)
    got = xnor_scaling_map(x, 3, 2, depthwise=True)
    np.testing.assert_allclose(got.numpy(), ref_scaling_map(x, 3, 2, depthwise=True), rtol=1e-5)


def test_default_is_the_average_pool_over_valid_positions():
    """count_include_pad=False is tf.nn.avg_pool2d(mean_c |x|, k, s, 'SAME')."""
    x = _inputs((2, 7, 7, 3), seed=2)
    pooled = tf.nn.avg_pool2d(tf.reduce_mean(tf.abs(x), -1, keepdims=True), 3, 2, "SAME")
    np.testing.assert_allclose(xnor_scaling_map(x, 3, 2).numpy(), pooled.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "size, kernel, stride, dilation", [(7, 3, 1, 1), (8, 3, 2, 1), (7, 5, 2, 1), (8, 3, 1, 2)]
)
def test_layer_output_grid_matches_the_same_padded_conv(size, kernel, stride, dilation):
    x = _inputs((2, size, size, 3), seed=3)
    conv = lq.layers.QuantConv2D(
        4,
        kernel,
        strides=stride,
        dilation_rate=dilation,
        padding="same",
        input_quantizer="ste_sign",
    )
    layer = XnorScalingMap(kernel, stride, dilation)
    scale = layer(x)
    assert scale.shape == (*conv(x).shape[:3], 1)
    assert tuple(layer.compute_output_shape(x.shape)) == tuple(scale.shape)


def test_strided_dilated_map_is_refused_like_keras():
    with pytest.raises(ValueError, match="dilation_rate"):
        XnorScalingMap(3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="dilation_rate"):
        xnor_scaling_map(_inputs((1, 4, 4, 1)), 3, 2, 2)


def test_gradient_reaches_x_through_the_scaling_map():
    """The gradient of sum(g * K(x)) equals the directional derivatives of the reference."""
    x = _inputs((1, 5, 6, 2), seed=4)
    g = _inputs((1, 3, 3, 1), seed=5)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        objective = tf.reduce_sum(g * xnor_scaling_map(xt, 3, 2))
    grad = tape.gradient(objective, xt).numpy()
    assert np.abs(grad).sum() > 0
    rng = np.random.default_rng(6)
    x64 = x.astype(np.float64)
    eps = 1e-4

    def f(z):
        return np.sum(g * ref_scaling_map(z, 3, 2))

    for _ in range(3):
        v = rng.normal(size=x.shape)
        numeric = (f(x64 + eps * v) - f(x64 - eps * v)) / (2 * eps)
        np.testing.assert_allclose(np.sum(grad * v), numeric, rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------- scaled conv
def _conv_pair(kernel_size, stride, input_quantizer="xnor_activation"):
    """A binary-input QuantConv2D and a float Conv2D sharing one (real) kernel."""
    binary = lq.layers.QuantConv2D(
        3,
        kernel_size,
        strides=stride,
        padding="same",
        use_bias=False,
        input_quantizer=input_quantizer,
    )
    real = tf.keras.layers.Conv2D(3, kernel_size, strides=stride, padding="same", use_bias=False)
    return binary, real


@pytest.mark.parametrize("stride", [1, 2])
def test_scaled_conv_is_exact_for_constant_magnitude_inputs(stride):
    """|x| = c everywhere: sign(x) (*) W, times K, is x (*) W, borders included."""
    x = 0.7 * np.sign(_inputs((2, 7, 7, 2), seed=7))
    binary, real = _conv_pair(3, stride)
    y_real = real(x)
    binary(x)
    binary.set_weights(real.get_weights())
    scaled = xnor_scaled_conv(x, binary).numpy()
    np.testing.assert_allclose(scaled, y_real.numpy(), rtol=1e-5, atol=1e-6)
    # Dividing by k*k instead (count_include_pad=True) is wrong at the borders only.
    padded = xnor_scaled_conv(x, binary, count_include_pad=True).numpy()
    inner = (slice(None), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(padded[inner], y_real.numpy()[inner], rtol=1e-5, atol=1e-6)
    assert not np.allclose(padded, y_real.numpy())


def test_scaled_conv_gradient_is_straight_through_plus_exact_through_k():
    """With |x| > 1 everywhere the clipped STE blocks the sign: only K carries gradient."""
    x = np.sign(_inputs((1, 6, 6, 2), seed=8)) * (1.5 + np.abs(_inputs((1, 6, 6, 2), seed=9)))
    xt = tf.constant(x.astype(np.float32))
    binary, _ = _conv_pair(3, 1)
    g = _inputs((1, 6, 6, 3), seed=10)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        scaled = xnor_scaled_conv(xt, binary)
        binary_out = tf.stop_gradient(binary(xt))
        k_only = binary_out * xnor_scaling_map(xt, 3)
        objective, reference = tf.reduce_sum(g * scaled), tf.reduce_sum(g * k_only)
    np.testing.assert_allclose(
        tape.gradient(objective, xt).numpy(),
        tape.gradient(reference, xt).numpy(),
        rtol=1e-5,
        atol=1e-7,
    )
    # Inside the clip range the straight-through path adds to it.
    small = tf.constant(0.5 * np.sign(x).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(small)
        objective = tf.reduce_sum(g * xnor_scaled_conv(small, binary))
        reference = tf.reduce_sum(g * tf.stop_gradient(binary(small)) * xnor_scaling_map(small, 3))
    with_ste = tape.gradient(objective, small).numpy()
    assert not np.allclose(with_ste, tape.gradient(reference, small).numpy())


def test_scaled_conv_takes_the_scale_from_a_separate_real_input():
    """With an already binarized x (shared sign), K comes from the real-valued tensor."""
    real_x = _inputs((1, 6, 6, 2), seed=11)
    binary, _ = _conv_pair(3, 2, input_quantizer=None)
    binary_x = np.where(real_x >= 0, 1.0, -1.0).astype(np.float32)
    got = xnor_scaled_conv(binary_x, binary, scale_input=real_x).numpy()
    want = binary(binary_x).numpy() * ref_scaling_map(real_x, 3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_scaled_depthwise_conv_uses_a_per_channel_map():
    x = _inputs((1, 6, 6, 3), seed=12)
    depthwise = lq.layers.QuantDepthwiseConv2D(
        3, padding="same", use_bias=False, input_quantizer="ste_sign"
    )
    got = xnor_scaled_conv(x, depthwise).numpy()
    want = depthwise(x).numpy() * ref_scaling_map(x, 3, depthwise=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- quantizer
def test_xnor_activation_is_larq_sign_with_clipped_straight_through_gradient():
    q = lq.quantizers.get("xnor_activation")
    assert isinstance(q, XnorActivation) and q.precision == 1 and q.kernel_size == (3, 3)
    x = tf.constant([-2.0, -0.5, 0.0, 0.5, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = q(x)
    np.testing.assert_array_equal(y.numpy(), [-1, -1, 1, 1, 1])
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 1, 0])
    images = _inputs((1, 5, 5, 2), seed=13)
    q5 = XnorActivation(kernel_size=5)
    want = ref_scaling_map(images, 5, 2)
    np.testing.assert_allclose(q5.scaling_map(images, strides=2).numpy(), want, rtol=1e-5)


def test_quantizer_and_layer_config_round_trip():
    q = XnorActivation(kernel_size=(5, 3), clip_value=None)
    restored = lq.quantizers.get(lq.quantizers.serialize(q))
    assert isinstance(restored, XnorActivation)
    assert (restored.kernel_size, restored.clip_value) == ((5, 3), None)
    layer = XnorScalingMap(5, 2, 1, depthwise=True, count_include_pad=True, name="k")
    clone = XnorScalingMap.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    revived = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert isinstance(revived, XnorScalingMap) and revived.get_config() == layer.get_config()


def test_functional_model_with_scaled_conv_saves_and_loads_in_safe_mode(tmp_path):
    inputs = tf.keras.Input((6, 6, 2))
    conv = lq.layers.QuantConv2D(
        3,
        3,
        strides=2,
        padding="same",
        use_bias=False,
        input_quantizer=XnorActivation(kernel_size=3),
        kernel_quantizer="xnor",
        kernel_constraint="weight_clip",
    )
    model = tf.keras.Model(inputs, xnor_scaled_conv(inputs, conv, name="b"))
    assert {"b_scaling_map", "b_scaled"} <= {layer.name for layer in model.layers}
    x = _inputs((2, 6, 6, 2), seed=14)
    path = tmp_path / "xnor.keras"
    model.save(path)
    restored = tf.keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_activation_scale_is_a_binarization_option_outside_layer_kwargs():
    xnor = get_binarization("xnor")
    assert xnor.xnor_activation_scale is False
    scaled = dataclasses.replace(xnor, xnor_activation_scale=True)
    assert scaled.xnor_activation_scale and scaled.layer_kwargs() == xnor.layer_kwargs()
    assert get_binarization(scaled) is scaled
