"""keras-tuner over bnas-tf: many short searches and trainings, chosen by keras-tuner's oracles.

Each trial is a short [`run_search`][bnas_tf.search.driver.run_search] and/or a
[`train_network`][bnas_tf.training.train_network] run with the trial's hyperparameters, in the
trial's keras-tuner directory (``<directory>/<project_name>/trial_<id>/{search,train}``).
keras-tuner's ``RandomSearch``, ``BayesianOptimization`` and ``Hyperband`` oracles
choose the trials, keep the project resumable and run it on several machines (a chief
holding the oracle, workers running trials: ``KERASTUNER_TUNER_ID``,
``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``).

Modes (``MODES``):

- ``search``: a short search per trial; objective ``search_accuracy``, the best
  validation (architecture-half) accuracy of its epochs.
- ``search_train``: a short search, then training of the genotype found; objective
  ``val_accuracy`` of the trained network on held-out training images (the last
  ``val_examples`` of the training split, never trained on; the test split is reported
  as ``test_accuracy`` but never chosen on). The search draws its ``limit`` images from
  the whole training split, so it may see a few of them.
- ``random_arch``: the random-architecture baseline: the genotype is sampled from the
  search space of the search flags (``bnas_kim`` by default), one ``hp.Choice`` per node's input
  pair and per edge's op ([`bnas_tf.sampling`][bnas_tf.sampling]), and trained with a fixed budget;
  objective ``val_accuracy``.

Hyperband's ``tuner/epochs`` sets a trial's epochs; every trial starts afresh (no warm
start from the trial it continues). The oracle's seed is ``seed + 1`` (keras-tuner draws a
random one for 0).

Hyperparameter spaces are strings (``parse_space``): ``"sign_scale,xnor"`` (a
choice), ``"0.5..2"`` (uniform), ``"1e-4..1e-2:log"`` (log-uniform), ``""`` (not
tuned: the base configuration's value):

```python
from bnas_tf.tuner import TuneConfig, run_tuning
config = TuneConfig(mode="search", max_trials=20, hp_entropy_lambda="0..2",
                    hp_binarization="sign_scale,xnor")
best = run_tuning(config, SearchConfig(epochs=2, limit=2000), TrainConfig())
```

keras-tuner (which imports Keras 3 next to tf-keras) is imported on first use only.
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.runs import read_json, write_json

import dataclasses
import functools
import importlib.util
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MODES",
    "ORACLES",
    "OBJECTIVES",
    "HYPERPARAMETERS",
    "TuneConfig",
    "parse_space",
    "declare_hyperparameters",
    "trial_configs",
    "make_tuner",
    "run_tuning",
    "validation_accuracy",
    "BEST_TRIAL_FILE",
    "TRIAL_FILE",
]

MODES = ("search", "search_train", "random_arch")
ORACLES = ("random", "bayesian", "hyperband")
#: The objective (maximized) of each mode.
OBJECTIVES = {
    "search": "search_accuracy",
    "search_train": "val_accuracy",
    "random_arch": "val_accuracy",
}
#: Tunable hyperparameters: name -> (config field, configs it sets: search and/or train).
HYPERPARAMETERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "binarization": ("binarization", ("search", "train")),
    "entropy_lambda": ("entropy_lambda", ("search",)),
    "entropy_tau": ("entropy_tau", ("search",)),
    "partial_channels": ("partial_channels", ("search",)),
    "learning_rate": ("learning_rate", ("search",)),
    "arch_learning_rate": ("arch_learning_rate", ("search",)),
    "train_learning_rate": ("learning_rate", ("train",)),
    "init_channels": ("init_channels", ("search", "train")),
}
BEST_TRIAL_FILE = "best_trial.json"
#: Written in a trial's directory when its work is done: metrics, genotype, values.
TRIAL_FILE = "bnas_trial.json"
_INTS = {"partial_channels", "init_channels"}


@dataclasses.dataclass
class TuneConfig:
    """A tuning project. The budgets of each trial's search and training are those of the
    base ``SearchConfig`` / ``TrainConfig`` (``epochs``, ``limit``, sizes)."""

    mode: str = "search"
    oracle: str = "random"
    max_trials: int = 10
    max_epochs: int = 4
    hyperband_factor: int = 3
    directory: str = "runs/tune"
    project_name: str = "bnas"
    val_examples: int = 1000
    allow_none: bool = False
    seed: int = 0
    strategy: str = "default"
    hp_binarization: str = ""
    hp_entropy_lambda: str = ""
    hp_entropy_tau: str = ""
    hp_partial_channels: str = ""
    hp_learning_rate: str = ""
    hp_arch_learning_rate: str = ""
    hp_train_learning_rate: str = ""
    hp_init_channels: str = ""

    @property
    def objective(self) -> str:
        return OBJECTIVES[self.mode]

    def spaces(self) -> dict[str, dict]:
        """The tuned hyperparameters: ``{name: parse_space(...)}`` (empty flags left out)."""
        return {
            name: parse_space(
                getattr(self, f"hp_{name}"), integer=name in _INTS, name=f"--hp_{name}"
            )
            for name in HYPERPARAMETERS
            if getattr(self, f"hp_{name}").strip()
        }

    def validate(self) -> TuneConfig:
        """Raise ``ValueError`` naming the first bad setting."""
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        if self.oracle not in ORACLES:
            raise ValueError(f"--oracle must be one of {', '.join(ORACLES)}, got {self.oracle!r}.")
        for name in ("max_trials", "max_epochs", "val_examples"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}.")
        missing = [m for m in ("sklearn", "scipy") if importlib.util.find_spec(m) is None]
        if self.oracle == "bayesian" and missing:
            raise ValueError(
                "--oracle=bayesian needs keras-tuner's optional dependencies "
                f"({', '.join(missing)} missing): pip install 'keras-tuner[bayesian]' (or "
                "bnas-tf[bayesian])."
            )
        if self.hyperband_factor < 2:
            raise ValueError(f"--hyperband_factor must be at least 2, got {self.hyperband_factor}.")
        if self.strategy not in ("default", "mirrored"):
            raise ValueError(
                f"--strategy={self.strategy}: a trial runs on one host ('default' or 'mirrored'); "
                "spread trials over hosts with keras-tuner's chief and workers instead."
            )
        spaces = self.spaces()
        if self.mode == "random_arch":
            searched = [n for n in spaces if HYPERPARAMETERS[n][1] == ("search",)]
            if searched:
                raise ValueError(
                    f"--mode=random_arch trains sampled cells without searching: "
                    f"{', '.join('--hp_' + n for n in searched)} cannot be tuned."
                )
        elif self.mode == "search" and "train_learning_rate" in spaces:
            raise ValueError(
                "--mode=search trains no network: --hp_train_learning_rate cannot be tuned."
            )
        return self


def _number(text: str, integer: bool, name: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a number.") from None
    if integer:
        if value != int(value):
            raise ValueError(f"{name}: {text!r} is not an integer.")
        return int(value)
    return value


def parse_space(text: str, *, integer: bool = False, name: str = "space") -> dict:
    """A hyperparameter space from its flag: ``{"kind": "choice", "values": [...]}`` or
    ``{"kind": "range", "min": a, "max": b, "sampling": "linear" | "log"}``.

    ``"a,b,c"`` is a choice (numbers when all parse, else strings), ``"a..b"`` a uniform
    range, ``"a..b:log"`` a log-uniform one; ``integer`` makes numbers ints.
    """
    text = text.strip()
    if ".." in text:
        bounds, _, sampling = text.partition(":")
        low, _, high = bounds.partition("..")
        sampling = sampling.strip() or "linear"
        if sampling not in ("linear", "log"):
            raise ValueError(f"{name}: sampling must be 'linear' or 'log', got {sampling!r}.")
        low, high = _number(low, integer, name), _number(high, integer, name)
        if not low < high or (sampling == "log" and low <= 0):
            raise ValueError(f"{name}: range {text!r} needs min < max (and min > 0 for log).")
        return {"kind": "range", "min": low, "max": high, "sampling": sampling}
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError(f"{name}: empty space.")
    try:
        values = [_number(v, integer, name) for v in values]
    except ValueError:
        if integer:
            raise
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: duplicate values in {text!r}.")
    return {"kind": "choice", "values": values}


def declare_hyperparameters(config: TuneConfig, search_space: str = "bnas_kim"):
    """keras-tuner ``HyperParameters`` holding the whole space of ``config`` (and, in
    ``random_arch`` mode, one ``Choice`` per decision of
    [`bnas_tf.sampling.genotype_space`][bnas_tf.sampling.genotype_space]).
    """
    from bnas_tf.sampling import genotype_space

    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for name, space in config.spaces().items():
        if space["kind"] == "choice":
            hp.Choice(name, space["values"])
        elif name in _INTS:
            hp.Int(name, space["min"], space["max"], sampling=space["sampling"])
        else:
            hp.Float(name, space["min"], space["max"], sampling=space["sampling"])
    if config.mode == "random_arch":
        for name, options in genotype_space(search_space, allow_none=config.allow_none).items():
            hp.Choice(name, options)
    return hp


def trial_configs(values: Mapping[str, Any], config: TuneConfig, search, train) -> tuple[Any, Any]:
    """The search and training configs of one trial: the base ones with the trial's values.

    Hyperband's ``tuner/epochs`` sets the search's epochs (modes ``search*``) or the
    training's (``random_arch``).
    """
    changes: dict[str, dict[str, Any]] = {"search": {}, "train": {}}
    for name, (field, targets) in HYPERPARAMETERS.items():
        if name in values:
            for target in targets:
                changes[target][field] = values[name]
    if "tuner/epochs" in values:
        changes["train" if config.mode == "random_arch" else "search"]["epochs"] = int(
            values["tuner/epochs"]
        )
    search = dataclasses.replace(search, **changes["search"], strategy=config.strategy)
    train = dataclasses.replace(train, **changes["train"], strategy=config.strategy)
    if config.mode != "random_arch":
        search.validate()
    return search, train


def validation_accuracy(model_dir: str | os.PathLike, train, examples: int) -> float:
    """Top-1 accuracy of a trained run on the last ``examples`` images of the training
    split, which its training (the first ``train.limit`` images) never saw."""
    from bnas_tf import data as data_lib
    from bnas_tf.training import load_trained

    import tensorflow as tf

    total = data_lib.num_examples(train.dataset, "train", data_dir=train.data_dir)
    used = min(total, train.limit) if train.limit else total
    if used + examples > total:
        raise ValueError(
            f"--val_examples={examples} images from the end of the training split overlap the "
            f"{used} the networks train on (of {total}); lower --val_examples or set --limit in "
            "the training flags."
        )
    ds = data_lib.load(train.dataset, "train", data_dir=train.data_dir).skip(total - examples)
    classes = data_lib.info(train.dataset).num_classes
    ds = ds.batch(min(256, examples)).map(lambda x, y: (x, tf.one_hot(y, classes)))
    model, _ = load_trained(model_dir)
    model.compile(
        metrics=[tf.keras.metrics.CategoricalAccuracy(name="accuracy")],
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    return float(model.evaluate(ds, verbose=0, return_dict=True)["accuracy"])


@functools.cache
def _tuner_class():
    import keras_tuner
    import tensorflow as tf

    class BnasTuner(keras_tuner.Tuner):
        """A keras-tuner ``Tuner`` whose trials are bnas-tf searches and trainings."""

        def __init__(self, oracle, *, config: TuneConfig, search, train, strategy=None, **kwargs):
            super().__init__(oracle, **kwargs)
            self.config, self.search_config, self.train_config = config, search, train
            self.strategy = strategy

        def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
            from bnas_tf.sampling import sample_genotype
            from bnas_tf.search.driver import run_search
            from bnas_tf.training import train_network

            hp = trial.hyperparameters
            trial_dir = Path(self.get_trial_dir(trial.trial_id))
            finished = self._finished(trial_dir, hp.values)
            if finished is not None:  # killed after its work, before keras-tuner recorded it
                self._log(trial, "reused", finished)
                return finished
            try:
                search, train = trial_configs(
                    hp.values, self.config, self.search_config, self.train_config
                )
            except ValueError as error:  # an impossible combination: not retried
                raise keras_tuner.errors.FailedTrialError(str(error)) from None
            self._log(trial, "start")
            tf.keras.backend.clear_session()
            metrics: dict[str, float] = {}
            if self.config.mode == "random_arch":
                genotype = sample_genotype(
                    lambda name, options: hp.get(name),
                    search.search_space,
                    allow_none=self.config.allow_none,
                )
            else:  # resume=True: a trial interrupted by a kill continues from its checkpoint
                result = run_search(
                    search, trial_dir / "search", resume=True, strategy=self.strategy
                )
                metrics["search_accuracy"] = max(r["val_accuracy"] for r in result.history)
                genotype = result.genotype
            if self.config.mode != "search":
                genotype.save(trial_dir / "genotype.json")
                train = dataclasses.replace(train, genotype=str(trial_dir / "genotype.json"))
                tf.keras.backend.clear_session()
                trained = train_network(
                    train, trial_dir / "train", resume=True, strategy=self.strategy
                )
                metrics["test_accuracy"] = trained["test"]["accuracy"]
                metrics["val_accuracy"] = validation_accuracy(
                    trial_dir / "train", train, self.config.val_examples
                )
            write_json(
                trial_dir / TRIAL_FILE,
                {"metrics": metrics, "genotype": genotype.to_dict(), "values": hp.values},
            )
            self._log(trial, "end", metrics)
            return metrics

        @staticmethod
        def _finished(trial_dir: Path, values: Mapping[str, Any]) -> dict[str, float] | None:
            """The metrics of a trial whose work is already done (same values), else None."""
            path = trial_dir / TRIAL_FILE
            if not path.exists():
                return None
            record = read_json(path)
            return (
                record["metrics"]
                if record.get("values") == json.loads(json.dumps(dict(values)))
                else None
            )

        def _log(self, trial, event: str, metrics: Mapping[str, float] | None = None) -> None:
            """One line per trial start and end in ``trials_<tuner id>.jsonl`` (who ran what)."""
            line = {
                "trial_id": trial.trial_id,
                "tuner_id": self.tuner_id,
                "event": event,
                "time": time.time(),
                "pid": os.getpid(),
                "metrics": dict(metrics or {}),
            }
            with open(Path(self.project_dir) / f"trials_{self.tuner_id}.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")

        # No Keras model per trial: the trial directories hold the runs instead.
        def save_model(self, trial_id, model, step=0):
            pass

        def load_model(self, trial):
            from bnas_tf.training import load_trained

            return load_trained(Path(self.get_trial_dir(trial.trial_id)) / "train")[0]

    return BnasTuner


def make_oracle(config: TuneConfig, hyperparameters):
    """The keras-tuner oracle of ``config.oracle`` over ``hyperparameters`` (maximizing)."""
    import keras_tuner

    common = {
        "objective": keras_tuner.Objective(config.objective, direction="max"),
        "hyperparameters": hyperparameters,
        "allow_new_entries": False,
        "tune_new_entries": False,
        "seed": config.seed + 1,  # keras-tuner draws a random seed for 0
    }
    if config.oracle == "random":
        return keras_tuner.oracles.RandomSearchOracle(max_trials=config.max_trials, **common)
    if config.oracle == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            max_trials=config.max_trials, **common
        )
    return keras_tuner.oracles.HyperbandOracle(
        max_epochs=config.max_epochs, factor=config.hyperband_factor, **common
    )


def is_worker() -> bool:
    """Whether this process is a worker of a distributed keras-tuner run."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )


def _is_chief() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )


def _serve(tuner, poll_s: float = 1.0) -> None:
    """The chief's part of a distributed run: keras-tuner's oracle server until the workers
    are done. ``tuner.search()`` does the same but checks for the end every 20 s; this
    checks every ``poll_s``."""
    try:
        import grpc
        from keras_tuner.src import protos
        from keras_tuner.src.distribute import oracle_chief
    except ImportError:  # another keras-tuner layout: its own loop
        tuner.search()
        return
    from concurrent import futures

    tuner.save()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(tuner.oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(
        f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    )
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(tuner.oracle)):
            time.sleep(poll_s)
    finally:
        server.stop(grace=1.0)


def make_tuner(config: TuneConfig, search, train, *, overwrite: bool = False, strategy=None):
    """The tuner of a project: new, or reloaded from ``config.directory`` unless ``overwrite``
    (workers of a distributed run never overwrite: the chief owns the project)."""
    config.validate()
    if strategy is None and config.strategy != "default":
        from bnas_tf import distribute

        strategy = distribute.make_strategy(config.strategy)  # one per process, shared by trials
    hp = declare_hyperparameters(config, search.search_space)
    return _tuner_class()(
        make_oracle(config, hp),
        config=config,
        search=search,
        train=train,
        strategy=strategy,
        directory=config.directory,
        project_name=config.project_name,
        overwrite=overwrite and not is_worker(),
    )


def run_tuning(
    config: TuneConfig, search, train, *, overwrite: bool = False, strategy=None
) -> dict | None:
    """Run (or resume) a tuning project; write and return its best trial.

    Returns ``{"trial_id", "score", "values", "metrics", "trial_dir"}`` (also written to
    ``<directory>/<project_name>/best_trial.json``), or None on a distributed worker and
    when no trial completed.
    """
    tuner = make_tuner(config, search, train, overwrite=overwrite, strategy=strategy)
    if _is_chief():
        _serve(tuner)
    else:
        tuner.search()
    if is_worker():
        return None
    best = tuner.oracle.get_best_trials(1)
    if not best:
        return None
    trial = best[0]
    report = {
        "trial_id": trial.trial_id,
        "objective": config.objective,
        "score": None if trial.score is None or math.isnan(trial.score) else float(trial.score),
        "values": dict(trial.hyperparameters.values),
        "metrics": {
            name: float(trial.metrics.get_last_value(name)) for name in trial.metrics.metrics
        },
        "trial_dir": str(Path(tuner.project_dir) / f"trial_{trial.trial_id}"),
        "trials": {
            status: sum(t.status == status for t in tuner.oracle.trials.values())
            for status in ("COMPLETED", "FAILED", "INVALID", "RUNNING")
        },
    }
    write_json(Path(tuner.project_dir) / BEST_TRIAL_FILE, report)
    return report


def __getattr__(name: str):
    if name == "BnasTuner":  # the keras_tuner.Tuner subclass, made on first use
        return _tuner_class()
    raise AttributeError(f"module 'bnas_tf.tuner' has no attribute {name!r}")
