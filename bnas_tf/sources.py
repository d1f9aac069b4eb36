"""Your own images as a dataset: NumPy arrays, an ``.npz`` file, a folder of class folders or
any TFDS image-classification dataset.

Each source becomes a dataset name that every function of [`bnas_tf.data`][bnas_tf.data] and
every program's ``--dataset`` accepts; the input shape, the class count and the per-channel
normalisation statistics come from the data (the statistics from the training split only;
``bnas-train`` stores them in its ``network.json`` for evaluation, export and the zoo):

- ``bnas_tf.data.from_arrays(x_train, y_train, x_test, y_test)`` in Python (name ``arrays``,
  or ``name=``);
- ``--dataset=npz:PATH``: an ``.npz`` file holding ``x_train``, ``y_train``, ``x_test`` and
  ``y_test``;
- ``--dataset=folder:PATH``: one subfolder per class holding its images (PNG, JPEG, BMP or
  GIF; grayscale or RGB kept as found). The test split is ``PATH/test/`` when ``PATH`` has
  ``train/`` and ``test/`` subfolders, else a seeded ``test_fraction`` of each class;
- ``--dataset=tfds:NAME``: a TFDS dataset prepared in ``--data_dir`` (``NAME`` may carry a
  config and version, ``NAME/CONFIG:1.0.0``); its image and label features are found from the
  builder's info, its test split is ``test`` (else ``validation``, else the last
  ``test_fraction`` of ``train``). It streams from disk; nothing is downloaded.

Options (the programs' flags of the same names): ``image_size`` resizes every image to
``image_size x image_size`` (folders of mixed sizes need it); ``test_fraction`` (default 0.2);
``skip_bad_images`` skips and counts a folder's unreadable or non-image files instead of
refusing them.

Images are ``uint8`` (or integer-valued numbers in ``[0, 255]``), shaped ``(N, H, W)`` or
``(N, H, W, C)``; labels are integers ``0 .. n-1``. Arrays, npz files and folders are kept in
memory, as the IDX datasets are. Bad input raises ``ValueError`` (or ``FileNotFoundError``)
naming the file, folder or array and what is wrong, before anything is written.

Example:
    >>> import numpy as np
    >>> from bnas_tf import data
    >>> rng = np.random.default_rng(0)
    >>> x = rng.integers(0, 256, (40, 16, 16), dtype=np.uint8)
    >>> y = np.arange(40) % 4
    >>> name = data.from_arrays(x[:32], y[:32], x[32:], y[32:], name="toy")
    >>> data.info(name).input_shape, data.info(name).num_classes
    ((16, 16, 1), 4)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import logging

__all__ = [
    "DATA_HELP",
    "IMAGE_SUFFIXES",
    "PREFIXES",
    "STATS_LIMIT",
    "TEST_FRACTION",
    "from_arrays",
    "load_npz",
    "load_folder",
    "load_tfds",
    "resolve",
]

#: File suffixes read as images in a class folder (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
#: Share of each class held out as the test split of a folder without ``train/``/``test/``.
TEST_FRACTION = 0.2

#: Help of the data settings, shared by the search, training and tuning configs (their flags).
DATA_HELP = {
    "dataset": "fashion_mnist, mnist, cifar10, cifar100, imagenet2012, or your images: "
    "folder:PATH (one subfolder per class), npz:PATH (x_train, y_train, x_test, y_test) or "
    "tfds:NAME (any TFDS image-classification dataset prepared in --data_dir).",
    "data_dir": "IDX or TFDS data directory.",
    "image_size": "Resize the images of a folder:, npz: or tfds: dataset to N x N.",
    "test_fraction": "Share of each class held out as the test split of a folder: without "
    "test/ (and of a tfds: dataset without a test or validation split).",
    "skip_bad_images": "Skip and count the unreadable or non-image files of a folder: dataset "
    "instead of refusing them.",
}
#: Training images a ``tfds:`` dataset's normalisation statistics are computed from (the first).
STATS_LIMIT = 10_000
#: The ``--dataset`` prefixes of the sources read here.
PREFIXES = ("npz:", "folder:", "tfds:")
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Options each opened source name was read with (a new call with other options reads it again).
_OPENED: dict[str, tuple] = {}


def _check_options(image_size: int | None, test_fraction: float) -> None:
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
        raise ValueError(f"--image_size must be a positive integer, got {image_size!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"--test_fraction must be in (0, 1), got {test_fraction!r}.")


def _resize(images: np.ndarray, size: int | None) -> np.ndarray:
    """``uint8`` NHWC images resized to ``size x size`` (bilinear, antialiased), in chunks."""
    if size is None or images.shape[1:3] == (size, size):
        return images
    import tensorflow as tf

    chunks = [
        tf.image.resize(images[i : i + 4096], (size, size), antialias=True).numpy()
        for i in range(0, len(images), 4096)
    ]
    return np.clip(np.rint(np.concatenate(chunks)), 0, 255).astype(np.uint8)


def _statistics(scaled: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (floored at 1e-3) of NHWC images in [0, 1]."""
    scaled = scaled.astype(np.float64)
    mean = tuple(float(m) for m in scaled.mean(axis=(0, 1, 2)))
    std = tuple(max(float(s), 1e-3) for s in scaled.std(axis=(0, 1, 2)))
    return mean, std


def _images(array, what: str) -> np.ndarray:
    x = np.asarray(array)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(
            f"{what} must be images shaped (N, H, W) or (N, H, W, C) with C 1 or 3 and N > 0, "
            f"got shape {x.shape}."
        )
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or x.min() < 0 or x.max() > 255:
            raise ValueError(f"{what} must hold values in [0, 255] (uint8 images), got {x.dtype}.")
        x = np.rint(x).astype(np.uint8)
    return x


def _labels(array, what: str, count: int, images_what: str) -> np.ndarray:
    y = np.asarray(array)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{what} must be integer class indices shaped (N,), got {y.dtype} {y.shape}."
        )
    if len(y) != count:
        raise ValueError(f"{what} has {len(y)} labels but {images_what} has {count} images.")
    return y.astype(np.int64)


def from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    name: str = "arrays",
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    stats: dict | None = None,
) -> str:
    """Register in-memory images as dataset ``name`` and return the name.

    Args:
        x_train: training images, ``(N, H, W)`` or ``(N, H, W, C)``, values in ``[0, 255]``.
        y_train: their integer labels ``0 .. n-1``, ``n`` the number of classes (at least 2).
        x_test: test images of the same height, width and channels.
        y_test: their labels.
        name: the dataset's name for [`bnas_tf.data`][bnas_tf.data] (replaces an earlier
            registration of the same name; the built-in names are refused).
        class_names: one name per class (default ``"0"``, ``"1"``, ...).
        image_size: resize every image to ``image_size x image_size`` first.
        stats: ``{"mean": [...], "std": [...]}`` to normalise with instead of the statistics
            of ``x_train`` (a trained run's, from its ``network.json``).

    Raises:
        ValueError: naming the array and the problem (shape, lengths, label range, one class).
    """
    from bnas_tf import data

    if name in data.BUILTIN_DATASETS:
        raise ValueError(
            f"{name!r} is a built-in dataset; register your arrays under another name."
        )
    _check_options(image_size, TEST_FRACTION)
    xs = {
        "x_train": _resize(_images(x_train, "x_train"), image_size),
        "x_test": _resize(_images(x_test, "x_test"), image_size),
    }
    ys = {
        "y_train": _labels(y_train, "y_train", len(xs["x_train"]), "x_train"),
        "y_test": _labels(y_test, "y_test", len(xs["x_test"]), "x_test"),
    }
    if xs["x_train"].shape[1:] != xs["x_test"].shape[1:]:
        raise ValueError(
            f"x_train images are {xs['x_train'].shape[1:]} but x_test images are "
            f"{xs['x_test'].shape[1:]}; both splits need one shape."
        )
    num_classes = int(max(ys["y_train"].max(), ys["y_test"].max())) + 1
    for key, y in ys.items():
        if y.min() < 0:
            raise ValueError(f"{key} holds label {int(y.min())}; labels must be 0 .. n-1.")
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if num_classes > len(class_names):
            raise ValueError(
                f"labels go up to {num_classes - 1} but only {len(class_names)} class names "
                "were given; labels must be 0 .. n-1."
            )
        num_classes = len(class_names)
    if len(np.unique(ys["y_train"])) < 2:
        raise ValueError("y_train holds a single class; a classifier needs at least two.")
    mean, std = _statistics(xs["x_train"] / 255.0) if stats is None else _checked_stats(stats, xs)
    data.register_arrays(
        data.DatasetInfo(
            name=name,
            num_classes=num_classes,
            input_shape=tuple(int(d) for d in xs["x_train"].shape[1:]),
            class_names=class_names or tuple(str(i) for i in range(num_classes)),
            mean=mean,
            std=std,
            num_train=len(ys["y_train"]),
            num_test=len(ys["y_test"]),
        ),
        train=(xs["x_train"], ys["y_train"]),
        test=(xs["x_test"], ys["y_test"]),
    )
    return name


def _checked_stats(stats: dict, xs: dict) -> tuple[tuple[float, ...], tuple[float, ...]]:
    channels = xs["x_train"].shape[-1]
    mean, std = tuple(stats["mean"]), tuple(stats["std"])
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"normalisation statistics for {len(mean)} channel(s) do not fit images with "
            f"{channels} channel(s)."
        )
    return mean, std


def load_npz(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    image_size: int | None = None,
    stats: dict | None = None,
) -> str:
    """Register the arrays of an ``.npz`` file (``x_train, y_train, x_test, y_test``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ``.npz`` archive, or an array missing or bad (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"npz file {os.fspath(path)!r} does not exist.")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an archive of named arrays")
        with archive:
            files = list(archive.files)
            arrays = {k: archive[k] for k in _NPZ_KEYS if k in files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{os.fspath(path)} is not a readable .npz archive ({error}).") from None
    missing = [k for k in _NPZ_KEYS if k not in arrays]
    if missing:
        raise ValueError(
            f"{os.fspath(path)}: missing array(s) {', '.join(missing)}; an npz dataset "
            f"holds {', '.join(_NPZ_KEYS)} (it has {', '.join(files) or 'none'})."
        )
    try:
        return from_arrays(
            **arrays, name=name or f"npz:{os.fspath(path)}", image_size=image_size, stats=stats
        )
    except ValueError as error:
        raise ValueError(f"{os.fspath(path)}: {error}") from None


def _decode(path: Path) -> np.ndarray:
    import tensorflow as tf

    try:
        image = tf.io.decode_image(tf.io.read_file(str(path)), expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a readable image ({message}).") from None
    if image.shape[-1] == 4:  # RGBA: the alpha channel carries no class information
        image = image[..., :3]
    return image


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise ValueError(f"folder {os.fspath(root)!r} has no class subfolders (one per class).")
    if len(dirs) < 2:
        raise ValueError(
            f"folder {os.fspath(root)!r} has one class subfolder ({dirs[0].name}); a classifier "
            "needs at least two."
        )
    return dirs


def _read_classes(
    root: Path, classes: Sequence[str], *, image_size: int | None, skip_bad_images: bool
) -> tuple[list[np.ndarray], list[int], list[Path], list[Path]]:
    """Images, labels and files of each class folder, and the files skipped as bad."""
    images, labels, files, skipped = [], [], [], []
    for label, cls in enumerate(classes):
        folder = root / cls
        paths = (
            sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
            if folder.is_dir()
            else []
        )
        read = 0
        for path in paths:
            try:
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    raise ValueError(
                        f"{path}: not an image file (read are {', '.join(IMAGE_SUFFIXES)}); "
                        "--skip_bad_images skips such files."
                    )
                image = _decode(path)
            except ValueError:
                if not skip_bad_images:
                    raise
                skipped.append(path)
                continue
            images.append(image if image_size is None else _resize(image[None], image_size)[0])
            labels.append(label)
            files.append(path)
            read += 1
        if not read:
            raise ValueError(f"class folder {os.fspath(folder)!r} holds no images.")
    for file, image in zip(files, images):
        if image.shape != images[0].shape:
            raise ValueError(
                f"images of {os.fspath(root)!r} differ in size: {files[0]} is "
                f"{images[0].shape}, {file} is {image.shape}; pass --image_size (image_size=) "
                "to resize them to one size."
            )
    return images, labels, files, skipped


def load_folder(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    seed: int = 0,
    image_size: int | None = None,
    test_fraction: float = TEST_FRACTION,
    skip_bad_images: bool = False,
    stats: dict | None = None,
) -> str:
    """Register a folder of class folders (see the module docstring) and return its name.

    Args:
        path: the folder: class folders, or ``train/`` and ``test/`` each of class folders.
        name: the dataset's name (default ``folder:PATH``).
        seed: seeds the per-class choice of the held-out test images.
        image_size: resize every image to ``image_size x image_size``.
        test_fraction: share of each class held out as the test split (without ``test/``).
        skip_bad_images: skip (and log the count of) unreadable and non-image files.
        stats: normalisation statistics to use instead of the training images' own.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: no class folders, a single class, a class folder without images, a file
            that is not a readable image (named), images of different sizes.
    """
    _check_options(image_size, test_fraction)
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"folder {os.fspath(root)!r} does not exist.")
    name = name or f"folder:{os.fspath(path)}"
    options = {"image_size": image_size, "skip_bad_images": skip_bad_images}
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = [d.name for d in _class_dirs(root / "train")]
        x_train, y_train, _, bad = _read_classes(root / "train", classes, **options)
        x_test, y_test, _, bad_test = _read_classes(root / "test", classes, **options)
        bad += bad_test
    else:
        classes = [d.name for d in _class_dirs(root)]
        images, labels, _, bad = _read_classes(root, classes, **options)
        test = np.zeros(len(labels), dtype=bool)
        labels_np = np.asarray(labels)
        for label in range(len(classes)):
            members = np.flatnonzero(labels_np == label)
            # a seeded choice that depends on the files only, not on the order of the classes
            digest = hashlib.sha256(f"{seed}:{classes[label]}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            count = max(1, round(test_fraction * len(members))) if len(members) > 1 else 0
            test[rng.choice(members, count, replace=False)] = True
        x_train = [images[i] for i in np.flatnonzero(~test)]
        y_train = [labels[i] for i in np.flatnonzero(~test)]
        x_test = [images[i] for i in np.flatnonzero(test)]
        y_test = [labels[i] for i in np.flatnonzero(test)]
        if not x_test:
            raise ValueError(f"folder {os.fspath(root)!r} is too small to hold out a test split.")
    if bad:
        logging.warning(
            "%s: skipped %d unreadable or non-image file(s) (--skip_bad_images), e.g. %s",
            os.fspath(root),
            len(bad),
            ", ".join(os.fspath(p) for p in bad[:3]),
        )
    return from_arrays(
        np.stack(x_train),
        np.asarray(y_train),
        np.stack(x_test),
        np.asarray(y_test),
        name=name,
        class_names=classes,
        stats=stats,
    )


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """Where a ``tfds:`` dataset's examples come from.

    Attributes:
        builder: the TFDS name (``NAME[/CONFIG][:VERSION]``).
        data_dir: the TFDS data directory it is prepared in (``None``: TFDS' default).
        image_key: the image feature.
        label_key: the class-label feature.
        splits: the TFDS split (or slice) read as ``"train"`` and as ``"test"``.
        image_size: resize to ``image_size x image_size`` (``None``: as stored).
    """

    builder: str
    data_dir: str | None
    image_key: str
    label_key: str
    splits: dict[str, str]
    image_size: int | None = None


def _feature_keys(spec: str, builder) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    supervised = builder.info.supervised_keys
    features = builder.info.features
    if supervised and len(supervised) == 2 and all(isinstance(k, str) for k in supervised):
        image_key, label_key = supervised
    else:
        images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
        labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
        if len(images) != 1 or len(labels) != 1:
            raise ValueError(
                f"--dataset=tfds:{spec}: not an image-classification dataset; it needs one Image "
                f"and one ClassLabel feature, it has {', '.join(features.keys())}."
            )
        image_key, label_key = images[0], labels[0]
    if not isinstance(features[image_key], tfds.features.Image):
        raise ValueError(f"--dataset=tfds:{spec}: feature {image_key!r} is not an Image.")
    if not isinstance(features[label_key], tfds.features.ClassLabel):
        raise ValueError(f"--dataset=tfds:{spec}: feature {label_key!r} is not a ClassLabel.")
    return image_key, label_key


def load_tfds(
    spec: str,
    *,
    data_dir: str | os.PathLike | None = None,
    name: str | None = None,
    image_size: int | None = None,
    test_fraction: float = TEST_FRACTION,
    stats: dict | None = None,
) -> str:
    """Register TFDS dataset ``spec`` prepared in ``data_dir`` (nothing is downloaded).

    The shape and classes come from the builder's info; the normalisation statistics from the
    first ``STATS_LIMIT`` training images (or ``stats``).

    Raises:
        FileNotFoundError: the dataset is not prepared in ``data_dir``.
        ValueError: not one Image and one ClassLabel feature, images of no fixed size without
            ``image_size``, a channel count other than 1 or 3, no ``train`` split.
    """
    from bnas_tf import data

    import tensorflow_datasets as tfds

    _check_options(image_size, test_fraction)
    where = os.fspath(data_dir) if data_dir is not None else "TFDS' default data directory"
    try:
        builder = tfds.builder(spec, data_dir=None if data_dir is None else os.fspath(data_dir))
    except tfds.core.registered.DatasetNotFoundError:
        builder = None
    if builder is None or not builder.is_prepared():
        raise FileNotFoundError(
            f"--dataset=tfds:{spec}: not prepared in {where}; prepare it there with "
            f"`tfds build {spec} --data_dir=DIR` (on a machine with its source files) and pass "
            "--data_dir=DIR."
        )
    image_key, label_key = _feature_keys(spec, builder)
    splits = builder.info.splits
    if "train" not in splits:
        raise ValueError(
            f"--dataset=tfds:{spec}: no 'train' split (it has {', '.join(splits.keys())})."
        )
    test = next((s for s in ("test", "validation") if s in splits), None)
    if test is None:
        cut = round(100 * (1 - test_fraction))
        split_names = {"train": f"train[:{cut}%]", "test": f"train[{cut}%:]"}
    else:
        split_names = {"train": "train", "test": test}
    shape = builder.info.features[image_key].shape
    channels = shape[-1]
    if channels not in (1, 3):
        raise ValueError(
            f"--dataset=tfds:{spec}: images have {channels} channels; 1 or 3 are supported."
        )
    if image_size is None and None in shape[:2]:
        raise ValueError(
            f"--dataset=tfds:{spec}: its images have no fixed size ({shape}); pass "
            "--image_size (image_size=) to resize them."
        )
    height, width = (image_size, image_size) if image_size else shape[:2]
    source = TfdsSource(
        builder=spec,
        data_dir=None if data_dir is None else os.fspath(data_dir),
        image_key=image_key,
        label_key=label_key,
        splits=split_names,
        image_size=image_size,
    )
    names = tuple(builder.info.features[label_key].names)
    meta = data.DatasetInfo(
        name=name or f"tfds:{spec}",
        num_classes=len(names),
        input_shape=(int(height), int(width), int(channels)),
        class_names=names,
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
        num_train=splits[split_names["train"]].num_examples,
        num_test=splits[split_names["test"]].num_examples,
    )
    if meta.num_classes < 2:
        raise ValueError(f"--dataset=tfds:{spec}: a single class; a classifier needs two.")
    data.register_tfds(meta, source)
    if stats is None:
        ds = data.load(meta.name, "train", limit=STATS_LIMIT, batch_size=1024)
        scaled = np.concatenate([x.numpy() for x, _ in ds])  # x / 255: mean 0, std 1 so far
        mean, std = _statistics(np.clip(scaled, 0.0, 1.0))
    else:
        mean, std = tuple(stats["mean"]), tuple(stats["std"])
    data.register_tfds(dataclasses.replace(meta, mean=mean, std=std), source)
    return meta.name


def _split_spec(name: str) -> tuple[str, str] | None:
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return prefix, name[len(prefix) :]
    return None


def resolve(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    test_fraction: float = TEST_FRACTION,
    skip_bad_images: bool = False,
    stats: dict | None = None,
) -> str | None:
    """Register ``npz:PATH``, ``folder:PATH`` or ``tfds:NAME`` (``None`` for other names).

    A name already read with the same options is not read again; other options read it anew.
    The options are those of the loaders (``data_dir`` is for ``tfds:``, ``test_fraction``
    for ``folder:`` and ``tfds:``, ``skip_bad_images`` for ``folder:``).
    """
    parts = _split_spec(name) if isinstance(name, str) else None
    if parts is None:
        return None
    options = (
        None if data_dir is None else os.fspath(data_dir),
        image_size,
        test_fraction,
        skip_bad_images,
        None if stats is None else (tuple(stats["mean"]), tuple(stats["std"])),
    )
    from bnas_tf import data

    if _OPENED.get(name) == options and name in data.DATASETS:
        return name
    prefix, rest = parts
    if prefix == "npz:":
        load_npz(rest, name=name, image_size=image_size, stats=stats)
    elif prefix == "folder:":
        load_folder(
            rest,
            name=name,
            image_size=image_size,
            test_fraction=test_fraction,
            skip_bad_images=skip_bad_images,
            stats=stats,
        )
    else:
        load_tfds(
            rest,
            data_dir=data_dir,
            name=name,
            image_size=image_size,
            test_fraction=test_fraction,
            stats=stats,
        )
    _OPENED[name] = options
    return name
