"""The search cell: 2 input nodes, 4 intermediate nodes, 14 mixed edges.

Intermediate node ``i`` sums one mixed op per predecessor (DARTS):

```python
h_i = sum_{j < i} beta_{ij} * mixed_{ij}(h_j)
```

where ``beta`` is the edge normalization of PC-DARTS (softmax over the edges
entering a node; all ones without it). The cell output concatenates the
intermediate nodes and, with Kim et al.'s template, adds an inter-cell skip
connection from the previous cell (identity in a normal cell; BN then a 2x2
stride-2 convolution in a reduction cell). Input preprocessing is full precision
during the search: a 1x1 convolution, or a 3x3 stride-2 one when the previous
cell reduced.

With channel sampling, every edge's output is ``shuffle_K(concat(mixed, bypass))``
(PC-DARTS). The shuffle is one fixed channel permutation ``P`` for all edges of a
cell, so a node shuffles once instead of once per incoming edge, exactly:

```python
sum_j beta_ij P(concat(m_j, r_j)) = P(concat(sum_j beta_ij m_j, sum_j beta_ij r_j))
```

(``share_computation=False`` keeps the per-edge form, for tests and benchmarks).
"""

from __future__ import annotations

from bnas_tf.search.mixed_op import MixedOp, channel_shuffle

from collections.abc import Sequence

import tensorflow as tf

__all__ = ["SearchCell", "edge_inputs", "num_edges"]


def num_edges(steps: int = 4) -> int:
    """Edges of a cell with ``steps`` intermediate nodes: ``2 + 3 + ... + (steps + 1)``."""
    return sum(2 + i for i in range(steps))


def edge_inputs(steps: int = 4) -> list[tuple[int, int]]:
    """``(node, input)`` of every edge in alpha-row order; node 0 is the first intermediate node."""
    return [(node, j) for node in range(steps) for j in range(2 + node)]


def _relu_conv_bn(channels: int, kernel: int, stride: int, name: str) -> tf.keras.Sequential:
    return tf.keras.Sequential(
        [
            tf.keras.layers.ReLU(),
            tf.keras.layers.Conv2D(
                channels, kernel, strides=stride, padding="same", use_bias=False
            ),
            tf.keras.layers.BatchNormalization(center=False, scale=False),
        ],
        name=name,
    )


class SearchCell(tf.keras.layers.Layer):
    """One cell of the supernet.

    Args:
        channels: ``C`` of this cell (doubled already for a reduction cell).
        reduction: whether the edges from the input nodes have stride 2.
        reduction_prev: whether the previous cell reduced (input 0 is then larger).
        prev_channels: channels of the previous cell's output (input 1).
        edge_ops: the active op names of each of the 14 edges.
        inter_cell_skip: add Kim et al.'s skip connection from input 1.
        steps: intermediate nodes.
        multiplier: how many of them (the last) are concatenated into the output.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: bool,
        reduction_prev: bool,
        prev_channels: int,
        edge_ops: Sequence[Sequence[str]],
        binarization: str = "sign_scale",
        partial_channels: int = 1,
        inter_cell_skip: bool = True,
        steps: int = 4,
        multiplier: int = 4,
        share_computation: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(edge_ops) != num_edges(steps):
            raise ValueError(
                f"{self.name}: expected {num_edges(steps)} edges, got {len(edge_ops)}."
            )
        self.reduction = reduction
        self.partial_channels = partial_channels
        # Sum the (mixed, bypass) pairs of a node's edges, then shuffle once (module doc).
        self._node_shuffle = share_computation and partial_channels > 1
        self.steps = steps
        self.multiplier = multiplier
        self.preprocess0 = _relu_conv_bn(
            channels, 3 if reduction_prev else 1, 2 if reduction_prev else 1, "preprocess0"
        )
        self.preprocess1 = _relu_conv_bn(channels, 1, 1, "preprocess1")
        # One MixedOp per node, over the edges that leave it (see mixed_op.py).
        self._edge_node = tuple(node for node, _ in edge_inputs(steps))
        self._edges_from = tuple(
            tuple(e for e, (_, source) in enumerate(edge_inputs(steps)) if source == j)
            for j in range(steps + 1)
        )
        self.mixed_ops = []
        for j, edges in enumerate(self._edges_from):
            self.mixed_ops.append(
                MixedOp(
                    channels,
                    2 if reduction and j < 2 else 1,
                    [edge_ops[e] for e in edges],
                    binarization=binarization,
                    partial_channels=partial_channels,
                    share_computation=share_computation,
                    name=f"from_node_{j}",
                )
            )
        self.inter_cell_skip = inter_cell_skip
        out_channels = multiplier * channels
        if inter_cell_skip and reduction:
            self.skip = tf.keras.Sequential(
                [
                    tf.keras.layers.BatchNormalization(),
                    tf.keras.layers.Conv2D(out_channels, 2, strides=2, padding="same"),
                ],
                name="skip",
            )
        elif inter_cell_skip and prev_channels != out_channels:
            raise ValueError(
                f"{self.name}: the identity skip needs {out_channels} input channels, "
                f"the previous cell gives {prev_channels}."
            )

    def call(self, s0, s1, weights, betas=None, training=None):
        """``weights[e]``: op weights of edge ``e``; ``betas[e]``: its normalization weight."""
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        incoming = [[] for _ in range(self.steps)]
        for j in range(self.steps + 1):
            # State j is complete: run the mixed ops of every edge that leaves it.
            edges = self._edges_from[j]
            outputs = self.mixed_ops[j](
                states[j],
                [weights[e] for e in edges],
                training=training,
                shuffle=not self._node_shuffle,
            )
            for e, y in zip(edges, outputs):
                incoming[self._edge_node[e]].append((e, y))
            if j >= 1:
                # Node j - 1 has all its inputs (states 0..j) now.
                states.append(self._node_sum(incoming[j - 1], betas))
        out = tf.concat(states[-self.multiplier :], axis=-1)
        if self.inter_cell_skip:
            out = out + (self.skip(s1, training=training) if self.reduction else s1)
        return out

    def _node_sum(self, parts: list, betas) -> tf.Tensor:
        """``sum_e beta_e y_e`` over a node's ``(edge, y_e)``; with the node-level shuffle
        ``y_e`` is the pair ``(mixed, bypass)``, summed part by part, then shuffled."""

        def weighted(e, y):
            return y if betas is None else betas[e] * y

        if not self._node_shuffle:
            return tf.add_n([weighted(e, y) for e, y in parts])
        mixed = tf.add_n([weighted(e, m) for e, (m, _) in parts])
        bypass = tf.add_n([weighted(e, r) for e, (_, r) in parts])
        return channel_shuffle(tf.concat([mixed, bypass], axis=-1), self.partial_channels)
