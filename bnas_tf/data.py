"""Image-classification datasets as ``tf.data`` pipelines.

Every pipeline yields ``(image, label)`` pairs: ``image`` is a float32 NHWC tensor normalised
per channel (see ``preprocess``), ``label`` an int32 class index.

Sources:

- ``fashion_mnist`` and ``mnist`` are read from the four IDX files
  (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``) in ``data_dir``; without a
  ``data_dir``, Fashion-MNIST is read from ``/usr/share/datasets/fashion-mnist`` (Debian package
  ``dataset-fashion-mnist``; TFDS rejects those files by checksum because Debian recompressed
  them). If no IDX files are found, a prepared TFDS copy is used (``download=False``).
- ``cifar10``, ``cifar100`` and ``imagenet2012`` come from a prepared TFDS data directory
  (``data_dir``, default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); nothing is ever
  downloaded. ImageNet images are resized (shorter side 256) and center-cropped to 224x224.
- Your own images: ``from_arrays(...)``, ``npz:PATH`` and ``folder:PATH``
  ([`bnas_tf.sources`][bnas_tf.sources]), held in memory like the IDX datasets; any other TFDS
  image-classification dataset prepared in ``data_dir`` as ``tfds:NAME``.

A missing dataset raises ``FileNotFoundError`` naming every place looked at and the command
that installs it; a truncated or corrupt IDX file raises ``ValueError`` naming the file.

Example:

```python
import bnas_tf
from bnas_tf import data

train = data.load("fashion_mnist", "train", batch_size=64, shuffle=True, seed=0, augment=True)
for images, labels in train.take(1):
    print(images.shape, images.dtype, labels.dtype)  # (64, 28, 28, 1) float32 int32

# DARTS-style search: disjoint halves of the training split for weights and architecture.
pairs = data.search_splits("fashion_mnist", batch_size=64, seed=0)
steps = data.search_split_sizes("fashion_mnist", batch_size=64).steps_per_epoch
for (x_w, y_w), (x_a, y_a) in pairs:  # `steps` pairs per epoch
    ...
```
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from bnas_tf import sources
from bnas_tf.sources import from_arrays  # data.from_arrays: your arrays as a dataset

import dataclasses
import functools
import gzip
import importlib.util
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

__all__ = [
    "AUGMENTATIONS",
    "BUILTIN_DATASETS",
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "DatasetInfo",
    "SearchSplitSizes",
    "from_arrays",
    "info",
    "load",
    "load_arrays",
    "normalize",
    "num_examples",
    "open_source",
    "preprocess",
    "register_arrays",
    "register_tfds",
    "search_split_sizes",
    "search_splits",
    "search_validation",
]

PathLike = str | os.PathLike

#: Where the Debian package ``dataset-fashion-mnist`` installs the Fashion-MNIST IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    Attributes:
        name: dataset name, also its TFDS name.
        num_classes: number of classes.
        input_shape: ``(height, width, channels)`` of the images the pipelines yield.
        class_names: one name per class index.
        mean: per-channel mean of the training images scaled to [0, 1].
        std: per-channel standard deviation of the training images scaled to [0, 1].
        num_train: number of images in the ``"train"`` split.
        num_test: number of images in the ``"test"`` split (ImageNet: the validation set).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_train: int
    num_test: int


_CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()


def _imagenet_classes() -> tuple[str, ...]:
    """WordNet ids (``n01440764``, ...) in TFDS label order, read without importing TFDS."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location, "datasets", "imagenet2012", "labels.txt")
        if path.is_file():
            names = tuple(path.read_text().split())
            if len(names) == 1000:
                return names
    return tuple(f"class_{i}" for i in range(1000))


#: Known datasets. Mean/std are the usual per-channel statistics of the training images in
#: [0, 1]: Fashion-MNIST 0.2860/0.3530, MNIST 0.1307/0.3081, CIFAR-10
#: (0.4914, 0.4822, 0.4465)/(0.2470, 0.2435, 0.2616), CIFAR-100
#: (0.5071, 0.4865, 0.4409)/(0.2673, 0.2564, 0.2762), ImageNet
#: (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225).
DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            name="fashion_mnist",
            num_classes=10,
            input_shape=(28, 28, 1),
            class_names=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            mean=(0.2860,),
            std=(0.3530,),
            num_train=60_000,
            num_test=10_000,
        ),
        DatasetInfo(
            name="mnist",
            num_classes=10,
            input_shape=(28, 28, 1),
            class_names=tuple(str(i) for i in range(10)),
            mean=(0.1307,),
            std=(0.3081,),
            num_train=60_000,
            num_test=10_000,
        ),
        DatasetInfo(
            name="cifar10",
            num_classes=10,
            input_shape=(32, 32, 3),
            class_names=(
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ),
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            num_train=50_000,
            num_test=10_000,
        ),
        DatasetInfo(
            name="cifar100",
            num_classes=100,
            input_shape=(32, 32, 3),
            class_names=tuple(_CIFAR100_CLASSES),
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            num_train=50_000,
            num_test=10_000,
        ),
        DatasetInfo(
            name="imagenet2012",
            num_classes=1000,
            input_shape=(224, 224, 3),
            class_names=_imagenet_classes(),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            num_train=1_281_167,
            num_test=50_000,
        ),
    )
}

#: What ``augment=True`` does, per dataset, to the raw images (before ``preprocess``):
#: ``"flip"`` is a random horizontal flip; ``"crop"`` pads 4 zero pixels on each side and takes
#: a random crop of the original size (ImageNet: a random 224x224 crop of the image resized to
#: shorter side 256, instead of the center crop). MNIST is not augmented: digits are not
#: mirror-symmetric and are centred by construction.
AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("flip", "crop"),
    "mnist": (),
    "cifar10": ("crop",),
    "cifar100": ("crop",),
    "imagenet2012": ("crop", "flip"),
}

_IDX_DATASETS = ("fashion_mnist", "mnist")
#: The datasets bnas_tf knows by name (others are registered by ``bnas_tf.sources``).
BUILTIN_DATASETS = tuple(DATASETS)
# Images and labels of the datasets registered from arrays, by name and split.
_CUSTOM_ARRAYS: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
# The TFDS datasets registered as ``tfds:NAME``, by name.
_TFDS_SOURCES: dict[str, sources.TfdsSource] = {}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TFDS_SPLITS = {"imagenet2012": {"test": "validation"}}
_SHUFFLE_BUFFER = 10_000
_PAD = 4
_IMAGENET_RESIZE = 256


def info(name: str, *, data_dir: PathLike | None = None) -> DatasetInfo:
    """Returns the ``DatasetInfo`` of dataset ``name``.

    ``npz:PATH``, ``folder:PATH`` and ``tfds:NAME`` (prepared in ``data_dir``) are read and
    registered on first use with default options
    ([`bnas_tf.sources.resolve`][bnas_tf.sources.resolve] takes others).

    Raises:
        ValueError: if ``name`` is neither one of ``DATASETS`` nor a readable source.
        FileNotFoundError: an ``npz:`` file, ``folder:`` folder or ``tfds:`` dataset that does
            not exist.
    """
    if isinstance(name, str) and name not in DATASETS:
        sources.resolve(name, data_dir=data_dir)
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}, "
            "npz:PATH, folder:PATH or tfds:NAME (your own images, see bnas_tf.sources)."
        ) from None


def open_source(config) -> DatasetInfo:
    """``info`` of ``config.dataset`` read with the source options a search or training config
    carries (``data_dir``, ``image_size``, ``test_fraction``, ``skip_bad_images``; see
    [`bnas_tf.sources.resolve`][bnas_tf.sources.resolve]); the built-in names ignore them."""
    if config.image_size is not None and config.dataset in BUILTIN_DATASETS:
        raise ValueError(
            f"--image_size resizes npz:, folder: and tfds: sources; {config.dataset} has its "
            "own size."
        )
    sources.resolve(
        config.dataset,
        data_dir=config.data_dir,
        image_size=config.image_size,
        test_fraction=config.test_fraction,
        skip_bad_images=config.skip_bad_images,
    )
    return info(config.dataset, data_dir=config.data_dir)


def register_arrays(
    meta: DatasetInfo,
    *,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> None:
    """Make in-memory uint8 NHWC images and int64 labels dataset ``meta.name`` (checked by
    [`bnas_tf.sources.from_arrays`][bnas_tf.sources.from_arrays], which calls this).
    Augmentation: the padded random crop."""
    DATASETS[meta.name] = meta
    AUGMENTATIONS[meta.name] = ("crop",)
    _TFDS_SOURCES.pop(meta.name, None)
    _CUSTOM_ARRAYS[meta.name] = {"train": train, "test": test}


def register_tfds(meta: DatasetInfo, source: sources.TfdsSource) -> None:
    """Make the TFDS dataset ``source`` dataset ``meta.name`` (called by
    [`bnas_tf.sources.load_tfds`][bnas_tf.sources.load_tfds]). Augmentation: the padded random
    crop."""
    DATASETS[meta.name] = meta
    AUGMENTATIONS[meta.name] = ("crop",)
    _CUSTOM_ARRAYS.pop(meta.name, None)
    _TFDS_SOURCES[meta.name] = source


def _in_memory(name: str) -> bool:
    """Whether ``name``'s splits are NumPy arrays (IDX files or registered arrays)."""
    return name in _IDX_DATASETS or name in _CUSTOM_ARRAYS


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}.")


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """Reads a file, gunzipping it when it starts with the gzip magic bytes."""
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as f:
            return f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(
            f"{path}: truncated or corrupt gzip file ({e}); reinstall or re-download it."
        ) from e


@functools.lru_cache(maxsize=8)
def _parse_idx(path: str, ndim: int, mtime_ns: int, size: int) -> np.ndarray:
    """Parses an unsigned-byte IDX file (cached on path, modification time and size).

    Layout: magic ``0x0000 08 <ndim>`` (big endian), ``ndim`` big-endian uint32 dimensions,
    then ``prod(dims)`` bytes of data.
    """
    del mtime_ns, size  # only part of the cache key
    raw = _read_bytes(Path(path))
    expected_magic = 0x0800 + ndim
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(raw)} bytes, no header).")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {ndim} dimension(s)); not a valid IDX file."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} < {header} bytes).")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise ValueError(
            f"{path}: size mismatch: the header declares dimensions {dims} ({expected} bytes) "
            f"but the file holds {len(raw)} bytes; the file is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    stat = path.stat()
    return _parse_idx(str(path), ndim, stat.st_mtime_ns, stat.st_size)


def _find_idx_files(directory: Path, split: str) -> tuple[Path, Path] | None:
    """Returns the (images, labels) IDX files of ``split`` in ``directory``, if both exist."""
    found = []
    for stem in _IDX_FILES[split]:
        candidates = [directory / (stem + ".gz"), directory / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def _read_idx_split(name: str, images_path: Path, labels_path: Path) -> tuple[np.ndarray, ...]:
    meta = info(name)
    images = _read_idx(images_path, 3)
    labels = _read_idx(labels_path, 1)
    if images.shape[1:] != meta.input_shape[:2]:
        raise ValueError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
            f"expected {meta.input_shape[0]}x{meta.input_shape[1]} for {name}."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}."
        )
    if labels.size and labels.max() >= meta.num_classes:
        raise ValueError(
            f"{labels_path}: label {labels.max()} out of range for {meta.num_classes} classes."
        )
    return images[..., np.newaxis], labels


def _idx_dirs(name: str, data_dir: PathLike | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir)]
    return [DEBIAN_FASHION_MNIST_DIR] if name == "fashion_mnist" else []


# --------------------------------------------------------------------------------------------
# TFDS
# --------------------------------------------------------------------------------------------


def _tfds_builder(name: str, data_dir: PathLike | None):
    import tensorflow_datasets as tfds

    source = _TFDS_SOURCES.get(name)
    if source is not None:
        name = source.builder
        data_dir = source.data_dir if data_dir is None else data_dir
    return tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))


def _tfds_split(name: str, split: str) -> str:
    """The TFDS split (or slice) that is ``split`` of dataset ``name``."""
    if name in _TFDS_SOURCES:
        return _TFDS_SOURCES[name].splits[split]
    return _TFDS_SPLITS.get(name, {}).get(split, split)


def _install_hint(name: str, data_dir: PathLike | None) -> str:
    tfds_dir = f" --data_dir={data_dir}" if data_dir is not None else ""
    if name == "fashion_mnist":
        return (
            "Install it with `sudo apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu, "
            f"files in {DEBIAN_FASHION_MNIST_DIR}), or put the four IDX files in a directory and "
            "pass it as data_dir, or on a machine with internet run "
            f"`tfds build fashion_mnist{tfds_dir}`."
        )
    if name == "mnist":
        return (
            "Put the four MNIST IDX files (train-images-idx3-ubyte.gz, ...) in a directory and "
            f"pass it as data_dir, or on a machine with internet run `tfds build mnist{tfds_dir}`."
        )
    if name == "imagenet2012":
        return (
            "ImageNet cannot be downloaded automatically: put ILSVRC2012_img_train.tar and "
            "ILSVRC2012_img_val.tar in a directory MANUAL_DIR and run "
            f"`tfds build imagenet2012{tfds_dir} --manual_dir=MANUAL_DIR`."
        )
    return f"On a machine with internet run `tfds build {name}{tfds_dir}` and copy the result."


def _missing(name: str, split: str, data_dir: PathLike | None, builder) -> FileNotFoundError:
    places = []
    if _in_memory(name):
        stems = ", ".join(f"{s}[.gz]" for s in _IDX_FILES[split])
        for d in _idx_dirs(name, data_dir):
            places.append(f"IDX files ({stems}) in {d}")
    places.append(f"a prepared TFDS dataset in {builder.data_dir}")
    return FileNotFoundError(
        f"Dataset {name!r} (split {split!r}) not found. Looked for: "
        + "; ".join(places)
        + ". "
        + _install_hint(name, data_dir)
    )


def _tfds_prepared(name: str, split: str, data_dir: PathLike | None):
    builder = _tfds_builder(name, data_dir)
    if not builder.is_prepared():
        raise _missing(name, split, data_dir, builder)
    return builder


def _tfds_dataset(
    name: str,
    split: str,
    data_dir: PathLike | None,
    *,
    shuffle_files: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Yields ``(image, label)`` from TFDS, in file order unless ``shuffle_files``.

    ImageNet images stay JPEG-encoded here (cheap to shuffle); ``_fetch_fn`` decodes them.
    """
    import tensorflow_datasets as tfds

    builder = _tfds_prepared(name, split, data_dir)
    source = _TFDS_SOURCES.get(name)
    decoders = {"image": tfds.decode.SkipDecoding()} if name == "imagenet2012" else None
    ds = builder.as_dataset(
        split=_tfds_split(name, split),
        as_supervised=source is None,
        shuffle_files=shuffle_files,
        decoders=decoders,
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
    )
    if source is not None:
        ds = ds.map(lambda example: (example[source.image_key], example[source.label_key]))
    return ds


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------


def _arrays(name: str, split: str, data_dir: PathLike | None) -> tuple[np.ndarray, ...]:
    """Full (read-only, cached) uint8 NHWC images and uint8/int64 labels of an IDX dataset."""
    if name in _CUSTOM_ARRAYS:
        return _CUSTOM_ARRAYS[name][split]
    for directory in _idx_dirs(name, data_dir):
        files = _find_idx_files(directory, split)
        if files is not None:
            return _read_idx_split(name, *files)
    import tensorflow_datasets as tfds

    builder = _tfds_prepared(name, split, data_dir)
    images, labels = tfds.as_numpy(builder.as_dataset(split, batch_size=-1, as_supervised=True))
    return images, labels


def load_arrays(
    name: str,
    split: str,
    *,
    data_dir: PathLike | None = None,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads an IDX dataset (``fashion_mnist`` or ``mnist``) into NumPy arrays.

    Args:
        name: ``"fashion_mnist"`` or ``"mnist"``.
        split: ``"train"`` or ``"test"``.
        data_dir: directory holding the IDX files (gzipped or not), or a TFDS data directory.
        limit: keep only the first ``limit`` examples.

    Returns:
        ``(images, labels)``: uint8 array of shape ``(N, 28, 28, 1)`` and int64 array ``(N,)``.

    Raises:
        FileNotFoundError: if the dataset is found nowhere.
        ValueError: unknown name/split, or an invalid, truncated or corrupt IDX file.
    """
    info(name, data_dir=data_dir)
    if not _in_memory(name):
        raise ValueError(
            f"load_arrays supports the IDX datasets {', '.join(_IDX_DATASETS)} and registered "
            f"arrays, not {name!r}; use load() instead."
        )
    _check_split(split)
    _check_limit(limit)
    images, labels = _arrays(name, split, data_dir)
    return np.array(images[:limit], dtype=np.uint8), np.array(labels[:limit], dtype=np.int64)


def num_examples(name: str, split: str, *, data_dir: PathLike | None = None) -> int:
    """Number of examples in ``split`` of dataset ``name`` as found on disk."""
    info(name, data_dir=data_dir)
    _check_split(split)
    if _in_memory(name):
        return len(_arrays(name, split, data_dir)[1])
    builder = _tfds_prepared(name, split, data_dir)
    return builder.info.splits[_tfds_split(name, split)].num_examples


# --------------------------------------------------------------------------------------------
# Preprocessing and augmentation
# --------------------------------------------------------------------------------------------


def preprocess(name: str, images: np.ndarray | tf.Tensor) -> tf.Tensor:
    r"""Scales images to [0, 1] and normalises each channel ``c``:

    $$\hat{x} = \frac{x / 255 - \mu_c}{\sigma_c}$$

    with $\mu, \sigma$ the dataset's ``mean``/``std`` (``DATASETS``).

    Args:
        name: dataset name.
        images: uint8 (or float in [0, 255]) array or tensor ``[..., H, W, C]``.

    Returns:
        float32 tensor of the same shape.
    """
    meta = info(name)
    return normalize(images, meta.mean, meta.std)


def normalize(images, mean, std) -> tf.Tensor:
    """``(images / 255 - mean) / std`` per channel, float32 (``preprocess`` with given
    statistics)."""
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _resize_shorter(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resizes so that the shorter side is ``size`` (bilinear, antialiased; float32 out)."""
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    new_hw = tf.cast(tf.round(hw * (size / tf.reduce_min(hw))), tf.int32)
    return tf.image.resize(image, new_hw, antialias=True)


def _center_crop(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
    shape = tf.shape(image)
    top, left = (shape[0] - height) // 2, (shape[1] - width) // 2
    return image[top : top + height, left : left + width]


def _augment(name: str, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Applies ``AUGMENTATIONS`` of ``name`` to one HWC image with stateless ops.

    ``seed`` is an int32/int64 tensor of shape ``[2]``; the same seed gives the same result.
    """
    height, width, channels = info(name).input_shape
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    ops = AUGMENTATIONS[name]
    if "crop" in ops:
        if name != "imagenet2012":  # ImageNet: random crop of the resized image, no padding
            image = tf.pad(image, [[_PAD, _PAD], [_PAD, _PAD], [0, 0]])
        image = tf.image.stateless_random_crop(image, [height, width, channels], crop_seed)
    if "flip" in ops:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image


def _transform_fn(name: str, augment: bool) -> Callable:
    """Per-example ``(image, label[, seed]) -> (normalised image, int32 label)``."""
    height, width, channels = info(name).input_shape

    def transform(image, label, seed=None):
        if name == "imagenet2012":
            image = _resize_shorter(image, _IMAGENET_RESIZE)
            if not (augment and "crop" in AUGMENTATIONS[name]):
                image = _center_crop(image, height, width)
        if augment and AUGMENTATIONS[name]:
            image = _augment(name, image, seed)
        image = tf.ensure_shape(preprocess(name, image), (height, width, channels))
        return image, tf.cast(label, tf.int32)

    return transform


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


def _finish(
    ds: tf.data.Dataset,
    name: str,
    fetch: Callable,
    *,
    seed: int | None,
    augment: bool,
    batch_size: int | None,
    drop_remainder: bool,
) -> tf.data.Dataset:
    """``fetch`` → (augment) → ``preprocess`` → batch → prefetch."""
    autotune = tf.data.AUTOTUNE
    ds = ds.map(fetch, num_parallel_calls=autotune, deterministic=True)
    augment = augment and bool(AUGMENTATIONS[name])
    if augment:  # one stateless [2]-seed per example; new seeds on every new iterator
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(lambda xy, s: (xy[0], xy[1], s))
    ds = ds.map(_transform_fn(name, augment), num_parallel_calls=autotune, deterministic=True)
    if batch_size is not None:
        ds = ds.batch(
            batch_size,
            drop_remainder=drop_remainder,
            num_parallel_calls=autotune,
            deterministic=True,
        )
    return ds.prefetch(autotune).with_options(_options())


def _array_fetch(name: str, split: str, data_dir: PathLike | None) -> Callable:
    """``index -> (uint8 image, label)`` gathering from the in-memory arrays."""
    images, labels = _arrays(name, split, data_dir)
    images_t = tf.constant(images)
    labels_t = tf.constant(labels.astype(np.int32))
    return lambda i: (tf.gather(images_t, i), tf.gather(labels_t, i))


def _tfds_fetch(name: str) -> Callable:
    if name == "imagenet2012":
        return lambda image, label: (tf.io.decode_jpeg(image, channels=3), label)
    size = _TFDS_SOURCES[name].image_size if name in _TFDS_SOURCES else None
    if size is not None:
        return lambda image, label: (tf.image.resize(image, (size, size), antialias=True), label)
    return lambda image, label: (image, label)


# --------------------------------------------------------------------------------------------
# Public pipelines
# --------------------------------------------------------------------------------------------


def load(
    name: str,
    split: str,
    *,
    data_dir: PathLike | None = None,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    augment: bool = False,
    limit: int | None = None,
    drop_remainder: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """A ``tf.data`` pipeline over ``split`` of dataset ``name``.

    Order: first ``limit`` examples → shuffle → repeat → augment → ``preprocess`` → batch.
    IDX datasets shuffle over the whole split, TFDS datasets with a 10,000-example buffer (plus
    file shuffling when ``limit`` is None). With a ``seed`` the pipeline is repeatable: a freshly
    built dataset yields the same sequence (for the same global TensorFlow seed, e.g.
    ``tf.keras.utils.set_random_seed``); each new iteration over one dataset reshuffles and
    draws new augmentations.

    Args:
        name: a key of ``DATASETS``.
        split: ``"train"`` or ``"test"`` (ImageNet: the validation set).
        data_dir: IDX directory or TFDS data directory (see module docstring).
        batch_size: batch size, or None for unbatched examples.
        shuffle: shuffle the examples.
        seed: seed for shuffling and augmentation.
        augment: apply ``AUGMENTATIONS`` (training only).
        limit: keep only the first ``limit`` examples of the split.
        drop_remainder: drop the last incomplete batch.
        repeat: repeat forever.

    Returns:
        Dataset of ``(image, label)``: float32 ``[batch, H, W, C]`` normalised images and int32
        labels (no batch axis when ``batch_size`` is None).
    """
    info(name, data_dir=data_dir)
    _check_split(split)
    _check_limit(limit)
    if _in_memory(name):
        fetch = _array_fetch(name, split, data_dir)
        size = num_examples(name, split, data_dir=data_dir)
        size = min(size, limit) if limit else size
        ds = tf.data.Dataset.range(size)
        buffer = size
    else:
        ds = _tfds_dataset(
            name, split, data_dir, shuffle_files=shuffle and limit is None, seed=seed
        )
        fetch = _tfds_fetch(name)
        if limit:
            ds = ds.take(limit)
        buffer = min(_SHUFFLE_BUFFER, limit or _SHUFFLE_BUFFER)
    if shuffle:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return _finish(
        ds,
        name,
        fetch,
        seed=seed,
        augment=augment,
        batch_size=batch_size,
        drop_remainder=drop_remainder,
    )


class SearchSplitSizes(NamedTuple):
    """Sizes of the two halves made by ``search_splits``."""

    num_weights: int  #: examples in the weight-training half
    num_arch: int  #: examples in the architecture (alpha) half
    steps_per_epoch: int  #: pairs of batches per epoch: ``min(num_weights, num_arch) // batch``


def _split_indices(
    total: int, *, seed: int, portion: float, limit: int | None, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < portion < 1.0:
        raise ValueError(f"portion must be in (0, 1), got {portion!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    _check_limit(limit)
    chosen = np.random.default_rng(seed).permutation(total)[:limit]
    n_weights = int(len(chosen) * portion)
    idx_w, idx_a = chosen[:n_weights], chosen[n_weights:]
    if min(len(idx_w), len(idx_a)) < batch_size:
        raise ValueError(
            f"Search halves of {len(idx_w)} and {len(idx_a)} examples (of {len(chosen)}, "
            f"portion={portion}) hold no full batch of {batch_size}; raise limit or lower "
            "batch_size."
        )
    return idx_w, idx_a


def search_split_sizes(
    name: str,
    *,
    data_dir: PathLike | None = None,
    batch_size: int,
    portion: float = 0.5,
    limit: int | None = None,
) -> SearchSplitSizes:
    """Sizes of the halves of ``search_splits`` and its number of steps per epoch."""
    total = num_examples(name, "train", data_dir=data_dir)
    idx_w, idx_a = _split_indices(
        total, seed=0, portion=portion, limit=limit, batch_size=batch_size
    )
    return SearchSplitSizes(len(idx_w), len(idx_a), min(len(idx_w), len(idx_a)) // batch_size)


def search_splits(
    name: str,
    *,
    data_dir: PathLike | None = None,
    batch_size: int,
    seed: int = 0,
    portion: float = 0.5,
    limit: int | None = None,
    augment: bool = False,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """Pairs of batches from two disjoint halves of the training split, for bi-level search.

    The training split is permuted with ``seed`` (NumPy ``default_rng``); the first ``limit``
    permuted examples (all when None) are kept, the first ``portion`` of them train the weights
    and the rest the architecture parameters (alphas). Each half is shuffled with a seed derived
    from ``shuffle_seed`` (default: ``seed``), (optionally) augmented, normalised and batched with
    ``drop_remainder=True``. Keep ``seed`` fixed for a whole search, so that the halves stay
    disjoint across epochs, and vary ``shuffle_seed`` per epoch.

    One pass (epoch) yields ``search_split_sizes`` ``.steps_per_epoch`` =
    ``min(n_w, n_a) // batch_size`` pairs, then ends (no repeat); every new iteration
    reshuffles both halves. Building the pipeline again with the same arguments gives the same
    sequence.

    Returns:
        Dataset of ``((x_w, y_w), (x_a, y_a))``, each ``x`` float32 ``[batch_size, H, W, C]``
        and each ``y`` int32 ``[batch_size]``.
    """
    info(name, data_dir=data_dir)
    total = num_examples(name, "train", data_dir=data_dir)
    halves = _split_indices(total, seed=seed, portion=portion, limit=limit, batch_size=batch_size)
    pipelines = []
    for offset, indices in enumerate(halves):
        base = seed if shuffle_seed is None else shuffle_seed
        half_seed = base * 2 + offset  # distinct seeds for the two halves
        pipelines.append(
            _half_pipeline(
                name,
                indices,
                total,
                data_dir,
                shuffle_seed=half_seed,
                augment=augment,
                batch_size=batch_size,
                drop_remainder=True,
            )
        )
    return tf.data.Dataset.zip(tuple(pipelines)).with_options(_options())


def _half_pipeline(
    name: str,
    indices: np.ndarray,
    total: int,
    data_dir: PathLike | None,
    *,
    shuffle_seed: int | None,
    augment: bool,
    batch_size: int,
    drop_remainder: bool,
) -> tf.data.Dataset:
    """The examples ``indices`` of the training split, shuffled with ``shuffle_seed``
    (``None``: in their order), normalised and batched."""
    if _in_memory(name):
        fetch = _array_fetch(name, "train", data_dir)
        ds = tf.data.Dataset.from_tensor_slices(indices.astype(np.int64))
        buffer = len(indices)
    else:
        mask = np.zeros(total, dtype=bool)
        mask[indices] = True
        mask_t = tf.constant(mask)
        ds = _tfds_dataset(name, "train", data_dir).enumerate()
        ds = ds.filter(lambda i, example: tf.gather(mask_t, i)).map(lambda i, xy: xy)
        fetch = _tfds_fetch(name)
        buffer = min(_SHUFFLE_BUFFER, len(indices))
    if shuffle_seed is not None:
        ds = ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    return _finish(
        ds,
        name,
        fetch,
        seed=shuffle_seed,
        augment=augment,
        batch_size=batch_size,
        drop_remainder=drop_remainder,
    )


def search_validation(
    name: str,
    *,
    data_dir: PathLike | None = None,
    batch_size: int,
    seed: int = 0,
    portion: float = 0.5,
    limit: int | None = None,
    batches: int | None = None,
) -> tf.data.Dataset:
    """The architecture (alpha) half of ``search_splits`` with the same ``seed``,
    ``portion`` and ``limit``, as ``(x, y)`` batches in a fixed order, unaugmented: the
    held-out set a search evaluates in inference mode after each epoch (Kim et al.'s
    reference). ``batches``: only the first that many (``None``: the whole half; the last
    batch may be smaller)."""
    info(name, data_dir=data_dir)
    total = num_examples(name, "train", data_dir=data_dir)
    _, idx_a = _split_indices(total, seed=seed, portion=portion, limit=limit, batch_size=batch_size)
    if batches is not None:
        if batches < 1:
            raise ValueError(f"batches must be positive or None, got {batches!r}.")
        idx_a = idx_a[: batches * batch_size]
    ds = _half_pipeline(
        name,
        idx_a,
        total,
        data_dir,
        shuffle_seed=None,
        augment=False,
        batch_size=batch_size,
        drop_remainder=False,
    )
    return ds.with_options(_options())
