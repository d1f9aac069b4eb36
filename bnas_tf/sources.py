"""Your own images as a dataset: NumPy arrays, an ``.npz`` file or a folder of class folders.

Each source becomes a dataset name that every function of [`bnas_tf.data`][bnas_tf.data] and
every program's ``--dataset`` accepts; the input shape, the class count and the per-channel
normalisation statistics come from the data (the statistics from the training split only):

- ``bnas_tf.data.from_arrays(x_train, y_train, x_test, y_test)`` in Python (name ``arrays``,
  or ``name=``);
- ``--dataset=npz:PATH``: an ``.npz`` file holding ``x_train``, ``y_train``, ``x_test`` and
  ``y_test``;
- ``--dataset=folder:PATH``: one subfolder per class holding its images (PNG, JPEG, BMP or
  GIF; all of one size; grayscale or RGB kept as found). The test split is ``PATH/test/``
  when ``PATH`` has ``train/`` and ``test/`` subfolders, else a seeded fifth of each class.

Images are ``uint8`` (or integer-valued numbers in ``[0, 255]``), shaped ``(N, H, W)`` or
``(N, H, W, C)``; labels are integers ``0 .. n-1``. The arrays are kept in memory, as the
IDX datasets are. Bad input raises ``ValueError`` (or ``FileNotFoundError``) naming the file,
folder or array and what is wrong, before anything is written.

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

import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "TEST_FRACTION", "from_arrays", "load_npz", "load_folder", "resolve"]

#: File suffixes read as images in a class folder (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
#: Share of each class held out as the test split of a folder without ``train/``/``test/``.
TEST_FRACTION = 0.2
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


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

    Raises:
        ValueError: naming the array and the problem (shape, lengths, label range, one class).
    """
    from bnas_tf import data

    if name in data.BUILTIN_DATASETS:
        raise ValueError(
            f"{name!r} is a built-in dataset; register your arrays under another name."
        )
    xs = {"x_train": _images(x_train, "x_train"), "x_test": _images(x_test, "x_test")}
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
    scaled = xs["x_train"].astype(np.float64) / 255.0
    mean = tuple(float(m) for m in scaled.mean(axis=(0, 1, 2)))
    std = tuple(max(float(s), 1e-3) for s in scaled.std(axis=(0, 1, 2)))
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


def load_npz(path: str | os.PathLike, *, name: str | None = None) -> str:
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
        return from_arrays(**arrays, name=name or f"npz:{os.fspath(path)}")
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
    root: Path, classes: Sequence[str]
) -> tuple[list[np.ndarray], list[int], list[Path]]:
    images, labels, files = [], [], []
    for label, cls in enumerate(classes):
        folder = root / cls
        paths = (
            sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
            if folder.is_dir()
            else []
        )
        if not paths:
            raise ValueError(f"class folder {os.fspath(folder)!r} holds no images.")
        for path in paths:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(
                    f"{path}: not an image file (read are {', '.join(IMAGE_SUFFIXES)})."
                )
            images.append(_decode(path))
            labels.append(label)
            files.append(path)
    for file, image in zip(files, images):
        if image.shape != images[0].shape:
            raise ValueError(
                f"images of {os.fspath(root)!r} differ in size: {files[0]} is "
                f"{images[0].shape}, {file} is {image.shape}; resize them to one size first."
            )
    return images, labels, files


def load_folder(path: str | os.PathLike, *, name: str | None = None, seed: int = 0) -> str:
    """Register a folder of class folders (see the module docstring) and return its name.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: no class folders, a single class, a class folder without images, a file
            that is not a readable image (named), images of different sizes.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"folder {os.fspath(root)!r} does not exist.")
    name = name or f"folder:{os.fspath(path)}"
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = [d.name for d in _class_dirs(root / "train")]
        x_train, y_train, _ = _read_classes(root / "train", classes)
        x_test, y_test, _ = _read_classes(root / "test", classes)
    else:
        classes = [d.name for d in _class_dirs(root)]
        images, labels, files = _read_classes(root, classes)
        test = np.zeros(len(labels), dtype=bool)
        labels_np = np.asarray(labels)
        for label in range(len(classes)):
            members = np.flatnonzero(labels_np == label)
            # a seeded choice that depends on the files only, not on the order of the classes
            digest = hashlib.sha256(f"{seed}:{classes[label]}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            count = max(1, round(TEST_FRACTION * len(members))) if len(members) > 1 else 0
            test[rng.choice(members, count, replace=False)] = True
        x_train = [images[i] for i in np.flatnonzero(~test)]
        y_train = [labels[i] for i in np.flatnonzero(~test)]
        x_test = [images[i] for i in np.flatnonzero(test)]
        y_test = [labels[i] for i in np.flatnonzero(test)]
        if not x_test:
            raise ValueError(f"folder {os.fspath(root)!r} is too small to hold out a test split.")
    return from_arrays(
        np.stack(x_train),
        np.asarray(y_train),
        np.stack(x_test),
        np.asarray(y_test),
        name=name,
        class_names=classes,
    )


def resolve(name: str) -> str | None:
    """Register ``npz:PATH`` or ``folder:PATH`` on first use; ``None`` for other names."""
    if name.startswith("npz:"):
        return load_npz(name[len("npz:") :], name=name)
    if name.startswith("folder:"):
        return load_folder(name[len("folder:") :], name=name)
    return None
