"""The absl programs end to end on tiny data (their errors on bad input: tests/reliability/)."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.genotype import Genotype

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_SEARCH = [
    "--dataset=fashion_mnist",
    "--batch_size=8",
    "--epochs=2",
    "--layers=2",
    "--init_channels=4",
    "--entropy_tau=1.0",
    "--seed=0",
    "--verbose=0",
]
TINY_TRAIN = [
    "--dataset=fashion_mnist",
    "--layers=2",
    "--init_channels=4",
    "--epochs=1",
    "--batch_size=16",
    "--optimizer=adam",
    "--learning_rate=1e-3",
    "--lr_schedule=constant",
    "--drop_path_rate=0.1",
    "--seed=0",
    "--verbose=0",
]


def run(module, *args, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{module} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_idx_dir_module):
    """search -> train -> evaluate on the tiny IDX files, once for the module."""
    root = tmp_path_factory.mktemp("runs")
    data = f"--data_dir={tiny_idx_dir_module}"
    search = run("bnas_tf.apps.search", *TINY_SEARCH, data, f"--output_dir={root / 'search'}")
    train = run(
        "bnas_tf.apps.train",
        *TINY_TRAIN,
        data,
        f"--genotype={root / 'search' / 'genotype.json'}",
        f"--output_dir={root / 'train'}",
    )
    evaluate = run(
        "bnas_tf.apps.evaluate",
        f"--model_dir={root / 'train'}",
        data,
        f"--output_dir={root / 'eval'}",
    )
    return root, search, train, evaluate


def test_search_writes_a_valid_genotype_and_metrics(pipeline):
    root, search, _, _ = pipeline
    genotype = Genotype.load(root / "search" / "genotype.json")
    assert genotype.search_space == "bnas_kim"
    metrics = json.loads((root / "search" / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and metrics["best_epoch"] in (0, 1)
    assert Genotype.from_dict(metrics["genotype"]) == genotype
    assert (root / "search" / "genotype.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = list((root / "search" / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    import tensorflow as tf

    tags = {
        value.tag
        for path in events
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
    }
    for tag in (
        "search/loss",
        "search/accuracy",
        "search/arch_accuracy",
        "search/entropy",
        "genotype",
    ):
        assert tag in tags, sorted(tags)
    assert any(tag.startswith("genotype_ops/") for tag in tags)
    assert "Genotype(" in search.stdout
    # The flags of the run are kept as a flagfile that reproduces it.
    assert "--init_channels=4" in (root / "search" / "flags.cfg").read_text()


def test_train_and_evaluate_agree(pipeline):
    root, _, train, evaluate = pipeline
    metrics = json.loads((root / "train" / "metrics.json").read_text())
    evaluated = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["test"]["examples"] == evaluated["examples"] == 32
    assert evaluated["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert "Ratio of MACs that are binarized" in train.stdout and "top-1" in evaluate.stdout
    spec = json.loads((root / "train" / "network.json").read_text())
    assert Genotype.from_dict(spec["genotype"]) == Genotype.load(root / "search" / "genotype.json")


# Bad input to the programs (flags, genotype and data files, existing or read-only output
# directories) and faults during a run are tested in tests/reliability/.
