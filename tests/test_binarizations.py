"""Every binarization through the whole path: a search, then a training of its genotype,
then the trained network reloaded; and XNOR-Net's activation scaling in layers and ops."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import ops
from bnas_tf.layers import (
    XnorScaledQuantConv2D,
    XnorScaledQuantDepthwiseConv2D,
    binary_conv2d,
    binary_depthwise_conv2d,
)
from bnas_tf.quantizers import BINARIZATIONS, get_binarization, xnor_scaling_map
from bnas_tf.search.driver import SearchConfig, run_search
from bnas_tf.search.mixed_op import MixedOp
from bnas_tf.training import TrainConfig, load_trained, train_network

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

# (binarization, xnor_activation_scale): every method, plus XNOR-Net with its scaling map.
METHODS = [(name, False) for name in sorted(BINARIZATIONS)] + [("xnor", True)]
METHOD_IDS = [f"{name}{'+K' if scale else ''}" for name, scale in METHODS]


@pytest.mark.parametrize("binarization,scale", METHODS, ids=METHOD_IDS)
def test_search_then_train_with_each_binarization(
    binarization, scale, tiny_idx_dir_module, tmp_path
):
    search = SearchConfig(
        data_dir=str(tiny_idx_dir_module),
        limit=32,
        batch_size=8,
        epochs=1,
        layers=1,
        init_channels=4,
        binarization=binarization,
        xnor_activation_scale=scale,
        verbose=0,
    )
    result = run_search(search, tmp_path / "search")
    assert (tmp_path / "search" / "genotype.json").exists()
    assert len(result.genotype.normal) == 8

    train = TrainConfig(
        genotype=str(tmp_path / "search" / "genotype.json"),
        data_dir=str(tiny_idx_dir_module),
        limit=32,
        limit_test=16,
        layers=2,
        init_channels=4,
        epochs=1,
        batch_size=8,
        binarization=binarization,
        xnor_activation_scale=scale,
        augment=False,
        drop_path_rate=0.0,
        verbose=0,
    )
    metrics = train_network(train, tmp_path / "train")
    assert np.isfinite(metrics["history"][0]["loss"])
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0

    model, spec = load_trained(tmp_path / "train")
    assert spec["binarization"] == binarization and spec["xnor_activation_scale"] == scale
    convs = [layer for layer in model.layers if isinstance(layer, lq.layers.QuantConv2D)]
    assert convs, "the trained network has binary convolutions"
    for layer in convs:
        assert layer.kernel_quantizer.__class__.__name__.lower().startswith(
            {"xnor": "xnor", "sign_scale": "signscale", "pcnn": "pcnn"}[binarization]
        )
        assert isinstance(layer, XnorScaledQuantConv2D) == scale


def test_scaled_conv_is_binary_conv_times_scaling_map():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 7, 7, 3)), tf.float32)
    scaled = binary_conv2d(
        get_binarization("xnor", xnor_activation_scale=True), 5, 3, padding="same"
    )
    plain = lq.layers.QuantConv2D(5, 3, padding="same", **BINARIZATIONS["xnor"].layer_kwargs())
    plain.build(x.shape)
    scaled.build(x.shape)
    scaled.set_weights(plain.get_weights())
    expected = plain(x) * xnor_scaling_map(x, 3)
    np.testing.assert_allclose(scaled(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    # K varies with |x|, so the scaled output is not just the plain one.
    assert not np.allclose(scaled(x).numpy(), plain(x).numpy())


def test_scaled_depthwise_conv_scales_each_channel():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(1, 6, 6, 4)), tf.float32)
    b = get_binarization("xnor", xnor_activation_scale=True)
    layer = binary_depthwise_conv2d(
        b, 3, padding="same", depthwise_quantizer="xnor", input_quantizer="ste_sign"
    )
    assert isinstance(layer, XnorScaledQuantDepthwiseConv2D)
    y = layer(x)
    plain = lq.layers.QuantDepthwiseConv2D(
        3, padding="same", depthwise_quantizer="xnor", input_quantizer="ste_sign"
    )
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    expected = plain(x) * xnor_scaling_map(x, 3, depthwise=True)
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_scaled_conv_gradient_reaches_input_through_sign_and_scale():
    x = tf.Variable(np.random.default_rng(2).normal(size=(1, 5, 5, 2)).astype("float32") * 0.5)
    layer = binary_conv2d(
        get_binarization("xnor", xnor_activation_scale=True), 3, 3, padding="same"
    )
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x))
    grad = tape.gradient(y, x).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_scaled_conv_serializes():
    layer = binary_conv2d(
        get_binarization("xnor", xnor_activation_scale=True), 4, 3, padding="same", name="c"
    )
    config = tf.keras.layers.serialize(layer)
    clone = tf.keras.layers.deserialize(config)
    assert isinstance(clone, XnorScaledQuantConv2D) and clone.filters == 4


def test_scaled_conv_needs_the_real_input():
    b = get_binarization("xnor", xnor_activation_scale=True)
    with pytest.raises(ValueError, match="input_quantizer must be set"):
        binary_conv2d(b, 4, 3, padding="same", input_quantizer=None)
    with pytest.raises(ValueError, match="padding='same'"):
        binary_conv2d(b, 4, 3, padding="valid")


@pytest.mark.parametrize("name", ["sign_scale", "pcnn"])
def test_activation_scale_is_xnor_only(name):
    with pytest.raises(ValueError, match="--binarization=xnor only"):
        get_binarization(name, xnor_activation_scale=True)
    with pytest.raises(ValueError, match="xnor_activation_scale"):
        SearchConfig(binarization=name, xnor_activation_scale=True).validate()
    with pytest.raises(ValueError, match="xnor_activation_scale"):
        TrainConfig(binarization=name, xnor_activation_scale=True).validate()


@pytest.mark.parametrize("op", sorted(ops.BINARY_CONV_OPS))
def test_every_binary_op_uses_the_scaled_layers(op):
    b = get_binarization("xnor", xnor_activation_scale=True)
    layers = ops.op_layers(op, 4, 1, binarization=b)
    convs = [
        layer
        for layer in layers
        if isinstance(layer, (lq.layers.QuantConv2D, lq.layers.QuantDepthwiseConv2D))
    ]
    assert convs and all(
        isinstance(layer, (XnorScaledQuantConv2D, XnorScaledQuantDepthwiseConv2D))
        for layer in convs
    )
    y = ops.apply_op(tf.random.normal((1, 8, 8, 4)), op, 4, 1, binarization=b)
    assert y.shape == (1, 8, 8, 4)


def test_mixed_op_with_scaling_matches_one_branch_per_edge():
    """With K on, the shared computation still gives the textbook result (its binarized
    input is not shared, since K needs each convolution's real input)."""
    edge_ops = [("bin_conv_3x3", "max_pool_3x3", "none"), ("bin_conv_3x3", "bin_dil_conv_3x3")]
    b = get_binarization("xnor", xnor_activation_scale=True)
    x = tf.random.normal((2, 8, 8, 4))
    weights = [tf.constant([0.5, 0.3, 0.2]), tf.constant([0.6, 0.4])]
    shared = MixedOp(4, 1, edge_ops, binarization=b)
    textbook = MixedOp(4, 1, edge_ops, binarization=b, share_computation=False)
    assert not shared.shared_binary_input
    shared(x, weights)
    textbook(x, weights)
    # Copy the widened kernels of `shared` into the per-edge branches of `textbook`.
    for op in ("bin_conv_3x3", "bin_dil_conv_3x3"):
        wide = [w for w in shared.op_layers[op].weights if "kernel" in w.name][0].numpy()
        edges = [e for e, ops_ in enumerate(edge_ops) if op in ops_]
        for i, e in enumerate(edges):
            kernel = [w for w in textbook.op_layers[f"{op}_edge{e}"].weights if "kernel" in w.name][
                0
            ]
            kernel.assign(wide[..., i * 4 : (i + 1) * 4])
    for a, b_ in zip(shared(x, weights), textbook(x, weights)):
        np.testing.assert_allclose(a.numpy(), b_.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("binarization,scale", METHODS, ids=METHOD_IDS)
def test_summary_reports_binary_parameters_and_macs(binarization, scale):
    from bnas_tf.genotype import get
    from bnas_tf.network import build_network

    model = build_network(
        get("latest_cell"),
        layers=3,
        init_channels=8,
        num_classes=10,
        input_shape=(16, 16, 1),
        binarization=get_binarization(binarization, xnor_activation_scale=scale),
    )
    lines = []
    figures = bnas_tf.summary(model, print_fn=lines.append)
    assert any("Total params" in line for line in lines)
    assert figures["params_1bit"] > 0 and figures["params_32bit"] > 0
    assert 0.5 < figures["binarized_mac_ratio"] < 1.0
    assert figures["memory_bytes"] < figures["fp32_equivalent_bytes"]


def test_pcnn_lambda_reaches_every_projection_quantizer(tmp_path):
    from bnas_tf.quantizers import PcnnWeight, binarization_of
    from bnas_tf.training import build_from_spec

    config = TrainConfig(binarization="pcnn", pcnn_lambda=3e-3, layers=2, init_channels=4)
    binarization = binarization_of(config.validate())
    assert binarization.pcnn_lambda == 3e-3
    # One fresh quantizer (one projection) per layer.
    assert (
        binarization.layer_kwargs()["kernel_quantizer"]
        is not binarization.layer_kwargs()["kernel_quantizer"]
    )
    spec = {
        "genotype": __import__("bnas_tf.genotype").genotype.get("latest_cell").to_dict(),
        "layers": 2,
        "init_channels": 4,
        "num_classes": 10,
        "input_shape": [16, 16, 1],
        "stem": "cifar",
        "binarization": "pcnn",
        "pcnn_lambda": 3e-3,
    }
    model = build_from_spec(spec)
    quantizers = [x.kernel_quantizer for x in model.layers if isinstance(x, lq.layers.QuantConv2D)]
    assert quantizers and all(
        isinstance(q, PcnnWeight) and q.pcnn_lambda == 3e-3 for q in quantizers
    )
    assert len({id(q) for q in quantizers}) == len(quantizers)


@pytest.mark.parametrize("name", ["xnor", "sign_scale"])
def test_pcnn_lambda_is_pcnn_only(name):
    with pytest.raises(ValueError, match="--pcnn_lambda applies to --binarization=pcnn only"):
        get_binarization(name, pcnn_lambda=1e-3)


def test_pcnn_lambda_must_not_be_negative():
    with pytest.raises(ValueError, match="--pcnn_lambda must be >= 0"):
        SearchConfig(binarization="pcnn", pcnn_lambda=-1.0).validate()
