"""``tf.distribute`` strategy choice, and where each worker of a distributed run writes.

One search or training run spread over the GPUs of one host (``mirrored``), over
several hosts (``multi_worker``, cluster read from ``TF_CONFIG``) or a TPU:

```python
strategy = make_strategy("mirrored")       # first, before TensorFlow runs any op
check_global_batch(64, strategy)           # the batch is global: split over replicas
with strategy.scope():
    net = ...                              # models, variables, optimizers
manager = CheckpointManager(tf.train.Checkpoint(net=net), "run/checkpoints", strategy)
```

The rules of a multi-worker run (those of Keras' ``distributed_file_utils``): every
worker saves each checkpoint (saving may read variables through collective ops), but
only the chief keeps its copy, in ``output_dir``; the others save to a temporary
directory that is deleted at once, and write their own small results to
``output_dir/worker_<task id>`` (``own_dir``). A resumed multi-worker run reads the
chief's checkpoint, so ``output_dir`` must then be on a filesystem all workers see.
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)

import json
import os
import shutil
from pathlib import Path

import tensorflow as tf

__all__ = [
    "STRATEGIES",
    "make_strategy",
    "is_default",
    "is_multi_worker",
    "is_chief",
    "check_global_batch",
    "own_dir",
    "prepare_own_dir",
    "barrier",
    "check_same",
    "shard_by_data",
    "synchronize_batch_norm",
    "CheckpointManager",
]

#: The values of ``--strategy``.
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")

#: Help of the ``strategy`` setting of the search and training configs.
STRATEGY_HELP = (
    "tf.distribute strategy: default (one device), mirrored (all GPUs of this host), "
    "multi_worker (several hosts; cluster from TF_CONFIG) or tpu. --batch_size is global."
)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy called ``name`` (one of ``STRATEGIES``).

    - ``default``: no distribution (TensorFlow's default strategy, one device).
    - ``mirrored``: ``tf.distribute.MirroredStrategy`` over all local GPUs; without
      GPUs, over all logical CPU devices (one unless configured otherwise).
    - ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy``; the cluster
      and this worker's place in it come from the ``TF_CONFIG`` environment variable.
      Create it before TensorFlow runs any operation.
    - ``tpu``: ``tf.distribute.TPUStrategy`` on the TPU named by ``TPU_NAME`` (or
      the local TPU of a Cloud TPU VM).

    Raises:
        ValueError: unknown name, ``TF_CONFIG`` missing or malformed, or no TPU found.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        _check_tf_config()
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise RuntimeError(
                f"--strategy=multi_worker: {error}. The strategy must be created before "
                "TensorFlow runs any operation (call make_strategy first)."
            ) from None
    if name == "tpu":
        return _tpu_strategy()
    raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}.")


def _check_tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable on every worker, "
            'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\' (index 1 on host2).'
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]
        task = config["task"]
        task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG is not valid ({error!r}): it must be JSON with 'cluster' "
            "({'worker': [host:port, ...]}) and 'task' ({'type': 'worker', 'index': i})."
        ) from None
    if task["type"] not in workers or int(task["index"]) >= len(workers[task["type"]]):
        raise ValueError(f"TF_CONFIG task {task} is not in its cluster {workers}.")
    return config


def _tpu_strategy() -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise ValueError(
            f"--strategy=tpu: no TPU found ({error}). Run on a Cloud TPU VM, or set TPU_NAME "
            "to the TPU's name or grpc:// address."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def is_default(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` is TensorFlow's default (non-distributing) strategy."""
    with strategy.scope():
        return not tf.distribute.has_strategy()


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` is a ``tf.distribute.MultiWorkerMirroredStrategy``."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this worker keeps the canonical outputs (always, outside multi-worker runs)."""
    return bool(strategy.extended.should_checkpoint)


def check_global_batch(
    batch_size: int, strategy: tf.distribute.Strategy, flag: str = "--batch_size"
) -> int:
    """The per-replica batch of a global ``batch_size``; ``ValueError`` unless it divides."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        fit = -(-batch_size // replicas) * replicas
        raise ValueError(
            f"{flag}={batch_size} is the global batch, split over the {replicas} replicas of "
            f"{type(strategy).__name__}; it must be a multiple of {replicas} (e.g. {fit})."
        )
    return batch_size // replicas


def _task(strategy: tf.distribute.Strategy) -> tuple[str, int]:
    resolver = strategy.cluster_resolver
    return resolver.task_type, int(resolver.task_id)


def own_dir(output_dir: str | os.PathLike, strategy: tf.distribute.Strategy) -> Path:
    """Where this worker writes its results: ``output_dir`` on the chief (and outside
    multi-worker runs), ``output_dir/<task type>_<task id>`` on the other workers."""
    output_dir = Path(output_dir)
    if is_chief(strategy):
        return output_dir
    task_type, task_id = _task(strategy)
    return output_dir / f"{task_type}_{task_id}"


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Wait until every worker of a multi-worker run gets here (a collective: all must call)."""
    if is_multi_worker(strategy):
        strategy.gather(strategy.run(lambda: tf.zeros([1])), axis=0)


def prepare_own_dir(output_dir: str | os.PathLike, strategy: tf.distribute.Strategy) -> Path:
    """``own_dir``, created once every worker is here (the chief has by then prepared
    ``output_dir``, e.g. emptied it for ``--overwrite``, so nothing written is lost)."""
    barrier(strategy)
    path = own_dir(output_dir, strategy)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_same(strategy: tf.distribute.Strategy, value: int, what: str) -> int:
    """Check that every worker holds the same integer ``value`` (a collective: all must call).

    Raises:
        RuntimeError: the workers disagree, e.g. each resumes from a different epoch.
    """
    if not is_multi_worker(strategy):
        return value
    per_replica = strategy.run(lambda: tf.constant([value], tf.int64))
    values = sorted({int(v) for v in strategy.gather(per_replica, axis=0).numpy()})
    if len(values) > 1:
        raise RuntimeError(
            f"The workers disagree on {what}: {values}. A resumed multi-worker run reads the "
            "chief's checkpoint, so --output_dir must be on a filesystem every worker sees."
        )
    return value


def shard_by_data(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy) -> tf.data.Dataset:
    """Shard ``dataset`` across workers by element (every worker reads the whole source, in
    the same seeded order, and keeps its own part of each global batch)."""
    if not is_multi_worker(strategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def synchronize_batch_norm(model: tf.keras.Model) -> int:
    """Make every ``BatchNormalization`` of a built ``model`` use global-batch statistics.

    Under a strategy, batch normalization otherwise normalizes each replica's slice of the
    batch on its own; synchronized, a step over ``n`` replicas computes what one device
    computes on the whole batch (one all-reduce per layer). Call before the first
    ``fit``. Returns the number of layers changed.
    """
    changed = 0
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            layer.fused = False  # the fused kernel cannot synchronize
            changed += 1
    return changed


class CheckpointManager:
    """``tf.train.CheckpointManager`` under the multi-worker rules.

    The chief saves into ``directory`` (the canonical copy); any other worker saves into
    a temporary directory, deleted right after. ``latest_checkpoint`` is always the
    chief's, so resuming needs ``directory`` on a filesystem every worker sees.
    """

    def __init__(
        self,
        checkpoint: tf.train.Checkpoint,
        directory: str | os.PathLike,
        strategy: tf.distribute.Strategy,
        *,
        max_to_keep: int = 2,
    ):
        self.checkpoint = checkpoint
        self.directory = Path(directory)
        self.chief = is_chief(strategy)
        self._manager = (
            tf.train.CheckpointManager(checkpoint, str(self.directory), max_to_keep=max_to_keep)
            if self.chief
            else None
        )
        if not self.chief:
            task_type, task_id = _task(strategy)
            self._temp = self.directory / f"workertemp_{task_type}_{task_id}"

    @property
    def latest_checkpoint(self) -> str | None:
        """The chief's newest checkpoint prefix, or None."""
        if self._manager is not None:
            return self._manager.latest_checkpoint
        return tf.train.latest_checkpoint(str(self.directory))

    def save(self, checkpoint_number: int) -> str | None:
        """Save (every worker must call it); the chief's path, None on the others."""
        if self._manager is not None:
            return self._manager.save(checkpoint_number=checkpoint_number)
        tf.train.CheckpointManager(self.checkpoint, str(self._temp), max_to_keep=1).save(
            checkpoint_number=checkpoint_number
        )
        shutil.rmtree(self._temp, ignore_errors=True)
        return None
