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
from bnas_tf.genotype import Genotype
from bnas_tf.network import check_dataset_size
from bnas_tf.precision import check_dtype_policy
from bnas_tf.quantizers import binarization_of
from bnas_tf.runs import write_json
from bnas_tf.search.supernet import Supernet, default_optimizers
from bnas_tf.sources import TEST_FRACTION

import dataclasses
import inspect
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import tensorflow as tf

__all__ = ["SearchConfig", "SearchResult", "build_supernet", "run_search", "LIBRARY_DEFAULTS"]


def _library_defaults() -> dict:
    """The defaults of ``Supernet`` and ``default_optimizers``, by parameter name."""
    defaults = {}
    for fn in (Supernet.__init__, default_optimizers):
        for name, parameter in inspect.signature(fn).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                defaults[name] = parameter.default
    return defaults


LIBRARY_DEFAULTS = _library_defaults()
"""Where every search setting that the library also takes gets its default: the
signatures of ``Supernet`` and ``default_optimizers``. ``SearchConfig``
(hence ``bnas-search``'s flags) reads them from here, so the program and the Python API
cannot drift apart."""


def _default(name: str):
    return dataclasses.field(default=LIBRARY_DEFAULTS[name])


@dataclasses.dataclass
class SearchConfig:
    """Everything a search depends on. Defaults: Kim et al.'s search on CIFAR-10 sizes
    (gistvision/bnas; DARTS optimizers), Fashion-MNIST data. The settings that
    ``Supernet`` and ``default_optimizers`` also take default to their
    signatures' values (``LIBRARY_DEFAULTS``); ``seed`` is 0 here (a program run
    is repeatable) and ``None`` in ``Supernet`` (unseeded, as Keras layers are).

    ``val_batches``: batches of the alpha half evaluated in inference mode after
    every epoch (``None``: the whole half, in a fixed order); the epoch kept by
    ``genotype_selection="best"`` is the one with the best such ``val_accuracy``.
    """

    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    image_size: int | None = None
    test_fraction: float = TEST_FRACTION
    skip_bad_images: bool = False
    limit: int | None = None
    train_portion: float = 0.5
    batch_size: int = 64
    epochs: int = 50
    layers: int = _default("layers")
    init_channels: int = _default("init_channels")
    search_space: str = _default("search_space")
    binarization: str = _default("binarization")
    xnor_activation_scale: bool = False
    pcnn_lambda: float = 1e-4
    partial_channels: int = _default("partial_channels")
    dtype_policy: str = _default("dtype_policy")
    edge_normalization: bool | None = _default("edge_normalization")
    inter_cell_skip: bool = _default("inter_cell_skip")
    allow_none: bool = _default("allow_none")
    entropy_lambda: float = _default("entropy_lambda")
    entropy_tau: float = _default("entropy_tau")
    learning_rate: float = _default("learning_rate")
    learning_rate_min: float = _default("learning_rate_min")
    momentum: float = _default("momentum")
    weight_decay: float = _default("weight_decay")
    grad_clip: float = _default("grad_clip")
    arch_learning_rate: float = _default("arch_learning_rate")
    arch_weight_decay: float = _default("arch_weight_decay")
    arch_warmup_epochs: int = _default("arch_warmup_epochs")
    unrolled: bool = _default("unrolled")
    operation_space_reduction: bool = False
    stage_epochs: int = 1
    samples_per_op: int = 2
    eval_batches: int = 2
    reduction_temperature: float = 1.0
    genotype_selection: str = "best"
    val_batches: int | None = None
    seed: int = 0
    verbose: int = 2
    strategy: str = "default"

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

    def validate(self) -> SearchConfig:
        """Raise ``ValueError`` naming the first bad setting."""
        positive = {
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "layers": self.layers,
            "init_channels": self.init_channels,
            "partial_channels": self.partial_channels,
            "learning_rate": self.learning_rate,
            "arch_learning_rate": self.arch_learning_rate,
            "entropy_tau": self.entropy_tau,
        }
        for name, value in positive.items():
            if value is None or value <= 0:
                raise ValueError(f"--{name} must be positive, got {value}.")
        if self.init_channels % self.partial_channels:
            raise ValueError(
                f"--partial_channels K={self.partial_channels} must divide "
                f"--init_channels={self.init_channels}."
            )
        if not 0 <= self.learning_rate_min <= self.learning_rate:
            raise ValueError(
                f"--learning_rate_min must be in [0, learning_rate], got {self.learning_rate_min}."
            )
        check_dtype_policy(self.dtype_policy, "--dtype_policy")
        if self.val_batches is not None and self.val_batches < 1:
            raise ValueError(
                f"--val_batches must be positive or none (the whole half), got {self.val_batches}."
            )
        if self.genotype_selection not in ("best", "last"):
            raise ValueError(
                f"--genotype_selection must be 'best' or 'last', got {self.genotype_selection!r}."
            )
        for name in ("stage_epochs", "samples_per_op", "eval_batches", "reduction_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}.")
        if self.arch_warmup_epochs < 0:
            raise ValueError(f"--arch_warmup_epochs must be >= 0, got {self.arch_warmup_epochs}.")
        if self.strategy not in distribute.STRATEGIES:
            raise ValueError(
                f"--strategy must be one of {', '.join(distribute.STRATEGIES)}, got "
                f"{self.strategy!r}."
            )
        if self.strategy != "default" and (self.unrolled or self.operation_space_reduction):
            raise ValueError(
                "--unrolled and --operation_space_reduction run on one device: use "
                "--strategy=default."
            )
        binarization_of(self)
        shape = data_lib.open_source(self).input_shape
        check_dataset_size(self.dataset, shape, "cifar", "the supernet")
        return self


@dataclasses.dataclass
class SearchResult:
    genotype: Genotype
    best_epoch: int
    history: list[dict]
    wall_time: float


def build_supernet(
    config: SearchConfig,
    num_classes: int,
    input_shape,
    total_steps: int,
    *,
    active_ops: Mapping[str, Sequence[Sequence[str]]] | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> Supernet:
    """A compiled, built supernet with its optimizers' slots created.

    ``total_steps`` is the length of the weights' cosine learning-rate schedule;
    ``active_ops`` restricts the ops of each edge (operation space reduction). Under a
    ``strategy`` it is made in its scope, with batch statistics over the global batch.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        net = _make_supernet(config, num_classes, input_shape, total_steps, active_ops)
    if not distribute.is_default(strategy):
        distribute.synchronize_batch_norm(net)
    return net


def _make_supernet(config, num_classes, input_shape, total_steps, active_ops) -> Supernet:
    net = Supernet(
        num_classes,
        layers=config.layers,
        init_channels=config.init_channels,
        search_space=config.search_space,
        binarization=binarization_of(config),
        partial_channels=config.partial_channels,
        dtype_policy=config.dtype_policy,
        edge_normalization=config.edge_normalization,
        inter_cell_skip=config.inter_cell_skip,
        allow_none=config.allow_none,
        entropy_lambda=config.entropy_lambda,
        entropy_tau=config.entropy_tau,
        weight_decay=config.weight_decay,
        arch_weight_decay=config.arch_weight_decay,
        grad_clip=config.grad_clip,
        arch_warmup_epochs=config.arch_warmup_epochs,
        unrolled=config.unrolled,
        active_ops=active_ops,
        seed=config.seed,
    )
    net.compile(
        **default_optimizers(
            total_steps,
            learning_rate=config.learning_rate,
            learning_rate_min=config.learning_rate_min,
            momentum=config.momentum,
            arch_learning_rate=config.arch_learning_rate,
        )
    )
    net(tf.zeros((1, *input_shape)))
    net.build_optimizers()
    return net


class _EpochLog(tf.keras.callbacks.Callback):
    """Per epoch: derive the genotype, log it to TensorBoard, keep the history."""

    def __init__(self, net: Supernet, writer, history: list[dict]):
        super().__init__()
        self.net, self.writer, self.history = net, writer, history

    def on_epoch_end(self, epoch, logs=None):
        genotype = self.net.genotype()
        record = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
        record["genotype"] = genotype.to_dict()
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
    net = build_supernet(
        config,
        info.num_classes,
        info.input_shape,
        sizes.steps_per_epoch * config.epochs,
        strategy=strategy,
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
    epoch_log = _EpochLog(net, writer, history)
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
    genotype.save(output_dir / "genotype.json")
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
        },
    )
    return SearchResult(genotype, best_epoch, history, wall_time)


def _read_state(output_dir: Path) -> dict:
    from bnas_tf.runs import read_json

    state = read_json(output_dir / "search_state.json")
    if not isinstance(state.get("history"), list):
        raise ValueError(f"{output_dir / 'search_state.json'}: no history list.")
    return state
