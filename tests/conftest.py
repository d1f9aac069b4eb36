"""Shared pytest fixtures.

``bnas_tf`` is imported before TensorFlow so that ``tf.keras`` is Keras 2 (tf_keras).
"""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf import data

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

TINY_TRAIN = 64
TINY_TEST = 32


def write_idx(path, array, *, compress=None) -> Path:
    """Writes a uint8 ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``).

    Layout: magic ``0x0000 08 <ndim>``, big-endian uint32 dimensions, then the raw bytes.
    """
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = struct.pack(f">I{array.ndim}I", 0x0800 + array.ndim, *array.shape)
    payload += array.tobytes()
    compress = path.suffix == ".gz" if compress is None else compress
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


@pytest.fixture(name="write_idx")
def write_idx_fixture():
    """The :func:`write_idx` helper, for tests that build their own IDX files."""
    return write_idx


@pytest.fixture(name="restore_datasets")
def restore_datasets_fixture():
    """Forget the datasets a test registers (``data.from_arrays``, ``npz:``, ``folder:``,
    ``tfds:``), so that tests run later in the same process see only the built-in ones."""
    from bnas_tf import sources

    registries = (
        data.DATASETS,
        data.AUGMENTATIONS,
        data._CUSTOM_ARRAYS,
        data._TFDS_SOURCES,
        sources._OPENED,
    )
    saved = [dict(registry) for registry in registries]
    yield
    for registry, before in zip(registries, saved):
        registry.clear()
        registry.update(before)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The Debian Fashion-MNIST directory; skips the test if it is not installed."""
    directory = data.DEBIAN_FASHION_MNIST_DIR
    if data._find_idx_files(directory, "train") is None:
        pytest.skip(
            f"Fashion-MNIST not installed in {directory} (apt-get install -y dataset-fashion-mnist)"
        )
    return directory


def _write_tiny_idx(directory: Path) -> Path:
    rng = np.random.default_rng(1234)
    directory.mkdir()
    for prefix, n in (("train", TINY_TRAIN), ("t10k", TINY_TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory


@pytest.fixture
def tiny_idx_dir(tmp_path) -> Path:
    """A directory with small valid gzipped IDX files: 64 train and 32 test 28x28 images.

    Images are uniform random bytes (distinct with overwhelming probability); labels cycle
    through 0..9.
    """
    return _write_tiny_idx(tmp_path / "tiny_idx")


@pytest.fixture(scope="module")
def tiny_idx_dir_module(tmp_path_factory) -> Path:
    """:func:`tiny_idx_dir`, shared by the tests of one module."""
    return _write_tiny_idx(tmp_path_factory.mktemp("tiny") / "tiny_idx")


@pytest.fixture(autouse=True)
def _seed_everything():
    """Seeds Python, NumPy and TensorFlow before every test."""
    tf.keras.utils.set_random_seed(0)
    yield
