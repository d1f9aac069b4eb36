"""Tests of the weight/activation binarizers in :mod:`bnas_tf.quantizers`."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf import quantizers as Q
from bnas_tf.quantizers import (
    BINARIZATIONS,
    Binarization,
    SignScaleWeight,
    XnorWeight,
    get_binarization,
)

import re

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

WEIGHT_QUANTIZERS = ("xnor", "sign_scale")
ALL_QUANTIZERS = (*WEIGHT_QUANTIZERS, "ste_sign")
KERNEL_SHAPES = ((3, 3, 4, 5), (5, 5, 2, 3), (6, 3))  # conv kernels and a dense kernel


# ----------------------------------------------------------------------------- references
def _sign(x):
    """larq's sign: +1 at 0."""
    return np.where(x >= 0, 1.0, -1.0)


def _out_axes(w):
    return tuple(range(w.ndim - 1))


def ref_xnor(w):
    alpha = np.abs(w).mean(axis=_out_axes(w))
    return alpha * _sign(w), alpha


def ref_sign_scale(w):
    centred = w - w.mean(axis=w.ndim - 2, keepdims=True)
    clipped = np.clip(centred, -1.0, 1.0)
    alpha = np.abs(clipped).mean(axis=_out_axes(w))
    return alpha * _sign(clipped), alpha, centred, clipped


def ref_xnor_grad(w, g, clip_value):
    """d/dW_j sum_i g_i q_i = g_j alpha 1{|W_j|<=c} + sign(W_j)/n sum_i g_i sign(W_i)."""
    q, alpha = ref_xnor(w)
    n = np.prod(w.shape[:-1])
    mask = np.ones_like(w) if clip_value is None else (np.abs(w) <= clip_value).astype(w.dtype)
    per_channel = (g * _sign(w)).sum(axis=_out_axes(w))
    return g * alpha * mask + _sign(w) / n * per_channel


def ref_sign_scale_grad(w, g):
    """Chain rule through q = alpha(clip(c)) sign(clip(c)), c = W - mean_cin(W).

    d q_i / d clipped_j = alpha delta_ij (STE, no clip) + sign(clipped_i) sign(clipped_j) / n,
    then the clip passes the gradient only where |c| <= 1, then the centring
    subtracts the mean over the input-channel axis.
    """
    _, alpha, centred, clipped = ref_sign_scale(w)
    n = np.prod(w.shape[:-1])
    per_channel = (g * _sign(clipped)).sum(axis=_out_axes(w))
    g_clipped = g * alpha + np.sign(clipped) / n * per_channel
    g_centred = g_clipped * (np.abs(centred) <= 1.0)
    return g_centred - g_centred.mean(axis=w.ndim - 2, keepdims=True)


def _kernel(shape, scale=0.8, seed=0):
    """Random kernel; scale 0.8 puts a few weights (and centred weights) beyond +-1."""
    rng = np.random.default_rng(seed)
    w = (scale * rng.standard_normal(shape)).astype(np.float32)
    # Stay away from the sign/clip discontinuities so that float32 rounding cannot flip them.
    w = np.where(np.abs(w) < 1e-3, 1e-2, w)
    w = np.where(np.abs(np.abs(w) - 1.0) < 1e-3, 1.1 * np.sign(w), w)
    return w.astype(np.float32)


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_xnor_matches_reference(shape):
    w = _kernel(shape)
    assert (np.abs(w) > 1).any(), "fixture must exercise the clip region"
    q = XnorWeight()(tf.constant(w)).numpy()
    expected, alpha = ref_xnor(w)
    np.testing.assert_allclose(q, expected, rtol=1e-6, atol=1e-7)
    # Exactly +-alpha_o in each output channel, with the sign of the latent weight.
    for o in range(shape[-1]):
        magnitudes = np.unique(np.abs(q[..., o]))
        assert magnitudes.shape == (1,)  # exactly two values, +alpha_o and -alpha_o
        np.testing.assert_allclose(magnitudes[0], alpha[o], rtol=1e-6)
        np.testing.assert_array_equal(np.sign(q[..., o]), _sign(w[..., o]))
    assert len(np.unique(alpha.round(6))) == shape[-1], "alpha is per output channel"


@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_sign_scale_matches_reference(shape):
    w = _kernel(shape)
    q = SignScaleWeight()(tf.constant(w)).numpy()
    expected, alpha, centred, clipped = ref_sign_scale(w)
    assert (np.abs(centred) > 1).any(), "fixture must exercise the clip"
    np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-6)
    for o in range(shape[-1]):
        magnitudes = np.unique(np.abs(q[..., o]))
        assert magnitudes.shape == (1,)
        np.testing.assert_allclose(magnitudes[0], alpha[o], rtol=1e-6)
        # The sign is that of the *centred* weight, not of the latent one.
        np.testing.assert_array_equal(np.sign(q[..., o]), _sign(clipped[..., o]))
    assert (np.sign(q) != _sign(w)).any(), "centring must change some signs"
    # alpha differs from the uncentred XNOR scale.
    assert not np.allclose(alpha, np.abs(w).mean(axis=_out_axes(w)))


def test_sign_scale_invariant_to_input_channel_offsets():
    """Adding a constant along the input-channel axis is removed by the centring."""
    w = _kernel((3, 3, 4, 5), scale=0.3)
    offset = np.random.default_rng(1).standard_normal((3, 3, 1, 5)).astype(np.float32)
    quantizer = SignScaleWeight()
    np.testing.assert_allclose(
        quantizer(tf.constant(w + offset)).numpy(), quantizer(tf.constant(w)).numpy(), atol=1e-5
    )


def test_ste_sign_activation_is_plus_minus_one():
    x = tf.constant([-2.0, -0.5, 0.0, 0.3, 1.0, 7.0])
    q = lq.quantizers.get("ste_sign")
    np.testing.assert_array_equal(q(x).numpy(), [-1, -1, 1, 1, 1, 1])


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("clip_value", [1.0, 0.5, None])
@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_xnor_gradient_matches_docstring(shape, clip_value):
    w = _kernel(shape)
    g = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    var = tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch(var)
        loss = tf.reduce_sum(g * XnorWeight(clip_value=clip_value)(var))
    grad = tape.gradient(loss, var).numpy()
    np.testing.assert_allclose(grad, ref_xnor_grad(w, g, clip_value), rtol=1e-4, atol=1e-5)
    if clip_value is not None:
        # Where the latent weight is clipped only the scale term remains.
        n = np.prod(shape[:-1])
        clipped = np.abs(w) > clip_value
        assert clipped.any()
        scale_only = _sign(w) / n * (g * _sign(w)).sum(axis=_out_axes(w))
        np.testing.assert_allclose(grad[clipped], scale_only[clipped], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_sign_scale_gradient_matches_chain_rule(shape):
    w = _kernel(shape)
    g = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    var = tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch(var)
        loss = tf.reduce_sum(g * SignScaleWeight()(var))
    grad = tape.gradient(loss, var).numpy()
    np.testing.assert_allclose(grad, ref_sign_scale_grad(w, g), rtol=1e-4, atol=1e-5)
    # The centring makes the gradient sum to zero over the input channels.
    np.testing.assert_allclose(grad.sum(axis=len(shape) - 2), 0.0, atol=1e-5)


def test_sign_scale_ste_mask_zeroes_clipped_weights():
    """With the centring undone (d/d centred), clipped entries get no gradient."""
    w = _kernel((3, 3, 4, 5))
    _, _, centred, _ = ref_sign_scale(w)
    g = np.random.default_rng(4).standard_normal(w.shape).astype(np.float32)
    c = tf.constant(centred)
    # centred already has zero mean over the input channels, so the quantizer
    # sees c itself; differentiate w.r.t. c through the clip only.
    with tf.GradientTape() as tape:
        tape.watch(c)
        clipped = tf.clip_by_value(c, -1.0, 1.0)
        scale = tf.reduce_mean(tf.abs(clipped), axis=[0, 1, 2])
        loss = tf.reduce_sum(g * scale * lq.quantizers.ste_sign(clipped, clip_value=None))
    grad_c = tape.gradient(loss, c).numpy()
    outside = np.abs(centred) > 1
    assert outside.any() and (~outside).any()
    np.testing.assert_array_equal(grad_c[outside], 0.0)
    assert (grad_c[~outside] != 0).all()
    # ...and the full quantizer gradient is this one, centred over the input channels.
    var = tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch(var)
        full = tf.reduce_sum(g * SignScaleWeight()(var))
    np.testing.assert_allclose(
        tape.gradient(full, var).numpy(),
        grad_c - grad_c.mean(axis=2, keepdims=True),
        rtol=1e-4,
        atol=1e-5,
    )


def test_ste_sign_gradient_is_clipped_identity():
    x = tf.constant([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(3.0 * lq.quantizers.get("ste_sign")(x))
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 3, 3, 3, 3, 3, 0])


# ----------------------------------------------------------------------------- registry
@pytest.mark.parametrize(
    "alias, cls",
    [("xnor", XnorWeight), ("sign_scale", SignScaleWeight), ("ste_sign", lq.quantizers.SteSign)],
)
def test_alias_resolution(alias, cls):
    q = lq.quantizers.get(alias)
    assert isinstance(q, cls)
    assert q.precision == 1


@pytest.mark.parametrize("name", ALL_QUANTIZERS)
def test_precision_is_one(name):
    assert lq.quantizers.get(name).precision == 1


@pytest.mark.parametrize(
    "quantizer",
    [XnorWeight(), XnorWeight(clip_value=0.25), XnorWeight(clip_value=None), SignScaleWeight()],
)
def test_config_round_trip(quantizer):
    config = quantizer.get_config()
    clone = type(quantizer).from_config(config)
    assert clone.get_config() == config
    if isinstance(quantizer, XnorWeight):
        assert config["clip_value"] == quantizer.clip_value
        assert clone.clip_value == quantizer.clip_value
    serialized = tf.keras.utils.serialize_keras_object(quantizer)
    assert serialized["class_name"] == type(quantizer).__name__
    revived = lq.quantizers.get(serialized)
    assert type(revived) is type(quantizer)
    assert revived.get_config() == config
    w = tf.constant(_kernel((3, 3, 4, 5)))
    np.testing.assert_array_equal(revived(w).numpy(), quantizer(w).numpy())


@pytest.mark.parametrize("name", WEIGHT_QUANTIZERS)
def test_quant_conv_kernel_counted_as_one_bit(name):
    conv = lq.layers.QuantConv2D(
        4, 3, input_quantizer="ste_sign", kernel_quantizer=name, use_bias=False, name="binconv"
    )
    model = tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 2)),
            conv,
            tf.keras.layers.Conv2D(3, 1, use_bias=False, name="fpconv"),
        ]
    )
    expected_cls = {"xnor": XnorWeight, "sign_scale": SignScaleWeight}[name]
    assert isinstance(conv.kernel_quantizer, expected_cls)
    profile = lq.models.ModelProfile(model)
    bits = {
        lp._layer.name: [(wp.bitwidth, wp.count) for wp in lp.weight_profiles]
        for lp in profile.layer_profiles
    }
    assert bits["binconv"] == [(1, 3 * 3 * 2 * 4)]
    assert bits["fpconv"] == [(32, 4 * 3)]
    lines = []
    lq.models.summary(model, print_fn=lines.append)
    text = "\n".join(lines)
    # binconv: 1-bit inputs, 3*3*2*4 = 72 one-bit weights and no 32-bit ones.
    assert re.search(r"binconv\s+1\s+\(-1, 6, 6, 4\)\s+72\s+0\s", text), text
    assert re.search(r"fpconv\s+-\s+\(-1, 6, 6, 3\)\s+0\s+12\s", text), text
    # 72 bits + 12 * 4 bytes = 57 bytes.
    assert re.search(r"Model size\s+57\.00 B", text), text
    # Binarized kernel memory: 72 bits = 9 bytes; the fp conv holds 12 * 4 bytes.
    assert profile.memory == 72 + 12 * 32
    # The layer's output really uses the binarized kernel.
    x = tf.random.normal((2, 8, 8, 2))
    expected = tf.nn.conv2d(
        tf.sign(tf.sign(x) + 0.1),
        conv.kernel_quantizer(tf.convert_to_tensor(conv.kernel)),
        1,
        "VALID",
    )
    np.testing.assert_allclose(conv(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- binarizations
def test_binarizations_table():
    assert {"xnor", "sign_scale"} <= set(BINARIZATIONS)
    for name in WEIGHT_QUANTIZERS:
        assert BINARIZATIONS[name].kernel_quantizer == name
    for name, b in BINARIZATIONS.items():
        assert b.name == name
        assert b.input_quantizer == "ste_sign"
        assert b.citation
        assert lq.quantizers.get(b.kernel_quantizer).precision == 1
        assert b.layer_kwargs() == {
            "kernel_quantizer": b.kernel_quantizer,
            "input_quantizer": "ste_sign",
            "kernel_constraint": "weight_clip",
        }


@pytest.mark.parametrize("name", WEIGHT_QUANTIZERS)
def test_get_binarization(name):
    b = get_binarization(name)
    assert b is BINARIZATIONS[name]
    assert get_binarization(b) is b
    custom = Binarization("mine", "xnor", "ste_sign", "me")
    assert get_binarization(custom) is custom


def test_get_binarization_unknown_lists_choices():
    with pytest.raises(ValueError) as err:
        get_binarization("bad")
    message = str(err.value)
    assert "'bad'" in message
    assert "'sign_scale'" in message and "'xnor'" in message


def test_module_exports():
    assert set(Q.__all__) >= {"XnorWeight", "SignScaleWeight", "BINARIZATIONS", "get_binarization"}
