"""Tests for bnas_tf.data."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf import data

import gzip
import shutil

import numpy as np
import pytest
import tensorflow as tf

TINY_TRAIN, TINY_TEST = 64, 32  # sizes of the IDX files written by conftest.tiny_idx_dir


def _collect(ds):
    """All (images, labels) of a dataset of batches, concatenated as NumPy arrays."""
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _indices_of(batch, reference):
    """Index in ``reference`` of every image in ``batch`` (nearest match, must be exact)."""
    flat_ref = reference.reshape(len(reference), -1)
    out = []
    for image in batch.reshape(len(batch), -1):
        distance = np.abs(flat_ref - image).max(axis=1)
        i = int(distance.argmin())
        assert distance[i] < 1e-5
        out.append(i)
    return out


# --------------------------------------------------------------------------------------------
# Metadata


def test_datasets_metadata():
    builtin = {"fashion_mnist", "mnist", "cifar10", "cifar100", "imagenet2012"}
    assert set(data.BUILTIN_DATASETS) == builtin <= set(data.DATASETS)
    for name in data.BUILTIN_DATASETS:
        meta = data.DATASETS[name]
        assert meta.name == name
        assert len(meta.class_names) == meta.num_classes
        assert len(meta.mean) == len(meta.std) == meta.input_shape[-1]
        assert name in data.AUGMENTATIONS
    assert data.info("imagenet2012").input_shape == (224, 224, 3)
    assert data.info("fashion_mnist").mean == (0.2860,)
    assert data.info("cifar100").class_names == tuple(sorted(data.info("cifar100").class_names))


def test_unknown_dataset_lists_known_names():
    for call in (
        lambda: data.info("svhn"),
        lambda: data.load("svhn", "train"),
        lambda: data.load_arrays("svhn", "train"),
        lambda: data.preprocess("svhn", np.zeros((1, 28, 28, 1))),
    ):
        with pytest.raises(ValueError, match="svhn") as err:
            call()
        for known in data.DATASETS:
            assert known in str(err.value)


def test_unknown_split(tiny_idx_dir):
    with pytest.raises(ValueError, match="validation"):
        data.load_arrays("fashion_mnist", "validation", data_dir=tiny_idx_dir)


# --------------------------------------------------------------------------------------------
# Real Fashion-MNIST


def test_real_fashion_mnist_arrays(fashion_dir):
    for split, n in (("train", 60_000), ("test", 10_000)):
        images, labels = data.load_arrays("fashion_mnist", split)
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert labels.min() == 0 and labels.max() == 9
        # Fashion-MNIST is balanced: 6000 (train) / 1000 (test) images per class.
        np.testing.assert_array_equal(np.bincount(labels), np.full(10, n // 10))
    assert data.num_examples("fashion_mnist", "test") == 10_000
    # Published statistics of the training images.
    train_images, _ = data.load_arrays("fashion_mnist", "train", limit=10_000)
    assert abs(train_images.mean() / 255 - 0.2860) < 0.01
    assert abs(train_images.std() / 255 - 0.3530) < 0.01


def test_real_fashion_mnist_load_batches(fashion_dir):
    ds = data.load("fashion_mnist", "test", batch_size=32, limit=100)
    shapes = [(x.shape, y.shape) for x, y in ds]
    assert [s[0][0] for s in shapes] == [32, 32, 32, 4]
    assert all(s[0][1:] == (28, 28, 1) for s in shapes)
    x, y = next(iter(ds))
    assert x.dtype == tf.float32 and y.dtype == tf.int32
    dropped = data.load("fashion_mnist", "test", batch_size=32, limit=100, drop_remainder=True)
    assert len(list(dropped)) == 3
    # Unshuffled order and values match load_arrays + preprocess.
    images, labels = _collect(ds)
    ref_x, ref_y = data.load_arrays("fashion_mnist", "test", limit=100)
    np.testing.assert_allclose(images, data.preprocess("fashion_mnist", ref_x).numpy(), atol=1e-6)
    np.testing.assert_array_equal(labels, ref_y)
    # Normalised: roughly zero mean, unit variance.
    big, _ = _collect(data.load("fashion_mnist", "train", batch_size=500, limit=5_000))
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1.0) < 0.05


def test_real_fashion_mnist_search_splits(fashion_dir):
    sizes = data.search_split_sizes("fashion_mnist", batch_size=32, limit=256)
    assert sizes == (128, 128, 4)
    pairs = list(data.search_splits("fashion_mnist", batch_size=32, limit=256, augment=True))
    assert len(pairs) == sizes.steps_per_epoch
    (x_w, y_w), (x_a, y_a) = pairs[0]
    assert x_w.shape == x_a.shape == (32, 28, 28, 1)
    assert y_w.dtype == y_a.dtype == tf.int32


# --------------------------------------------------------------------------------------------
# Pipelines on tiny IDX files


def test_load_arrays_tiny(tiny_idx_dir):
    images, labels = data.load_arrays("mnist", "train", data_dir=tiny_idx_dir)
    assert images.shape == (TINY_TRAIN, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.arange(TINY_TRAIN) % 10)
    images, labels = data.load_arrays("mnist", "test", data_dir=tiny_idx_dir, limit=5)
    assert images.shape == (5, 28, 28, 1) and labels.shape == (5,)
    images[:] = 0  # returned arrays are writable copies, the cache is unaffected
    again, _ = data.load_arrays("mnist", "test", data_dir=tiny_idx_dir, limit=5)
    assert again.any()
    assert data.num_examples("mnist", "test", data_dir=tiny_idx_dir) == TINY_TEST


def test_uncompressed_idx_files(tmp_path, tiny_idx_dir):
    for gz in tiny_idx_dir.iterdir():
        (tmp_path / gz.name[: -len(".gz")]).write_bytes(gzip.decompress(gz.read_bytes()))
    plain = data.load_arrays("fashion_mnist", "test", data_dir=tmp_path)
    gzipped = data.load_arrays("fashion_mnist", "test", data_dir=tiny_idx_dir)
    np.testing.assert_array_equal(plain[0], gzipped[0])
    np.testing.assert_array_equal(plain[1], gzipped[1])


def test_load_unshuffled_matches_preprocess(tiny_idx_dir):
    x_ref, y_ref = data.load_arrays("fashion_mnist", "train", data_dir=tiny_idx_dir)
    x, y = _collect(data.load("fashion_mnist", "train", data_dir=tiny_idx_dir, batch_size=10))
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_allclose(x, data.preprocess("fashion_mnist", x_ref).numpy(), atol=1e-6)
    np.testing.assert_array_equal(y, y_ref)
    unbatched = next(iter(data.load("fashion_mnist", "test", data_dir=tiny_idx_dir)))
    assert unbatched[0].shape == (28, 28, 1) and unbatched[1].shape == ()


def test_load_shuffle_is_seeded(tiny_idx_dir):
    def run(seed):
        ds = data.load(
            "fashion_mnist", "train", data_dir=tiny_idx_dir, batch_size=16, shuffle=True, seed=seed
        )
        return _collect(ds)

    x1, y1 = run(1)
    x1b, y1b = run(1)
    x2, _ = run(2)
    np.testing.assert_array_equal(x1, x1b)
    np.testing.assert_array_equal(y1, y1b)
    assert not np.array_equal(x1, x2)
    assert sorted(y1) == sorted(np.arange(TINY_TRAIN) % 10)  # a permutation of the split


def test_load_repeat(tiny_idx_dir):
    ds = data.load(
        "fashion_mnist",
        "test",
        data_dir=tiny_idx_dir,
        batch_size=8,
        repeat=True,
        shuffle=True,
        seed=0,
    )
    batches = list(ds.take(3 * TINY_TEST // 8))  # three epochs
    labels = np.concatenate([y.numpy() for _, y in batches])
    for epoch in labels.reshape(3, TINY_TEST):
        assert sorted(epoch) == sorted(np.arange(TINY_TEST) % 10)


def test_augment_keeps_shapes_and_is_seeded(tiny_idx_dir):
    def run(seed, augment=True):
        return _collect(
            data.load(
                "fashion_mnist",
                "train",
                data_dir=tiny_idx_dir,
                batch_size=16,
                augment=augment,
                seed=seed,
            )
        )

    plain, y_plain = run(0, augment=False)
    aug, y_aug = run(0)
    assert aug.shape == plain.shape == (TINY_TRAIN, 28, 28, 1) and aug.dtype == np.float32
    np.testing.assert_array_equal(y_aug, y_plain)  # no shuffling: same order
    assert not np.array_equal(aug, plain)
    np.testing.assert_array_equal(run(0)[0], aug)
    assert not np.array_equal(run(5)[0], aug)
    # MNIST is not augmented.
    mnist_aug, _ = _collect(
        data.load("mnist", "train", data_dir=tiny_idx_dir, batch_size=16, augment=True, seed=0)
    )
    mnist_plain, _ = _collect(data.load("mnist", "train", data_dir=tiny_idx_dir, batch_size=16))
    np.testing.assert_array_equal(mnist_aug, mnist_plain)


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10"])
def test_augment_is_flip_and_or_translation(name):
    """Each augmented image is the original, shifted by at most 4 pixels and maybe mirrored."""
    height, width, channels = data.info(name).input_shape
    image = np.random.default_rng(0).integers(1, 256, (height, width, channels), dtype=np.uint8)
    flips = set()
    for s in range(8):
        out = data._augment(name, tf.constant(image), tf.constant([s, 7], tf.int64)).numpy()
        assert out.shape == image.shape and out.dtype == np.uint8
        padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
        matches = [
            (flip, dy, dx)
            for flip in (False, True)
            for dy in range(9)
            for dx in range(9)
            if np.array_equal(
                out, (padded[:, ::-1] if flip else padded)[dy : dy + height, dx : dx + width]
            )
        ]
        assert matches, "not a padded crop of the (mirrored) image"
        flips |= {m[0] for m in matches}
    assert flips == ({False, True} if "flip" in data.AUGMENTATIONS[name] else {False})


# --------------------------------------------------------------------------------------------
# Search splits


def test_search_splits_disjoint_and_cover(tiny_idx_dir):
    x_ref, _ = data.load_arrays("fashion_mnist", "train", data_dir=tiny_idx_dir)
    reference = data.preprocess("fashion_mnist", x_ref).numpy()

    def halves(seed, limit=None):
        ds = data.search_splits(
            "fashion_mnist", data_dir=tiny_idx_dir, batch_size=8, seed=seed, limit=limit
        )
        w, a, labels = [], [], []
        for (x_w, y_w), (x_a, y_a) in ds:
            assert x_w.shape == x_a.shape == (8, 28, 28, 1) and x_w.dtype == tf.float32
            assert y_w.dtype == y_a.dtype == tf.int32
            w += _indices_of(x_w.numpy(), reference)
            a += _indices_of(x_a.numpy(), reference)
            labels += list(y_w.numpy()) + list(y_a.numpy())
        return w, a, labels

    w, a, labels = halves(0)
    assert len(w) == len(a) == TINY_TRAIN // 2  # 4 steps of 8 pairs, nothing dropped
    assert not set(w) & set(a)
    assert set(w) | set(a) == set(range(TINY_TRAIN))
    np.testing.assert_array_equal(labels, [i % 10 for i in _interleave(w, a, 8)])
    assert data.search_split_sizes(
        "fashion_mnist", data_dir=tiny_idx_dir, batch_size=8
    ) == data.SearchSplitSizes(32, 32, 4)

    # Same seed: same sequence. Another seed: other halves.
    assert halves(0) == (w, a, labels)
    w1, a1, _ = halves(1)
    assert set(w1) != set(w)
    assert not set(w1) & set(a1)

    # limit: the first 40 of the seeded permutation, 20 + 20, 2 steps of 8 each.
    w_lim, a_lim, _ = halves(0, limit=40)
    assert len(w_lim) == len(a_lim) == 16
    permutation = np.random.default_rng(0).permutation(TINY_TRAIN)
    assert set(w_lim) <= set(permutation[:20]) and set(a_lim) <= set(permutation[20:40])
    assert data.search_split_sizes(
        "fashion_mnist", data_dir=tiny_idx_dir, batch_size=8, limit=40
    ) == (20, 20, 2)


def _interleave(w, a, batch):
    out = []
    for i in range(0, len(w), batch):
        out += w[i : i + batch] + a[i : i + batch]
    return out


def test_search_splits_portion_and_reshuffle(tiny_idx_dir):
    sizes = data.search_split_sizes(
        "fashion_mnist", data_dir=tiny_idx_dir, batch_size=8, portion=0.75
    )
    assert sizes == (48, 16, 2)
    ds = data.search_splits(
        "fashion_mnist", data_dir=tiny_idx_dir, batch_size=8, portion=0.75, augment=True
    )
    epoch1 = [y_w.numpy() for (_, y_w), _ in ds]
    epoch2 = [y_w.numpy() for (_, y_w), _ in ds]
    assert len(epoch1) == len(epoch2) == 2
    assert not all(np.array_equal(a, b) for a, b in zip(epoch1, epoch2))  # reshuffled
    with pytest.raises(ValueError, match="portion"):
        data.search_splits("fashion_mnist", data_dir=tiny_idx_dir, batch_size=8, portion=1.0)
    with pytest.raises(ValueError, match="batch"):
        data.search_splits("fashion_mnist", data_dir=tiny_idx_dir, batch_size=64)


# --------------------------------------------------------------------------------------------
# preprocess


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "cifar10", "imagenet2012"])
def test_preprocess_formula(name):
    meta = data.info(name)
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 5, meta.input_shape[-1]), np.uint8)
    expected = (images / 255.0 - np.array(meta.mean)) / np.array(meta.std)
    for value in (images, tf.constant(images)):
        out = data.preprocess(name, value)
        assert isinstance(out, tf.Tensor) and out.dtype == tf.float32
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Errors


def test_missing_fashion_dir_names_places_and_apt(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        data.load_arrays("fashion_mnist", "train", data_dir=missing)
    message = str(err.value)
    assert str(missing) in message
    assert "train-images-idx3-ubyte" in message
    assert "TFDS" in message and str(missing / "fashion_mnist") in message
    assert "apt-get install -y dataset-fashion-mnist" in message
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load("fashion_mnist", "test", data_dir=missing)


def test_missing_tfds_dataset(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load("cifar10", "train", data_dir=tmp_path)
    assert str(tmp_path / "cifar10") in str(err.value)
    assert "tfds build cifar10" in str(err.value)
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        data.search_splits("imagenet2012", data_dir=tmp_path, batch_size=8)
    with pytest.raises(ValueError, match="load\\(\\)"):
        data.load_arrays("cifar10", "train", data_dir=tmp_path)


def test_truncated_gzip_names_file(tmp_path, tiny_idx_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_idx_dir, broken)
    path = broken / "train-images-idx3-ubyte.gz"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz") as err:
        data.load_arrays("fashion_mnist", "train", data_dir=broken)
    assert "truncated or corrupt" in str(err.value)
    # The test split is intact and still loads.
    assert data.load_arrays("fashion_mnist", "test", data_dir=broken)[0].shape[0] == TINY_TEST


def test_corrupt_gzip_names_file(tmp_path, tiny_idx_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_idx_dir, broken)
    path = broken / "t10k-images-idx3-ubyte.gz"
    content = bytearray(path.read_bytes())
    content[-6] ^= 0xFF  # corrupt the CRC/size trailer
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        data.load_arrays("fashion_mnist", "test", data_dir=broken)


def test_wrong_magic_names_file(tmp_path, tiny_idx_dir, write_idx):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_idx_dir, broken)
    # A 3-dimensional IDX file where a 1-dimensional labels file is expected.
    write_idx(broken / "t10k-labels-idx1-ubyte.gz", np.zeros((TINY_TEST, 2, 2)))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz") as err:
        data.load_arrays("fashion_mnist", "test", data_dir=broken)
    assert "magic" in str(err.value)


def test_size_mismatch_names_file(tmp_path, tiny_idx_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_idx_dir, broken)
    gz = broken / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(gz.read_bytes())
    gz.unlink()
    plain = broken / "t10k-images-idx3-ubyte"
    plain.write_bytes(raw[:-100])  # uncompressed and cut short
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte") as err:
        data.load_arrays("fashion_mnist", "test", data_dir=broken)
    assert "size mismatch" in str(err.value)


def test_label_count_mismatch(tmp_path, tiny_idx_dir, write_idx):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_idx_dir, broken)
    write_idx(broken / "t10k-labels-idx1-ubyte.gz", np.zeros(TINY_TEST - 1))
    with pytest.raises(ValueError, match="labels"):
        data.load_arrays("fashion_mnist", "test", data_dir=broken)


# --------------------------------------------------------------------------------------------
# TFDS-backed datasets (with a fake TFDS source: tests cannot download)

FAKE_TFDS_SIZE = 40


@pytest.fixture
def fake_tfds(monkeypatch):
    """Replaces the TFDS reader: example ``i`` has label ``i`` and every pixel equal to ``i``
    (ImageNet: a JPEG of varying size)."""

    def fake_dataset(name, split, data_dir, *, shuffle_files=False, seed=None):
        labels = np.arange(FAKE_TFDS_SIZE, dtype=np.int64)
        if name == "imagenet2012":
            images = [
                tf.io.encode_jpeg(tf.fill([240 + 10 * (i % 3), 300 - 20 * (i % 2), 3], np.uint8(i)))
                for i in labels
            ]
            return tf.data.Dataset.from_tensor_slices((tf.stack(images), labels))
        shape = data.info(name).input_shape
        pixels = labels.astype(np.uint8)[:, None, None, None]
        images = np.broadcast_to(pixels, (len(labels),) + shape)
        return tf.data.Dataset.from_tensor_slices((images, labels))

    monkeypatch.setattr(data, "_tfds_dataset", fake_dataset)
    monkeypatch.setattr(data, "num_examples", lambda *args, **kwargs: FAKE_TFDS_SIZE)


def test_tfds_load_and_search_splits(fake_tfds):
    x, y = _collect(data.load("cifar10", "train", batch_size=16, augment=True, seed=0))
    assert x.shape == (FAKE_TFDS_SIZE, 32, 32, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(y, np.arange(FAKE_TFDS_SIZE))
    x, y = _collect(data.load("cifar100", "test", batch_size=16, shuffle=True, seed=0, limit=20))
    assert sorted(y) == list(range(20))
    assert data.search_split_sizes("cifar10", batch_size=4, limit=30) == (15, 15, 3)
    w, a = [], []
    for (x_w, y_w), (x_a, y_a) in data.search_splits("cifar10", batch_size=4, seed=3, limit=30):
        assert x_w.shape == x_a.shape == (4, 32, 32, 3)
        w += list(y_w.numpy())
        a += list(y_a.numpy())
    permutation = np.random.default_rng(3).permutation(FAKE_TFDS_SIZE)
    assert len(w) == len(a) == 12
    assert set(w) <= set(permutation[:15]) and set(a) <= set(permutation[15:30])


def test_tfds_imagenet_resize_and_crop(fake_tfds):
    for augment in (False, True):
        x, y = _collect(data.load("imagenet2012", "test", batch_size=8, augment=augment, seed=0))
        assert x.shape == (FAKE_TFDS_SIZE, 224, 224, 3) and x.dtype == np.float32
        np.testing.assert_array_equal(y, np.arange(FAKE_TFDS_SIZE))
        # Constant images stay (nearly, JPEG) constant at the value of their label.
        expected = data.preprocess("imagenet2012", np.full((3,), 5.0, np.float32)).numpy()
        np.testing.assert_allclose(x[5].mean(axis=(0, 1)), expected, atol=0.1)
