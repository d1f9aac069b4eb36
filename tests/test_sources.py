"""Your own images as datasets: arrays, npz files, class folders; bad input refused by name."""

import bnas_tf  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from bnas_tf import data, sources

import json
import re

import numpy as np
import pytest
import tensorflow as tf

RNG = np.random.default_rng(0)
pytestmark = pytest.mark.usefixtures("restore_datasets")


def _arrays(n_train=48, n_test=16, shape=(12, 12), classes=3):
    x = RNG.integers(0, 256, (n_train + n_test, *shape), dtype=np.uint8)
    y = np.arange(n_train + n_test) % classes
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = image if image.ndim == 3 else image[..., None]
    path.write_bytes(tf.io.encode_png(tf.constant(image)).numpy())


def _folder(root, per_class=5, classes=("coat", "shirt", "bag"), shape=(12, 12)):
    for c, cls in enumerate(classes):
        for i in range(per_class):
            _png(root / cls / f"{i}.png", np.full(shape, 40 * c + i, np.uint8))
    return root


def test_from_arrays_registers_shape_classes_and_train_statistics():
    x_train, y_train, x_test, y_test = _arrays()
    name = data.from_arrays(x_train, y_train, x_test, y_test, name="unit_arrays")
    meta = data.info(name)
    assert meta.input_shape == (12, 12, 1) and meta.num_classes == 3
    assert meta.num_train == 48 and meta.num_test == 16
    assert meta.mean[0] == pytest.approx(x_train.mean() / 255.0)  # the training split's only
    assert meta.std[0] == pytest.approx((x_train / 255.0).std())
    images, labels = next(iter(data.load(name, "test", batch_size=16)))
    expected = (x_test[..., None] / 255.0 - meta.mean[0]) / meta.std[0]
    np.testing.assert_allclose(images.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), y_test)
    sizes = data.search_split_sizes(name, batch_size=8)
    assert sizes.num_weights + sizes.num_arch == 48


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda a: (a[0], a[1][:-1], a[2], a[3]),
            "y_train has 47 labels but x_train has 48 images",
        ),
        (lambda a: (a[0], a[1], a[2], a[3] - 1), "y_test holds label -1; labels must be 0 .. n-1"),
        (lambda a: (a[0], a[1] * 0, a[2], a[3]), "y_train holds a single class"),
        (lambda a: (a[0][:, :, :, None, None], *a[1:]), r"x_train must be images shaped"),
        (lambda a: (a[0], a[1], a[2][:, :8], a[3]), r"x_train images are \(12, 12, 1\) but x_test"),
        (lambda a: (a[0].astype(float) * 2, *a[1:]), r"x_train must hold values in \[0, 255\]"),
    ],
)
def test_bad_arrays_are_refused_naming_the_array(change, message):
    with pytest.raises(ValueError, match=message):
        data.from_arrays(*change(_arrays()), name="bad_arrays")


def test_class_names_must_cover_the_labels_and_builtin_names_are_refused():
    with pytest.raises(ValueError, match="labels go up to 2 but only 2 class names"):
        data.from_arrays(*_arrays(), name="named", class_names=["a", "b"])
    with pytest.raises(ValueError, match="'mnist' is a built-in dataset"):
        data.from_arrays(*_arrays(), name="mnist")


def test_npz_source(tmp_path):
    path = tmp_path / "toy.npz"
    x_train, y_train, x_test, y_test = _arrays(shape=(10, 10, 3))
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    meta = data.info(f"npz:{path}")
    assert meta.input_shape == (10, 10, 3) and meta.num_classes == 3
    assert data.num_examples(f"npz:{path}", "test") == 16


def test_bad_npz_files_are_refused_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz' does not exist"):
        data.info(f"npz:{tmp_path / 'missing.npz'}")
    short = tmp_path / "short.npz"
    np.savez(short, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(4, int))
    with pytest.raises(ValueError, match=r"short.npz: missing array\(s\) x_test, y_test"):
        data.info(f"npz:{short}")
    uneven = tmp_path / "uneven.npz"
    x_train, y_train, x_test, y_test = _arrays()
    np.savez(uneven, x_train=x_train, y_train=y_train[:5], x_test=x_test, y_test=y_test)
    with pytest.raises(ValueError, match="uneven.npz: y_train has 5 labels but x_train has 48"):
        data.info(f"npz:{uneven}")
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match="text.npz is not a readable .npz archive"):
        data.info(f"npz:{text}")


def test_folder_source_holds_out_a_seeded_fifth_of_each_class(tmp_path):
    root = _folder(tmp_path / "imgs")
    name = f"folder:{root}"
    meta = data.info(name)
    assert meta.class_names == ("bag", "coat", "shirt")  # sorted folder names
    assert (meta.num_train, meta.num_test) == (12, 3) and meta.input_shape == (12, 12, 1)
    images, labels = data.load_arrays(name, "test")
    assert sorted(labels.tolist()) == [0, 1, 2]
    again = sources.load_folder(root, name="again")  # the same files give the same split
    np.testing.assert_array_equal(data.load_arrays(again, "test")[0], images)


def test_folder_with_train_and_test_subfolders(tmp_path):
    _folder(tmp_path / "ds" / "train", per_class=4)
    _folder(tmp_path / "ds" / "test", per_class=2)
    meta = data.info(f"folder:{tmp_path / 'ds'}")
    assert (meta.num_train, meta.num_test, meta.num_classes) == (12, 6, 3)


def _bad_folder(tmp_path, kind):
    root = tmp_path / kind
    if kind == "empty":
        root.mkdir()
    elif kind == "one_class":
        _folder(root, classes=("only",))
    elif kind == "class_without_images":
        _folder(root)
        (root / "zz_empty").mkdir()
    elif kind == "not_an_image":
        _folder(root)
        (root / "bag" / "notes.txt").write_text("hello")
    elif kind == "unreadable_image":
        _folder(root)
        (root / "coat" / "broken.png").write_bytes(b"\x89PNG not really")
    elif kind == "sizes_differ":
        _folder(root)
        _png(root / "shirt" / "big.png", np.zeros((20, 20), np.uint8))
    return root


@pytest.mark.parametrize(
    "kind, message",
    [
        ("empty", "has no class subfolders"),
        ("one_class", r"has one class subfolder \(only\)"),
        ("class_without_images", "zz_empty' holds no images"),
        ("not_an_image", "notes.txt: not an image file"),
        ("unreadable_image", "broken.png: not a readable image"),
        ("sizes_differ", r"big.png is \(20, 20, 1\); pass --image_size"),
    ],
)
def test_bad_folders_are_refused_naming_the_file_or_folder(tmp_path, kind, message):
    root = _bad_folder(tmp_path, kind)
    with pytest.raises(ValueError, match=message):
        data.info(f"folder:{root}")


def test_missing_folder_and_unknown_names():
    with pytest.raises(FileNotFoundError, match="folder '/no/such/dir' does not exist"):
        data.info("folder:/no/such/dir")
    with pytest.raises(ValueError, match="npz:PATH, folder:PATH or tfds:NAME"):
        data.info("no_such_dataset")


def test_image_size_resizes_a_folder_of_mixed_sizes(tmp_path):
    root = _bad_folder(tmp_path, "sizes_differ")  # 12x12 images and one 20x20
    name = sources.resolve(f"folder:{root}", image_size=16)
    assert data.info(name).input_shape == (16, 16, 1)
    big = data.load_arrays(name, "train")[0]
    assert big.shape[1:] == (16, 16, 1)
    npz = tmp_path / "small.npz"
    x_train, y_train, x_test, y_test = _arrays(shape=(8, 8, 3))
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    assert data.info(sources.resolve(f"npz:{npz}", image_size=20)).input_shape == (20, 20, 3)


def test_skip_bad_images_skips_and_counts(tmp_path, caplog):
    root = _bad_folder(tmp_path, "not_an_image")
    (root / "coat" / "broken.png").write_bytes(b"\x89PNG not really")
    with caplog.at_level("WARNING"):
        name = sources.resolve(f"folder:{root}", skip_bad_images=True)
    meta = data.info(name)
    assert meta.num_train + meta.num_test == 15  # the 15 good images, not the two bad files
    assert "skipped 2 unreadable or non-image file(s)" in caplog.text
    assert "broken.png" in caplog.text
    only_bad = tmp_path / "only_bad"
    _folder(only_bad)
    for png in (only_bad / "bag").iterdir():
        png.write_bytes(b"junk")
    with pytest.raises(ValueError, match="bag' holds no images"):
        sources.resolve(f"folder:{only_bad}", skip_bad_images=True)


def test_test_fraction_sets_the_held_out_share(tmp_path):
    root = _folder(tmp_path / "imgs", per_class=10)
    meta = data.info(sources.resolve(f"folder:{root}", test_fraction=0.5))
    assert (meta.num_train, meta.num_test) == (15, 15)
    meta = data.info(sources.resolve(f"folder:{root}", test_fraction=0.1))  # read anew
    assert (meta.num_train, meta.num_test) == (27, 3)


def test_a_run_reopens_its_source_with_its_options_and_stored_statistics(tmp_path):
    """Evaluation and export normalise as training did: with network.json's statistics, even
    when the folder's images have changed since."""
    from bnas_tf.training import open_spec_dataset

    root = _folder(tmp_path / "imgs", per_class=10)
    spec = {
        "dataset": f"folder:{root}",
        "normalization": {"mean": [0.5], "std": [0.25]},
        "source": {"data_dir": None, "image_size": 16, "test_fraction": 0.5},
    }
    meta = open_spec_dataset(spec)
    assert (meta.mean, meta.std) == ((0.5,), (0.25,))
    assert meta.input_shape == (16, 16, 1) and meta.num_test == 15


@pytest.mark.parametrize(
    "options, message",
    [
        ({"image_size": 0}, "--image_size must be a positive integer, got 0"),
        ({"test_fraction": 1.0}, r"--test_fraction must be in \(0, 1\), got 1.0"),
    ],
)
def test_bad_source_options_are_refused(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        sources.resolve(f"folder:{_folder(tmp_path / 'imgs')}", **options)


def test_image_size_is_refused_for_a_builtin_dataset():
    from bnas_tf.training import TrainConfig

    with pytest.raises(ValueError, match="--image_size resizes npz:, folder: and tfds: sources"):
        TrainConfig(dataset="mnist", image_size=32).validate()


# ---------------------------------------------------------------------------- TFDS datasets
def _tiny_builder(name, splits, features=None, shape=(16, 16, 3)):
    """A local TFDS builder (no download) of random images with three classes: by default an
    image and a class-label feature under names of its own, plus a text feature, no supervised
    keys. Image dimensions given as None vary between 12 and 20 pixels."""
    import tensorflow_datasets as tfds

    features = features or {
        "picture": tfds.features.Image(shape=shape),
        "kind": tfds.features.ClassLabel(names=["round", "square", "star"]),
        "note": tfds.features.Text(),
    }

    def info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def value(feature, i, rng):
        if isinstance(feature, tfds.features.Image):
            size = [d if d is not None else 12 + 4 * (i % 3) for d in feature.shape]
            return rng.integers(0, 256, size, dtype=np.uint8)
        return i % 3 if isinstance(feature, tfds.features.ClassLabel) else str(i)

    def generate(self, n, seed):
        rng = np.random.default_rng(seed)
        for i in range(n):
            yield f"{seed}-{i}", {key: value(f, i, rng) for key, f in features.items()}

    def split_generators(self, dl_manager):
        return {split: generate(self, n, seed) for seed, (split, n) in enumerate(splits.items())}

    return type(
        name,
        (tfds.core.GeneratorBasedBuilder,),
        {
            "VERSION": tfds.core.Version("1.0.0"),
            "_info": info,
            "_split_generators": split_generators,
            "_generate_examples": generate,
        },
    )


def _prepare(builder_class, data_dir):
    import tensorflow_datasets as tfds

    config = tfds.download.DownloadConfig(try_download_gcs=False)
    builder_class(data_dir=data_dir).download_and_prepare(download_config=config)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A TFDS data directory with two tiny datasets prepared by local builders."""
    root = tmp_path_factory.mktemp("tfds")
    _prepare(_tiny_builder("BnasTinyShapes", {"train": 60, "validation": 15}), root)
    _prepare(_tiny_builder("BnasTinyTrainOnly", {"train": 40}, shape=(None, None, 1)), root)
    return root


def test_tfds_source_finds_features_splits_and_statistics(tfds_dir):
    name = sources.resolve("tfds:bnas_tiny_shapes", data_dir=tfds_dir)
    meta = data.info(name)
    assert meta.input_shape == (16, 16, 3) and meta.class_names == ("round", "square", "star")
    assert (meta.num_train, meta.num_test) == (60, 15)  # validation is the test split
    assert meta.mean[0] == pytest.approx(127.5 / 255, abs=0.03)  # uniform random pixels
    images, labels = next(iter(data.load(name, "test", batch_size=15)))
    assert images.shape == (15, 16, 16, 3) and sorted(labels.numpy()) == [0] * 5 + [1] * 5 + [2] * 5
    assert data.search_split_sizes(name, batch_size=8).num_weights == 30
    (x_w, y_w), (x_a, _) = next(iter(data.search_splits(name, batch_size=8, augment=True)))
    assert x_w.shape == x_a.shape == (8, 16, 16, 3) and set(y_w.numpy()) <= {0, 1, 2}
    resized = sources.resolve("tfds:bnas_tiny_shapes", data_dir=tfds_dir, image_size=24)
    assert next(iter(data.load(resized, "train", batch_size=4)))[0].shape == (4, 24, 24, 3)


def test_tfds_source_without_test_split_or_fixed_size(tfds_dir):
    with pytest.raises(ValueError, match=r"no fixed size .*pass --image_size"):
        sources.resolve("tfds:bnas_tiny_train_only", data_dir=tfds_dir)
    name = sources.resolve("tfds:bnas_tiny_train_only", data_dir=tfds_dir, image_size=16)
    meta = data.info(name)
    assert (meta.num_train, meta.num_test) == (32, 8)  # the last fifth of train
    assert meta.input_shape == (16, 16, 1)


def test_tfds_source_refuses_missing_and_non_classification_datasets(tmp_path):
    import tensorflow_datasets as tfds

    with pytest.raises(FileNotFoundError, match=r"tfds:no_such_set: not prepared in .*tfds build"):
        sources.resolve("tfds:no_such_set", data_dir=tmp_path)
    two_images = {
        "picture": tfds.features.Image(shape=(16, 16, 3)),
        "mask": tfds.features.Image(shape=(16, 16, 3)),
        "kind": tfds.features.ClassLabel(num_classes=3),
    }
    _prepare(_tiny_builder("BnasTwoImages", {"train": 3}, features=two_images), tmp_path)
    with pytest.raises(ValueError, match="not an image-classification dataset; it needs one Image"):
        sources.resolve("tfds:bnas_two_images", data_dir=tmp_path)


# ----------------------------------------------------------------------------- the programs
def _run(module, *args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_search_train_evaluate_on_a_folder_of_real_fashion_mnist_pngs(tmp_path, fashion_dir):
    """600 real test images of Fashion-MNIST (the Debian package) written as PNG files in
    one folder per class, then the three programs on ``--dataset=folder:...`` (the search on
    64 of them: it only has to read the folder and write a genotype the training takes)."""
    images, labels = data.load_arrays("fashion_mnist", "test", data_dir=fashion_dir, limit=600)
    names = data.info("fashion_mnist").class_names
    root = tmp_path / "fashion_png"
    for i, (image, label) in enumerate(zip(images, labels)):
        _png(root / names[label].replace("/", "_") / f"{i:04d}.png", image)
    dataset = f"--dataset=folder:{root}"
    tiny = ["--init_channels=4", "--seed=0", "--verbose=0"]
    search = _run(
        "bnas_tf.apps.search", dataset, *tiny, "--layers=1", "--batch_size=16", "--epochs=1",
        "--limit=64",
        f"--output_dir={tmp_path / 'search'}",
    )  # fmt: skip
    assert search.returncode == 0, search.stderr[-3000:]
    train = _run(
        "bnas_tf.apps.train", dataset, *tiny, "--layers=2", "--batch_size=32", "--epochs=1",
        "--optimizer=adam", "--learning_rate=2e-3", "--lr_schedule=constant",
        f"--genotype={tmp_path / 'search' / 'genotype.json'}", f"--output_dir={tmp_path / 'train'}",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    spec = json.loads((tmp_path / "train" / "network.json").read_text())
    assert spec["num_classes"] == 10 and spec["input_shape"] == [28, 28, 1]
    evaluate = _run(
        "bnas_tf.apps.evaluate", f"--model_dir={tmp_path / 'train'}",
        f"--output_dir={tmp_path / 'eval'}",
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # the seeded fifth of each class (round(0.2 n) of its n images): 119 of the 600
    assert result["examples"] == data.info(f"folder:{root}").num_test == 119
    assert result["accuracy"] > 0.2  # ten classes: chance is 0.1


@pytest.mark.parametrize(
    "dataset, message",
    [
        ("folder:{tmp}/missing", "folder '{tmp}/missing' does not exist"),
        ("npz:{tmp}/missing.npz", "missing.npz' does not exist"),
        ("folder:{tmp}/tiny", r"images are 2x2, too small for the supernet's stride-2 stages"),
    ],
)
def test_bnas_search_refuses_bad_sources_before_writing(tmp_path, dataset, message):
    _folder(tmp_path / "tiny", shape=(2, 2))
    out = tmp_path / "out"
    result = _run(
        "bnas_tf.apps.search", f"--dataset={dataset.format(tmp=tmp_path)}",
        f"--output_dir={out}", "--epochs=1",
    )  # fmt: skip
    assert result.returncode != 0
    assert re.search(message.format(tmp=tmp_path), result.stderr), result.stderr[-2000:]
    assert not out.exists()


def test_train_evaluate_and_zoo_on_a_tfds_dataset_of_a_local_builder(tmp_path, tfds_dir):
    """bnas-train on ``tfds:`` (a dataset none of the five built-in names covers), then
    bnas-evaluate and the zoo's preprocessing from what the run stored in network.json."""
    from bnas_tf.zoo import preprocess_input

    train = _run(
        "bnas_tf.apps.train", "--dataset=tfds:bnas_tiny_shapes", f"--data_dir={tfds_dir}",
        "--genotype=bnas_a", "--layers=2", "--init_channels=4", "--epochs=1", "--batch_size=20",
        "--verbose=0", f"--output_dir={tmp_path / 'train'}",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    spec = json.loads((tmp_path / "train" / "network.json").read_text())
    meta = data.info(sources.resolve("tfds:bnas_tiny_shapes", data_dir=tfds_dir))
    assert spec["normalization"] == {"mean": list(meta.mean), "std": list(meta.std)}
    assert spec["source"]["data_dir"] == str(tfds_dir) and spec["num_classes"] == 3
    evaluate = _run(  # no --data_dir: the run's
        "bnas_tf.apps.evaluate", f"--model_dir={tmp_path / 'train'}",
        f"--output_dir={tmp_path / 'eval'}",
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["examples"] == 15
    images = np.full((1, 16, 16, 3), 255, np.uint8)
    expected = (1.0 - np.array(meta.mean)) / np.array(meta.std)
    np.testing.assert_allclose(
        preprocess_input(images, dataset=tmp_path / "train")[0, 0, 0], expected, rtol=1e-5
    )


def test_train_and_evaluate_on_an_npz_of_real_fashion_mnist_images(tmp_path, fashion_dir):
    """An ``.npz`` of 512 + 128 real Fashion-MNIST images: bnas-train and bnas-evaluate."""
    x_train, y_train = data.load_arrays("fashion_mnist", "train", data_dir=fashion_dir, limit=512)
    x_test, y_test = data.load_arrays("fashion_mnist", "test", data_dir=fashion_dir, limit=128)
    path = tmp_path / "fashion.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    train = _run(
        "bnas_tf.apps.train", f"--dataset=npz:{path}", "--genotype=bnas_a", "--layers=2",
        "--init_channels=4", "--epochs=1", "--batch_size=32", "--optimizer=adam",
        "--learning_rate=2e-3", "--lr_schedule=constant", "--verbose=0",
        f"--output_dir={tmp_path / 'train'}",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    evaluate = _run(
        "bnas_tf.apps.evaluate", f"--model_dir={tmp_path / 'train'}",
        f"--output_dir={tmp_path / 'eval'}",
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["examples"] == 128 and 0.0 <= result["accuracy"] <= 1.0
