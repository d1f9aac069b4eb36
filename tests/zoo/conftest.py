"""Fixtures of the zoo tests: a tiny trained run published into a temporary zoo.

The run (Kim et al.'s BNAS-A cell, 3 cells x 8 channels, one epoch on the 64 tiny IDX
images) is trained once per session and published as ``BNASA``, ``BNASB`` and
``BNASFM`` weights ``fashion_mnist`` into a temporary zoo directory. Tests that use
:func:`tiny_zoo_env` see that zoo (``$BNAS_TF_ZOO_DIR``) and a private Keras cache
(``$BNAS_TF_CACHE_DIR``); the repository's ``zoo/`` is never written.
"""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.zoo import registry

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

TINY_RUN = dict(
    genotype="bnas_a",
    dataset="fashion_mnist",
    layers=3,
    init_channels=8,
    epochs=1,
    batch_size=16,
    optimizer="adam",
    learning_rate=1e-3,
    lr_schedule="constant",
    drop_path_rate=0.0,
    augment=False,
    seed=0,
    verbose=0,
)
TINY_MODELS = ("BNASA", "BNASB", "BNASFM")


def _write_idx_files(directory: Path) -> Path:
    """64 train / 32 test random 28x28 images (gzipped IDX), labels cycling 0..9."""
    rng = np.random.default_rng(5)
    directory.mkdir()
    for prefix, n in (("train", 64), ("t10k", 32)):
        for kind, array in (
            ("images-idx3", rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)),
            ("labels-idx1", (np.arange(n) % 10).astype(np.uint8)),
        ):
            header = struct.pack(f">I{array.ndim}I", 0x0800 + array.ndim, *array.shape)
            with gzip.open(directory / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + array.tobytes())
    return directory


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished bnas-train run directory (library call, tiny synthetic data)."""
    from bnas_tf.training import TrainConfig, train_network

    root = tmp_path_factory.mktemp("zoo_run")
    data_dir = _write_idx_files(root / "idx")
    run_dir = root / "train"
    run_dir.mkdir()
    train_network(TrainConfig(data_dir=str(data_dir), **TINY_RUN), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_zoo(tiny_run, tmp_path_factory) -> Path:
    """A zoo directory holding the tiny run as BNASA, BNASB and BNASFM ``fashion_mnist``."""
    from bnas_tf.zoo.publish import publish

    directory = tmp_path_factory.mktemp("zoo")
    for name in TINY_MODELS:
        publish(tiny_run, name, zoo_dir=directory)
    return directory


@pytest.fixture
def tiny_zoo_env(tiny_zoo, tmp_path, monkeypatch) -> Path:
    """Point the zoo at :func:`tiny_zoo` with an empty private download cache."""
    monkeypatch.setenv(registry.ZOO_DIR_ENV, str(tiny_zoo))
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(tmp_path / "keras_cache"))
    monkeypatch.delenv(registry.ZOO_URL_ENV, raising=False)
    return tiny_zoo


@pytest.fixture
def empty_zoo_env(tmp_path, monkeypatch) -> Path:
    """A zoo with an empty registry: every model at its coded reference configuration."""
    directory = tmp_path / "empty_zoo"
    directory.mkdir()
    monkeypatch.setenv(registry.ZOO_DIR_ENV, str(directory))
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(tmp_path / "keras_cache"))
    monkeypatch.delenv(registry.ZOO_URL_ENV, raising=False)
    return directory


@pytest.fixture(autouse=True)
def _release_models():
    """Drop each test's models (BNASH alone holds 160 M float32 weights)."""
    yield
    import gc

    import tensorflow as tf

    tf.keras.backend.clear_session()
    gc.collect()
