"""The search cell (:mod:`bnas_tf.search.cell`): the node-level channel shuffle is exact."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf.ops import search_space
from bnas_tf.search.cell import SearchCell, num_edges

import numpy as np
import pytest
import tensorflow as tf


@pytest.mark.parametrize("space", ["bnas_kim", "bnas_darts"])
@pytest.mark.parametrize("reduction", [False, True])
@pytest.mark.parametrize("k", [2, 4])
def test_one_shuffle_per_node_equals_one_per_edge(space, reduction, k):
    """sum_j beta_j P(concat(m_j, r_j)) == P(concat(sum_j beta_j m_j, sum_j beta_j r_j))."""
    ops = list(search_space(space))
    channels = 8
    cell = SearchCell(
        channels,
        reduction=reduction,
        reduction_prev=False,
        prev_channels=4 * channels,
        edge_ops=[ops] * num_edges(),
        partial_channels=k,
        inter_cell_skip=reduction,  # a normal cell's identity skip needs 4C input channels
    )
    rng = np.random.default_rng(0)
    s0 = tf.constant(rng.standard_normal((2, 8, 8, 4 * channels)), tf.float32)
    s1 = tf.constant(rng.standard_normal((2, 8, 8, 4 * channels)), tf.float32)
    weights = [
        tf.nn.softmax(tf.constant(rng.standard_normal(len(ops)), tf.float32))
        for _ in range(num_edges())
    ]
    betas = tf.constant(rng.uniform(0.1, 1.0, num_edges()), tf.float32)
    assert cell._node_shuffle
    node_level = cell(s0, s1, weights, betas, training=True)
    cell._node_shuffle = False  # the same weights, the PC-DARTS form: shuffle every edge
    edge_level = cell(s0, s1, weights, betas, training=True)
    assert (
        node_level.shape
        == edge_level.shape
        == (2, 4 if reduction else 8, 4 if reduction else 8, 4 * channels)
    )
    np.testing.assert_allclose(node_level.numpy(), edge_level.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(node_level.numpy(), 0.0)


def test_no_channel_sampling_keeps_the_plain_sum():
    cell = SearchCell(
        8,
        reduction=False,
        reduction_prev=False,
        prev_channels=32,
        edge_ops=[["max_pool_3x3", "bin_conv_3x3"]] * num_edges(),
        partial_channels=1,
    )
    assert not cell._node_shuffle


@pytest.mark.parametrize("reduction", [False, True])
def test_inter_cell_skip_adds_the_previous_cell_output(reduction):
    """The cell output with the skip minus the output without it is ``s1`` itself (normal
    cell: identity) or ``BN + conv2x2/2 (s1)`` (reduction cell), not ``s0``."""
    channels = 8
    cell = SearchCell(
        channels,
        reduction=reduction,
        reduction_prev=False,
        prev_channels=4 * channels,
        edge_ops=[["max_pool_3x3", "bin_conv_3x3"]] * num_edges(),
        inter_cell_skip=True,
    )
    rng = np.random.default_rng(0)
    s0 = tf.constant(rng.standard_normal((2, 8, 8, 4 * channels)), tf.float32)
    s1 = tf.constant(rng.standard_normal((2, 8, 8, 4 * channels)), tf.float32)
    weights = [tf.constant([0.3, 0.7])] * num_edges()
    with_skip = cell(s0, s1, weights, training=False)
    cell.inter_cell_skip = False
    without = cell(s0, s1, weights, training=False)
    expected = cell.skip(s1, training=False) if reduction else s1
    np.testing.assert_allclose(
        (with_skip - without).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(expected.numpy(), 0.0)
