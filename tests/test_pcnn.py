"""Tests of the PCNN weight binarization (:class:`bnas_tf.quantizers.PcnnWeight`)."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf import ops
from bnas_tf.quantizers import BINARIZATIONS, PcnnWeight, get_binarization

import dataclasses

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

KERNEL_SHAPES = ((3, 3, 4, 5), (6, 3))  # a conv kernel and a dense kernel


# ----------------------------------------------------------------------------- references
def _sign(x):
    """larq's sign: +1 at 0."""
    return np.where(x >= 0, 1.0, -1.0)


def _out_axes(w):
    return tuple(range(w.ndim - 1))


def ref_projection_loss(kernel, level, lam):
    """L_P = lambda/2 sum_o sum_i (a_o sign(C_io) - C_io)^2."""
    return 0.5 * lam * np.sum((level * _sign(kernel) - kernel) ** 2)


def _kernel(shape, seed=0):
    """A kernel with a few entries beyond the clip value and an exact zero."""
    w = np.random.default_rng(seed).normal(0.0, 0.6, size=shape).astype(np.float32)
    w.flat[0] = 0.0
    return w


def _conv_model(quantizer="pcnn", channels=3, size=6, name="conv"):
    inputs = tf.keras.Input((size, size, 2))
    conv = lq.layers.QuantConv2D(
        channels,
        3,
        padding="same",
        use_bias=False,
        input_quantizer="ste_sign",
        kernel_quantizer=quantizer,
        kernel_constraint="weight_clip",
        name=name,
    )
    outputs = tf.keras.layers.GlobalAveragePooling2D()(conv(inputs))
    return tf.keras.Model(inputs, outputs), conv


# ----------------------------------------------------------------------------- the quantizer
def test_registered_under_its_alias_with_config_round_trip():
    q = lq.quantizers.get("pcnn")
    assert isinstance(q, PcnnWeight) and q.precision == 1
    assert q.pcnn_lambda == 1e-4 and q.clip_value == 1.0
    q = PcnnWeight(pcnn_lambda=0.25, clip_value=None)
    config = lq.quantizers.serialize(q)
    restored = lq.quantizers.get(config)
    assert isinstance(restored, PcnnWeight)
    assert (restored.pcnn_lambda, restored.clip_value) == (0.25, None)
    assert PcnnWeight.from_config(q.get_config()).get_config() == q.get_config()


@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_forward_is_plus_minus_the_level_of_each_output_channel(shape):
    kernel = _kernel(shape)
    q = PcnnWeight()
    out = q(kernel).numpy()
    # First call: the projection is initialized to mean |W| per output channel.
    level = np.abs(kernel).mean(axis=_out_axes(kernel))
    assert q.projection.shape == (shape[-1],)
    assert bool(q.projection_initialized.numpy())
    np.testing.assert_allclose(q.projection.numpy(), level, rtol=1e-6)
    np.testing.assert_allclose(out, level * _sign(kernel), rtol=1e-6)
    # The level is read from the projection weight afterwards, not from the kernel.
    new_level = np.linspace(0.5, 2.0, shape[-1]).astype(np.float32)
    q.projection.assign(new_level)
    np.testing.assert_allclose(q(kernel).numpy(), new_level * _sign(kernel), rtol=1e-6)
    np.testing.assert_allclose(q(2.0 * kernel).numpy(), new_level * _sign(kernel), rtol=1e-6)


@pytest.mark.parametrize("lam", [1e-4, 0.3])
def test_added_loss_equals_the_projection_loss_formula(lam):
    kernel = _kernel((3, 3, 4, 5), seed=1)
    q = PcnnWeight(pcnn_lambda=lam)
    q(kernel)
    q.projection.assign(np.full(5, 0.4, np.float32))
    q(kernel)
    assert len(q.losses) == 1  # cleared and re-added at every call
    expected = ref_projection_loss(kernel, np.full(5, 0.4), lam)
    np.testing.assert_allclose(q.losses[0].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(q.projection_loss(kernel).numpy(), expected, rtol=1e-5)
    silent = PcnnWeight(pcnn_lambda=0.0)
    silent(kernel)
    assert silent.losses == []


def test_gradients_reach_kernel_and_projection():
    """STE (clip 1) through the sign plus the projection-loss gradient; exact in the level."""
    lam = 0.1
    w = _kernel((3, 3, 2, 4), seed=2)
    level = np.array([0.2, 0.5, 0.8, 1.1], np.float32)
    g = np.random.default_rng(3).normal(size=w.shape).astype(np.float32)
    q = PcnnWeight(pcnn_lambda=lam)
    kernel = tf.Variable(w)
    q(kernel)
    q.projection.assign(level)
    with tf.GradientTape() as tape:
        objective = tf.reduce_sum(g * q(kernel)) + tf.add_n(q.losses)
    grad_kernel, grad_projection = tape.gradient(objective, [kernel, q.projection])
    mask = (np.abs(w) <= 1.0).astype(np.float32)
    expected_kernel = g * level * mask + lam * (w - level * _sign(w))
    expected_projection = (g * _sign(w)).sum(axis=(0, 1, 2)) + lam * (level - np.abs(w)).sum(
        axis=(0, 1, 2)
    )
    np.testing.assert_allclose(grad_kernel.numpy(), expected_kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_projection.numpy(), expected_projection, rtol=1e-5)


@pytest.mark.parametrize("computed", [False, True])
def test_first_run_inside_tf_function_initializes_once_with_gradients(computed):
    """A kernel variable read is initialized from while tracing; a computed tensor in-graph."""
    q = PcnnWeight(pcnn_lambda=1.0)
    kernel = tf.Variable(_kernel((3, 3, 2, 3), seed=4))
    q.build(kernel.shape)  # built, but not yet initialized: the flag is False
    assert not bool(q.projection_initialized.numpy())

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            quantized = q(2.0 * kernel) if computed else q(kernel)
            objective = tf.reduce_sum(quantized) + tf.add_n(q.losses)
        return tape.gradient(objective, [kernel, q.projection])

    grads = step()
    assert all(g is not None for g in grads)
    first = np.abs((2.0 if computed else 1.0) * kernel.numpy()).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(q.projection.numpy(), first, rtol=1e-6)
    kernel.assign(3.0 * kernel)
    step()  # the flag is set: no second initialization
    np.testing.assert_allclose(q.projection.numpy(), first, rtol=1e-6)


def test_functional_model_is_initialized_at_construction_and_traces_without_assignments():
    model, conv = _conv_model()
    q = conv.kernel_quantizer
    assert bool(q.projection_initialized.numpy())  # before any call
    initial = np.abs(conv.kernel.latent_variable.numpy()).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(q.projection.numpy(), initial, rtol=1e-6)
    graph = tf.function(model).get_concrete_function(tf.TensorSpec((1, 6, 6, 2))).graph
    op_types = {op.type for op in graph.get_operations()}
    assert not op_types & {"AssignVariableOp", "If", "StatelessIf"}  # e.g. for the LCE converter


# ----------------------------------------------------------------------------- in larq layers
def test_quantconv2d_gets_its_own_projection_and_loss_per_layer():
    kwargs = get_binarization("pcnn").layer_kwargs()
    assert kwargs["kernel_quantizer"] == "pcnn"  # a name: larq makes one quantizer per layer
    inputs = tf.keras.Input((6, 6, 2))
    convs = [
        lq.layers.QuantConv2D(3, 3, padding="same", use_bias=False, name=f"c{i}", **kwargs)
        for i in range(2)
    ]
    x = inputs
    for conv in convs:
        x = conv(x)
    model = tf.keras.Model(inputs, x)
    quantizers = [conv.kernel_quantizer for conv in convs]
    assert quantizers[0] is not quantizers[1]
    trainable = {v.ref() for v in model.trainable_variables}
    assert all(q.projection.ref() in trainable for q in quantizers)
    assert all(q.projection_initialized.ref() not in trainable for q in quantizers)
    model(np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype(np.float32))
    assert len(model.losses) == 2
    for conv, loss in zip(convs, model.losses):
        w = conv.kernel.latent_variable.numpy()
        level = conv.kernel_quantizer.projection.numpy()
        np.testing.assert_allclose(loss.numpy(), ref_projection_loss(w, level, 1e-4), rtol=1e-5)
    with lq.context.quantized_scope(True):
        binary = convs[0].get_weights()[0]
    level = np.broadcast_to(quantizers[0].projection.numpy(), binary.shape)
    np.testing.assert_allclose(np.abs(binary), level, rtol=1e-6)


def test_fit_updates_the_projection_and_reduces_the_projection_loss():
    model, conv = _conv_model(PcnnWeight(pcnn_lambda=0.5))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 6, 6, 2)).astype(np.float32)
    y = np.zeros((8, 3), np.float32)
    model.compile(tf.keras.optimizers.SGD(0.05), "mse")
    q = conv.kernel_quantizer
    model(x)
    before_projection = q.projection.numpy().copy()
    before_loss = float(model.losses[0])
    # `evaluate` reports the task loss plus L_P.
    task = float(np.mean(model(x).numpy() ** 2))
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), task + before_loss, rtol=1e-5)
    model.fit(x, y, batch_size=8, epochs=5, verbose=0)
    model(x)
    assert not np.allclose(q.projection.numpy(), before_projection)
    assert float(model.losses[0]) < before_loss


def test_keras_save_and_load_round_trip_in_safe_mode(tmp_path):
    model, conv = _conv_model(PcnnWeight(pcnn_lambda=2e-4))
    x = np.random.default_rng(6).normal(size=(2, 6, 6, 2)).astype(np.float32)
    model(x)
    conv.kernel_quantizer.projection.assign([0.3, 0.6, 0.9])
    expected = model(x).numpy()
    path = tmp_path / "pcnn.keras"
    model.save(path)
    restored = tf.keras.models.load_model(path, safe_mode=True)
    q = restored.get_layer("conv").kernel_quantizer
    assert isinstance(q, PcnnWeight) and q.pcnn_lambda == 2e-4
    np.testing.assert_allclose(q.projection.numpy(), [0.3, 0.6, 0.9])
    assert bool(q.projection_initialized.numpy())
    np.testing.assert_allclose(restored(x).numpy(), expected, rtol=1e-6)
    assert len(restored.losses) == 1


# ----------------------------------------------------------------------------- binarizations
def test_pcnn_binarization_entry():
    b = get_binarization("pcnn")
    assert b is BINARIZATIONS["pcnn"]
    assert (b.kernel_quantizer, b.input_quantizer) == ("pcnn", "ste_sign")
    assert "Gu et al." in b.citation
    assert b.layer_kwargs() == {
        "kernel_quantizer": "pcnn",
        "input_quantizer": "ste_sign",
        "kernel_constraint": "weight_clip",
    }
    assert b.xnor_activation_scale is False
    assert dataclasses.replace(b, xnor_activation_scale=True).layer_kwargs() == b.layer_kwargs()


@pytest.mark.parametrize("op", ["bin_conv_3x3", "bin_sep_conv_3x3"])
def test_apply_op_with_pcnn_adds_projection_losses(op):
    inputs = tf.keras.Input((6, 6, 4))
    model = tf.keras.Model(inputs, ops.apply_op(inputs, op, 4, 1, binarization="pcnn"))
    model(np.random.default_rng(7).normal(size=(2, 6, 6, 4)).astype(np.float32))
    quantized = [
        layer
        for layer in model.layers
        for attribute in ("kernel_quantizer", "depthwise_quantizer")
        if isinstance(getattr(layer, attribute, None), PcnnWeight)
    ]
    assert len(model.losses) == len(quantized) == (1 if op == "bin_conv_3x3" else 2)
    assert all(float(loss) > 0 for loss in model.losses)
