"""The genotype a search keeps is chosen by an inference-mode measurement of the
architecture half after each epoch (issue 20, defect 3), not by the training-mode
running mean ``arch_accuracy``."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf import data as data_lib
from bnas_tf.genotype import BNAS_A, LATEST_CELL
from bnas_tf.runs import read_json
from bnas_tf.search.driver import SearchConfig, _select, run_search

import numpy as np
import pytest
import tensorflow as tf


def test_best_epoch_is_the_one_with_the_best_val_accuracy_not_arch_accuracy():
    history = [
        {"epoch": 0, "arch_accuracy": 0.9, "val_accuracy": 0.2, "genotype": BNAS_A.to_dict()},
        {"epoch": 1, "arch_accuracy": 0.1, "val_accuracy": 0.6, "genotype": LATEST_CELL.to_dict()},
        {"epoch": 2, "arch_accuracy": 0.5, "val_accuracy": 0.4, "genotype": BNAS_A.to_dict()},
    ]
    epoch, genotype = _select(history, "best")
    assert (epoch, genotype) == (1, LATEST_CELL)
    assert _select(history, "last")[0] == 2
    with pytest.raises(ValueError, match="val_accuracy"):
        _select([{k: v for k, v in r.items() if k != "val_accuracy"} for r in history], "best")


@pytest.mark.parametrize("val_batches", [None, 1])
def test_search_logs_an_inference_mode_accuracy_of_the_alpha_half(
    val_batches, tiny_idx_dir_module, tmp_path
):
    """Each epoch's ``val_accuracy`` equals the accuracy of ``net(x, training=False)`` on the
    alpha half (all of it, or its first ``val_batches`` batches) after that epoch."""
    config = SearchConfig(
        data_dir=str(tiny_idx_dir_module),
        limit=48,
        batch_size=8,
        epochs=2,
        layers=1,
        init_channels=4,
        val_batches=val_batches,
        verbose=0,
    )
    measured = []

    class Measure(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ds = data_lib.search_validation(
                config.dataset, seed=config.seed, batches=val_batches, **config.split_args()
            )
            correct = total = 0
            for x, y in ds:
                predicted = np.argmax(self.model(x, training=False).numpy(), axis=-1)
                correct += int(np.sum(predicted == y.numpy()))
                total += len(predicted)
            measured.append((correct / total, total, logs["val_accuracy"]))

    result = run_search(config, tmp_path / "search", callbacks=[Measure()])
    assert len(measured) == 2
    for accuracy, total, logged in measured:
        assert total == (24 if val_batches is None else 8)  # the whole half of 48, or one batch
        assert logged == pytest.approx(accuracy, abs=1e-6)
    history = read_json(tmp_path / "search" / "metrics.json")["history"]
    assert [r["val_accuracy"] for r in history] == pytest.approx([m[2] for m in measured])
    assert all("val_loss" in r for r in history)
    best = max(history, key=lambda r: (r["val_accuracy"], r["epoch"]))
    assert result.best_epoch == best["epoch"]


def test_search_validation_is_the_alpha_half_in_a_fixed_order(tiny_idx_dir_module):
    kwargs = dict(data_dir=str(tiny_idx_dir_module), batch_size=8, limit=48)
    pairs = data_lib.search_splits("fashion_mnist", seed=3, shuffle_seed=7, **kwargs)
    alpha_images = np.concatenate([xa.numpy() for (_, (xa, _)) in pairs])
    val = np.concatenate(
        [x.numpy() for x, _ in data_lib.search_validation("fashion_mnist", seed=3, **kwargs)]
    )
    again = np.concatenate(
        [x.numpy() for x, _ in data_lib.search_validation("fashion_mnist", seed=3, **kwargs)]
    )
    np.testing.assert_array_equal(val, again)  # fixed order
    key = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))  # noqa: E731
    assert key(val) == key(alpha_images)  # the same images as the alpha half
    weight_images = np.concatenate([xw.numpy() for ((xw, _), _) in pairs])
    assert not set(key(val)) & set(key(weight_images))
