"""Start-up of a program that takes ``--strategy``: the strategy first, then the run directory.

``MultiWorkerMirroredStrategy`` must exist before TensorFlow runs any operation, and
only the chief of a multi-worker run prepares ``--output_dir`` (the other workers write
in ``--output_dir/worker_<i>``, see [`bnas_tf.distribute`][bnas_tf.distribute]):

```python
strategy, output_dir = start_run("bnas-search", config)
run_search(config, output_dir, strategy=strategy)
```
"""

from __future__ import annotations

from bnas_tf import distribute
from bnas_tf.apps import common

from pathlib import Path

from absl import app, flags

__all__ = ["HELP", "start_run"]

HELP = distribute.STRATEGY_HELP


def start_run(program: str, config, flag_values=flags.FLAGS):
    """``(strategy, output_dir)`` for ``config.strategy`` and ``config.batch_size``.

    Raises:
        app.UsageError: no such strategy or device, or a batch the replicas cannot share.
    """
    try:
        strategy = distribute.make_strategy(config.strategy)
        distribute.check_global_batch(config.batch_size, strategy)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if distribute.is_chief(strategy):
        return strategy, common.start_run(program, flag_values)
    if flag_values.overwrite and flag_values.resume:
        raise app.UsageError("--overwrite and --resume exclude each other.")
    return strategy, Path(flag_values.output_dir)
