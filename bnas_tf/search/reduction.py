"""Performance-based operation space reduction (Chen et al., BNAS, AAAI 2020).

Chen, Zhuo, Zhang, Doermann, *Binarized Neural Architecture Search*, AAAI 2020,
arXiv:1911.10862, search with PC-DARTS (Xu et al., *PC-DARTS: Partial Channel
Connections for Memory-Efficient Architecture Search*, ICLR 2020) and shrink the
space while searching: in every *stage* each edge loses its worst op, until one op
per edge is left. One stage:

1. train the supernet of the current op space (weights and alphas, as PC-DARTS);
2. on each edge, the half of the active ops with the *lower* alpha form
   ``O_smaller`` (the ops whose fate is decided by performance);
3. for ``T`` rounds, sample architectures that take one op of ``O_smaller`` per
   edge, drawn without replacement, evaluate each with the shared supernet
   weights, and credit its accuracy to every op it used;
4. likelihood of op ``k`` on an edge: ``softmax`` over ``O_smaller`` of the mean
   accuracy of the samples that used ``k``; each op outside ``O_smaller`` gets
   ``(max + mean) / 2`` of those likelihoods;
5. running score ``s_k <- s_k / 2 + likelihood_k``;
6. drop the op with the lowest running score from every edge.

Usage:

```python
from bnas_tf.search.driver import SearchConfig
from bnas_tf.search.reduction import ReductionConfig
from bnas_tf.search.reduction_search import run_reduction_search
config = SearchConfig(method="reduction", search_space="bnas_darts", partial_channels=4,
                      entropy_lambda=0.0, reduction=ReductionConfig(stage_epochs=5))
result = run_reduction_search(config, "runs/chen")
```

Where the paper leaves a gap
----------------------------
Only the figure, its caption and the text describe the procedure (Algorithm 1 is
not public in text form); these choices fill the gaps and each can be changed:

* **Size of O_smaller**: ``floor(n / 2)`` of the ``n`` active ops of an edge, at
  least 1 (``ReductionConfig.smaller_rounding="ceil"`` takes ``ceil(n / 2)``).
  With one op in ``O_smaller`` the softmax is 1 and the ops outside get
  ``(1 + 1) / 2 = 1``: that edge's stage is uninformative and its removal is
  decided by the running scores of the earlier stages (then by alpha, see
  below). A stage where *every* edge has a single-op ``O_smaller`` evaluates
  nothing (the likelihoods do not depend on any accuracy).
* **Sampling**: one *round* is ``m = max_e |O_smaller_e|`` architectures (over both
  cell types); each edge shuffles its ``O_smaller`` and takes the ops in that order,
  cycling when it has fewer than ``m``, so every op of ``O_smaller`` is used at least
  once per round on every edge (exactly once on the edges with ``m`` ops) and the
  uses are as even as possible. ``T = samples_per_op`` rounds.
* **Evaluation**: a sampled architecture keeps all 14 edges of each cell (no top-2
  pruning while reducing) with one op per edge, and runs with the *shared supernet
  weights*: alpha is temporarily replaced by a one-hot logit (0 for the sampled op,
  -1e9 for the other active ops), so the supernet's forward computes exactly the
  single-op path (the other ops are multiplied by an exact 0); the
  edge-normalization betas stay as trained. BatchNormalization uses *batch
  statistics* (``training=True``; ``ReductionConfig.bn_mode="batch"``) because the
  moving statistics were gathered on the mixture of all ops, not on one path
  (one-shot methods such as SPOS, Guo et al. 2020, recompute them per path); every
  variable, moving statistics included, is restored afterwards, so the evaluation
  changes nothing. ``bn_mode="moving"`` uses the moving statistics instead.
  Data: the first ``eval_batches`` batches of the *architecture* half of the
  search split (PC-DARTS's validation queue), the same batches for every sample
  and stage; the halves are fixed for the whole reduction search (each epoch
  reshuffles them with a seed), so the weights never train on these images
  (the alphas do, as in PC-DARTS).
* **Temperature**: ``likelihood = softmax(mean_accuracy / temperature)``. The paper
  writes a plain softmax (temperature 1). Accuracies lie in ``[0, 1]``, so with
  temperature 1 a difference of a few points barely moves the likelihoods away
  from uniform; a lower temperature (e.g. 0.05) lets the current stage outweigh the
  history ``s / 2``. The ranking *within* ``O_smaller`` does not depend on it.
* **Ties** when removing: lowest running score, then lowest alpha (of the supernet
  just trained), then op order in the search space.
* **Edges with one op left** take no further part (no score update, no removal).
* **Final cell**: a DARTS cell keeps two incoming edges per node. When every edge
  has one op, the two edges of each node whose remaining op has the highest
  running score are kept (the performance evidence the method collected); ties are
  broken by DARTS' edge strength in the last trained supernet (probability of the
  remaining op times the normalized beta) and then by edge order. With
  ``allow_none=False`` an edge left with ``none`` ranks below every other edge.
* **Stage length**: ``stage_epochs`` epochs per stage (the paper gives the total
  search cost, not the split); a space of ``n`` ops per edge takes ``n - 1`` stages.
  The cosine learning-rate schedule runs over the whole reduction search
  (``stages * stage_epochs`` epochs); each stage builds a new, smaller supernet that
  inherits every weight of the previous one
  ([`transfer_weights`][bnas_tf.search.transfer.transfer_weights]) and starts with fresh
  optimizer slots (momentum, Adam moments).

The staged search that drives this state (training each stage, weight transfer, checkpoints) is
[`bnas_tf.search.reduction_search.run_reduction_search`][bnas_tf.search.reduction_search.run_reduction_search];
the weight transfer between stage supernets is
[`bnas_tf.search.transfer.transfer_weights`][bnas_tf.search.transfer.transfer_weights].
"""

from __future__ import annotations

from bnas_tf import ops as ops_lib
from bnas_tf.genotype import Genotype
from bnas_tf.search.cell import edge_inputs, num_edges
from bnas_tf.search.supernet import CELL_TYPES, Supernet
from bnas_tf.settings import one_of, positive, setting, validate

import dataclasses
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "ReductionConfig",
    "OperationSpaceReduction",
    "single_path_alphas",
    "evaluate_architectures",
]

_BLOCKED = -1e9  # logit of the active ops not sampled: softmax gives them exactly 0


def _positive_int(value) -> str | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1:
        return None
    return f"must be a positive integer, got {value!r}."


@dataclasses.dataclass
class ReductionConfig:
    """Settings of the operation space reduction (see the module docstring); its flags keep
    these names (``--reduction_temperature`` for ``temperature``)."""

    stage_epochs: int = setting(
        1, "Supernet training epochs per reduction stage.", check=_positive_int
    )
    samples_per_op: int = setting(
        2,
        "T: rounds of architecture sampling per stage; each round uses every op of O_smaller "
        "(cp_nas: of the edge) at least once on every edge.",
        check=_positive_int,
    )
    eval_batches: int = setting(
        2, "Held-out batches on which each sampled architecture is evaluated.", check=_positive_int
    )
    temperature: float = setting(
        1.0,
        "Temperature of the softmax over the sampled ops' mean accuracies (1: the paper's plain "
        "softmax).",
        check=positive,
        flag="reduction_temperature",
    )
    bn_mode: str = setting(
        "batch",
        "Batch norm while evaluating a sample: batch (batch statistics) or moving (the "
        "supernet's moving statistics).",
        check=one_of(("batch", "moving")),
    )
    smaller_rounding: str = setting(
        "floor",
        "floor or ceil of n / 2 for the size of O_smaller (at least 1).",
        check=one_of(("floor", "ceil")),
    )

    def validate(self) -> ReductionConfig:
        return validate(self)


def _steps_for(edges: int) -> int:
    steps = 0
    while num_edges(steps) < edges:
        steps += 1
    if num_edges(steps) != edges:
        raise ValueError(f"{edges} edges is not the edge count of a DARTS cell (2, 5, 9, 14, ...).")
    return steps


def _alpha_table(source, cell: str) -> np.ndarray:
    """Per edge, a value per op (alpha or its softmax) from a supernet or a mapping."""
    if isinstance(source, Supernet):
        return source.op_probabilities(cell).numpy()
    return np.asarray(source[cell], dtype=np.float64)


class OperationSpaceReduction:
    """The state of a reduction search: active ops, running scores, removal log.

    Args:
        op_names: the ops of the search space, in alpha-column order.
        edges: edges per cell (14 for a DARTS cell).
        config: ``ReductionConfig``.
        seed: seed of the architecture sampling.
        active_ops: the starting op space (default: every op on every edge).
        search_space: the space's name, written into the genotype (default: the
            space of ``bnas_tf.ops.SEARCH_SPACES`` with exactly ``op_names``).
    """

    def __init__(
        self,
        op_names: Sequence[str],
        edges: int,
        config: ReductionConfig | None = None,
        seed: int = 0,
        *,
        active_ops: Mapping[str, Sequence[Sequence[str]]] | None = None,
        search_space: str | None = None,
    ):
        self.op_names = tuple(op_names)
        if len(set(self.op_names)) != len(self.op_names) or not self.op_names:
            raise ValueError(f"op_names must be distinct and non-empty, got {self.op_names}.")
        self.edges = int(edges)
        self.steps = _steps_for(self.edges)
        self.config = (config or ReductionConfig()).validate()
        if search_space is None:
            matches = [n for n, o in ops_lib.SEARCH_SPACES.items() if tuple(o) == self.op_names]
            search_space = matches[0] if matches else None
        self.search_space = search_space
        self.stage = 0
        self.removals: list[dict[str, Any]] = []
        self._rng = np.random.default_rng(seed)
        self._alphas: dict[str, np.ndarray] | None = None
        if active_ops is None:
            active_ops = {cell: [self.op_names] * self.edges for cell in CELL_TYPES}
        self._active = self._checked_ops(active_ops)
        self.scores = {
            cell: [{op: 0.0 for op in ops} for ops in self._active[cell]] for cell in CELL_TYPES
        }
        self._bounds: list[tuple] = []

    # ------------------------------------------------------------------ structure
    def _checked_ops(self, active_ops) -> dict[str, list[list[str]]]:
        checked = {}
        for cell in CELL_TYPES:
            edges = [list(ops) for ops in active_ops[cell]]
            if len(edges) != self.edges:
                raise ValueError(
                    f"active_ops[{cell!r}] has {len(edges)} edges, expected {self.edges}."
                )
            for e, ops in enumerate(edges):
                if (
                    not ops
                    or len(set(ops)) != len(ops)
                    or any(op not in self.op_names for op in ops)
                ):
                    raise ValueError(
                        f"active_ops[{cell!r}] edge {e}: {ops} is not a non-empty set of "
                        f"ops of {self.op_names}."
                    )
            # Keep the alpha-column order, as the supernet does.
            checked[cell] = [sorted(ops, key=self.op_names.index) for ops in edges]
        return checked

    @property
    def active_ops(self) -> dict[str, list[list[str]]]:
        """``{"normal": [[op, ...] x edges], "reduce": [...]}``, a copy."""
        return {cell: [list(ops) for ops in self._active[cell]] for cell in CELL_TYPES}

    @property
    def done(self) -> bool:
        """Whether every edge of both cell types has exactly one op left."""
        return all(len(ops) == 1 for cell in CELL_TYPES for ops in self._active[cell])

    @property
    def stages_left(self) -> int:
        """Stages still to run: one op leaves each edge per stage."""
        return max(len(ops) for cell in CELL_TYPES for ops in self._active[cell]) - 1

    def smaller_size(self, n: int) -> int:
        """``|O_smaller|`` of an edge with ``n`` active ops: half, rounded, at least 1."""
        half = n // 2 if self.config.smaller_rounding == "floor" else -(-n // 2)
        return max(1, half)

    # ------------------------------------------------------------------ one stage
    def o_smaller(self, source) -> dict[str, list[list[str]]]:
        """Per cell and edge, the ``smaller_size(n)`` active ops with the lowest alpha.

        ``source``: the supernet just trained (its ``op_probabilities``; it must have
        this reduction's active ops) or a mapping ``cell -> [edges, len(op_names)]``
        array of alphas or probabilities. Ties go to the op earlier in the space.
        The source is remembered for the alpha tie-break of ``remove_worst``.
        """
        if isinstance(source, Supernet):
            same = tuple(source.op_names) == self.op_names and all(
                [set(ops) for ops in source.active_ops[cell]]
                == [set(ops) for ops in self._active[cell]]
                for cell in CELL_TYPES
            )
            if not same:
                raise ValueError("The supernet's op space is not this reduction's active ops.")
        alphas = {cell: _alpha_table(source, cell) for cell in CELL_TYPES}
        for cell, table in alphas.items():
            if table.shape != (self.edges, len(self.op_names)):
                raise ValueError(
                    f"alphas[{cell!r}] has shape {table.shape}, "
                    f"expected {(self.edges, len(self.op_names))}."
                )
        self._alphas = alphas
        result = {}
        for cell in CELL_TYPES:
            result[cell] = []
            for e, ops in enumerate(self._active[cell]):
                ranked = sorted(
                    ops,
                    key=lambda op: (
                        alphas[cell][e, self.op_names.index(op)],
                        self.op_names.index(op),
                    ),
                )
                chosen = set(ranked[: self.smaller_size(len(ops))])
                result[cell].append([op for op in ops if op in chosen])
        return result

    def sample_architectures(
        self,
        o_smaller: Mapping[str, Sequence[Sequence[str]]],
        rng: np.random.Generator | None = None,
    ) -> list[dict[str, list[str]]]:
        """``T`` rounds of ``m = max |O_smaller_e|`` samples, each one op per edge per cell.

        In a round every edge shuffles its ``O_smaller`` and uses its ops in that
        order, cycling when it has fewer than ``m`` (so each op is used at least once
        per round, exactly once on the edges with ``m`` ops). Returns a list of
        ``{"normal": [op x edges], "reduce": [...]}``.
        """
        rng = self._rng if rng is None else rng
        m = max(len(ops) for cell in CELL_TYPES for ops in o_smaller[cell])
        samples = []
        for _ in range(self.config.samples_per_op):
            columns = {}
            for cell in CELL_TYPES:
                columns[cell] = []
                for ops in o_smaller[cell]:
                    order = [ops[i] for i in rng.permutation(len(ops))]
                    columns[cell].append([order[i % len(order)] for i in range(m)])
            for i in range(m):
                samples.append({cell: [col[i] for col in columns[cell]] for cell in CELL_TYPES})
        return samples

    def evaluate_samples(
        self, net: Supernet, samples: Sequence[Mapping[str, Sequence[str]]], batches
    ) -> list[float]:
        """Accuracy of each sample on ``batches`` with the supernet's shared weights.

        Every variable of ``net`` (alphas, weights, BN moving statistics) is
        restored exactly afterwards, even on error. See ``evaluate_architectures``.
        """
        return [
            float(a)
            for a in evaluate_architectures(
                net, samples, batches, training=self.config.bn_mode == "batch"
            )
        ]

    def evaluate_sample(self, net: Supernet, sample: Mapping[str, Sequence[str]], batches) -> float:
        """Accuracy of one sampled architecture (see ``evaluate_samples``)."""
        return self.evaluate_samples(net, [sample], batches)[0]

    def likelihoods(
        self,
        o_smaller: Mapping[str, Sequence[Sequence[str]]],
        samples: Sequence[Mapping[str, Sequence[str]]],
        accuracies: Sequence[float],
    ) -> dict[str, list[dict[str, float]]]:
        """Per cell and edge (with more than one active op), the likelihood of each active op.

        ``softmax(mean accuracy / temperature)`` over ``O_smaller``; each op outside
        it gets ``(max + mean) / 2`` of those. A single-op ``O_smaller`` needs no
        sample (its likelihood is 1). Edges with one active op get ``{}``.
        """
        if len(samples) != len(accuracies):
            raise ValueError(f"{len(samples)} samples but {len(accuracies)} accuracies.")
        result = {}
        for cell in CELL_TYPES:
            result[cell] = []
            for e, active in enumerate(self._active[cell]):
                small = list(o_smaller[cell][e])
                if len(active) == 1:
                    result[cell].append({})
                    continue
                if not small or any(op not in active for op in small):
                    raise ValueError(
                        f"{cell} edge {e}: O_smaller {small} is not a subset of {active}."
                    )
                if len(small) == 1:
                    lik = np.ones(1)
                else:
                    used: dict[str, list[float]] = {op: [] for op in small}
                    for sample, acc in zip(samples, accuracies):
                        op = sample[cell][e]
                        if op not in used:
                            raise ValueError(
                                f"{cell} edge {e}: a sample uses {op!r}, not in O_smaller {small}."
                            )
                        used[op].append(float(acc))
                    unused = [op for op, accs in used.items() if not accs]
                    if unused:
                        raise ValueError(f"{cell} edge {e}: no sample used {unused}.")
                    means = np.array([np.mean(used[op]) for op in small], dtype=np.float64)
                    z = means / self.config.temperature
                    lik = np.exp(z - z.max())
                    lik /= lik.sum()
                outside = 0.5 * (float(lik.max()) + float(lik.mean()))
                values = dict(zip(small, (float(v) for v in lik)))
                result[cell].append({op: values.get(op, outside) for op in active})
        return result

    def update_scores(
        self,
        o_smaller: Mapping[str, Sequence[Sequence[str]]],
        samples: Sequence[Mapping[str, Sequence[str]]],
        accuracies: Sequence[float],
    ) -> dict[str, list[dict[str, float]]]:
        """``s <- s / 2 + likelihood`` on each edge with 2+ ops; returns the likelihoods."""
        likelihoods = self.likelihoods(o_smaller, samples, accuracies)
        for cell in CELL_TYPES:
            for e, lik in enumerate(likelihoods[cell]):
                for op, value in lik.items():
                    self.scores[cell][e][op] = self.scores[cell][e][op] / 2.0 + value
        return likelihoods

    def remove_worst(self, alphas=None) -> list[dict[str, Any]]:
        """Drop the lowest-scoring op of every edge with more than one op; end the stage.

        Ties: the lower alpha (``alphas``: a supernet or mapping as for
        ``o_smaller``; default the last one given there), then the op earlier
        in the space. Returns the removal records ``{stage, cell, edge, op, score}``.
        """
        if alphas is not None:
            tables = {cell: _alpha_table(alphas, cell) for cell in CELL_TYPES}
        else:
            tables = self._alphas
        removed = []
        for cell in CELL_TYPES:
            for e, ops in enumerate(self._active[cell]):
                if len(ops) == 1:
                    continue

                def key(op, cell=cell, e=e):
                    alpha = (
                        0.0 if tables is None else float(tables[cell][e, self.op_names.index(op)])
                    )
                    return (self.scores[cell][e][op], alpha, self.op_names.index(op))

                ranked = sorted(ops, key=key)
                worst = next((op for op in ranked if self._affordable(cell, e, op)), ranked[0])
                record = {
                    "stage": self.stage,
                    "cell": cell,
                    "edge": e,
                    "op": worst,
                    "score": float(self.scores[cell][e][worst]),
                }
                if worst != ranked[0]:
                    record["kept_for_budget"] = ranked[: ranked.index(worst)]
                ops.remove(worst)
                del self.scores[cell][e][worst]
                removed.append(record)
        self.removals.extend(removed)
        self.stage += 1
        return removed

    # ------------------------------------------------------------------ budget
    def constrain(
        self,
        tables: Mapping[str, np.ndarray],
        floor: float,
        bound: float,
        *,
        allow_none: bool = True,
        metric: str = "ops",
    ) -> None:
        """Search under ``bound``: an op is only removed when the cheapest genotype the space
        left can derive stays within it, and the final cell trades score for cost until it
        does (issue 26's budget as a constraint on what the reduction keeps).

        ``tables[cell]``: ``[edges, len(op_names)]``, each op's cost at each edge summed over the
        network's cells of that type (``bnas_tf.search.cost.CostModel.tables``); ``floor``: the
        rest of the network (with every cell input's preprocessing, an upper bound).
        """
        tables = {cell: np.asarray(tables[cell], dtype=np.float64) for cell in CELL_TYPES}
        self._bounds.append((tables, float(floor), float(bound), bool(allow_none), metric))

    def _edge_min(self, tables, cell: str, e: int, ops, allow_none: bool) -> float:
        usable = [op for op in ops if allow_none or op != "none"] or list(ops)
        return min(tables[cell][e, self.op_names.index(op)] for op in usable)

    def min_cost(self, bound_index: int = 0, active=None) -> float:
        """The cheapest genotype the active ops can still derive (per node its two cheapest
        edges, each with its cheapest op), under constraint ``bound_index``."""
        tables, floor, _, allow_none, _ = self._bounds[bound_index]
        active = self._active if active is None else active
        total = floor
        inputs = edge_inputs(self.steps)
        for cell in CELL_TYPES:
            for node in range(self.steps):
                rows = [e for e, (n, _) in enumerate(inputs) if n == node]
                costs = sorted(
                    self._edge_min(tables, cell, e, active[cell][e], allow_none) for e in rows
                )
                total += sum(costs[:2])
        return total

    def _affordable(self, cell: str, e: int, op: str) -> bool:
        """Whether removing ``op`` from the edge keeps every budget reachable (always, for a
        budget the space already cannot meet)."""
        for index, (_, _, bound, _, _) in enumerate(self._bounds):
            if self.min_cost(index) > bound:
                continue
            after = {c: [list(ops) for ops in self._active[c]] for c in CELL_TYPES}
            after[cell][e].remove(op)
            if self.min_cost(index, after) > bound:
                return False
        return True

    def _cell_cost(self, bound_index: int, cells: Mapping[str, Sequence[int]]) -> float:
        tables, floor, _, _, _ = self._bounds[bound_index]
        return floor + sum(
            tables[cell][e, self.op_names.index(self._active[cell][e][0])]
            for cell in CELL_TYPES
            for e in cells[cell]
        )

    def _fit_budget(self, chosen: dict[str, list[int]], rank) -> dict[str, list[int]]:
        """Swap chosen edges for cheaper ones of the same node (the best-ranked first) until every
        budget holds or no swap lowers the cost."""
        inputs = edge_inputs(self.steps)
        for index, (tables, _, bound, _, _) in enumerate(self._bounds):
            while self._cell_cost(index, chosen) > bound:

                def cost(cell, e, tables=tables):
                    return tables[cell][e, self.op_names.index(self._active[cell][e][0])]

                swaps = [
                    (rank(cell, new), cost(cell, new) - cost(cell, old), cell, old, new)
                    for cell in CELL_TYPES
                    for old in chosen[cell]
                    for new, (n, _) in enumerate(inputs)
                    if n == inputs[old][0]
                    and new not in chosen[cell]
                    and cost(cell, new) < cost(cell, old)
                ]
                if not swaps:
                    break
                _, _, cell, old, new = min(swaps)
                chosen[cell][chosen[cell].index(old)] = new
        return chosen

    # ------------------------------------------------------------------ result
    def genotype(
        self, net: Supernet | None = None, *, allow_none: bool = True, multiplier: int | None = None
    ) -> Genotype:
        """The final cells, once every edge has one op: two incoming edges per node.

        Edges are ranked by the running score of their remaining op, then (with
        ``net``, the last trained supernet) by ``p(op) * beta``, then by edge
        order. With ``allow_none=False`` edges left with ``none`` rank last. Under a budget
        (``constrain``), chosen edges are then swapped for cheaper ones of their node, the
        best-ranked first, until it holds.
        """
        if not self.done:
            raise ValueError(f"Reduction not finished: {self.stages_left} stage(s) left.")
        multiplier = self.steps if multiplier is None else multiplier
        inputs = edge_inputs(self.steps)
        strength = {cell: np.zeros(self.edges) for cell in CELL_TYPES}
        if net is not None:
            for cell in CELL_TYPES:
                probs = net.op_probabilities(cell).numpy()
                betas = net.edge_betas(cell)
                betas = np.ones(self.edges) if betas is None else betas.numpy()
                for e, ops in enumerate(self._active[cell]):
                    strength[cell][e] = probs[e, self.op_names.index(ops[0])] * betas[e]

        def rank(cell: str, e: int) -> tuple:  # smaller is better
            op = self._active[cell][e][0]
            allowed = allow_none or op != "none"
            return (not allowed, -self.scores[cell][e][op], -strength[cell][e], e)

        chosen = {
            cell: [
                e
                for node in range(self.steps)
                for e in sorted(
                    (e for e, (n, _) in enumerate(inputs) if n == node),
                    key=lambda e, cell=cell: rank(cell, e),
                )[:2]
            ]
            for cell in CELL_TYPES
        }
        chosen = self._fit_budget(chosen, rank)
        cells = {
            cell: tuple(
                (self._active[cell][e][0], inputs[e][1])
                for e in sorted(chosen[cell], key=lambda e: (inputs[e][0], inputs[e][1]))
            )
            for cell in CELL_TYPES
        }
        concat = tuple(range(2 + self.steps - multiplier, 2 + self.steps))
        return Genotype(
            normal=cells["normal"],
            normal_concat=concat,
            reduce=cells["reduce"],
            reduce_concat=concat,
            search_space=self.search_space,
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: stage, active ops, scores, removal log, sampler state."""
        return {
            "version": 1,
            "op_names": list(self.op_names),
            "edges": self.edges,
            "search_space": self.search_space,
            "config": dataclasses.asdict(self.config),
            "stage": self.stage,
            "active_ops": self.active_ops,
            "scores": {cell: [dict(s) for s in self.scores[cell]] for cell in CELL_TYPES},
            "removals": [dict(r) for r in self.removals],
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict``'s output (the op space and edges must match)."""
        if tuple(state["op_names"]) != self.op_names or int(state["edges"]) != self.edges:
            raise ValueError(
                f"State of a reduction over {state['op_names']} x {state['edges']} edges, "
                f"not {list(self.op_names)} x {self.edges}."
            )
        active = self._checked_ops(state["active_ops"])
        scores = {}
        for cell in CELL_TYPES:
            scores[cell] = [
                {op: float(s[op]) for op in ops}
                for ops, s in zip(active[cell], state["scores"][cell])
            ]
            if len(scores[cell]) != self.edges:
                raise ValueError(f"State scores of {cell!r} have {len(scores[cell])} edges.")
        self._active, self.scores = active, scores
        self.stage = int(state["stage"])
        self.removals = [dict(r) for r in state["removals"]]
        if state.get("rng") is not None:
            self._rng.bit_generator.state = state["rng"]


# ---------------------------------------------------------------------- evaluation
def single_path_alphas(net: Supernet, sample: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """Alphas that make ``net`` compute exactly ``sample``: 0 for the sampled op, -1e9 elsewhere."""
    result = {}
    for cell in CELL_TYPES:
        ops = sample[cell]
        if len(ops) != net.edges:
            raise ValueError(f"sample[{cell!r}] has {len(ops)} edges, expected {net.edges}.")
        table = np.full((net.edges, len(net.op_names)), _BLOCKED, dtype=np.float32)
        for e, op in enumerate(ops):
            if op not in net.active_ops[cell][e]:
                raise ValueError(
                    f"{cell} edge {e}: {op!r} is not active ({net.active_ops[cell][e]})."
                )
            table[e, net.op_names.index(op)] = 0.0
        result[cell] = table
    return result


_FORWARD: weakref.WeakKeyDictionary[Supernet, dict[bool, Callable]] = weakref.WeakKeyDictionary()


def _forward(net: Supernet, training: bool) -> Callable:
    """A traced ``net(x, training)`` per supernet and mode (alpha is a variable: no retrace)."""
    fns = _FORWARD.setdefault(net, {})
    if training not in fns:
        ref = weakref.ref(net)  # the cache must not keep the supernet alive
        fns[training] = tf.function(lambda x: ref()(x, training=training), reduce_retracing=True)
    return fns[training]


def evaluate_architectures(
    net: Supernet,
    samples: Sequence[Mapping[str, Sequence[str]]],
    batches: Iterable,
    *,
    training: bool = True,
) -> np.ndarray:
    """Accuracy of each single-op-per-edge architecture, with the supernet's weights.

    ``batches``: ``(x, y)`` pairs (materialized once). ``training=True`` normalizes
    with batch statistics; the moving statistics it updates, and every other
    variable, are put back bit for bit before returning.
    """
    batches = [(tf.convert_to_tensor(x), np.asarray(y)) for x, y in batches]
    if not batches:
        raise ValueError("No batches to evaluate on.")
    variables = list(net.weights)
    saved = [v.numpy().copy() for v in variables]
    forward = _forward(net, bool(training))
    accuracies = []
    try:
        for sample in samples:
            for cell, table in single_path_alphas(net, sample).items():
                net.alpha(cell).assign(table)
            correct = total = 0
            for x, y in batches:
                predicted = np.argmax(forward(x).numpy(), axis=-1)
                correct += int(np.sum(predicted == y.reshape(-1)))
                total += len(predicted)
            accuracies.append(correct / total)
    finally:
        for v, value in zip(variables, saved):
            v.assign(value)
    return np.array(accuracies, dtype=np.float64)
