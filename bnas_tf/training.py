"""Training and evaluating a final network built from a genotype.

``train_network`` is what ``bnas-train`` runs, ``evaluate_trained`` what
``bnas-evaluate`` runs. A trained run directory holds everything needed to
rebuild the model without executing code from a file:

```python
network.json   genotype + build_network arguments + dataset
weights.h5     the weights (plain HDF5, loaded by layer name)
metrics.json   accuracies, timings, history
```

Example (Fashion-MNIST installed; minutes on two cores, so not run as a doctest):

```python
from bnas_tf.training import TrainConfig, train_network, load_trained
train_network(TrainConfig(genotype="bnas_a", layers=3, init_channels=8, epochs=1), "runs/t")
model, spec = load_trained("runs/t")
```
"""

from __future__ import annotations

from bnas_tf import data as data_lib
from bnas_tf import distribute, faults, sources
from bnas_tf import genotype as genotype_lib
from bnas_tf.mobilenet import GroupGenotype, build_group_network, is_group_genotype
from bnas_tf.network import (
    build_network,
    check_dataset_size,
    seed_drop_path,
    set_drop_path_progress,
)
from bnas_tf.precision import check_dtype_policy
from bnas_tf.quantizers import binarization_of, quantizer_variables
from bnas_tf.runs import atomic_path, read_json, write_json
from bnas_tf.sources import TEST_FRACTION

import dataclasses
import math
import time
from pathlib import Path

import larq as lq
import tensorflow as tf

__all__ = [
    "TrainConfig",
    "OneCycle",
    "make_optimizer",
    "compile_network",
    "train_network",
    "load_trained",
    "resolve_genotype",
    "training_examples",
    "evaluate_trained",
    "NETWORK_FILE",
    "build_from_spec",
    "open_spec_dataset",
    "summary_text",
    "WEIGHTS_FILE",
]

NETWORK_FILE = "network.json"
WEIGHTS_FILE = "weights.h5"


@dataclasses.dataclass
class TrainConfig:
    """Final training. Defaults: Kim et al.'s CIFAR-10 schedule (gistvision/bnas):
    20 cells x 36 channels, batch 256, 600 epochs, SGD momentum 0.9, wd 3e-6,
    one-cycle lr (max 0.05), drop-path 0.2."""

    genotype: str = "bnas_a"
    search_space: str | None = None
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    image_size: int | None = None
    test_fraction: float = TEST_FRACTION
    skip_bad_images: bool = False
    limit: int | None = None
    limit_test: int | None = None
    layers: int = 20
    init_channels: int = 36
    stem: str = "cifar"
    binarization: str = "sign_scale"
    xnor_activation_scale: bool = False
    pcnn_lambda: float = 1e-4
    inter_cell_skip: bool = True
    epochs: int = 600
    batch_size: int = 256
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-6
    lr_schedule: str = "onecycle"
    label_smoothing: float = 0.0
    auxiliary_weight: float = 0.0
    drop_path_rate: float = 0.2
    grad_clip: float | None = None
    augment: bool = True
    dtype_policy: str = "float32"
    seed: int = 0
    verbose: int = 2
    strategy: str = "default"

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` naming the first bad setting."""
        for name in ("epochs", "batch_size", "layers", "init_channels", "learning_rate"):
            value = getattr(self, name)
            if value is None or value <= 0:
                raise ValueError(f"--{name} must be positive, got {value}.")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"--optimizer must be 'sgd' or 'adam', got {self.optimizer!r}.")
        if self.lr_schedule not in ("onecycle", "cosine", "constant"):
            raise ValueError(
                "--lr_schedule must be 'onecycle', 'cosine' or 'constant', got "
                f"{self.lr_schedule!r}."
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.auxiliary_weight < 0 or self.weight_decay < 0:
            raise ValueError("--auxiliary_weight and --weight_decay must be >= 0.")
        binarization_of(self)
        check_dtype_policy(self.dtype_policy, "--dtype_policy")
        if self.strategy not in distribute.STRATEGIES:
            raise ValueError(
                f"--strategy must be one of {', '.join(distribute.STRATEGIES)}, got "
                f"{self.strategy!r}."
            )
        shape = data_lib.open_source(self).input_shape
        check_dataset_size(self.dataset, shape, self.stem, f"the {self.stem} network")
        return self


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class OneCycle(tf.keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle learning rate (Smith & Topin 2018; PyTorch ``OneCycleLR``, cosine).

    Rises from ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start``
    of the steps, then falls to ``max_lr / (div_factor * final_div_factor)``,
    both by cosine annealing.
    """

    def __init__(self, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        start = self.max_lr / self.div_factor
        end = start / self.final_div_factor
        up = max(self.pct_start * self.total_steps, 1.0)
        down = max(self.total_steps - up, 1.0)

        def anneal(a, b, fraction):
            fraction = tf.clip_by_value(fraction, 0.0, 1.0)
            return b + (a - b) * (1.0 + tf.cos(math.pi * fraction)) / 2.0

        return tf.where(
            step < up,
            anneal(start, self.max_lr, step / up),
            anneal(self.max_lr, end, (step - up) / down),
        )

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


def make_optimizer(config: TrainConfig, total_steps: int) -> tf.keras.optimizers.Optimizer:
    """The optimizer of ``config``; weight decay is decoupled (applied by the optimizer)."""
    if config.lr_schedule == "onecycle":
        lr = OneCycle(config.learning_rate, total_steps)
    elif config.lr_schedule == "cosine":
        lr = tf.keras.optimizers.schedules.CosineDecay(config.learning_rate, max(total_steps, 1))
    else:
        lr = config.learning_rate
    common = {"weight_decay": config.weight_decay or None, "global_clipnorm": config.grad_clip}
    if config.optimizer == "adam":
        return tf.keras.optimizers.Adam(lr, **common)
    return tf.keras.optimizers.SGD(lr, momentum=config.momentum, **common)


def _network_spec(config: TrainConfig, genotype: genotype_lib.Genotype) -> dict:
    info = data_lib.info(config.dataset)
    return {
        "genotype": genotype.to_dict(),
        "layers": config.layers,
        "init_channels": config.init_channels,
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "stem": config.stem,
        "binarization": config.binarization,
        "xnor_activation_scale": config.xnor_activation_scale,
        "pcnn_lambda": config.pcnn_lambda,
        "inter_cell_skip": config.inter_cell_skip,
        "stride2_grid": "same",
        "dataset": config.dataset,
        "normalization": {"mean": list(info.mean), "std": list(info.std)},
        **(
            {
                "class_names": list(info.class_names),
                "source": {
                    "data_dir": config.data_dir,
                    "image_size": config.image_size,
                    "test_fraction": config.test_fraction,
                    "skip_bad_images": config.skip_bad_images,
                },
            }
            if config.dataset not in data_lib.BUILTIN_DATASETS
            else {}
        ),
    }


def open_spec_dataset(spec: dict, data_dir: str | None = None) -> data_lib.DatasetInfo:
    """Open the dataset of a ``network.json`` spec as the run read it: a ``folder:``, ``npz:``
    or ``tfds:`` source with the run's options (``data_dir`` overrides the run's) and its stored
    normalisation statistics, so evaluation and export normalise as training did."""
    source = dict(spec.get("source") or {})
    if data_dir is not None:
        source["data_dir"] = data_dir
    source.setdefault("data_dir", None)
    if spec["dataset"] not in data_lib.BUILTIN_DATASETS:
        sources.resolve(spec["dataset"], **source, stats=spec.get("normalization"))
    return data_lib.info(spec["dataset"], data_dir=source["data_dir"])


def build_from_spec(spec: dict, **overrides) -> tf.keras.Model:
    """Rebuild a network from a ``network.json`` spec (no code is read from files).

    A spec without ``stride2_grid`` was written before bnas-tf 0.2 and is rebuilt on the
    ``legacy`` grid it was trained with ([`bnas_tf.ops.STRIDE2_GRIDS`][bnas_tf.ops.STRIDE2_GRIDS]).
    A spec whose genotype is a BMES group genotype builds the binary MobileNet of
    [`bnas_tf.mobilenet`][bnas_tf.mobilenet] (``layers``, ``init_channels``, ``stem`` and the
    cell network's options do not apply to it: the genotype fixes the backbone).
    """
    if is_group_genotype(spec["genotype"]):
        return _build_group_network(spec, **overrides)
    kwargs = {
        "layers": spec["layers"],
        "init_channels": spec["init_channels"],
        "num_classes": spec["num_classes"],
        "input_shape": tuple(spec["input_shape"]),
        "stem": spec["stem"],
        "binarization": binarization_of(spec),
        "inter_cell_skip": spec.get("inter_cell_skip", True),
        "stride2_grid": spec.get("stride2_grid", "legacy"),
    }
    kwargs.update(overrides)
    return build_network(genotype_lib.Genotype.from_dict(spec["genotype"]), **kwargs)


_CELL_ONLY = ("auxiliary", "drop_path_rate", "layers", "init_channels", "stem", "inter_cell_skip")


def _build_group_network(spec: dict, **overrides) -> tf.keras.Model:
    if overrides.get("auxiliary"):
        raise ValueError("--auxiliary_weight: a BMES group network has no auxiliary head.")
    kwargs = {
        "num_classes": spec["num_classes"],
        "input_shape": tuple(spec["input_shape"]),
        "binarization": binarization_of(spec),
    }
    kwargs.update({k: v for k, v in overrides.items() if k not in (*_CELL_ONLY, "stride2_grid")})
    return build_group_network(GroupGenotype.from_dict(spec["genotype"]), **kwargs)


class _DropPathSchedule(tf.keras.callbacks.Callback):
    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        set_drop_path_progress(self.model, epoch / self.epochs)


def _with_targets(ds: tf.data.Dataset, num_classes: int, auxiliary: bool) -> tf.data.Dataset:
    def targets(x, y):
        y = tf.one_hot(y, num_classes)
        return x, ((y, y) if auxiliary else y)

    return ds.map(targets, num_parallel_calls=tf.data.AUTOTUNE)


def compile_network(
    model: tf.keras.Model, config: TrainConfig, optimizer, auxiliary: bool, **compile_kwargs
) -> None:
    """``model.compile`` as ``bnas-train`` does it: cross-entropy on logits (with
    ``config.label_smoothing``; the auxiliary head weighted by ``config.auxiliary_weight``) and
    top-1 accuracy. ``compile_kwargs`` go to ``compile`` (e.g. ``steps_per_execution``)."""
    loss = tf.keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=config.label_smoothing
    )
    model.compile(
        optimizer=optimizer,
        loss=[loss, loss] if auxiliary else loss,
        loss_weights=[1.0, config.auxiliary_weight] if auxiliary else None,
        metrics=[[tf.keras.metrics.CategoricalAccuracy(name="accuracy")], []]
        if auxiliary
        else [tf.keras.metrics.CategoricalAccuracy(name="accuracy")],
        **compile_kwargs,
    )


def train_network(
    config: TrainConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    strategy: tf.distribute.Strategy | None = None,
) -> dict:
    """Train the network of ``config.genotype``; write weights, spec and metrics to ``output_dir``.

    ``strategy`` (default: made from ``config.strategy``) spreads each step over its
    replicas (batch normalization per replica, as Keras does); in a multi-worker run the
    workers other than the chief write to ``output_dir/worker_<i>``.
    """
    config.validate()
    strategy = strategy or distribute.make_strategy(config.strategy)
    distribute.check_global_batch(config.batch_size, strategy)
    checkpoint_dir = Path(output_dir) / "checkpoints"  # the chief's: the canonical copy
    output_dir = distribute.prepare_own_dir(output_dir, strategy)
    tf.keras.utils.set_random_seed(config.seed)
    genotype = resolve_genotype(config)
    spec = _network_spec(config, genotype)
    auxiliary = config.auxiliary_weight > 0
    with strategy.scope():
        model = build_from_spec(
            spec,
            auxiliary=auxiliary,
            drop_path_rate=config.drop_path_rate,
            dtype_policy=config.dtype_policy,
        )
    n_train = training_examples(config)
    steps = max(n_train // config.batch_size, 1)
    with strategy.scope():
        optimizer = make_optimizer(config, steps * config.epochs)
        if config.weight_decay:  # not on the quantizers' own parameters (PCNN's binary level)
            optimizer.exclude_from_weight_decay(var_list=quantizer_variables(model))
        compile_network(model, config, optimizer, auxiliary)
    # a resumed run draws the same masks
    seed_drop_path(model, config.seed, model.optimizer.iterations)
    write_json(output_dir / NETWORK_FILE, spec)

    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = distribute.CheckpointManager(checkpoint, checkpoint_dir, strategy, max_to_keep=2)
    guard = faults.RunGuard(
        checkpoint, output_dir, steps_per_epoch=steps, model=model, program="bnas-train"
    )
    start_epoch, history = 0, []
    if resume:
        guard.restore(manager)  # the last complete epoch, or an interrupted one
        start_epoch = guard.start_epoch
        history = (
            read_json(output_dir / "train_state.json")["history"][:start_epoch]
            if start_epoch
            else []
        )
    distribute.check_same(strategy, start_epoch, "the epoch to resume from")

    callbacks = [
        _DropPathSchedule(config.epochs),
        tf.keras.callbacks.TensorBoard(str(output_dir / "tensorboard"), profile_batch=0),
    ]
    started = time.time()
    with guard:
        for epoch in range(start_epoch, config.epochs):
            train = data_lib.load(
                config.dataset,
                "train",
                data_dir=config.data_dir,
                batch_size=config.batch_size,
                shuffle=True,
                seed=config.seed * 1000 + epoch,
                augment=config.augment,
                limit=config.limit,
                drop_remainder=True,
            )
            train = distribute.shard_by_data(train, strategy)
            train, guards = guard.epoch(epoch, _with_targets(train, spec["num_classes"], auxiliary))
            logs = model.fit(
                train,
                initial_epoch=epoch,
                epochs=epoch + 1,
                verbose=config.verbose,
                callbacks=[*guards, *callbacks],
            ).history
            guard.check(epoch)  # a non-finite loss or a signal stops here, before any write
            history.append({"epoch": epoch, **{k: float(v[-1]) for k, v in logs.items()}})
            write_json(output_dir / "train_state.json", {"history": history})
            manager.save(checkpoint_number=epoch + 1)
            guard.committed(epoch)
    train_time = time.time() - started

    with atomic_path(output_dir / WEIGHTS_FILE) as tmp:
        model.save_weights(str(tmp))
    results = evaluate_trained(
        output_dir, data_dir=config.data_dir, limit=config.limit_test, batch_size=config.batch_size
    )
    metrics = {
        "config": dataclasses.asdict(config),
        "history": history,
        "train_time_s": train_time,
        "test": results,
    }
    write_json(output_dir / "metrics.json", metrics)
    return metrics


def training_examples(config: TrainConfig) -> int:
    """Training examples a run of ``config`` uses; ``ValueError`` if they hold no batch."""
    n = data_lib.num_examples(config.dataset, "train", data_dir=config.data_dir)
    n = min(n, config.limit) if config.limit else n
    if n < config.batch_size:
        raise ValueError(
            f"--batch_size={config.batch_size} is larger than the {n} training examples of "
            f"{config.dataset}{f' (--limit={config.limit})' if config.limit else ''}: no full "
            "batch; lower --batch_size."
        )
    return n


def resolve_genotype(config: TrainConfig) -> genotype_lib.Genotype | GroupGenotype:
    """The genotype of ``config.genotype``; with ``config.search_space`` set, it must come
    from that space (its ``search_space`` field and every op). Raises ``ValueError``."""
    genotype = genotype_lib.get(config.genotype)
    if isinstance(genotype, GroupGenotype):
        if config.search_space not in (None, genotype.search_space):
            raise ValueError(
                f"--genotype {config.genotype} is a BMES group genotype, but "
                f"--search_space={config.search_space}."
            )
        return genotype
    space = config.search_space
    if space is not None:
        if genotype.search_space not in (None, space):
            raise ValueError(
                f"--genotype {config.genotype} is from search space {genotype.search_space!r}, "
                f"but --search_space={space}."
            )
        genotype.validate(search_space=space)
    return genotype


def load_trained(model_dir: str | Path, **overrides) -> tuple[tf.keras.Model, dict]:
    """Rebuild the network of a run directory and load its weights.

    The model is built from code (``network.json`` holds only arguments); ``weights.h5`` must be a
    plain weights file holding every layer at its exact shape
    ([`bnas_tf.zoo.weights_file.load_weights`][bnas_tf.zoo.weights_file.load_weights]): a whole
    saved model (which could carry a ``Lambda`` layer), weights of another architecture or number of
    classes, and unreadable files raise ``ValueError`` naming the file.
    """
    from bnas_tf.zoo.weights_file import load_weights

    model_dir = Path(model_dir)
    spec = read_json(model_dir / NETWORK_FILE)
    model = build_from_spec(spec, **overrides)
    weights = model_dir / WEIGHTS_FILE
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: no weights file; did bnas-train finish?")
    try:
        load_weights(model, weights)
    except OSError as error:
        raise ValueError(
            f"{weights}: unreadable HDF5 weights file ({error}); it is truncated or corrupt."
        ) from None
    return model, spec


def evaluate_trained(
    model_dir: str | Path,
    *,
    split: str = "test",
    data_dir: str | None = None,
    limit: int | None = None,
    batch_size: int = 256,
) -> dict:
    """Top-1 accuracy and loss of a trained run on ``split`` of its dataset (opened as the run
    read it: ``open_spec_dataset``)."""
    model, spec = load_trained(model_dir)
    open_spec_dataset(spec, data_dir)  # a tfds: source keeps the run's data_dir
    ds = data_lib.load(
        spec["dataset"], split, data_dir=data_dir, batch_size=batch_size, limit=limit
    )
    model.compile(
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    start = time.time()
    loss, accuracy = model.evaluate(_with_targets(ds, spec["num_classes"], False), verbose=0)
    elapsed = time.time() - start
    n = data_lib.num_examples(spec["dataset"], split, data_dir=data_dir)
    n = min(n, limit) if limit else n
    return {
        "accuracy": float(accuracy),
        "loss": float(loss),
        "examples": n,
        "split": split,
        "seconds": elapsed,
    }


def summary_text(model: tf.keras.Model) -> str:
    """``larq.models.summary`` as a string."""
    lines: list[str] = []
    lq.models.summary(model, print_fn=lines.append)
    return "\n".join(lines)
