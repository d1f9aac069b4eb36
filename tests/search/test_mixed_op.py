"""Tests of the mixed operations of supernet edges (:mod:`bnas_tf.search.mixed_op`)."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf.ops import SEARCH_SPACES
from bnas_tf.search.mixed_op import MixedOp, channel_shuffle

import numpy as np
import pytest
import tensorflow as tf

C = 8
BATCH = 4
SPACES = sorted(SEARCH_SPACES)
WIDENABLE = {"bin_conv_3x3", "bin_conv_5x5", "bin_dil_conv_3x3", "bin_dil_conv_5x5"}
BN_EPSILON = 1e-3  # Keras BatchNormalization default


def _input(size=8, channels=C, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.standard_normal((BATCH, size, size, channels)).astype(np.float32))


def _weights(n, seed=0):
    logits = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    return tf.nn.softmax(logits)


def np_channel_shuffle(x, groups):
    """Channel g * (C / groups) + j moves to position j * groups + g."""
    x = np.asarray(x)
    channels = x.shape[-1]
    per_group = channels // groups
    out = np.empty_like(x)
    for g in range(groups):
        for j in range(per_group):
            out[..., j * groups + g] = x[..., g * per_group + j]
    return out


def _standardize(y):
    """BatchNormalization(center=False, scale=False) in training mode."""
    mean = y.mean(axis=(0, 1, 2))
    var = y.var(axis=(0, 1, 2))
    return (y - mean) / np.sqrt(var + BN_EPSILON)


# ----------------------------------------------------------------------------- channel_shuffle
@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_channel_shuffle_matches_numpy(groups):
    x = _input(5)
    np.testing.assert_array_equal(channel_shuffle(x, groups).numpy(), np_channel_shuffle(x, groups))


def test_channel_shuffle_is_a_permutation_with_known_order():
    x = tf.reshape(tf.range(8, dtype=tf.float32), (1, 1, 1, 8))
    np.testing.assert_array_equal(channel_shuffle(x, 2).numpy().ravel(), [0, 4, 1, 5, 2, 6, 3, 7])
    np.testing.assert_array_equal(channel_shuffle(x, 4).numpy().ravel(), [0, 2, 4, 6, 1, 3, 5, 7])


def test_channel_shuffle_with_unknown_batch_and_spatial_dims():
    fn = tf.function(
        lambda t: channel_shuffle(t, 4),
        input_signature=[tf.TensorSpec((None, None, None, C), tf.float32)],
    )
    x = _input(3)
    np.testing.assert_array_equal(fn(x).numpy(), np_channel_shuffle(x, 4))


# ----------------------------------------------------------------------------- one edge
@pytest.mark.parametrize("stride, size", [(1, 8), (2, 8), (2, 7)])
@pytest.mark.parametrize("partial", [1, 2, 4])
@pytest.mark.parametrize("space", SPACES)
def test_partial_channel_mixed_op_matches_definition(space, partial, stride, size):
    """y = shuffle_K(concat(sum_k w_k op_k(x[..., :C/K]), bypass(x[..., C/K:])))."""
    edge = SEARCH_SPACES[space]
    binarization = "sign_scale" if space == "bnas_kim" else "xnor"
    mixed = MixedOp(
        C,
        stride,
        [edge],
        partial_channels=partial,
        share_computation=False,
        binarization=binarization,
    )
    x = _input(size, seed=1)
    w = _weights(len(edge), seed=2)
    (y,) = mixed(x, [w], training=True)
    out = -(-size // stride)
    assert y.shape == (BATCH, out, out, C)
    assert set(mixed.op_layers) == {f"{op}_edge0" for op in edge if op != "none"}

    c = C // partial
    assert mixed.sampled_channels == c
    sampled, rest = x[..., :c], x[..., c:]
    total = 0.0
    for k, op in enumerate(edge):
        if op != "none":
            total += w[k].numpy() * mixed.op_layers[f"{op}_edge0"](sampled, training=True).numpy()
    if partial == 1:
        expected = total
    else:
        if stride == 2:
            rest = tf.nn.max_pool2d(rest, 2, 2, "SAME")
        expected = np_channel_shuffle(np.concatenate([total, rest.numpy()], axis=-1), partial)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- sharing
def _edge_ops(space):
    ops = SEARCH_SPACES[space]
    return [list(ops), list(ops[0::2]), list(ops[1::2])]


def _copy_weights(unshared, shared, edge_ops, sampled_channels):
    """Copy the per-edge weights of ``unshared`` into ``shared`` (widened kernels sliced)."""
    copied = 0
    for key, layers in unshared.op_layers.items():
        op, edge = key.rsplit("_edge", 1)
        edge = int(edge)
        source = layers.trainable_weights
        if key in shared.op_layers:  # not shared: one branch per edge in both
            target = shared.op_layers[key].trainable_weights
            assert [v.shape for v in target] == [v.shape for v in source]
            for dst, src in zip(target, source):
                dst.assign(src)
                copied += int(np.prod(src.shape))
        elif op in WIDENABLE:
            edges = [e for e, ops in enumerate(edge_ops) if op in ops]
            part = edges.index(edge)
            (kernel,) = shared.op_layers[op].trainable_weights
            (src,) = source
            c = sampled_channels
            assert kernel.shape[-1] == len(edges) * c
            value = kernel.numpy()
            value[..., part * c : (part + 1) * c] = src.numpy()
            kernel.assign(value)
            copied += int(np.prod(src.shape))
        else:  # parameter-free ops
            assert op in {"max_pool_3x3", "avg_pool_3x3"} and not source
    total_shared = sum(int(np.prod(v.shape)) for v in shared.trainable_weights)
    assert copied == total_shared == sum(int(np.prod(v.shape)) for v in unshared.trainable_weights)


@pytest.mark.parametrize(
    "stride, partial, binarization",
    [(1, 1, "xnor"), (2, 2, "xnor"), (2, 1, "sign_scale"), (1, 2, "sign_scale")],
)
@pytest.mark.parametrize("space", SPACES)
def test_shared_computation_equals_unshared(space, stride, partial, binarization):
    edge_ops = _edge_ops(space)
    kwargs = dict(partial_channels=partial, binarization=binarization)
    unshared = MixedOp(C, stride, edge_ops, share_computation=False, **kwargs)
    shared = MixedOp(C, stride, edge_ops, share_computation=True, **kwargs)
    x = _input(seed=3)
    weights = [_weights(len(ops), seed=10 + e) for e, ops in enumerate(edge_ops)]
    unshared(x, weights, training=True)
    before = shared(x, weights, training=True)
    # Some ops really are shared or widened.
    assert len(shared.op_layers) < len(unshared.op_layers)
    # Kim et al.'s dense convolutions are widened; the DARTS space's are all separable.
    assert any(op in shared.op_layers for op in WIDENABLE) == (space == "bnas_kim")
    _copy_weights(unshared, shared, edge_ops, C // partial)
    expected = unshared(x, weights, training=True)
    got = shared(x, weights, training=True)
    assert len(got) == len(expected) == len(edge_ops)
    for e, (a, b) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=f"edge {e}")
    # The comparison is not vacuous: before the copy the outputs differed.
    assert not all(np.allclose(a.numpy(), b.numpy(), atol=1e-3) for a, b in zip(before, expected))


# ----------------------------------------------------------------------------- Zeroise
@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_zeroise_weight_counts_but_is_not_computed(share, stride):
    edge = ["none", "max_pool_3x3", "avg_pool_3x3"]
    mixed = MixedOp(C, stride, [edge], share_computation=share)
    assert not any(key.startswith("none") for key in mixed.op_layers)
    x = _input(7, seed=4)
    w = tf.constant([0.5, 0.2, 0.3])  # w_none stays in the softmax: no renormalisation
    (y,) = mixed(x, [w], training=True)
    max_pool = _standardize(tf.nn.max_pool2d(x, 3, stride, "SAME").numpy())
    avg_pool = _standardize(tf.nn.avg_pool2d(x, 3, stride, "SAME").numpy())
    np.testing.assert_allclose(y.numpy(), 0.2 * max_pool + 0.3 * avg_pool, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("share", [True, False])
def test_zeroise_weight_with_binary_conv(share):
    with_none = MixedOp(C, 1, [["none", "bin_conv_3x3"]], share_computation=share)
    without = MixedOp(C, 1, [["bin_conv_3x3"]], share_computation=share)
    x = _input(seed=5)
    without(x, [tf.constant([1.0])], training=True)
    with_none(x, [tf.constant([0.5, 0.5])], training=True)
    for dst, src in zip(with_none.trainable_weights, without.trainable_weights):
        dst.assign(src)
    (a,) = with_none(x, [tf.constant([0.7, 0.3])], training=True)
    (b,) = without(x, [tf.constant([1.0])], training=True)
    assert np.abs(b.numpy()).max() > 0
    np.testing.assert_allclose(a.numpy(), 0.3 * b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_edge_with_only_none_gives_zeros(stride, size, share):
    mixed = MixedOp(C, stride, [["none"], ["max_pool_3x3"]], share_computation=share)
    x = _input(size, seed=6)
    zero, pooled = mixed(x, [tf.constant([1.0]), tf.constant([1.0])], training=True)
    out = -(-size // stride)
    assert zero.shape == pooled.shape == (BATCH, out, out, C)
    np.testing.assert_array_equal(zero.numpy(), 0.0)
    assert np.abs(pooled.numpy()).max() > 0


@pytest.mark.parametrize("stride", [1, 2])
def test_edge_with_only_none_and_partial_channels_keeps_the_bypass(stride):
    mixed = MixedOp(C, stride, [["none"]], partial_channels=2)
    x = _input(seed=7)
    (y,) = mixed(x, [tf.constant([1.0])], training=True)
    rest = x[..., C // 2 :]
    if stride == 2:
        rest = tf.nn.max_pool2d(rest, 2, 2, "SAME")
    zeros = np.zeros(rest.shape, np.float32)
    expected = np_channel_shuffle(np.concatenate([zeros, rest.numpy()], axis=-1), 2)
    np.testing.assert_array_equal(y.numpy(), expected)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("edge_ops", [[], [["none"], []]])
def test_every_edge_needs_an_op(edge_ops):
    with pytest.raises(ValueError, match="every edge needs at least one candidate op"):
        MixedOp(C, 1, edge_ops)


def test_partial_channels_must_divide_channels():
    with pytest.raises(ValueError, match=r"K=3 must divide the channel count 8"):
        MixedOp(C, 1, [["none"]], partial_channels=3)
