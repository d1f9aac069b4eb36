r"""Mixed operations: the softmax-weighted candidate ops of supernet edges.

A mixed op computes the weighted sum of its candidate ops (DARTS):

$$
\bar o_e(x) = \sum_k w_{e,k}\, o_{e,k}(x), \qquad w_e = \operatorname{softmax}(\alpha_e).
$$

With channel sampling (PC-DARTS, used by Chen et al.'s BNAS), only the first
``C / K`` channels go through the candidates; the rest bypass them (max-pooled 2x2
on stride-2 edges) and the two parts are concatenated and channel-shuffled with
``K`` groups, so that another channel slice is sampled on the next edge:

$$
y_e = \operatorname{shuffle}_K\!\left(\left[\,\bar o_e(x_{:C/K}),\
    \operatorname{bypass}(x_{C/K:})\,\right]\right).
$$

``MixedOp`` evaluates *all the edges that leave one node at once*. They read
the same tensor, so several parts of their candidate ops are identical and are
computed once; the result is exactly that of one mixed op per edge:

* every binary convolution starts with the same BN(affine=False) + sign of the
  input (Kim et al.'s op order), shared by all ops of all the node's edges;
* parameter-free ops (pools, and their BN(affine=False) while searching) give
  the same output on every edge;
* a binary convolution of one kind on ``n`` edges is one convolution with ``n C``
  output filters, split afterwards: the quantizers scale per output filter, so
  the concatenated kernel binarizes exactly like ``n`` separate ones;
* the Zeroise op contributes ``w_none * 0`` and is never computed (its alpha
  still takes part in the softmax).
"""

from __future__ import annotations

from bnas_tf import ops as ops_lib
from bnas_tf.quantizers import Binarization, get_binarization

from collections.abc import Sequence

import larq as lq
import tensorflow as tf

__all__ = ["MixedOp", "channel_shuffle"]

# Ops whose layers are applied once per node and shared by its edges.
_PARAMETER_FREE = frozenset({"max_pool_3x3", "avg_pool_3x3"})
# Binary convolutions that can be widened to serve several edges (not separable).
_WIDENABLE = frozenset({"bin_conv_3x3", "bin_conv_5x5", "bin_dil_conv_3x3", "bin_dil_conv_5x5"})


def channel_shuffle(x: tf.Tensor, groups: int) -> tf.Tensor:
    """Interleave ``groups`` channel groups of an NHWC tensor (ShuffleNet, PC-DARTS).

    Channel ``g * (C / groups) + j`` moves to position ``j * groups + g``.
    """
    if groups == 1:
        return x
    shape = tf.shape(x)
    channels = x.shape[-1]
    x = tf.reshape(x, tf.stack([shape[0], shape[1], shape[2], groups, channels // groups]))
    x = tf.transpose(x, [0, 1, 2, 4, 3])
    return tf.reshape(x, tf.stack([shape[0], shape[1], shape[2], channels]))


class MixedOp(tf.keras.layers.Layer):
    """The mixed ops of the edges that leave one node (one edge: a plain DARTS mixed op).

    Args:
        channels: channels of the input and of every edge output.
        stride: 2 for the edges leaving an input node of a reduction cell.
        edge_ops: per outgoing edge, the candidate ops still active on it.
        binarization: a name (``xnor``, ``sign_scale``, ``pcnn``) or a
            [`Binarization`][bnas_tf.quantizers.Binarization].
        partial_channels: ``K``; ``1`` sends all channels through the ops (DARTS).
        share_computation: compute shared parts once (exact; ``False`` builds one
            branch per edge and op, the textbook form, for tests and benchmarks).

    Call with ``(x, weights)``, ``weights[e]`` a vector with one weight per active
    op of edge ``e``; returns the list of edge outputs. With channel sampling and
    ``shuffle=False`` each edge output is the unshuffled pair ``(mixed, bypass)``
    instead: the shuffle is a fixed channel permutation, so a node can sum the pairs of
    its incoming edges and shuffle once ([`SearchCell`][bnas_tf.search.cell.SearchCell]).
    """

    def __init__(
        self,
        channels: int,
        stride: int,
        edge_ops: Sequence[Sequence[str]],
        *,
        binarization: str | Binarization = "sign_scale",
        partial_channels: int = 1,
        share_computation: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not edge_ops or any(not ops for ops in edge_ops):
            raise ValueError(f"{self.name}: every edge needs at least one candidate op.")
        if channels % partial_channels:
            raise ValueError(
                f"partial_channels K={partial_channels} must divide the channel count {channels}."
            )
        self.channels = channels
        self.stride = stride
        self.edge_ops = [tuple(ops) for ops in edge_ops]
        self.partial_channels = partial_channels
        self.sampled_channels = channels // partial_channels
        self.share_computation = share_computation
        binarization = get_binarization(binarization)
        c = self.sampled_channels
        all_ops = sorted({op for ops in self.edge_ops for op in ops})
        # XNOR-Net's scaling map needs each convolution's real-valued input, so the
        # binarized input is not shared when it is on.
        self.shared_binary_input = (
            share_computation
            and not binarization.xnor_activation_scale
            and any(op in ops_lib.BINARY_CONV_OPS for op in all_ops)
        )
        if self.shared_binary_input:
            self.input_bn = tf.keras.layers.BatchNormalization(
                center=False, scale=False, name="input_bn"
            )
            # full precision (CP-NAS's parent): the shared input is the normalized one
            self.input_quantizer = lq.quantizers.get(binarization.input_quantizer) or tf.identity

        def build(op, width, name):
            shared = self.shared_binary_input and op in ops_lib.BINARY_CONV_OPS
            layers = ops_lib.op_layers(
                op, width, stride, binarization=binarization, affine=False, shared_input=shared
            )
            return tf.keras.Sequential(layers, name=name)

        # _branch["op/edge"] -> (layer key, channel slice); op_layers[key] computes it.
        self.op_layers = {}
        self._branch = {}
        for op in all_ops:
            edges = [e for e, ops in enumerate(self.edge_ops) if op in ops]
            if op == "none":
                continue
            if share_computation and op in _PARAMETER_FREE:
                self.op_layers[op] = build(op, c, op)
                self._branch.update({f"{op}/{e}": (op, None) for e in edges})
            elif share_computation and op in _WIDENABLE:
                self.op_layers[op] = build(op, c * len(edges), op)
                self._branch.update({f"{op}/{e}": (op, i) for i, e in enumerate(edges)})
            else:
                for e in edges:
                    key = f"{op}_edge{e}"
                    self.op_layers[key] = build(op, c, key)
                    self._branch[f"{op}/{e}"] = (key, None)
        if partial_channels > 1 and stride > 1:
            self.bypass_pool = tf.keras.layers.MaxPool2D(2, strides=2, padding="same")

    def call(self, inputs, weights, training=None, shuffle=True):
        x = inputs
        if self.partial_channels > 1:
            # tf.split, not slicing: the gradient of a slice is a zero-padded full tensor.
            x, rest = tf.split(
                x, [self.sampled_channels, self.channels - self.sampled_channels], axis=-1
            )
            if self.stride > 1:
                rest = self.bypass_pool(rest)
        binary_input = None
        if self.shared_binary_input:
            binary_input = self.input_quantizer(self.input_bn(x, training=training))
        computed = {}
        outputs = []
        for e, edge_ops in enumerate(self.edge_ops):
            out = None
            for index, op in enumerate(edge_ops):
                if op == "none":
                    continue
                key, part = self._branch[f"{op}/{e}"]
                if key not in computed:
                    shared = binary_input is not None and op in ops_lib.BINARY_CONV_OPS
                    y = self.op_layers[key](binary_input if shared else x, training=training)
                    # A widened conv's edges: one tf.split (its gradient is a concat; the
                    # gradient of each slice would be a zero-padded full-width tensor).
                    edges = y.shape[-1] // self.sampled_channels
                    computed[key] = y if part is None else tf.split(y, edges, axis=-1)
                y = computed[key] if part is None else computed[key][part]
                y = weights[e][index] * y
                out = y if out is None else out + y
            if out is None:  # only Zeroise is left on this edge
                out = tf.zeros_like(x[:, :: self.stride, :: self.stride, :])
            if self.partial_channels > 1:
                if not shuffle:
                    out = (out, rest)  # the node sums the pairs of its edges, then shuffles
                else:
                    out = channel_shuffle(tf.concat([out, rest], axis=-1), self.partial_channels)
            outputs.append(out)
        return outputs
