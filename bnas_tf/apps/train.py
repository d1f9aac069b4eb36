"""``bnas-train``: train the binary network of a genotype; writes weights and metrics.

    bnas-train --flagfile=flags/demo_train.cfg --genotype=runs/search/genotype.json \
        --output_dir=runs/train
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.apps import common, startup
from bnas_tf.apps import strategy as strategy_lib

from absl import app, flags

HELP = {
    "genotype": "A genotype.json path, a JSON string or a published name (bnas_a, latest_cell, "
    "bnas_xnor_1).",
    "search_space": "If set, the genotype must come from this search space (bnas_kim or "
    "bnas_darts).",
    **common.DATA_HELP,
    "limit": "Use only the first N training examples.",
    "limit_test": "Evaluate on only the first N test examples.",
    "layers": "Cells of the network.",
    "init_channels": "Channels of the first cells.",
    "stem": "cifar or imagenet.",
    **common.BINARIZATION_HELP,
    "inter_cell_skip": "Kim et al.'s skip connections between cells.",
    "epochs": "Training epochs.",
    "batch_size": "Batch size.",
    "optimizer": "sgd or adam.",
    "learning_rate": "Peak learning rate.",
    "momentum": "SGD momentum.",
    "weight_decay": "Decoupled weight decay.",
    "lr_schedule": "onecycle, cosine or constant.",
    "label_smoothing": "Label smoothing of the cross-entropy.",
    "auxiliary_weight": "Weight of the auxiliary head's loss (0: no auxiliary head).",
    "drop_path_rate": "Final drop-path probability (ramped linearly).",
    "grad_clip": "Global-norm gradient clip ('none' for no clipping).",
    "augment": "Random flips and crops of the training images.",
    "dtype_policy": "float32, or mixed_bfloat16: bfloat16 compute in the stem and cells; weights, "
    "BN statistics, logits and loss in float32 (fast where the CPU has AVX512-BF16 or AMX, "
    "emulated and slower elsewhere). The weights saved are float32 either way; bnas-evaluate, "
    "bnas-export and the zoo rebuild the network in float32.",
    "seed": "Random seed; with it a CPU run is repeatable.",
    "verbose": "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch.",
    "strategy": strategy_lib.HELP,
}


def define_flags(flag_values=flags.FLAGS) -> None:
    from bnas_tf.training import TrainConfig

    common.define_config_flags(TrainConfig, HELP, flag_values)
    common.define_run_flags(flag_values)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from bnas_tf import distribute, faults
    from bnas_tf.training import (
        TrainConfig,
        load_trained,
        resolve_genotype,
        summary_text,
        train_network,
        training_examples,
    )

    config = common.config_from_flags(TrainConfig)
    try:
        config.validate()
        resolve_genotype(config)
        training_examples(config)  # also checks that the data are there and hold a batch
        common.check_data(config.dataset, config.data_dir)
    except (ValueError, FileNotFoundError) as error:
        raise common.usage_error(error) from None  # the message names the flag or file
    strategy, output_dir = strategy_lib.start_run("bnas-train", config)  # the strategy first
    with faults.reported_faults("bnas-train"):  # signals, NaN loss, full disk: message + exit code
        metrics = train_network(config, output_dir, resume=flags.FLAGS.resume, strategy=strategy)
    output_dir = distribute.own_dir(output_dir, strategy)  # worker_<i> on non-chief workers
    model, _ = load_trained(output_dir)
    print(summary_text(model))
    test = metrics["test"]
    print(
        f"Test top-1: {test['accuracy']:.4f} on {test['examples']} images "
        f"(trained {metrics['train_time_s']:.0f} s). Weights: {output_dir / 'weights.h5'}"
    )


def run() -> None:
    define_flags()
    startup.run_program(main, __doc__)


if __name__ == "__main__":
    run()
