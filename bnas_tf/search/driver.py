"""A complete architecture search: data, supernet, epochs, checkpoints, outputs.

``run_search`` is what ``bnas-search`` runs, callable from Python with a
``SearchConfig``:

```python
from bnas_tf.search.driver import SearchConfig, run_search
result = run_search(SearchConfig(layers=3, init_channels=8, epochs=2, limit=2000), "runs/s1")
print(result.genotype)
```

Each epoch is one ``Supernet.fit`` call over the same two halves of the training
set, shuffled with a per-epoch seed (``seed * 1000 + epoch``), and the whole search state
is checkpointed after each epoch with ``tf.train.CheckpointManager``, so a resumed search
replays exactly the epochs it lost. After each epoch the architecture half is evaluated in
inference mode (``val_loss``, ``val_accuracy``: Keras' ``validation_data``, so
callbacks such as ``EarlyStopping(monitor="val_accuracy")`` see it); the genotype
kept is that of the epoch with the best ``val_accuracy``, as in Kim et al.'s
reference, or the last one.
"""

from __future__ import annotations

from bnas_tf import data as data_lib
from bnas_tf import distribute, faults
from bnas_tf import genotype as genotype_lib
from bnas_tf import ops as ops_lib
from bnas_tf import settings as settings_lib
from bnas_tf.genotype import Genotype
from bnas_tf.network import check_dataset_size
from bnas_tf.precision import check_dtype_policy
from bnas_tf.quantizers import BINARIZATION_HELP, Binarization, get_binarization
from bnas_tf.runs import read_json, write_json
from bnas_tf.search.architect import Architect
from bnas_tf.search.bmes import BMESConfig
from bnas_tf.search.budget import (
    PENALTIES,
    Budget,
    BudgetedArchitect,
    check,
    derive_within,
    describe,
    final_report,
    save_fit,
)
from bnas_tf.search.child_parent import CPNASConfig
from bnas_tf.search.cost import CostModel
from bnas_tf.search.reduction import ReductionConfig
from bnas_tf.search.supernet import (
    RECOMPUTE_PCNN,
    Supernet,
    SupernetOptions,
    default_optimizers,
)
from bnas_tf.settings import (
    SettingError,
    flag_name,
    flat_fields,
    in_range,
    non_negative,
    one_of,
    optional,
    positive,
    same_as,
    setting,
    validate,
)
from bnas_tf.sources import DATA_HELP, TEST_FRACTION

import dataclasses
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

__all__ = [
    "SearchConfig",
    "SearchResult",
    "build_supernet",
    "run_search",
    "rederive",
    "LIBRARY_DEFAULTS",
    "METHOD_NAMES",
]

#: The search methods of ``--method`` ([`bnas_tf.search.methods`][bnas_tf.search.methods]).
METHOD_NAMES = ("darts", "reduction", "cp_nas", "bmes")


def _library_defaults() -> dict:
    """The defaults of ``Supernet``, ``SupernetOptions``, ``Architect`` and
    ``default_optimizers``, by parameter name."""
    defaults = {}
    for fn in (Supernet.__init__, default_optimizers):
        for name, parameter in inspect.signature(fn).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                defaults[name] = parameter.default
    for cls in (SupernetOptions, Architect):
        defaults.update({f.name: f.default for f in dataclasses.fields(cls)})
    return defaults


LIBRARY_DEFAULTS = _library_defaults()
"""Where every search setting that the library also takes gets its default: the
signatures of ``Supernet`` and ``default_optimizers`` and the fields of ``SupernetOptions`` and
``Architect``. ``SearchConfig`` (hence ``bnas-search``'s flags) reads them from there, so the
program and the Python API cannot drift apart."""


def _default(name: str, help: str, **kwargs):  # noqa: A002
    return setting(LIBRARY_DEFAULTS[name], help, **kwargs)


def _data(default, name: str, **kwargs):
    return setting(default, DATA_HELP[name], **kwargs)


def _binarization(default, name: str, **kwargs):
    return setting(default, BINARIZATION_HELP[name], **kwargs)


def _search_space_check(value) -> str | None:
    return one_of(ops_lib.SEARCH_SPACES)(value)


@dataclasses.dataclass
class SearchConfig:
    """Everything a search depends on, each setting declared once with its default, help text and
    check (``bnas_tf.settings``); ``bnas-search``'s flags are these fields, the nested method
    configs (``reduction``, ``cp_nas``, ``bmes``) flattened.

    Defaults: Kim et al.'s search on CIFAR-10 sizes (gistvision/bnas; DARTS optimizers),
    Fashion-MNIST data. The settings that ``Supernet``, ``SupernetOptions``, ``Architect`` and
    ``default_optimizers`` also take are those classes' fields (``same_as``) or default to
    their signatures' values (``LIBRARY_DEFAULTS``); ``seed`` is 0 here (a program run is
    repeatable) and ``None`` in ``Supernet`` (unseeded, as Keras layers are).
    """

    method: str = setting(
        "darts",
        "Search method: darts (Kim et al. / plain DARTS, first or second order), reduction "
        "(Chen et al.'s operation space reduction), cp_nas (Zhuo et al.'s child-parent search) "
        "or bmes (Phan et al.'s evolution over a binary MobileNet's group counts).",
        check=one_of(METHOD_NAMES),
    )
    dataset: str = _data("fashion_mnist", "dataset")
    data_dir: str | None = _data(None, "data_dir")
    image_size: int | None = _data(None, "image_size")
    test_fraction: float = _data(TEST_FRACTION, "test_fraction")
    skip_bad_images: bool = _data(False, "skip_bad_images")
    limit: int | None = setting(
        None, "Use only the first N training examples (tiny runs).", check=optional(positive)
    )
    train_portion: float = setting(
        0.5,
        "Share of the training split that trains the weights; the rest trains alpha.",
        check=in_range(0.0, 1.0, low_open=True, high_open=True),
    )
    batch_size: int = setting(64, "Batch size of each half.", check=positive)
    epochs: int = setting(50, "Search epochs (darts).", check=positive)
    layers: int = _default("layers", "Cells of the supernet.", check=positive)
    init_channels: int = _default("init_channels", "Channels of the first cells.", check=positive)
    search_space: str = _default(
        "search_space",
        "bnas_kim (Kim et al.) or bnas_darts (Chen et al.).",
        check=_search_space_check,
    )
    binarization: str = _binarization(LIBRARY_DEFAULTS["binarization"], "binarization")
    xnor_activation_scale: bool = _binarization(False, "xnor_activation_scale")
    pcnn_lambda: float = _binarization(1e-4, "pcnn_lambda")
    partial_channels: int = _default(
        "partial_channels", "K of channel sampling (PC-DARTS); 1 = all channels.", check=positive
    )
    dtype_policy: str = same_as(SupernetOptions, "dtype_policy")
    recompute_cells: bool = same_as(SupernetOptions, "recompute_cells")
    edge_normalization: bool | None = _default(
        "edge_normalization", "Learn edge-normalization weights beta (default: on when K > 1)."
    )
    inter_cell_skip: bool = _default(
        "inter_cell_skip", "Kim et al.'s skip connections between cells."
    )
    allow_none: bool = _default(
        "allow_none", "Let Zeroise (none) win in the derived genotype (Kim: yes, DARTS: no)."
    )
    entropy_lambda: float = same_as(Architect, "entropy_lambda")
    entropy_tau: float = same_as(Architect, "entropy_tau")
    learning_rate: float = _default(
        "learning_rate", "Initial weight learning rate (cosine schedule).", check=positive
    )
    learning_rate_min: float = _default(
        "learning_rate_min", "Final weight learning rate.", check=non_negative
    )
    momentum: float = _default("momentum", "SGD momentum of the weights.", check=non_negative)
    weight_decay: float = same_as(Architect, "weight_decay")
    grad_clip: float | None = same_as(Architect, "grad_clip")
    arch_learning_rate: float = _default(
        "arch_learning_rate", "Adam learning rate of alpha.", check=positive
    )
    arch_weight_decay: float = same_as(Architect, "arch_weight_decay")
    arch_warmup_epochs: int = same_as(Architect, "arch_warmup_epochs")
    unrolled: bool = same_as(Architect, "unrolled")
    reduction: ReductionConfig = setting(
        help="Operation space reduction (method reduction, and cp_nas's stages).",
        default_factory=ReductionConfig,
    )
    cp_nas: CPNASConfig = setting(
        help="Child-parent search (method cp_nas).", default_factory=CPNASConfig
    )
    bmes: BMESConfig = setting(
        help="Evolution over group counts (method bmes).", default_factory=BMESConfig
    )
    ops_budget: float | None = setting(
        None,
        "OPs budget (binary MACs / 64 + float MACs) of the final network (darts: a penalty on "
        "the expected cost in alpha's loss; reduction, cp_nas: no op is removed that the "
        "cheapest cell within it needs, and the final cell trades score for cost until it "
        "holds; bmes: candidates above it are not evaluated and the fitness trades accuracy "
        "against OPs).",
        check=optional(positive),
    )
    memory_budget: float | None = setting(
        None,
        "Memory budget in KiB (1-bit weights at 1 bit) of the final network (darts, reduction, "
        "cp_nas).",
        check=optional(positive),
    )
    cost_weight: float = same_as(BudgetedArchitect, "cost_weight")
    budget_penalty: str = setting(
        "hinge",
        "The budget's penalty on alpha (darts): hinge, mu * max(0, E[cost] / budget - 1), a "
        "ceiling; two_sided, mu * |E[cost] / budget - 1|, a target (TF-NAS's bi-sided loss).",
        check=one_of(PENALTIES),
    )
    derive_within_budget: bool = setting(
        True,
        "Under a budget (darts): derive each epoch's genotype within it, re-choosing the ops of "
        "its edges with the least probability given up (budget.derive_within); false: the "
        "argmax genotype, only checked against it.",
    )
    target_fill: float | None = setting(
        None,
        "Make the budget a target for the derivation within it: fill the genotype with dearer "
        "ops, the least probability given up per cost added, until its cost reaches this share "
        "of the budget (0: no fill), and with --fit_width land it within 10 % by width "
        "(budget.land_target). Default: 0.95 with --budget_penalty=two_sided, none with the "
        "hinge (a ceiling); a value with the hinge keeps alpha's loss a ceiling and only the "
        "derivation aims at the budget.",
        check=optional(in_range(0.0, 1.0)),
    )
    fit_width: bool = setting(
        False,
        "After a budgeted search (darts, reduction, cp_nas), find a final width (init channels) "
        "for the genotype: under a ceiling the widest it fits in; under a target "
        "(derived within it and filled: --target_fill) the width nearest the budget's at "
        "which the genotype derived again there lands within 10 % under it. Logged, written "
        "to metrics.json (budget_fit) and the genotype to genotype_fit.json.",
    )
    final_layers: int | None = setting(
        None,
        "Cells of the final network a budget is for (none: --layers).",
        check=optional(positive),
    )
    final_init_channels: int | None = setting(
        None,
        "Channels of the final network a budget is for (none: --init_channels).",
        check=optional(positive),
    )
    genotype_selection: str = setting(
        "best",
        "best (the epoch with the best val_accuracy: the alpha half evaluated in inference mode "
        "at the epoch's end) or last.",
        check=lambda v: None if v in ("best", "last") else f"must be 'best' or 'last', got {v!r}.",
    )
    val_batches: int | None = setting(
        None,
        "Batches of the alpha half evaluated after each epoch (none: the whole half).",
        check=optional(positive),
    )
    seed: int = setting(0, "Random seed; with it a CPU run is repeatable.")
    verbose: int = setting(2, "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")
    strategy: str = setting(
        "default",
        distribute.STRATEGY_HELP,
        check=one_of(distribute.STRATEGIES),
    )

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> SearchConfig:
        """A config from flag-named settings (``{"method": "reduction", "stage_epochs": 2}``):
        the nested methods' settings go to their configs. Unknown names raise ``SettingError``."""
        values = dict(values)
        nested = {}
        for path, field in flat_fields(cls):
            name = flag_name(field)
            if len(path) == 2 and name in values:
                nested.setdefault(path[0], {})[path[1]] = values.pop(name)
        top = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - top)
        if unknown:
            raise SettingError(unknown[0], "is not a search setting.")
        for field in dataclasses.fields(cls):
            if settings_lib.is_nested(field):
                given = values.get(field.name, {})
                if isinstance(given, Mapping):
                    values[field.name] = field.default_factory(
                        **{**given, **nested.get(field.name, {})}
                    )
                elif nested.get(field.name):
                    values[field.name] = dataclasses.replace(given, **nested[field.name])
        return cls(**values)

    def split_args(self) -> dict:
        """The keyword arguments of [`search_splits`][bnas_tf.data.search_splits] and
        [`search_split_sizes`][bnas_tf.data.search_split_sizes] that this config fixes (not the
        seeds)."""
        return dict(
            data_dir=self.data_dir,
            batch_size=self.batch_size,
            portion=self.train_portion,
            limit=self.limit,
        )

    def architect(self, budget: Budget | None = None) -> Architect:
        """The update rule these settings give (with ``budget``: its cost penalty added)."""
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(Architect)}
        if budget is None:
            return Architect(**kwargs)
        return BudgetedArchitect(**kwargs, cost_weight=self.cost_weight, budget=budget)

    def budget(self, num_classes: int, input_shape) -> Budget | None:
        """The bounds on the final network's cost (``None`` without ``ops_budget`` and
        ``memory_budget``), with the cost model of the final network (``final_layers`` x
        ``final_init_channels`` in this search's template)."""
        bounds = {
            metric: value
            for metric, value in (("ops", self.ops_budget), ("memory_kib", self.memory_budget))
            if value is not None
        }
        if not bounds or self.method == "bmes":
            return None
        model = CostModel(
            self.search_space,
            layers=self.final_layers or self.layers,
            init_channels=self.final_init_channels or self.init_channels,
            input_shape=input_shape,
            num_classes=num_classes,
            inter_cell_skip=self.inter_cell_skip,
            binarization=self.binarization_method(),
        )
        return Budget(bounds, model, self.budget_penalty, self.target_fill)

    def binarization_method(self) -> Binarization:
        """The ``Binarization`` of these settings (``binarization``, ``xnor_activation_scale``,
        ``pcnn_lambda`` for PCNN); raises ``ValueError`` naming the flag that does not fit."""
        return get_binarization(
            self.binarization,
            xnor_activation_scale=self.xnor_activation_scale,
            pcnn_lambda=self.pcnn_lambda if self.binarization == "pcnn" else None,
        )

    def supernet_options(self) -> SupernetOptions:
        return SupernetOptions(dtype_policy=self.dtype_policy, recompute_cells=self.recompute_cells)

    def validate(self) -> SearchConfig:
        """Raise ``SettingError`` (a ``ValueError``) naming the first bad setting."""
        validate(self)
        if self.init_channels % self.partial_channels:
            raise SettingError(
                "partial_channels",
                f"K={self.partial_channels} must divide init_channels={self.init_channels}.",
                mentions=("init_channels",),
            )
        if not self.learning_rate_min <= self.learning_rate:
            raise SettingError(
                "learning_rate_min",
                f"must be in [0, learning_rate], got {self.learning_rate_min}.",
            )
        check_dtype_policy(self.dtype_policy, "--dtype_policy")
        if self.recompute_cells and self.binarization == "pcnn":
            raise SettingError("recompute_cells", RECOMPUTE_PCNN, mentions=("binarization",))
        if self.recompute_cells and self.method == "bmes":
            raise SettingError(
                "recompute_cells",
                "recomputes the cells of the DARTS-style supernet; method='bmes' has none.",
                mentions=("method",),
            )
        if self.strategy != "default" and (self.unrolled or self.method != "darts"):
            raise SettingError(
                "strategy",
                f"{self.strategy!r} runs --method=darts first order only: --unrolled and the "
                "staged and evolutionary methods run on one device.",
            )
        if self.fit_width and (
            self.method == "bmes" or (self.ops_budget is None and self.memory_budget is None)
        ):
            raise SettingError(
                "fit_width",
                "needs a budget (--ops_budget or --memory_budget) of a cell search (darts, "
                "reduction, cp_nas).",
            )
        if self.budget_penalty != "hinge" and self.method != "darts":
            raise SettingError(
                "budget_penalty",
                f"{self.budget_penalty!r} is a penalty on alpha's loss: --method=darts only "
                "(the staged and evolutionary methods take the budget as a constraint).",
            )
        if self.target_fill is not None and (
            not self.derive_within_budget or self.method != "darts"
        ):
            raise SettingError(
                "target_fill",
                "fills the genotype derived within the budget: it needs --method=darts and "
                "--derive_within_budget.",
                mentions=("derive_within_budget", "method"),
            )
        if self.memory_budget is not None and self.method == "bmes":
            raise SettingError(
                "memory_budget", "applies to the cell searches (darts, reduction, cp_nas)."
            )
        self.binarization_method()
        shape = data_lib.open_source(self).input_shape
        check_dataset_size(self.dataset, shape, "cifar", "the supernet")
        return self


@dataclasses.dataclass
class SearchResult:
    genotype: Genotype
    best_epoch: int
    history: list[dict]
    wall_time: float
    budget: dict | None = None  #: the genotype's exact cost against each bound (``budget.check``)
    #: with ``fit_width``: the width found and its genotype (``budget.final_report``)
    budget_fit: dict | None = None
    #: with ``derive_within_budget``: the argmax genotype's ``check`` and the ops re-chosen
    budget_argmax: dict | None = None


def build_supernet(
    config: SearchConfig,
    num_classes: int,
    input_shape,
    total_steps: int,
    *,
    active_ops: Mapping[str, Sequence[Sequence[str]]] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    architect: Architect | None = None,
    binarization: Binarization | None = None,
) -> Supernet:
    """A compiled, built supernet with its optimizers' slots created.

    ``total_steps`` is the length of the weights' cosine learning-rate schedule;
    ``active_ops`` restricts the ops of each edge (operation space reduction). Under a
    ``strategy`` it is made in its scope, with batch statistics over the global batch.
    ``architect`` and ``binarization`` replace the config's (CP-NAS: the child's update rule,
    the full-precision parent).
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        net = _make_supernet(
            config,
            num_classes,
            input_shape,
            total_steps,
            active_ops,
            architect or config.architect(),
            binarization or config.binarization_method(),
        )
    if not distribute.is_default(strategy):
        distribute.synchronize_batch_norm(net)
    return net


def _make_supernet(
    config, num_classes, input_shape, total_steps, active_ops, architect, binarization
) -> Supernet:
    net = Supernet(
        num_classes,
        layers=config.layers,
        init_channels=config.init_channels,
        search_space=config.search_space,
        binarization=binarization,
        partial_channels=config.partial_channels,
        edge_normalization=config.edge_normalization,
        inter_cell_skip=config.inter_cell_skip,
        allow_none=config.allow_none,
        active_ops=active_ops,
        options=config.supernet_options(),
        seed=config.seed,
    )
    net.compile(
        **default_optimizers(
            total_steps,
            learning_rate=config.learning_rate,
            learning_rate_min=config.learning_rate_min,
            momentum=config.momentum,
            arch_learning_rate=config.arch_learning_rate,
        ),
        architect=architect,
    )
    net(tf.zeros((1, *input_shape)))
    net.build_optimizers()
    return net


class _EpochLog(tf.keras.callbacks.Callback):
    """Per epoch: derive the genotype, log it to TensorBoard, keep the history."""

    def __init__(self, net: Supernet, writer, history: list[dict], budget: Budget | None = None):
        super().__init__()
        self.net, self.writer, self.history, self.budget = net, writer, history, budget

    def on_epoch_end(self, epoch, logs=None):
        argmax, probabilities, choosable = self.net.derivation()
        genotype = argmax
        if self.budget is not None:
            genotype = derive_within(argmax, probabilities, self.budget, choosable)
        record = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
        record["genotype"] = genotype.to_dict()
        if self.budget is not None:  # what the budget changed, and what derives it again
            record["genotype_argmax"] = argmax.to_dict()
            record["op_probabilities"] = {c: p.tolist() for c, p in probabilities.items()}
            record["op_choosable"] = {c: a.tolist() for c, a in choosable.items()}
        self.history.append(record)
        with self.writer.as_default(step=epoch):
            for key, value in record.items():
                if isinstance(value, float):
                    tf.summary.scalar(f"search/{key}", value)
            for op, count in genotype.ops("both").items():
                tf.summary.scalar(f"genotype_ops/{op}", count)
            genotype_lib.tensorboard_image(genotype, epoch)
        self.writer.flush()


SELECTION_METRIC = "val_accuracy"
"""The history key ``genotype_selection="best"`` maximizes: the accuracy on the alpha
half evaluated in inference mode at the epoch's end (Kim et al.'s reference), not the
training-mode running mean ``arch_accuracy`` taken while the weights still change."""


def _select(history: list[dict], selection: str) -> tuple[int, Genotype]:
    if selection == "best":
        if any(SELECTION_METRIC not in r for r in history):
            raise ValueError(
                f"genotype_selection='best' needs {SELECTION_METRIC!r} in every epoch's record; "
                "a history written before bnas-tf 0.2 has only arch_accuracy: use 'last'."
            )
        record = max(history, key=lambda r: (r[SELECTION_METRIC], r["epoch"]))
    else:
        record = history[-1]
    return record["epoch"], Genotype.from_dict(record["genotype"])


def run_search(
    config: SearchConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: list[tf.keras.callbacks.Callback] | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> SearchResult:
    """Search, write ``genotype.json``, ``genotype.png`` and ``metrics.json`` to ``output_dir``.

    ``strategy`` (default: made from ``config.strategy``) spreads each step over its
    replicas; in a multi-worker run the workers other than the chief write to
    ``output_dir/worker_<i>`` (see [`bnas_tf.distribute`][bnas_tf.distribute]).
    """
    config.validate()
    strategy = strategy or distribute.make_strategy(config.strategy)
    distribute.check_global_batch(config.batch_size, strategy)
    checkpoint_dir = Path(output_dir) / "checkpoints"  # the chief's: the canonical copy
    output_dir = distribute.prepare_own_dir(output_dir, strategy)
    tf.keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    info = data_lib.info(config.dataset)
    sizes = data_lib.search_split_sizes(config.dataset, **config.split_args())
    budget = config.budget(info.num_classes, info.input_shape)
    net = build_supernet(
        config,
        info.num_classes,
        info.input_shape,
        sizes.steps_per_epoch * config.epochs,
        strategy=strategy,
        architect=config.architect(budget),
    )

    history: list[dict] = []
    checkpoint = tf.train.Checkpoint(
        model=net, optimizer=net.optimizer, arch_optimizer=net.arch_optimizer
    )
    manager = distribute.CheckpointManager(checkpoint, checkpoint_dir, strategy, max_to_keep=2)
    guard = faults.RunGuard(
        checkpoint,
        output_dir,
        steps_per_epoch=sizes.steps_per_epoch,
        model=net,
        program="bnas-search",
    )
    start_epoch = 0
    if resume:
        status = guard.restore(manager)  # the last complete epoch, or an interrupted one
        if status is not None:
            status.assert_existing_objects_matched()
        # The state file is written before the checkpoint: it may hold one epoch more.
        start_epoch = guard.start_epoch
        history = _read_state(output_dir)["history"][:start_epoch] if start_epoch else []
    distribute.check_same(strategy, start_epoch, "the epoch to resume from")

    writer = tf.summary.create_file_writer(str(output_dir / "tensorboard"))
    epoch_log = _EpochLog(net, writer, history, budget if config.derive_within_budget else None)
    validation = distribute.shard_by_data(
        data_lib.search_validation(
            config.dataset, seed=config.seed, batches=config.val_batches, **config.split_args()
        ),
        strategy,
    )
    started = time.time()
    with guard:
        for epoch in range(start_epoch, config.epochs):
            pairs, guards = guard.epoch(
                epoch,
                distribute.shard_by_data(
                    data_lib.search_splits(
                        config.dataset,
                        seed=config.seed,  # the same halves in every epoch
                        shuffle_seed=config.seed * 1000 + epoch,
                        **config.split_args(),
                    ),
                    strategy,
                ),
            )
            net.fit(
                pairs,
                # the alpha half in inference mode: val_loss, val_accuracy
                validation_data=validation,
                initial_epoch=epoch,
                epochs=epoch + 1,
                verbose=config.verbose,
                callbacks=[*guards, epoch_log, *(callbacks or [])],
            )
            guard.check(epoch)  # a non-finite loss or a signal stops here, before any write
            # State first, then the checkpoint that points at it.
            write_json(output_dir / "search_state.json", {"history": history})
            manager.save(checkpoint_number=epoch + 1)
            guard.committed(epoch)
    wall_time = time.time() - started

    best_epoch, genotype = _select(history, config.genotype_selection)
    report = fitted = argmax_report = None
    if budget is not None:
        selected = _record(history, best_epoch)
        argmax_report = _argmax_report(selected, genotype, budget)
        report, fitted = final_report(
            genotype,
            budget,
            fit=config.fit_width,
            log=logging.info,
            derivation=_derivation(selected),
        )
    genotype.save(output_dir / "genotype.json")
    save_fit(fitted, output_dir)
    genotype_lib.plot(genotype, output_dir / "genotype.png")
    write_json(
        output_dir / "metrics.json",
        {
            "config": dataclasses.asdict(config),
            "best_epoch": best_epoch,
            "genotype": genotype.to_dict(),
            "history": history,
            "wall_time_s": wall_time,
            "steps_per_epoch": sizes.steps_per_epoch,
            "alpha_normal": net.op_probabilities("normal").numpy(),
            "alpha_reduce": net.op_probabilities("reduce").numpy(),
            "op_names": list(net.op_names),
            "budget": report,
            "budget_fit": fitted,
            "budget_argmax": argmax_report,
        },
    )
    return SearchResult(genotype, best_epoch, history, wall_time, report, fitted, argmax_report)


def _record(history: list[dict], epoch: int) -> dict:
    """``epoch``'s record in a search's ``history`` (``{}`` where it has none)."""
    return next((r for r in history if r["epoch"] == epoch), {})


def _argmax_report(record: dict, genotype: Genotype, budget: Budget) -> dict | None:
    """The selected epoch's (``record``'s) argmax genotype against the budget and the number of
    ops the derivation within it re-chose (0 where the argmax held it; logged); ``None`` without
    the derivation (``derive_within_budget=False``)."""
    if "genotype_argmax" not in record:
        return None
    argmax = Genotype.from_dict(record["genotype_argmax"])
    changed = sum(
        a != b
        for c in ("normal", "reduce")
        for a, b in zip(getattr(argmax, c), getattr(genotype, c))
    )
    report = {"changed_ops": changed, "cost": check(argmax, budget)}
    logging.info(
        f"The argmax genotype at the final size: {describe(report['cost'])}; {changed} op(s) "
        "re-chosen within the budget."
    )
    return report


def _derivation(record: dict) -> tuple | None:
    """The selected epoch's (``record``'s) argmax genotype, op probabilities and choosable ops
    (as ``Supernet.derivation`` gave them), ``None`` where its record has none (no derivation
    within the budget, or a history from before bnas-tf kept them)."""
    if "op_probabilities" not in record:
        return None
    return (
        Genotype.from_dict(record["genotype_argmax"]),
        {c: np.asarray(p) for c, p in record["op_probabilities"].items()},
        {c: np.asarray(a) for c, a in record["op_choosable"].items()},
    )


def rederive(
    output_dir: str | Path,
    budget: Budget,
    *,
    fit: bool = True,
    log: Callable[[str], Any] = logging.info,
) -> tuple[Genotype, dict[str, Any], dict[str, Any] | None]:
    """A finished darts search's selected epoch derived again within another ``budget``,
    without searching again: ``(genotype, report, fitted)`` as the search's end gives them
    (``derive_within``, then ``final_report``; ``fitted`` is ``None`` without ``fit``).

    The alphas are the search's own. So this is the search's result under ``budget`` only
    where alpha's loss would have been the same: another ``target_fill``, or the hinge's
    ceiling on a search whose expected cost stayed under it. Another budget or penalty would
    have searched other alphas.

    Example, a search with ``--target_fill=0.95`` read as a ceiling::

        budget = dataclasses.replace(config.budget(10, (28, 28, 1)), target_fill=0.0)
        genotype, report, fitted = rederive("runs/search", budget)
    """
    path = Path(output_dir) / "metrics.json"
    metrics = read_json(path)
    selected = _record(metrics["history"], metrics["best_epoch"])
    derivation = _derivation(selected)
    if derivation is None:
        raise ValueError(
            f"{path}: the selected epoch ({metrics['best_epoch']}) keeps no op probabilities "
            "to derive from: search with --ops_budget or --memory_budget and "
            "--derive_within_budget (a history from before these records were kept has none)."
        )
    argmax, probabilities, allowed = derivation
    genotype = derive_within(argmax, probabilities, budget, allowed)
    report, fitted = final_report(genotype, budget, fit=fit, log=log, derivation=derivation)
    return genotype, report, fitted


def _read_state(output_dir: Path) -> dict:
    state = read_json(output_dir / "search_state.json")
    if not isinstance(state.get("history"), list):
        raise ValueError(f"{output_dir / 'search_state.json'}: no history list.")
    return state
