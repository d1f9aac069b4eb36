"""Tests of the candidate operations in :mod:`bnas_tf.ops`."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf import ops, quantizers
from bnas_tf.ops import BINARY_CONV_OPS, OP_NAMES, SEARCH_SPACES, FactorizedReduce, Zeroise

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

C = 4
BATCH = 2
BINARIZATIONS = ("xnor", "sign_scale")  # with a numpy reference in test_quantizers.py
ALL_BINARIZATIONS = tuple(sorted(quantizers.BINARIZATIONS))
CONV_OPS = tuple(sorted(BINARY_CONV_OPS))
NON_CONV_OPS = tuple(op for op in OP_NAMES if op not in BINARY_CONV_OPS)
QUANT_LAYERS = (lq.layers.QuantConv2D, lq.layers.QuantDepthwiseConv2D)


def _input(size=8, channels=C, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.standard_normal((BATCH, size, size, channels)).astype(np.float32))


def _run(layers, x, training=False):
    for layer in layers:
        x = layer(x, training=training)
    return x


def _sign(x):
    """larq's sign (+1 at 0)."""
    return tf.sign(tf.sign(x) + 0.1)


def _quant_layers(layers):
    return [layer for layer in layers if isinstance(layer, QUANT_LAYERS)]


def _latent_and_quantizer(layer):
    if isinstance(layer, lq.layers.QuantDepthwiseConv2D):
        return layer.depthwise_kernel, layer.depthwise_quantizer
    return layer.kernel, layer.kernel_quantizer


def _quantized(layer):
    variable, quantizer = _latent_and_quantizer(layer)
    return quantizer(tf.convert_to_tensor(variable))


# ----------------------------------------------------------------------------- registry
def test_op_names_cover_both_search_spaces():
    assert list(OP_NAMES) == sorted(OP_NAMES)
    assert set(OP_NAMES) == set(SEARCH_SPACES["bnas_kim"]) | set(SEARCH_SPACES["bnas_darts"])
    assert BINARY_CONV_OPS <= set(OP_NAMES)
    assert len(OP_NAMES) == 12


def test_darts_dilated_conv_is_separable_and_kims_is_dense():
    """DARTS' dil_conv (so Chen et al.'s) is DilConv: depthwise dilated k x k, pointwise 1x1,
    BN; Kim et al.'s bin_dil_conv is one dense dilated convolution."""
    assert {"bin_dil_sep_conv_3x3", "bin_dil_sep_conv_5x5"} <= set(SEARCH_SPACES["bnas_darts"])
    assert not any(op.startswith("bin_dil_conv") for op in SEARCH_SPACES["bnas_darts"])
    for k in (3, 5):
        layers = ops.op_layers(f"bin_dil_sep_conv_{k}x{k}", C, 1)
        kinds = [type(layer).__name__ for layer in layers]
        assert kinds == [
            "BatchNormalization",
            "QuantDepthwiseConv2D",
            "QuantConv2D",
            "BatchNormalization",
        ]
        assert layers[1].kernel_size == (k, k) and layers[1].dilation_rate == (2, 2)
        assert layers[2].kernel_size == (1, 1)
        dense = ops.op_layers(f"bin_dil_conv_{k}x{k}", C, 1)
        assert [type(layer).__name__ for layer in dense] == [
            "BatchNormalization",
            "QuantConv2D",
            "ReLU",
        ]


@pytest.mark.parametrize("space", sorted(SEARCH_SPACES))
def test_search_space_lookup(space):
    assert ops.search_space(space) == SEARCH_SPACES[space]
    assert ops.search_space(space)[0] == "none"


def test_unknown_search_space():
    with pytest.raises(ValueError, match=r"Unknown search space 'nope'.*bnas_darts.*bnas_kim"):
        ops.search_space("nope")


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("binarization", ALL_BINARIZATIONS)
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("op", OP_NAMES)
def test_apply_op_shape(op, stride, size, binarization):
    x = _input(size)
    y = ops.apply_op(x, op, C, stride, binarization=binarization)
    out = -(-size // stride)
    assert y.shape == (BATCH, out, out, C)
    assert np.isfinite(y.numpy()).all()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("op", OP_NAMES)
def test_apply_op_functional_shape(op, stride):
    """apply_op also works on symbolic Keras tensors (the final network is functional)."""
    inputs = tf.keras.Input((8, 8, C))
    model = tf.keras.Model(inputs, ops.apply_op(inputs, op, C, stride))
    assert model.output_shape == (None, 8 // stride, 8 // stride, C)


# ----------------------------------------------------------------------------- binary convs
@pytest.mark.parametrize("binarization", ALL_BINARIZATIONS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("op", CONV_OPS)
def test_binary_conv_kernels_are_one_bit(op, stride, binarization):
    layers = ops.op_layers(op, C, stride, binarization=binarization)
    _run(layers, _input())
    quant = _quant_layers(layers)
    assert len(quant) == (2 if "sep" in op else 1)
    kernel_name = quantizers.get_binarization(binarization).kernel_quantizer
    kernel_cls = type(lq.quantizers.get(kernel_name))
    for layer in quant:
        variable, quantizer = _latent_and_quantizer(layer)
        assert isinstance(quantizer, kernel_cls)
        assert isinstance(layer.input_quantizer, lq.quantizers.SteSign)
        latent = variable.numpy()
        assert len(np.unique(latent)) > 2, "outside the quantized scope the latent kernel is read"
        with lq.context.quantized_scope(True):
            binary = variable.numpy()
        flat = (
            binary.reshape(-1, binary.shape[-2] * binary.shape[-1])
            if isinstance(layer, lq.layers.QuantDepthwiseConv2D)
            else binary.reshape(-1, binary.shape[-1])
        )
        for o in range(flat.shape[1]):
            magnitudes = np.unique(np.abs(flat[:, o]))
            assert magnitudes.shape == (1,) and magnitudes[0] > 0, f"{layer.name} channel {o}"
        np.testing.assert_allclose(binary, _quantized(layer).numpy(), rtol=1e-6)


@pytest.mark.parametrize("op", ["bin_sep_conv_3x3", "bin_sep_conv_5x5"])
def test_xnor_depthwise_scale_is_per_filter(op):
    layers = ops.op_layers(op, C, 1, binarization="xnor")
    _run(layers, _input())
    depthwise = next(layer for layer in layers if isinstance(layer, lq.layers.QuantDepthwiseConv2D))
    latent = depthwise.depthwise_kernel.numpy()  # (k, k, C, 1)
    with lq.context.quantized_scope(True):
        binary = depthwise.depthwise_kernel.numpy()
    expected_alpha = np.abs(latent).mean(axis=(0, 1, 3))  # one alpha per depthwise filter
    np.testing.assert_allclose(np.abs(binary).max(axis=(0, 1, 3)), expected_alpha, rtol=1e-5)


def _reference_binary_conv(op, layers, x, stride):
    """BN -> sign -> binary conv (-> ReLU) computed with tf.nn on the op's own weights.

    A strided dilated conv is the stride-1 dilated conv sampled on TensorFlow's ``same``
    grid of stride 2 (offset 1 on even sizes, 0 on odd ones), where the strided dense
    convolutions and pools centre their windows too. DARTS' dilated separable conv
    (``bin_dil_sep_conv``) has no BN between its depthwise and pointwise parts.
    """
    bn = layers[0]
    h = bn(x, training=False)
    quant = _quant_layers(layers)
    dilation = 2 if "dil" in op else 1
    o = 1 - x.shape[1] % 2

    def strided(conv):  # conv(input, stride, dilation) on the `same` grid
        if dilation > 1 and stride > 1:
            return conv(1, dilation)[:, o::stride, o::stride]
        return conv(stride, dilation)

    if "sep" not in op:
        kernel = _quantized(quant[0])
        y = strided(lambda s, d: tf.nn.conv2d(_sign(h), kernel, s, "SAME", dilations=d))
        return tf.nn.relu(y)
    bns = [layer for layer in layers[1:] if isinstance(layer, tf.keras.layers.BatchNormalization)]
    depthwise = _quantized(quant[0])
    y = strided(
        lambda s, d: tf.nn.depthwise_conv2d(
            _sign(h), depthwise, [1, s, s, 1], "SAME", dilations=[d, d]
        )
    )
    if "dil" not in op:
        y = bns.pop(0)(y, training=False)
    y = tf.nn.conv2d(_sign(y), _quantized(quant[1]), 1, "VALID")
    (bn_pointwise,) = bns
    return bn_pointwise(y, training=False)


def _conv_cases():
    for op in CONV_OPS:
        for stride in (1, 2):
            yield pytest.param(op, stride, id=f"{op}-s{stride}")


@pytest.mark.parametrize("binarization", BINARIZATIONS)
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("op, stride", list(_conv_cases()))
def test_binary_conv_matches_reference(op, stride, size, binarization):
    layers = ops.op_layers(op, C, stride, binarization=binarization)
    x = _input(size, seed=1)
    # Give the BNs non-trivial statistics so that BN really is applied before the sign.
    for layer in layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            _run([layer], tf.zeros((1, 1, 1, C)))
            layer.moving_mean.assign(np.linspace(-0.5, 0.5, C))
            layer.moving_variance.assign(np.linspace(0.5, 2.0, C))
    y = _run(layers, x)
    expected = _reference_binary_conv(op, layers, x, stride)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("size", [8, 7, 9])
def test_subsample_then_conv_identity(kernel, size):
    """The identity the ops docstring relies on, with explicit symmetric padding:
    conv(x, k, stride=2, dilation=2) == conv(x[::2, ::2], k)."""
    x = _input(size, seed=2)
    k = tf.random.normal((kernel, kernel, C, 3))
    p = kernel // 2
    strided_dilated = tf.nn.conv2d(
        tf.pad(x, [[0, 0], [2 * p, 2 * p], [2 * p, 2 * p], [0, 0]]), k, 1, "VALID", dilations=2
    )[:, ::2, ::2]
    subsampled = tf.nn.conv2d(
        tf.pad(x[:, ::2, ::2], [[0, 0], [p, p], [p, p], [0, 0]]), k, 1, "VALID"
    )
    assert strided_dilated.shape == subsampled.shape == (BATCH, -(-size // 2), -(-size // 2), 3)
    np.testing.assert_allclose(strided_dilated.numpy(), subsampled.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["bin_dil_conv_3x3", "bin_dil_sep_conv_5x5"])
def test_dilated_strided_conv_has_a_subsample_and_no_strided_conv(op):
    layers = ops.op_layers(op, C, 2)
    assert isinstance(layers[1], ops.Subsample)
    assert layers[1].stride == 2 and layers[1].grid == "same"
    conv = _quant_layers(layers)[0]
    assert conv.strides == (1, 1) and conv.dilation_rate == (1, 1)


@pytest.mark.parametrize("op", CONV_OPS)
def test_shared_input_drops_bn_and_sign(op):
    layers = ops.op_layers(op, C, 1, shared_input=True)
    quant = _quant_layers(layers)
    assert not isinstance(layers[0], tf.keras.layers.BatchNormalization)
    assert quant[0].input_quantizer is None
    if "sep" in op:  # the pointwise conv still binarizes its (BN-ed) input
        assert isinstance(quant[1].input_quantizer, lq.quantizers.SteSign)
    # The edge's BN + sign, applied once outside, then the op: same as the plain op.
    plain = ops.op_layers(op, C, 1)
    x = _input(seed=3)
    _run(plain, x)
    _run(layers, x)
    for a, b in zip(_quant_layers(plain), quant):
        b.set_weights(a.get_weights())
    shared_in = _sign(plain[0](x, training=False))
    np.testing.assert_allclose(
        _run(layers, shared_in).numpy(), _run(plain, x).numpy(), rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------- other ops
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_none_gives_zeros(stride, size):
    layers = ops.op_layers("none", C, stride)
    assert len(layers) == 1 and isinstance(layers[0], Zeroise)
    y = _run(layers, _input(size) + 5.0)
    out = -(-size // stride)
    assert y.shape == (BATCH, out, out, C)
    np.testing.assert_array_equal(y.numpy(), 0.0)
    assert layers[0].compute_output_shape((None, size, size, C)).as_list() == [None, out, out, C]


def test_zeroise_config_round_trip():
    layer = Zeroise(2, name="z")
    clone = Zeroise.from_config(layer.get_config())
    assert clone.stride == 2 and clone.name == "z"


def test_skip_connect_stride_1_is_identity():
    assert ops.op_layers("skip_connect", C, 1) == []
    x = _input()
    assert ops.apply_op(x, "skip_connect", C, 1) is x


@pytest.mark.parametrize("size", [8, 7])
def test_skip_connect_stride_2_is_factorized_reduce(size):
    layers = ops.op_layers("skip_connect", C, 2, affine=False)
    assert len(layers) == 1 and isinstance(layers[0], FactorizedReduce)
    reduce = layers[0]
    x = _input(size, seed=4)
    y = _run(layers, x).numpy()
    relu = np.maximum(x.numpy(), 0)
    padded = np.pad(relu, [(0, 0), (0, 1), (0, 1), (0, 0)])
    even = relu[:, ::2, ::2] @ reduce.conv_even.kernel.numpy()[0, 0]
    odd = padded[:, 1::2, 1::2] @ reduce.conv_odd.kernel.numpy()[0, 0]
    expected = reduce.bn(np.concatenate([even, odd], axis=-1), training=False).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert not reduce.bn.center and not reduce.bn.scale


def test_factorized_reduce_needs_even_channels():
    with pytest.raises(ValueError, match="even channel count, got 3"):
        FactorizedReduce(3)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("op", ["max_pool_3x3", "avg_pool_3x3"])
def test_pools(op, stride):
    x = _input(7, seed=5)
    with_affine = ops.op_layers(op, C, stride, affine=True)
    searching = ops.op_layers(op, C, stride, affine=False)
    assert len(with_affine) == 1
    assert len(searching) == 2
    bn = searching[1]
    assert isinstance(bn, tf.keras.layers.BatchNormalization)
    assert not bn.center and not bn.scale
    pool = {"max_pool_3x3": tf.nn.max_pool2d, "avg_pool_3x3": tf.nn.avg_pool2d}[op]
    expected = pool(x, 3, stride, "SAME")
    np.testing.assert_allclose(_run(with_affine, x).numpy(), expected.numpy(), rtol=1e-6)
    # In training mode the BN standardises the pooled output with batch statistics.
    y = _run(searching, x, training=True).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, atol=0.05)


def test_layer_names_use_prefix():
    layers = ops.op_layers("bin_dil_conv_3x3", C, 2, name="cell0_e3")
    assert [layer.name for layer in layers] == [
        "cell0_e3_bn",
        "cell0_e3_subsample",
        "cell0_e3_conv",
        "cell0_e3_relu",
    ]


# ----------------------------------------------------------------------------- errors
def test_unknown_op_lists_known_ops():
    with pytest.raises(ValueError) as err:
        ops.op_layers("conv_7x7", C)
    message = str(err.value)
    assert "Unknown op 'conv_7x7'" in message
    for op in OP_NAMES:
        assert op in message


@pytest.mark.parametrize("stride", [0, 3, 4])
@pytest.mark.parametrize("op", ["bin_conv_3x3", "none", "max_pool_3x3"])
def test_bad_stride(op, stride):
    with pytest.raises(ValueError, match=rf"Op '{op}': stride must be 1 or 2, got {stride}"):
        ops.op_layers(op, C, stride)


@pytest.mark.parametrize("op", NON_CONV_OPS)
def test_shared_input_for_non_conv_op_raises(op):
    with pytest.raises(ValueError, match=rf"Op '{op}' is not a binary convolution"):
        ops.op_layers(op, C, 1, shared_input=True)


def test_unknown_binarization_in_op():
    with pytest.raises(ValueError, match="Unknown binarization 'ternary'"):
        ops.op_layers("bin_conv_3x3", C, binarization="ternary")
