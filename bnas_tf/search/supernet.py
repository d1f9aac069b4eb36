"""The supernet: a subclassed Keras model whose ``train_step`` alternates alpha and weights.

The supernet is the network of the search (DARTS' ``Network``): topology, architecture parameters
``alpha_normal``/``alpha_reduce`` (and the edge normalization ``beta_*`` with channel sampling) and
the genotype they give. How one training step updates them is the
[`Architect`][bnas_tf.search.architect.Architect] it is compiled with (default: the first-order
DARTS step with Kim et al.'s entropy term); how fast it computes is its
[`SupernetOptions`][bnas_tf.search.supernet.SupernetOptions].

Example (random data; ``bnas_tf.data.search_splits`` gives the two halves of a real
training set in this ``((x_w, y_w), (x_a, y_a))`` form):

    >>> images = tf.random.uniform((8, 16, 16, 1))
    >>> labels = tf.range(8) % 2
    >>> halves = tf.data.Dataset.from_tensor_slices(((images, labels), (images, labels))).batch(4)
    >>> net = Supernet(2, layers=1, init_channels=4, seed=0)  # one (reduction) cell
    >>> net.compile(**default_optimizers(total_steps=2), architect=Architect())
    >>> history = net.fit(halves, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'arch_accuracy', 'arch_loss', 'entropy', 'loss']
    >>> len(net.genotype().normal)
    8

The architecture parameters are kept out of the weight optimizer: only ``arch_optimizer`` updates
them.
"""

from __future__ import annotations

from bnas_tf import ops as ops_lib
from bnas_tf.genotype import Genotype
from bnas_tf.memory import recompute_grad
from bnas_tf.precision import DTYPE_POLICIES, check_dtype_policy, policy_scope
from bnas_tf.quantizers import get_binarization, quantizer_variables
from bnas_tf.search.architect import Architect
from bnas_tf.search.budget import Budget, derive_within
from bnas_tf.search.cell import SearchCell, edge_inputs, num_edges
from bnas_tf.search.regularizers import masked_softmax, mean_edge_entropy
from bnas_tf.settings import SettingError, one_of, setting, validate

import dataclasses
import inspect
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

__all__ = ["Supernet", "SupernetOptions", "default_optimizers", "CELL_TYPES", "DTYPE_POLICIES"]

CELL_TYPES = ("normal", "reduce")


def default_optimizers(
    total_steps: int,
    *,
    learning_rate: float = 0.025,
    learning_rate_min: float = 0.001,
    momentum: float = 0.9,
    arch_learning_rate: float = 3e-4,
    arch_beta_1: float = 0.5,
    arch_beta_2: float = 0.999,
) -> dict[str, tf.keras.optimizers.Optimizer]:
    """The DARTS / BNAS search optimizers (Liu et al. 2019; Kim et al. 2020).

    Weights: SGD, momentum 0.9, cosine learning rate 0.025 -> 0.001 over
    ``total_steps``. Architecture: Adam, lr 3e-4, betas (0.5, 0.999). Weight decay
    (3e-4 and 1e-3) is added to the gradients by ``Supernet``, as PyTorch does.
    """
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        learning_rate, max(int(total_steps), 1), alpha=learning_rate_min / learning_rate
    )
    return {
        "optimizer": tf.keras.optimizers.SGD(schedule, momentum=momentum),
        "arch_optimizer": tf.keras.optimizers.Adam(
            arch_learning_rate, beta_1=arch_beta_1, beta_2=arch_beta_2
        ),
    }


#: Why ``recompute_cells`` refuses PCNN (``Supernet`` and ``SearchConfig.validate`` say it).
RECOMPUTE_PCNN = (
    "cannot be used with PCNN binarization: its projection loss is added inside the forward "
    "pass, which the backward pass would run again."
)


@dataclasses.dataclass
class SupernetOptions:
    """How the supernet computes: speed and precision, never what it computes (up to float
    rounding)."""

    share_computation: bool = setting(
        True, "Compute what the edges leaving one node share only once (exact)."
    )
    trace_forward_once: bool = setting(
        True,
        "Inside the train step, run training-mode forward passes through one nested "
        "tf.function, so that the alpha step's and the weight step's forward (and backward) are "
        "traced once, not twice. The same computation, optimized by Grappler as a function, so "
        "not bit for bit the float rounding of the unnested graph (measured: 0.89x the peak "
        "memory, 1.07x the first step; benchmarks/results/search_speed.md). Off for PCNN (its "
        "loss is added inside the forward) and under a tf.distribute strategy.",
    )
    recompute_cells: bool = setting(
        False,
        "Keep only each cell's inputs for the backward pass and compute the cell's activations "
        "again there (tf.recompute_grad; batch-norm statistics still move once per step): less "
        "peak memory for one more forward of every cell per step. Not with PCNN (its loss is "
        "added inside the forward).",
    )
    dtype_policy: str = setting(
        "float32",
        "Keras dtype policy of the supernet's cells: float32, or mixed_bfloat16 (bfloat16 "
        "activations and convolutions, float32 variables, alpha's softmax, the classifier and "
        "the losses; fast on CPUs with AVX512-BF16).",
        check=one_of(DTYPE_POLICIES),
    )

    def __post_init__(self):
        validate(self)


class Supernet(tf.keras.Model):
    """DARTS-style supernet over binarized operations.

    Args:
        num_classes: classifier outputs.
        layers: cells; reduction cells sit at ``layers // 3`` and ``2 * layers // 3``.
        init_channels: ``C`` of the first cells (the stem gives ``3 C``).
        search_space: ``bnas_kim`` or ``bnas_darts`` (see [`bnas_tf.ops`][bnas_tf.ops]).
        binarization: ``sign_scale`` or ``xnor``.
        partial_channels: ``K`` of channel sampling; 1 is plain DARTS.
        edge_normalization: learn ``beta`` (default: on when ``K > 1``, as PC-DARTS).
        inter_cell_skip: Kim et al.'s skip connection between cells.
        allow_none: let Zeroise win when deriving the genotype (Kim: yes; DARTS: no).
        active_ops: ``{"normal": [[op, ...] x 14], "reduce": [...]}``, the ops still
            alive on each edge (operation space reduction); default: the whole space.
        steps, multiplier, stem_multiplier: DARTS' cell (4 nodes, 4 concatenated, stem 3 C).
        options: [`SupernetOptions`][bnas_tf.search.supernet.SupernetOptions].
        seed: seed of the alpha initialisation ``1e-3 * N(0, 1)``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        layers: int = 8,
        init_channels: int = 16,
        search_space: str = "bnas_kim",
        binarization: str = "sign_scale",
        partial_channels: int = 1,
        edge_normalization: bool | None = None,
        inter_cell_skip: bool = True,
        allow_none: bool = True,
        active_ops: Mapping[str, Sequence[Sequence[str]]] | None = None,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        options: SupernetOptions | None = None,
        seed: int | None = None,
        name: str = "supernet",
        **kwargs,
    ):
        super().__init__(name=name, dtype="float32", **kwargs)
        self.options = options = options or SupernetOptions()
        check_dtype_policy(options.dtype_policy)
        dtype_policy = options.dtype_policy
        self._training_forward = None
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        if options.recompute_cells and get_binarization(binarization).name == "pcnn":
            raise SettingError("recompute_cells", RECOMPUTE_PCNN)
        if layers < 1:
            raise ValueError(f"layers must be at least 1, got {layers}.")
        if partial_channels < 1 or init_channels % partial_channels:
            raise ValueError(
                f"partial_channels K={partial_channels} must be >= 1 and divide "
                f"init_channels={init_channels}."
            )
        self.num_classes = num_classes
        self.search_space = search_space
        self.op_names = ops_lib.search_space(search_space)
        self.binarization = binarization
        self.partial_channels = partial_channels
        self.edge_normalization = (
            partial_channels > 1 if edge_normalization is None else edge_normalization
        )
        self.allow_none = allow_none
        self.steps = steps
        self.multiplier = multiplier
        self.layers_count = layers
        self.init_channels = init_channels
        self.edges = num_edges(steps)
        self.active_ops = self._check_active_ops(active_ops)
        self.masks = {
            cell: tf.constant(
                [
                    [1.0 if op in edge_ops else 0.0 for op in self.op_names]
                    for edge_ops in self.active_ops[cell]
                ]
            )
            for cell in CELL_TYPES
        }
        self._active_index = {
            cell: [
                [self.op_names.index(op) for op in edge_ops] for edge_ops in self.active_ops[cell]
            ]
            for cell in CELL_TYPES
        }

        def init(offset: int):  # one initializer per variable: distinct draws, seeded or not
            return tf.keras.initializers.RandomNormal(
                stddev=1e-3, seed=None if seed is None else seed + offset
            )

        shape = (self.edges, len(self.op_names))
        self.alpha_normal = self.add_weight(name="alpha_normal", shape=shape, initializer=init(0))
        self.alpha_reduce = self.add_weight(name="alpha_reduce", shape=shape, initializer=init(1))
        if self.edge_normalization:
            self.beta_normal = self.add_weight(
                name="beta_normal", shape=(self.edges,), initializer=init(2)
            )
            self.beta_reduce = self.add_weight(
                name="beta_reduce", shape=(self.edges,), initializer=init(3)
            )
        self.epoch = self.add_weight(
            name="epoch", shape=(), dtype=tf.int64, initializer="zeros", trainable=False
        )

        with policy_scope(dtype_policy):
            stem_channels = stem_multiplier * init_channels
            self.stem = tf.keras.Sequential(
                [
                    tf.keras.layers.Conv2D(stem_channels, 3, padding="same", use_bias=False),
                    tf.keras.layers.BatchNormalization(),
                ],
                name="stem",
            )
            prev, channels = stem_channels, init_channels
            reduction_prev = False
            self.cells = []
            for index in range(layers):
                reduction = index in (layers // 3, 2 * layers // 3)
                if reduction:
                    channels *= 2
                cell_type = "reduce" if reduction else "normal"
                self.cells.append(
                    SearchCell(
                        channels,
                        reduction=reduction,
                        reduction_prev=reduction_prev,
                        prev_channels=prev,
                        edge_ops=self.active_ops[cell_type],
                        binarization=binarization,
                        partial_channels=partial_channels,
                        inter_cell_skip=inter_cell_skip and index > 0,
                        steps=steps,
                        multiplier=multiplier,
                        share_computation=options.share_computation,
                        name=f"cell_{index}",
                    )
                )
                prev = multiplier * channels
                reduction_prev = reduction
        self.global_pool = tf.keras.layers.GlobalAveragePooling2D()
        self.classifier = tf.keras.layers.Dense(num_classes, name="classifier")
        self.loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self._per_example_loss = tf.keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.NONE
        )
        self.arch_optimizer = None
        self.architect = Architect()
        self._trackers = {
            name: tf.keras.metrics.Mean(name=name) for name in ("loss", "arch_loss", "entropy")
        }
        self._accuracy = tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self._arch_accuracy = tf.keras.metrics.SparseCategoricalAccuracy(name="arch_accuracy")

    # ------------------------------------------------------------------ structure
    def _check_active_ops(self, active_ops) -> dict[str, list[list[str]]]:
        if active_ops is None:
            return {cell: [list(self.op_names) for _ in range(self.edges)] for cell in CELL_TYPES}
        checked = {}
        for cell in CELL_TYPES:
            edges = [list(e) for e in active_ops[cell]]
            if len(edges) != self.edges:
                raise ValueError(
                    f"active_ops[{cell!r}] has {len(edges)} edges, expected {self.edges}."
                )
            for e, edge_ops in enumerate(edges):
                unknown = [op for op in edge_ops if op not in self.op_names]
                if unknown or not edge_ops:
                    raise ValueError(
                        f"active_ops[{cell!r}] edge {e}: {edge_ops or 'no ops'} "
                        f"(ops must be a non-empty subset of {self.search_space}: {self.op_names})."
                    )
            checked[cell] = edges
        return checked

    def alpha(self, cell: str) -> tf.Variable:
        return {"normal": self.alpha_normal, "reduce": self.alpha_reduce}[cell]

    def beta(self, cell: str) -> tf.Variable | None:
        if not self.edge_normalization:
            return None
        return {"normal": self.beta_normal, "reduce": self.beta_reduce}[cell]

    @property
    def arch_variables(self) -> list[tf.Variable]:
        """The architecture parameters: alphas, then betas with edge normalization."""
        variables = [self.alpha_normal, self.alpha_reduce]
        if self.edge_normalization:
            variables += [self.beta_normal, self.beta_reduce]
        return variables

    @property
    def weight_variables(self) -> list[tf.Variable]:
        """Every trainable variable that is not an architecture parameter."""
        arch = {v.ref() for v in self.arch_variables}
        return [v for v in self.trainable_variables if v.ref() not in arch]

    def decayed_variables(self) -> set:
        """Refs of the weight variables that weight decay acts on: all but the larq
        quantizers' own parameters (PCNN's binary level), see
        [`quantizer_variables`][bnas_tf.quantizers.quantizer_variables]."""
        quantizer = {v.ref() for v in quantizer_variables(self)}
        return {v.ref() for v in self.weight_variables if v.ref() not in quantizer}

    def op_probabilities(self, cell: str) -> tf.Tensor:
        """``softmax(alpha)`` per edge, exactly 0 for ops removed from the edge."""
        return masked_softmax(self.alpha(cell), self.masks[cell])

    def edge_betas(self, cell: str) -> tf.Tensor | None:
        """Edge-normalization weights: softmax of ``beta`` over the edges entering each node."""
        beta = self.beta(cell)
        if beta is None:
            return None
        parts, start = [], 0
        for node in range(self.steps):
            parts.append(tf.nn.softmax(beta[start : start + 2 + node]))
            start += 2 + node
        return tf.concat(parts, axis=0)

    def mean_entropy(self) -> tf.Tensor:
        """Mean op-distribution entropy over all normal and reduction edges."""
        return mean_edge_entropy(
            [self.alpha_normal, self.alpha_reduce], [self.masks["normal"], self.masks["reduce"]]
        )

    # ------------------------------------------------------------------ forward
    def call(self, inputs, training=None):
        """Logits. Inside a ``tf.function``, training-mode calls go through one nested
        ``tf.function`` (see ``trace_forward_once``)."""
        if training is True and self._nests_forward():
            if self._training_forward is None:
                self._training_forward = tf.function(
                    self._training_call, reduce_retracing=True, autograph=False
                )
            return self._training_forward(inputs)
        return self._forward(inputs, training=training)

    def _training_call(self, inputs):
        return self._forward(inputs, training=True)

    def _nests_forward(self) -> bool:
        # PCNN's projection loss (add_loss) would stay inside the nested graph; a
        # tf.distribute strategy's synchronized batch norm needs the replica context.
        return (
            self.options.trace_forward_once
            and tf.inside_function()
            and not tf.distribute.has_strategy()
            and get_binarization(self.binarization).name != "pcnn"
        )

    def _forward(self, inputs, training=None):
        weights, betas = {}, {}
        compute_dtype = self.stem.compute_dtype  # float32, or bfloat16 with mixed_bfloat16
        for cell in CELL_TYPES:
            probs = tf.cast(self.op_probabilities(cell), compute_dtype)
            weights[cell] = [
                tf.gather(probs[e], idx) for e, idx in enumerate(self._active_index[cell])
            ]
            beta = self.edge_betas(cell)
            betas[cell] = None if beta is None else tf.cast(beta, compute_dtype)
        s0 = s1 = self.stem(inputs, training=training)
        for cell in self.cells:
            kind = "reduce" if cell.reduction else "normal"
            if training is True and self.options.recompute_cells:
                out = self._recomputed(cell, weights[kind], betas[kind])(s0, s1)
            else:
                out = cell(s0, s1, weights[kind], betas[kind], training=training)
            s0, s1 = s1, out
        return self.classifier(self.global_pool(s1))

    @staticmethod
    def _recomputed(cell: SearchCell, weights: list, betas):
        """``cell``'s training call with its activations recomputed in the backward pass; the
        op weights and betas go in as arguments, so that alpha and beta get their gradients."""
        count = len(weights)

        def run(s0, s1, *arch):
            beta = arch[count] if len(arch) > count else None
            return cell(s0, s1, list(arch[:count]), beta, training=True)

        arch = [*weights] + ([] if betas is None else [betas])
        return lambda s0, s1: recompute_grad(run, cell)(s0, s1, *arch)

    # ------------------------------------------------------------------ training
    def compile(self, optimizer=None, arch_optimizer=None, architect=None, **kwargs):
        """``optimizer`` updates the weights, ``arch_optimizer`` the architecture, both as the
        ``architect`` says (default: the one the supernet has, at first ``Architect()``: the
        first-order step with the entropy term)."""
        if optimizer is None or arch_optimizer is None:
            raise ValueError("Supernet.compile needs both `optimizer` and `arch_optimizer`.")
        super().compile(optimizer=optimizer, **kwargs)
        self.arch_optimizer = arch_optimizer
        if architect is not None:
            self.architect = architect
        self.train_function = None

    @property
    def metrics(self):
        return [*self._trackers.values(), self._accuracy, self._arch_accuracy]

    def replica_loss(self, y, logits) -> tuple[tf.Tensor, tf.Tensor]:
        """``(loss to differentiate, mean loss of this replica's batch)``.

        The first is this replica's share of the global-batch mean (sum / global batch),
        so that gradients summed over replicas are those of the global batch.
        """
        per_example = self._per_example_loss(y, logits)
        return tf.nn.compute_average_loss(per_example), tf.reduce_mean(per_example)

    def track(self, half: str, loss, y, logits) -> None:
        """Update the metrics of one half of the step: ``weight`` (loss, accuracy) or ``arch``
        (arch_loss, arch_accuracy)."""
        prefix, accuracy = (
            ("arch_", self._arch_accuracy) if half == "arch" else ("", self._accuracy)
        )
        self._trackers[f"{prefix}loss"].update_state(loss)
        accuracy.update_state(y, logits)

    # The steps are not converted by AutoGraph, nor is anything they call (every layer's
    # call, larq's quantizers): their branches are on Python values, and the one on a tensor
    # (the alpha warm-up) is an explicit tf.cond. Skipping the conversion takes ~2.8 s of
    # CPU off a program's first step (docs/architecture.md).
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        self.architect.train_step(self, data)
        self._trackers["entropy"].update_state(self.mean_entropy())
        return {m.name: m.result() for m in self.metrics}

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        x, y = data[0], data[1]
        logits = self(x, training=False)
        self._trackers["loss"].update_state(tf.reduce_mean(self._per_example_loss(y, logits)))
        self._accuracy.update_state(y, logits)
        return {m.name: m.result() for m in (self._trackers["loss"], self._accuracy)}

    def fit(self, *args, callbacks=None, **kwargs):
        """``tf.keras.Model.fit`` that also keeps ``epoch`` (the ``t`` of the entropy term)."""
        if self.built:
            # Slots created up front: otherwise the train function is traced twice.
            self.build_optimizers()
        if self.architect.arch_warmup_epochs > 0 and self._distribution_strategy is not None:
            self._set_arch_active(
                inspect.signature(tf.keras.Model.fit).bind(self, *args, **kwargs).arguments
            )
        callbacks = list(callbacks or []) + [_EpochCounter(self.epoch)]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def _set_arch_active(self, fit_arguments: Mapping) -> None:
        """Under a strategy, whether this fit() call trains alpha is fixed when tracing."""
        first, end = fit_arguments.get("initial_epoch", 0), fit_arguments.get("epochs", 1)
        warmup = self.architect.arch_warmup_epochs
        active = first >= warmup
        if (end - 1 >= warmup) != active:
            raise ValueError(
                "Under a tf.distribute strategy the end of the alpha warm-up (epoch "
                f"{warmup}) must fall between two fit() calls; this one runs "
                f"epochs {first}..{end - 1}. Fit up to epoch {warmup} first "
                "(run_search fits one epoch at a time)."
            )
        if active != getattr(self, "_arch_active", None):
            self._arch_active = active
            self.train_function = None  # retrace with (or without) the alpha step

    def build_optimizers(self) -> None:
        """Create the optimizers' slots now (needed before a ``tf.cond`` arch step or a restore)."""
        self.optimizer.build(self.weight_variables)
        self.arch_optimizer.build(self.arch_variables)

    # ------------------------------------------------------------------ genotype
    def genotype(self, budget: Budget | None = None) -> Genotype:
        """The discrete cell: per node the 2 strongest incoming edges, each with its best op.

        An edge's strength is its largest op weight (times its normalized beta with
        edge normalization); ``none`` takes part only when ``allow_none`` (Kim et al.
        keep Zeroise selectable; DARTS excludes it). With ``budget``, the ops of those edges
        are then re-chosen among the same candidates until the final network's cost holds it
        ([`derive_within`][bnas_tf.search.budget.derive_within]).
        """
        genotype, probabilities, choosable = self.derivation()
        if budget is None:
            return genotype
        return derive_within(genotype, probabilities, budget, choosable)

    def derivation(self) -> tuple[Genotype, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """What a genotype is derived from: the argmax genotype (``genotype()``), and per cell
        type the ``[edges, ops]`` op probabilities and the ops each edge may choose (1/0:
        ``none`` only with ``allow_none``, none the reduction removed), the inputs of
        [`derive_within`][bnas_tf.search.budget.derive_within]."""
        cells, probabilities, choosable = {}, {}, {}
        for cell in CELL_TYPES:
            probs = self.op_probabilities(cell).numpy()
            betas = self.edge_betas(cell)
            betas = np.ones(self.edges) if betas is None else betas.numpy()
            candidates = (
                np.array(
                    [[1.0 if op != "none" or self.allow_none else 0.0 for op in self.op_names]]
                )
                * self.masks[cell].numpy()
            )
            probabilities[cell], choosable[cell] = probs, candidates
            edges = []
            for node in range(self.steps):
                rows = [e for e, (n, _) in enumerate(edge_inputs(self.steps)) if n == node]
                scored = []
                for e in rows:
                    allowed = candidates[e] > 0
                    if not allowed.any():  # only Zeroise left and it may not win: rank last
                        best = int(
                            np.argmax(np.where(self.masks[cell].numpy()[e] > 0, probs[e], -np.inf))
                        )
                        scored.append((-np.inf, e, best))
                        continue
                    masked = np.where(allowed, probs[e], -np.inf)
                    best = int(np.argmax(masked))
                    scored.append((masked[best] * betas[e], e, best))
                top = sorted(scored, key=lambda s: -s[0])[:2]
                for _, e, best in sorted(top, key=lambda s: edge_inputs(self.steps)[s[1]][1]):
                    edges.append((self.op_names[best], edge_inputs(self.steps)[e][1]))
            cells[cell] = edges
        concat = tuple(range(2 + self.steps - self.multiplier, 2 + self.steps))
        genotype = Genotype(
            normal=tuple(cells["normal"]),
            normal_concat=concat,
            reduce=tuple(cells["reduce"]),
            reduce_concat=concat,
            search_space=self.search_space,
        )
        return genotype, probabilities, choosable


class _EpochCounter(tf.keras.callbacks.Callback):
    def __init__(self, variable: tf.Variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)
