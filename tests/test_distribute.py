"""tf.distribute (:mod:`bnas_tf.distribute`): one search step over 2 replicas equals the
one-device step; a 2-worker MultiWorkerMirroredStrategy search and training.

Logical CPU devices must be configured before TensorFlow initialises its devices, and a
MultiWorkerMirroredStrategy before it runs any op, so both run in subprocesses: this file
run as a script (``mirrored``: one process, several checks; ``multi_worker``: two worker
processes on 127.0.0.1, each a search then a training).
"""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 540  # generous: a loaded 2-core machine is several times slower than a quiet one


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on 127.0.0.1 right now."""
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{p}" for p in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def run_workers(
    commands: list[list[str]], envs: list[dict], logs: Path
) -> list[subprocess.CompletedProcess]:
    """Run the commands at once (output to files: a full pipe would stall a collective)."""
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    for i, (command, env) in enumerate(zip(commands, envs)):
        with open(logs / f"{i}.log", "w") as log:
            processes.append(
                subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
    results = []
    try:
        for i, (command, process) in enumerate(zip(commands, processes)):
            process.wait(timeout=TIMEOUT)
            output = (logs / f"{i}.log").read_text()
            results.append(subprocess.CompletedProcess(command, process.returncode, output, output))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return results


# ---------------------------------------------------------------------------------------
# MirroredStrategy over 2 logical CPU devices (one subprocess, several checks)
# ---------------------------------------------------------------------------------------


def _mirrored_job(data_dir: str, out: str) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from bnas_tf import distribute
    from bnas_tf.search import Architect, Supernet, default_optimizers
    from bnas_tf.training import TrainConfig, train_network

    strategy = distribute.make_strategy("mirrored")
    results = {"replicas": strategy.num_replicas_in_sync}
    try:
        distribute.check_global_batch(7, strategy)
    except ValueError as error:
        results["batch_error"] = str(error)

    # One search step (alpha step, then weight step) on a global batch of 8.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, (2, 8)).astype(np.int64)
    pairs = tf.data.Dataset.from_tensor_slices(((x[0], y[0]), (x[1], y[1]))).batch(8)

    def supernet():  # one reduction cell with one node: the step, cheap to trace
        net = Supernet(10, layers=1, init_channels=4, steps=1, multiplier=1, seed=0)
        # Plain SGD on alpha: its update is the gradient itself (Adam's would not show a wrong
        # loss scale, being invariant to it).
        net.compile(
            optimizer=default_optimizers(10)["optimizer"],
            arch_optimizer=tf.keras.optimizers.SGD(1.0),
            architect=Architect(entropy_lambda=1.0),
        )
        net(tf.zeros((1, 8, 8, 1)))
        net.build_optimizers()
        return net

    single = supernet()
    with strategy.scope():
        mirrored = supernet()
    results["synchronized_bn"] = distribute.synchronize_batch_norm(mirrored)
    mirrored.set_weights(single.get_weights())
    results["alpha_before"] = single.alpha_reduce.numpy().tolist()
    for name, net in (("single", single), ("mirrored", mirrored)):
        logs = net.fit(pairs, epochs=1, verbose=0).history
        results[name] = {
            "alpha": net.alpha_reduce.numpy().tolist(),
            "classifier": net.classifier.kernel.numpy().tolist(),
            "loss": logs["loss"][-1],
            "arch_loss": logs["arch_loss"][-1],
        }

    # Training a published cell's network under the strategy (bnas-train's function).
    config = TrainConfig(
        genotype="bnas_a",
        dataset="fashion_mnist",
        data_dir=data_dir,
        layers=1,
        init_channels=4,
        epochs=1,
        batch_size=16,
        limit=64,
        limit_test=32,
        lr_schedule="constant",
        verbose=0,
        strategy="mirrored",
    )
    # one strategy per process
    metrics = train_network(config, Path(out) / "train", strategy=strategy)
    results["train"] = {"history": metrics["history"], "test": metrics["test"]}
    (Path(out) / "results.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory, tiny_idx_dir_module):
    out = tmp_path_factory.mktemp("mirrored")
    process = subprocess.run(
        [sys.executable, __file__, "mirrored", str(tiny_idx_dir_module), str(out)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    return {**json.loads((out / "results.json").read_text()), "out": out}


def test_mirrored_uses_both_logical_devices(mirrored):
    assert mirrored["replicas"] == 2
    assert mirrored["synchronized_bn"] > 0


def test_mirrored_alpha_update_matches_one_device(mirrored):
    before = np.array(mirrored["alpha_before"])
    single = np.array(mirrored["single"]["alpha"]) - before
    replicated = np.array(mirrored["mirrored"]["alpha"]) - before
    scale = np.abs(single).max()
    assert scale > 1e-4
    # Two replicas sum the batch's gradients in another order than one device: float32
    # rounding of the summands' size, so an update near zero is compared against the largest
    # (a CI run saw 1.2e-8 on an update of 6.3e-5, in a step whose largest is 9.1e-3).
    np.testing.assert_allclose(replicated, single, rtol=1e-4, atol=1e-5 * scale)
    assert mirrored["mirrored"]["arch_loss"] == pytest.approx(
        mirrored["single"]["arch_loss"], rel=1e-5
    )


def test_mirrored_weight_update_matches_one_device(mirrored):
    np.testing.assert_allclose(
        mirrored["mirrored"]["classifier"], mirrored["single"]["classifier"], rtol=1e-4, atol=1e-6
    )
    assert mirrored["mirrored"]["loss"] == pytest.approx(mirrored["single"]["loss"], rel=1e-5)


def test_global_batch_must_divide_by_replicas(mirrored):
    message = mirrored["batch_error"]
    assert "--batch_size=7" in message and "multiple of 2" in message and "e.g. 8" in message


def test_training_under_mirrored(mirrored):
    train = mirrored["train"]
    assert len(train["history"]) == 1 and np.isfinite(train["history"][0]["loss"])
    assert 0.0 <= train["test"]["accuracy"] <= 1.0 and train["test"]["examples"] == 32
    assert (mirrored["out"] / "train" / "weights.h5").exists()


# ---------------------------------------------------------------------------------------
# MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1, a search then a training
# ---------------------------------------------------------------------------------------


def _multi_worker_job(data_dir: str, out: str) -> None:
    from bnas_tf import distribute

    strategy = distribute.make_strategy("multi_worker")  # first: before TensorFlow runs any op

    from bnas_tf.search.driver import SearchConfig, run_search
    from bnas_tf.training import TrainConfig, train_network

    search = SearchConfig(
        dataset="fashion_mnist",
        data_dir=data_dir,
        layers=1,
        init_channels=4,
        epochs=2,
        batch_size=8,
        limit=32,
        entropy_tau=1.0,
        seed=0,
        verbose=0,
        strategy="multi_worker",
    )
    run_search(search, Path(out) / "search", strategy=strategy)
    genotype = distribute.own_dir(Path(out) / "search", strategy) / "genotype.json"
    train = TrainConfig(
        genotype=str(genotype),
        dataset="fashion_mnist",
        data_dir=data_dir,
        layers=1,
        init_channels=4,
        epochs=1,
        batch_size=16,
        limit=64,
        limit_test=32,
        lr_schedule="constant",
        verbose=0,
        strategy="multi_worker",
    )
    train_network(train, Path(out) / "train", strategy=strategy)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, tiny_idx_dir_module):
    out = tmp_path_factory.mktemp("two_workers")
    ports = free_ports(2)
    command = [sys.executable, __file__, "multi_worker", str(tiny_idx_dir_module), str(out)]
    results = run_workers(
        [command, command], [_env(TF_CONFIG=tf_config(ports, i)) for i in range(2)], out / "logs"
    )
    for result in results:
        assert result.returncode == 0, result.stdout[-4000:]
    return out


def test_two_worker_search_writes_identical_genotypes(two_workers):
    chief, worker = two_workers / "search", two_workers / "search" / "worker_1"
    assert json.loads((chief / "genotype.json").read_text()) == json.loads(
        (worker / "genotype.json").read_text()
    )
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (chief, worker))
    np.testing.assert_array_equal(a["alpha_normal"], b["alpha_normal"])
    np.testing.assert_array_equal(a["alpha_reduce"], b["alpha_reduce"])
    assert len(a["history"]) == 2
    assert [r["genotype"] for r in a["history"]] == [r["genotype"] for r in b["history"]]


def test_two_worker_checkpoints_follow_the_multi_worker_rules(two_workers):
    for run in ("search", "train"):
        chief, worker = two_workers / run, two_workers / run / "worker_1"
        assert (chief / "checkpoints" / "checkpoint").exists()  # the canonical copy
        assert not list(worker.glob("**/*.index"))  # the worker's copies were temporary
        assert not list((chief / "checkpoints").glob("workertemp*"))


def test_two_worker_training(two_workers):
    chief, worker = (
        json.loads((d / "metrics.json").read_text())
        for d in (two_workers / "train", two_workers / "train" / "worker_1")
    )
    assert len(chief["history"]) == 1 and np.isfinite(chief["history"][0]["loss"])
    assert chief["history"] == worker["history"]  # the same global loss and accuracy
    assert chief["test"]["accuracy"] == worker["test"]["accuracy"]  # the same weights


# ---------------------------------------------------------------------------------------
# Errors and the programs' start-up (in this process: nothing is created)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, env, match",
    [
        ("sideways", {}, "--strategy must be one of default, mirrored, multi_worker, tpu"),
        ("multi_worker", {}, "needs the TF_CONFIG environment variable"),
        ("multi_worker", {"TF_CONFIG": "{not json"}, "TF_CONFIG is not valid"),
        (
            "multi_worker",
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}
                )
            },
            "not in its cluster",
        ),
        ("tpu", {}, "--strategy=tpu: no TPU found"),
    ],
)
def test_strategy_errors(monkeypatch, name, env, match):
    from bnas_tf import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=match):
        distribute.make_strategy(name)


def test_configs_check_the_strategy():
    from bnas_tf.search.driver import SearchConfig
    from bnas_tf.training import TrainConfig

    with pytest.raises(ValueError, match="--strategy must be one of"):
        TrainConfig(strategy="gpus").validate()
    with pytest.raises(ValueError, match="run on one device"):
        SearchConfig(strategy="mirrored", unrolled=True).validate()


class _FakeStrategy:
    """What :mod:`bnas_tf.distribute` reads of a multi-worker strategy on worker 1 of 2."""

    num_replicas_in_sync = 2

    class extended:
        should_checkpoint = False

    class cluster_resolver:
        task_type, task_id = "worker", 1


def test_program_start_up_on_a_worker_leaves_the_run_directory_to_the_chief(monkeypatch, tmp_path):
    from bnas_tf import distribute
    from bnas_tf.apps import common
    from bnas_tf.apps import strategy as strategy_lib
    from bnas_tf.search.driver import SearchConfig

    from absl import app, flags

    values = flags.FlagValues()
    common.define_run_flags(values)
    values(["bnas-search", f"--output_dir={tmp_path / 'run'}"])
    monkeypatch.setattr(distribute, "make_strategy", lambda name: _FakeStrategy())
    strategy, output_dir = strategy_lib.start_run("bnas-search", SearchConfig(batch_size=8), values)
    assert output_dir == tmp_path / "run" and not output_dir.exists()  # the chief prepares it
    assert distribute.own_dir(output_dir, strategy) == tmp_path / "run" / "worker_1"
    with pytest.raises(app.UsageError, match="multiple of 2"):
        strategy_lib.start_run("bnas-search", SearchConfig(batch_size=7), values)


if __name__ == "__main__":
    {"mirrored": _mirrored_job, "multi_worker": _multi_worker_job}[sys.argv[1]](
        sys.argv[2], sys.argv[3]
    )
