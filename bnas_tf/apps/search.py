"""``bnas-search``: binary architecture search; writes ``genotype.json`` to ``--output_dir``.

bnas-search --flagfile=flags/demo_search.cfg --output_dir=runs/search

``--method`` picks the search (darts, reduction, cp_nas, bmes: ``bnas_tf.search.methods``); every
flag is a setting of ``SearchConfig`` with its help text declared there.
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.apps import common, startup
from bnas_tf.apps import strategy as strategy_lib

from absl import app, flags


def define_flags(flag_values=flags.FLAGS) -> None:
    from bnas_tf.search.driver import SearchConfig

    common.define_config_flags(SearchConfig, flag_values=flag_values)
    common.define_run_flags(flag_values)
    flags.DEFINE_bool(
        "operation_space_reduction",
        False,
        "Deprecated: the same as --method=reduction (kept so that older flagfiles run).",
        flag_values=flag_values,
    )
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
    from bnas_tf.search.driver import SearchConfig
    from bnas_tf.search.methods import get_method

    import dataclasses

    from absl import logging

    limit_malloc_arenas(flags.FLAGS.malloc_arenas)  # before the first TensorFlow op
    config = common.config_from_flags(SearchConfig)
    if flags.FLAGS.operation_space_reduction:
        if config.method not in ("darts", "reduction"):
            raise app.UsageError(
                f"--operation_space_reduction (deprecated: --method=reduction) contradicts "
                f"--method={config.method}."
            )
        logging.warning("--operation_space_reduction is deprecated: use --method=reduction.")
        config = dataclasses.replace(config, method="reduction")
    try:
        config.validate()
        common.check_data(config.dataset, config.data_dir)
        # both halves hold a batch
        data_lib.search_split_sizes(config.dataset, **config.split_args())
    except (ValueError, FileNotFoundError) as error:
        raise common.usage_error(error) from None
    strategy, output_dir = strategy_lib.start_run("bnas-search", config)  # the strategy first
    method = get_method(config.method)
    with faults.reported_faults("bnas-search"):  # signals, NaN loss, full disk: message + exit code
        result = method.run(
            config, output_dir, resume=flags.FLAGS.resume, log=logging.info, strategy=strategy
        )
    output_dir = distribute.own_dir(output_dir, strategy)  # worker_<i> on non-chief workers
    print(f"Genotype ({config.method}: {method.summary(result)}):")
    print(result.genotype)
    print(f"Saved {output_dir / 'genotype.json'}")


def run() -> None:
    define_flags()
    startup.run_program(main, __doc__)


if __name__ == "__main__":
    run()
