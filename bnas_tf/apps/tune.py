"""``bnas-tune``: many short searches or trainings driven by keras-tuner; reports the best trial.

    bnas-tune --flagfile=flags/tune_search_fashion_mnist.cfg

Each trial's search and training budgets come from flagfiles of ``bnas-search`` and
``bnas-train`` (``--search_flagfile``, ``--train_flagfile``); the trial's hyperparameters
(``--hp_*``) replace their values. The project (``--directory/--project_name``) is
resumed when it exists, unless ``--overwrite``. Distributed: the same command on a chief
(``KERASTUNER_TUNER_ID=chief``) and on workers (``tuner0``, ``tuner1``, ...), all with
``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` of the chief.
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.apps import common, startup

import json

from absl import app, flags

HELP = {
    "mode": "search (short searches), search_train (search, then train the cell found) or "
    "random_arch (the random-architecture baseline: train cells sampled from the search flags' "
    "--search_space, bnas_kim by default).",
    "oracle": "keras-tuner oracle: random, bayesian or hyperband.",
    "max_trials": "Trials of the random and bayesian oracles.",
    "max_epochs": "Hyperband: the most epochs a trial runs (the search's, or the training's in "
    "random_arch mode).",
    "hyperband_factor": "Hyperband: reduction factor of each bracket.",
    "directory": "keras-tuner directory; the project lives in <directory>/<project_name>.",
    "project_name": "keras-tuner project name.",
    "val_examples": "Trained networks are scored on the last N training images (never trained on).",
    "allow_none": "random_arch: let sampled edges be Zeroise (none).",
    "seed": "Seed of the oracle's sampling.",
    "strategy": "tf.distribute strategy of each trial: default or mirrored (all GPUs of the host).",
    "hp_binarization": "Binarizations to try, e.g. 'sign_scale,xnor' (empty: the base flag).",
    "hp_entropy_lambda": "entropy_lambda space: 'a,b,c' choice, 'lo..hi' uniform, 'lo..hi:log'.",
    "hp_entropy_tau": "entropy_tau space.",
    "hp_partial_channels": "partial_channels (K) space, e.g. '1,2,4'.",
    "hp_learning_rate": "Search weight learning-rate space, e.g. '0.005..0.05:log'.",
    "hp_arch_learning_rate": "Search alpha learning-rate space, e.g. '1e-4..1e-2:log'.",
    "hp_train_learning_rate": "Training learning-rate space.",
    "hp_init_channels": "init_channels space (search and training), e.g. '8,16'.",
}


def define_flags(flag_values=flags.FLAGS) -> None:
    from bnas_tf.tuner import TuneConfig

    common.define_config_flags(TuneConfig, HELP, flag_values)
    flags.DEFINE_string(
        "search_flagfile",
        None,
        "bnas-search flagfile: each trial's search (budget, data).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "train_flagfile",
        None,
        "bnas-train flagfile: each trial's training (budget, data).",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "overwrite",
        False,
        "Start the project afresh instead of resuming it.",
        flag_values=flag_values,
    )


def base_config(config_cls, flagfile: str | None):
    """``config_cls`` from a flagfile of another program (its defaults without one)."""
    values = flags.FlagValues()
    common.define_config_flags(config_cls, {}, values)
    common.define_run_flags(values, output_required=False)  # a program's flagfile may set them
    try:
        values(["bnas-tune"] + ([f"--flagfile={flagfile}"] if flagfile else []))
    except flags.Error as error:
        which = "search" if "Search" in config_cls.__name__ else "train"
        raise app.UsageError(f"--{which}_flagfile: {error}") from None
    return common.config_from_flags(config_cls, values)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from bnas_tf.search.driver import SearchConfig
    from bnas_tf.training import TrainConfig
    from bnas_tf.tuner import TuneConfig, run_tuning

    config = common.config_from_flags(TuneConfig)
    search = base_config(SearchConfig, flags.FLAGS.search_flagfile)
    train = base_config(TrainConfig, flags.FLAGS.train_flagfile)
    try:
        config.validate()
        if config.mode != "random_arch":
            if search.method != "darts":
                raise ValueError(
                    f"--search_flagfile: bnas-tune tunes --method=darts searches only (a trial's "
                    f"score is the search's best val_accuracy), got --method={search.method}."
                )
            search.validate()
            common.check_data(search.dataset, search.data_dir)
        if config.mode != "search":
            train.validate()
            common.check_data(train.dataset, train.data_dir)
    except (ValueError, FileNotFoundError) as error:
        raise common.usage_error(error) from None
    best = run_tuning(config, search, train, overwrite=flags.FLAGS.overwrite)
    if best is None:
        print(
            "bnas-tune: done (a distributed worker reports nothing; the chief reports the best "
            "trial)."
        )
        return
    print(f"Best trial {best['trial_id']}: {best['objective']} = {best['score']}")
    print(json.dumps(best, indent=2))


def run() -> None:
    define_flags()
    startup.run_program(main, __doc__)


if __name__ == "__main__":
    run()
