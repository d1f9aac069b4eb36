"""``bnas-search``: binary architecture search; writes ``genotype.json`` to ``--output_dir``.

bnas-search --flagfile=flags/demo_search.cfg --output_dir=runs/search
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.apps import common, startup
from bnas_tf.apps import strategy as strategy_lib

from absl import app, flags

HELP = {
    **common.DATA_HELP,
    "limit": "Use only the first N training examples (tiny runs).",
    "train_portion": "Share of the training split that trains the weights; the rest trains alpha.",
    "batch_size": "Batch size of each half.",
    "epochs": "Search epochs.",
    "layers": "Cells of the supernet.",
    "init_channels": "Channels of the first cells.",
    "search_space": "bnas_kim (Kim et al.) or bnas_darts (Chen et al.).",
    **common.BINARIZATION_HELP,
    "partial_channels": "K of channel sampling (PC-DARTS); 1 = all channels.",
    "dtype_policy": "Keras dtype policy of the supernet's cells: float32, or mixed_bfloat16 "
    "(bfloat16 activations and convolutions, float32 variables, alpha and losses; fast on "
    "CPUs with AVX512-BF16).",
    "edge_normalization": "Learn edge-normalization weights beta (default: on when K > 1).",
    "inter_cell_skip": "Kim et al.'s skip connections between cells.",
    "allow_none": "Let Zeroise (none) win in the derived genotype (Kim: yes, DARTS: no).",
    "entropy_lambda": "lambda of the entropy regularizer (0 disables it).",
    "entropy_tau": "tau of the entropy regularizer's decay exp(-t / tau).",
    "learning_rate": "Initial weight learning rate (cosine schedule).",
    "learning_rate_min": "Final weight learning rate.",
    "momentum": "SGD momentum of the weights.",
    "weight_decay": "L2 weight decay of the weights.",
    "grad_clip": "Global-norm clip of the weight gradients.",
    "arch_learning_rate": "Adam learning rate of alpha.",
    "arch_weight_decay": "L2 weight decay of alpha.",
    "arch_warmup_epochs": "Epochs of weight-only updates before alpha is trained.",
    "unrolled": "DARTS' second-order alpha gradient instead of the first-order one.",
    "operation_space_reduction": "Chen et al.'s operation space reduction: train in stages and "
    "drop the lowest-scoring op of every edge after each, until one op per edge remains "
    "(--epochs is then unused).",
    "stage_epochs": "Supernet training epochs per reduction stage.",
    "samples_per_op": "T: rounds of architecture sampling from O_smaller per stage.",
    "eval_batches": "Held-out batches on which each sampled architecture is evaluated.",
    "reduction_temperature": "Temperature of the softmax over the sampled ops' mean accuracies.",
    "genotype_selection": "best (the epoch with the best val_accuracy: the alpha half evaluated in "
    "inference mode at the epoch's end) or last.",
    "val_batches": "Batches of the alpha half evaluated after each epoch (none: the whole half).",
    "seed": "Random seed; with it a CPU run is repeatable.",
    "verbose": "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch.",
    "strategy": strategy_lib.HELP,
}


def define_flags(flag_values=flags.FLAGS) -> None:
    from bnas_tf.search.driver import SearchConfig

    common.define_config_flags(SearchConfig, HELP, flag_values)
    common.define_run_flags(flag_values)
    flags.DEFINE_integer(
        "malloc_arenas",
        2,
        "Cap glibc's malloc arenas of this process (0: glibc's default, up to 8 per core); fewer "
        "arenas keep freed activations reusable across TensorFlow's threads and lower the peak "
        "memory (bnas_tf.memory).",
        lower_bound=0,
        flag_values=flag_values,
    )


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from bnas_tf import data as data_lib
    from bnas_tf import distribute, faults
    from bnas_tf.memory import limit_malloc_arenas
    from bnas_tf.search.driver import SearchConfig, run_search

    limit_malloc_arenas(flags.FLAGS.malloc_arenas)  # before the first TensorFlow op
    config = common.config_from_flags(SearchConfig)
    try:
        config.validate()
        common.check_data(config.dataset, config.data_dir)
        # both halves hold a batch
        data_lib.search_split_sizes(config.dataset, **config.split_args())
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from None
    strategy, output_dir = strategy_lib.start_run("bnas-search", config)  # the strategy first
    if config.operation_space_reduction:
        from bnas_tf.search.reduction import ReductionConfig
        from bnas_tf.search.reduction_search import run_reduction_search

        from absl import logging

        reduction = ReductionConfig(
            stage_epochs=config.stage_epochs,
            samples_per_op=config.samples_per_op,
            eval_batches=config.eval_batches,
            temperature=config.reduction_temperature,
        )
        with faults.reported_faults("bnas-search"):
            result = run_reduction_search(
                config, reduction, output_dir, resume=flags.FLAGS.resume, log=logging.info
            )
        print(f"Genotype ({len(result.stages)} reduction stages, {result.wall_time:.0f} s):")
        print(result.genotype)
        print(f"Saved {output_dir / 'genotype.json'}")
        return
    with faults.reported_faults("bnas-search"):  # signals, NaN loss, full disk: message + exit code
        result = run_search(config, output_dir, resume=flags.FLAGS.resume, strategy=strategy)
    output_dir = distribute.own_dir(output_dir, strategy)  # worker_<i> on non-chief workers
    print(f"Genotype (epoch {result.best_epoch}, {result.wall_time:.0f} s):")
    print(result.genotype)
    print(f"Saved {output_dir / 'genotype.json'}")


def run() -> None:
    define_flags()
    startup.run_program(main, __doc__)


if __name__ == "__main__":
    run()
