import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import genotype as genotype_lib
from bnas_tf import network

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

PUBLISHED = sorted(genotype_lib.PUBLISHED)


def _cell_quant_layers(model):
    return [
        layer
        for layer in model.layers
        if layer.name.startswith("cell")
        and isinstance(layer, (lq.layers.QuantConv2D, lq.layers.QuantDepthwiseConv2D))
    ]


@pytest.mark.parametrize("name", PUBLISHED)
@pytest.mark.parametrize("binarization", ["sign_scale", "xnor"])
def test_published_genotypes_build_with_binary_cells(name, binarization):
    model = network.build_network(
        genotype_lib.PUBLISHED[name],
        layers=3,
        init_channels=8,
        num_classes=7,
        input_shape=(16, 16, 3),
        binarization=binarization,
    )
    assert model.output_shape == (None, 7)
    quant = _cell_quant_layers(model)
    assert quant, "the cells hold binary convolutions"
    with lq.context.quantized_scope(True):
        for layer in quant:
            kernel = (
                layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel
            ).numpy()
            assert layer.input_quantizer is not None, layer.name
            assert (
                getattr(
                    layer.kernel_quantizer
                    if hasattr(layer, "kernel_quantizer") and layer.kernel_quantizer
                    else layer.depthwise_quantizer,
                    "precision",
                    None,
                )
                == 1
            )
            if hasattr(layer, "depthwise_kernel"):  # one scale per depthwise filter (axis -2)
                kernel = np.moveaxis(kernel, -2, -1)
            per_channel = kernel.reshape(-1, kernel.shape[-1])
            for column in per_channel.T:
                assert len(np.unique(np.abs(column))) == 1, f"{layer.name}: kernel not ±alpha"
    # Everything else that holds a kernel in a cell is the full-precision skip or factorized reduce.
    for layer in model.layers:
        if layer.name.startswith("cell") and type(layer) is tf.keras.layers.Conv2D:
            assert layer.name.endswith("_skip_conv"), layer.name


def test_forward_values_and_feature_output():
    model = network.build_network(
        genotype_lib.BNAS_A, layers=3, init_channels=8, num_classes=10, input_shape=(28, 28, 1)
    )
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype("float32")
    logits = model(x, training=False).numpy()
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
    features = network.build_network(
        genotype_lib.BNAS_A,
        layers=3,
        init_channels=8,
        num_classes=10,
        input_shape=(28, 28, 1),
        include_top=False,
    )
    # Two reductions: 28 -> 14 -> 7; the last cell concatenates 4 nodes of 4 * 8 channels.
    assert features.output_shape == (None, 7, 7, 4 * 32)


def test_imagenet_stem_and_auxiliary_head():
    model = network.build_network(
        genotype_lib.LATEST_CELL,
        layers=3,
        init_channels=8,
        num_classes=5,
        input_shape=(64, 64, 3),
        stem="imagenet",
        auxiliary=True,
    )
    assert [tuple(s) for s in model.output_shape] == [(None, 5), (None, 5)]


def test_inter_cell_skip_present_and_optional():
    kwargs = dict(layers=3, init_channels=8, num_classes=10, input_shape=(16, 16, 1))
    with_skip = network.build_network(genotype_lib.BNAS_A, **kwargs)
    without = network.build_network(genotype_lib.BNAS_A, inter_cell_skip=False, **kwargs)
    names = {layer.name for layer in with_skip.layers}
    # cell 0 has no skip; reduction cells 1, 2 a BN + 2x2 stride-2 conv.
    assert "cell0_skip" not in names and {"cell1_skip_conv", "cell2_skip_conv"} <= names
    assert not any("skip" in layer.name for layer in without.layers)


def test_identity_inter_cell_skip_of_a_normal_cell_adds_the_previous_cell():
    """Cell 3 of 4 is a normal cell after the reductions (1, 2): its output is the
    concatenation of its nodes plus cell 2's output, value for value."""
    model = network.build_network(
        genotype_lib.LATEST_CELL, layers=4, init_channels=4, num_classes=10, input_shape=(16, 16, 1)
    )
    names = {layer.name for layer in model.layers}
    assert "cell3_skip" in names and "cell3_skip_conv" not in names  # identity, not a conv
    skip = model.get_layer("cell3_skip")
    probe = tf.keras.Model(
        model.input,
        [skip.output, model.get_layer("cell3_concat").output, model.get_layer("cell2_skip").output],
    )
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 1)).astype("float32")
    out, concat, previous = [t.numpy() for t in probe(x, training=False)]
    np.testing.assert_allclose(out, concat + previous, rtol=1e-5, atol=1e-5)
    assert not np.allclose(previous, 0.0)
    # the previous cell's output (cell 2's skip sum), not the one before it
    assert skip.input[1].name == model.get_layer("cell2_skip").output.name


def test_drop_path_only_in_training():
    model = network.build_network(
        genotype_lib.LATEST_CELL,
        layers=3,
        init_channels=8,
        num_classes=10,
        input_shape=(16, 16, 1),
        drop_path_rate=0.5,
    )
    network.set_drop_path_progress(model, 1.0)
    x = np.ones((4, 16, 16, 1), "float32")
    a, b = model(x, training=False).numpy(), model(x, training=False).numpy()
    np.testing.assert_array_equal(a, b)
    drops = [layer for layer in model.layers if isinstance(layer, network.DropPath)]
    assert drops
    y = drops[0](tf.ones((64, 2, 2, 1)), training=True).numpy()
    kept = y[:, 0, 0, 0]
    assert set(np.unique(kept)) <= {0.0, 2.0} and 0 < (kept == 0).sum() < 64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(2, 2, 1)), "too small"),
        (dict(num_classes=1), "num_classes"),
        (dict(stem="resnet"), "Unknown stem"),
        (dict(drop_path_rate=1.5), "drop_path_rate"),
        (dict(binarization="ternary"), "Unknown binarization"),
    ],
)
def test_bad_arguments(kwargs, message):
    base = dict(layers=3, init_channels=8, num_classes=10, input_shape=(16, 16, 1))
    with pytest.raises(ValueError, match=message):
        network.build_network(genotype_lib.BNAS_A, **{**base, **kwargs})


def test_input_tensor():
    tensor = tf.keras.Input((16, 16, 1))
    model = network.build_network(
        genotype_lib.BNAS_A,
        layers=3,
        init_channels=4,
        num_classes=3,
        input_tensor=tensor,
        input_shape=None,
    )
    assert model.inputs[0] is tensor
