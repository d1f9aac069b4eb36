r"""What a searched network costs: per op, for the whole network, and in expectation over alpha.

Costs are counted as [`larq.models.summary`][larq.models.summary] counts them: **OPs** = binary
MACs / 64 + float MACs (the convention of Bi-Real Net, BATS and NAS-BNN) and **memory** in KiB
with 1-bit weights at 1 bit. Every op of a cell is a separate set of layers of the final network
([`bnas_tf.network.build_network`][bnas_tf.network.build_network]), so the network's cost is the
sum of its edges' op costs and a fixed part (stem, each cell's preprocessing and inter-cell skip,
classifier):

$$
\text{cost}(G) = F + \sum_{t \in \{normal, reduce\}} \sum_{(o, e) \in G_t} T_t[e, o],
\qquad T_t[e, o] = \sum_{\text{cells } i \text{ of type } t} c(o, C_i, H_{i,e}, s_{i,e})
$$

with ``c`` the cost of op ``o`` at the channels, input size and stride it has at cell ``i``'s
edge ``e`` (measured by building the op alone). One exception to a constant ``F``: a cell input
that no edge of the genotype reads (all its edges are Zeroise) is not computed, so its
preprocessing convolution is not part of the network; ``exact`` leaves it out, the expectation
counts it (an upper bound by that convolution). The supernet's **expected cost** replaces the
genotype's choices by the architecture's probabilities, differentiably:

$$
\mathbb{E}[\text{cost}] = F + \sum_t \sum_e q_e \sum_o p_{e,o}\, T_t[e, o],
$$

``p`` the ops' softmax on each edge (0 for ops the reduction removed) and ``q_e`` the edge's share
of the two inputs each node keeps: ``2 softmax(beta)`` over the node's incoming edges with edge
normalization, else ``2 / n`` for its ``n`` incoming edges (without betas, which edges a node
keeps is not in the architecture parameters). With one-hot ``p`` and ``q`` it is the exact cost of
the derived genotype.

    >>> from bnas_tf.genotype import BNAS_A
    >>> from bnas_tf.network import build_network
    >>> model = CostModel("bnas_kim", layers=3, init_channels=8, input_shape=(28, 28, 1))
    >>> net = build_network(BNAS_A, layers=3, init_channels=8, input_shape=(28, 28, 1))
    >>> abs(model.exact(BNAS_A)["ops"] - network_cost(net)["ops"]) < 1e-6 * network_cost(net)["ops"]
    True
"""

from __future__ import annotations

from bnas_tf import ops as ops_lib
from bnas_tf.genotype import Genotype
from bnas_tf.quantizers import Binarization, get_binarization
from bnas_tf.search.cell import edge_inputs, num_edges

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["METRICS", "op_cost", "op_model", "network_cost", "CostModel"]

#: The costs a budget may bound: ``ops`` (binary MACs / 64 + float MACs), ``memory_kib``.
METRICS = ("ops", "memory_kib")
CELL_TYPES = ("normal", "reduce")


def _summary_cost(model: tf.keras.Model) -> dict[str, float]:
    from bnas_tf.export import model_summary

    summary = model_summary(model)
    return {
        "ops": summary["macs_1bit"] / 64 + summary["macs_32bit"],
        "memory_kib": summary["memory_kib"],
    }


#: What cost models have counted, per network: the op tables, preprocessing and fixed part
#: (``CostModel``), and whole genotypes' networks (``CostModel.exact_at``). Each count builds
#: Keras layers (about 1 s per network, 3-4 s per width's tables on 2 cores), and a budgeted
#: search's end asks for the same widths again (``land_target``, ``fit_width``, ``rederive``).
_TABLES: dict[tuple, tuple] = {}
_NETWORK_COSTS: dict[tuple, dict[str, float]] = {}
_REMEMBERED = 256


def _remember(cache: dict, key: tuple, value) -> None:
    """``cache[key] = value``, forgetting the oldest entry beyond ``_REMEMBERED``."""
    if len(cache) >= _REMEMBERED:
        del cache[next(iter(cache))]
    cache[key] = value


@functools.lru_cache(maxsize=1024)
def _preprocess_cost(
    in_channels: int, size: int, channels: int, kernel: int, stride: int, binarization
) -> dict[str, float]:
    from bnas_tf.network import _binary_conv

    inputs = tf.keras.Input((size, size, in_channels))
    outputs = _binary_conv(inputs, channels, kernel, stride, binarization, "pre")
    return _summary_cost(tf.keras.Model(inputs, outputs))


def op_model(
    op: str, channels: int, size: int, stride: int = 1, binarization="sign_scale"
) -> tf.keras.Model:
    """Op ``op`` alone as a model, ``channels -> channels`` on a ``size x size`` input with
    ``stride``, built as the final network builds it (what the cost tables count and
    ``benchmarks/op_latency.py`` times)."""
    inputs = tf.keras.Input((size, size, channels))
    outputs = ops_lib.apply_op(
        inputs, op, channels, stride, binarization=get_binarization(binarization)
    )
    return tf.keras.Model(inputs, outputs, name=f"{op}_c{channels}_s{size}_stride{stride}")


@functools.lru_cache(maxsize=4096)
def _op_cost(op: str, channels: int, size: int, stride: int, binarization: Binarization):
    if op == "none":
        return {"ops": 0.0, "memory_kib": 0.0}
    return _summary_cost(op_model(op, channels, size, stride, binarization))


def op_cost(
    op: str, channels: int, size: int, stride: int = 1, binarization="sign_scale"
) -> dict[str, float]:
    """``{"ops", "memory_kib"}`` of op ``op`` alone, ``channels -> channels`` on a ``size x size``
    input with ``stride`` (as the final network builds it; cached)."""
    return dict(_op_cost(op, int(channels), int(size), int(stride), get_binarization(binarization)))


def network_cost(model: tf.keras.Model) -> dict[str, float]:
    """``{"ops", "memory_kib"}`` of a whole model, as ``larq.models.summary`` counts them."""
    return _summary_cost(model)


class CostModel:
    """The cost of every op at every edge of the final network, and the network's fixed part.

    Args:
        search_space: the ops' space (``bnas_tf.ops.SEARCH_SPACES``).
        layers, init_channels, input_shape, stem, inter_cell_skip, binarization, num_classes:
            the final network (``bnas_tf.network.build_network``'s arguments) the budget is for.
        steps: intermediate nodes per cell.

    Counting builds each op alone at each of the network's sizes (3-4 s per width on 2 cores);
    cost models of the same network share one count, whose tables are read-only, and
    ``exact_at`` builds a genotype's network at a width once.
    """

    def __init__(
        self,
        search_space: str,
        *,
        layers: int,
        init_channels: int,
        input_shape: Sequence[int],
        num_classes: int = 10,
        stem: str = "cifar",
        inter_cell_skip: bool = True,
        binarization: str | Binarization = "sign_scale",
        steps: int = 4,
    ):
        self.search_space = search_space
        self.op_names = ops_lib.search_space(search_space)
        self.layers, self.init_channels = layers, init_channels
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.stem, self.inter_cell_skip = stem, inter_cell_skip
        self.binarization = get_binarization(binarization)
        self.steps, self.edges = steps, num_edges(steps)
        key = self._key()
        if key not in _TABLES:
            _remember(_TABLES, key, self._count())
        self.tables, self.preprocess, self.fixed = _TABLES[key]

    def _network_args(self, init_channels: int) -> dict[str, Any]:
        """The final network's ``build_network`` arguments (and this class's) at
        ``init_channels``."""
        return dict(
            layers=self.layers,
            init_channels=int(init_channels),
            num_classes=self.num_classes,
            input_shape=self.input_shape,
            stem=self.stem,
            binarization=self.binarization,
            inter_cell_skip=self.inter_cell_skip,
        )

    def _key(self) -> tuple:
        return (self.search_space, self.steps, *self._network_args(self.init_channels).values())

    def _count(self) -> tuple[dict, dict, dict[str, float]]:
        """The op tables, the preprocessing costs and the fixed part, counted from this model's
        network (read-only: models of the same network share them)."""
        self.tables = {
            t: {m: np.zeros((self.edges, len(self.op_names))) for m in METRICS} for t in CELL_TYPES
        }
        # per cell type and input (0, 1): the preprocessing convolutions' summed cost
        self.preprocess = {t: [dict.fromkeys(METRICS, 0.0) for _ in range(2)] for t in CELL_TYPES}
        height, stem, init_channels = self.input_shape[0], self.stem, self.init_channels
        if stem == "imagenet":  # three stride-2 convolutions: s0 at 1/4, s1 at 1/8, C channels
            s0 = (init_channels, -(-height // 4))
            s1 = (init_channels, -(-height // 8))
            reduction_prev = True
        else:
            s0 = s1 = (3 * init_channels, height)
            reduction_prev = False
        size, channels = s1[1], init_channels
        for index in range(self.layers):
            reduction = index in (self.layers // 3, 2 * self.layers // 3)
            if reduction:
                channels *= 2
            cell = "reduce" if reduction else "normal"
            kernel, stride0 = (3, 2) if reduction_prev else (1, 1)
            pre = (
                _preprocess_cost(s0[0], s0[1], channels, kernel, stride0, self.binarization),
                _preprocess_cost(s1[0], s1[1], channels, 1, 1, self.binarization),
            )
            for j in range(2):
                for m in METRICS:
                    self.preprocess[cell][j][m] += pre[j][m]
            out_size = -(-size // 2) if reduction else size
            for e, (_, j) in enumerate(edge_inputs(self.steps)):
                stride = 2 if reduction and j < 2 else 1
                at = size if j < 2 else out_size
                for k, op in enumerate(self.op_names):
                    cost = op_cost(op, channels, at, stride, self.binarization)
                    for m in METRICS:
                        self.tables[cell][m][e, k] += cost[m]
            s0, s1, reduction_prev = s1, (4 * channels, out_size), reduction
            size = out_size
        for table in self.tables.values():
            for array in table.values():
                array.setflags(write=False)
        return self.tables, self.preprocess, self._fixed()

    def _network_cost(self, genotype: Genotype, init_channels: int) -> dict[str, float]:
        """``network_cost`` of the final network of ``genotype`` at ``init_channels``, built
        (once: remembered per network)."""
        args = self._network_args(init_channels)
        key = (genotype, *args.values())
        if key not in _NETWORK_COSTS:
            from bnas_tf.network import build_network

            _remember(_NETWORK_COSTS, key, network_cost(build_network(genotype, **args)))
        return dict(_NETWORK_COSTS[key])

    @staticmethod
    def used_inputs(edges) -> set[int]:
        """The cell inputs (0, 1) a cell's edges read: a non-Zeroise edge's input, or the input of
        a node whose two edges are Zeroise (its zero is taken from the last one's input)."""
        used = set()
        for node in range(len(edges) // 2):
            pair = edges[2 * node : 2 * node + 2]
            terms = [j for op, j in pair if op != "none"]
            used.update(terms or [pair[-1][1]])
        return used & {0, 1}

    def edge_cost(self, genotype: Genotype) -> dict[str, float]:
        """The genotype's edges' op costs over the network, with the preprocessing of the cell
        inputs they read."""
        total = dict.fromkeys(METRICS, 0.0)
        for cell in CELL_TYPES:
            for j in self.used_inputs(getattr(genotype, cell)):
                for m in METRICS:
                    total[m] += self.preprocess[cell][j][m]
            for position, (op, j) in enumerate(getattr(genotype, cell)):
                e = edge_inputs(self.steps).index((position // 2, j))  # two edges per node
                for m in METRICS:
                    total[m] += self.tables[cell][m][e, self.op_names.index(op)]
        return total

    def _fixed(self) -> dict[str, float]:
        op = next(o for o in self.op_names if o != "none")
        cells = tuple((op, j) for node in range(self.steps) for j in (0, 1))
        concat = tuple(range(2, 2 + self.steps))
        genotype = Genotype(cells, concat, cells, concat, search_space=self.search_space)
        whole = self._network_cost(genotype, self.init_channels)
        edges = self.edge_cost(genotype)
        return {m: whole[m] - edges[m] for m in METRICS}

    def exact(self, genotype: Genotype) -> dict[str, float]:
        """``{"ops", "memory_kib"}`` of the final network of ``genotype`` (fixed part + edges)."""
        edges = self.edge_cost(genotype)
        return {m: self.fixed[m] + edges[m] for m in METRICS}

    def at_width(self, init_channels: int) -> CostModel:
        """The same final network's cost model at another width (``init_channels``); this one
        at its own."""
        if int(init_channels) == self.init_channels:
            return self
        return CostModel(self.search_space, steps=self.steps, **self._network_args(init_channels))

    def exact_at(self, genotype: Genotype, init_channels: int) -> dict[str, float]:
        """``{"ops", "memory_kib"}`` of the final network of ``genotype`` at any width: at this
        model's own, ``exact``; at another, the network built at ``init_channels`` and counted
        (the tables are for this width)."""
        if int(init_channels) == self.init_channels:
            return self.exact(genotype)
        return self._network_cost(genotype, init_channels)

    def floor(self, metric: str = "ops") -> float:
        """The network without its edges' ops: the fixed part and every cell input's
        preprocessing (what a cell of free ops costs; an upper bound when an input goes unread)."""
        return self.fixed[metric] + sum(p[metric] for t in CELL_TYPES for p in self.preprocess[t])

    def edge_shares(self, betas: tf.Tensor | None) -> tf.Tensor:
        """``q_e``: per edge, its expected share of the two inputs its node keeps."""
        inputs = edge_inputs(self.steps)
        if betas is None:
            counts = [sum(1 for n, _ in inputs if n == node) for node, _ in inputs]
            return tf.constant([2.0 / c for c in counts])
        parts, start = [], 0
        for node in range(self.steps):
            parts.append(2.0 * tf.nn.softmax(betas[start : start + 2 + node]))
            start += 2 + node
        return tf.concat(parts, axis=0)

    def expected(
        self,
        probabilities: Mapping[str, tf.Tensor],
        betas: Mapping[str, tf.Tensor | None] | None = None,
        metric: str = "ops",
    ) -> tf.Tensor:
        """``E[cost]`` (see the module docstring), differentiable in ``probabilities`` (per cell
        type, ``[edges, ops]``) and ``betas`` (per cell type, ``[edges]`` raw edge parameters or
        ``None``)."""
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}.")
        total = tf.constant(self.floor(metric), tf.float32)
        for cell in CELL_TYPES:
            table = tf.constant(self.tables[cell][metric], tf.float32)
            q = self.edge_shares(None if betas is None else betas.get(cell))
            per_edge = tf.reduce_sum(tf.cast(probabilities[cell], tf.float32) * table, axis=1)
            total += tf.reduce_sum(q * per_edge)
        return total

    def supernet_expected(self, net, metric: str = "ops") -> tf.Tensor:
        """``expected`` of a [`Supernet`][bnas_tf.search.supernet.Supernet]'s current alphas
        (and betas)."""
        if tuple(net.op_names) != tuple(self.op_names):
            raise ValueError(
                f"The supernet searches {net.search_space!r}, the cost model {self.search_space!r}."
            )
        probabilities = {cell: net.op_probabilities(cell) for cell in CELL_TYPES}
        betas = {cell: net.beta(cell) for cell in CELL_TYPES}
        return self.expected(probabilities, betas, metric)
