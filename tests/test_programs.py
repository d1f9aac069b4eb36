"""The absl programs end to end on tiny data, and their errors on bad input."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnas_tf.genotype import Genotype

ROOT = Path(__file__).resolve().parents[1]
TINY_SEARCH = [
    "--dataset=fashion_mnist", "--batch_size=8", "--epochs=2", "--layers=2",
    "--init_channels=4", "--entropy_tau=1.0", "--seed=0", "--verbose=0",
]
TINY_TRAIN = [
    "--dataset=fashion_mnist", "--layers=2", "--init_channels=4", "--epochs=1",
    "--batch_size=16", "--optimizer=adam", "--learning_rate=1e-3", "--lr_schedule=constant",
    "--drop_path_rate=0.1", "--seed=0", "--verbose=0",
]


def run(module, *args, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{module} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_idx_dir_module):
    """search -> train -> evaluate on the tiny IDX files, once for the module."""
    root = tmp_path_factory.mktemp("runs")
    data = f"--data_dir={tiny_idx_dir_module}"
    search = run("bnas_tf.search", *TINY_SEARCH, data, f"--output_dir={root / 'search'}")
    train = run(
        "bnas_tf.train", *TINY_TRAIN, data, f"--genotype={root / 'search' / 'genotype.json'}",
        f"--output_dir={root / 'train'}",
    )
    evaluate = run("bnas_tf.evaluate", f"--model_dir={root / 'train'}", data, f"--output_dir={root / 'eval'}")
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

    tags = {value.tag for path in events for event in tf.compat.v1.train.summary_iterator(str(path))
            for value in event.summary.value}
    for tag in ("search/loss", "search/accuracy", "search/arch_accuracy", "search/entropy", "genotype"):
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


def test_existing_output_dir_is_not_overwritten(pipeline, tiny_idx_dir_module):
    root, *_ = pipeline
    before = (root / "search" / "genotype.json").read_text()
    result = run(
        "bnas_tf.search", *TINY_SEARCH, f"--data_dir={tiny_idx_dir_module}", f"--output_dir={root / 'search'}",
        check=False,
    )
    assert result.returncode != 0 and "--overwrite" in result.stderr
    assert (root / "search" / "genotype.json").read_text() == before


def test_overwrite_refuses_a_foreign_directory(tmp_path, tiny_idx_dir):
    (tmp_path / "thesis.tex").write_text("precious")
    result = run(
        "bnas_tf.search", *TINY_SEARCH, f"--data_dir={tiny_idx_dir}", f"--output_dir={tmp_path}", "--overwrite",
        check=False,
    )
    assert result.returncode != 0 and "not made by bnas-tf" in result.stderr
    assert (tmp_path / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("bnas_tf.search", ["--epochs=0"], "--epochs must be positive"),
        ("bnas_tf.search", ["--learning_rate=-1"], "--learning_rate must be positive"),
        ("bnas_tf.search", ["--partial_channels=3"], "must divide"),
        ("bnas_tf.search", ["--dataset=imagenet9"], "Unknown dataset"),
        ("bnas_tf.search", ["--no_such_flag=1"], "no_such_flag"),
        ("bnas_tf.search", ["--flagfile=/nonexistent/run.cfg"], "/nonexistent/run.cfg"),
        ("bnas_tf.search", ["--genotype_selection=random"], "genotype_selection"),
        ("bnas_tf.train", ["--genotype=not_a_genotype"], "not_a_genotype"),
        ("bnas_tf.train", ["--optimizer=lbfgs"], "--optimizer"),
        ("bnas_tf.train", ["--batch_size=0"], "--batch_size must be positive"),
        ("bnas_tf.evaluate", ["--model_dir=/nonexistent/run"], "/nonexistent/run"),
    ],
)
def test_bad_flags_give_clear_errors(tmp_path, module, args, message):
    result = run(module, *args, f"--output_dir={tmp_path / 'out'}", check=False)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "out" / "genotype.json").exists()


def test_missing_dataset_names_the_places_and_the_fix(tmp_path):
    result = run(
        "bnas_tf.search", *TINY_SEARCH, f"--data_dir={tmp_path / 'empty'}", f"--output_dir={tmp_path / 'out'}",
        check=False,
    )
    assert result.returncode != 0
    assert str(tmp_path / "empty") in result.stderr and "apt-get install" in result.stderr
