r"""Input preprocessing and prediction decoding for the zoo's datasets.

The zoo models expect what ``bnas-train`` fed them: images scaled to [0, 1] and normalised per
channel with the dataset's statistics ([`bnas_tf.data.preprocess`][bnas_tf.data.preprocess]),

$$\hat{x} = (x / 255 - \mu_c) / \sigma_c,$$

and they output logits. A model trained on your own images (``folder:``, ``npz:``, ``tfds:``)
takes its run directory as ``dataset``: the statistics and class names its ``network.json``
stored.

Examples:
    >>> import numpy as np
    >>> images = np.zeros((2, 28, 28, 1), np.uint8)
    >>> tuple(preprocess_input(images).shape)   # model = BNASB(weights="fashion_mnist")
    (2, 28, 28, 1)
    >>> logits = np.eye(10)[[9, 0]] * 5.0       # logits = model.predict(preprocess_input(images))
    >>> [top[0][:2] for top in decode_predictions(logits, top=3)]
    [(9, 'Ankle boot'), (0, 'T-shirt/top')]
"""

from __future__ import annotations

from bnas_tf import data as data_lib
from bnas_tf.runs import read_json
from bnas_tf.training import NETWORK_FILE

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

__all__ = ["preprocess_input", "decode_predictions", "DATASETS"]

#: Datasets the zoo's published weights were trained on, or the reference configurations use.
DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100", "imagenet2012")


def _info(dataset: str | os.PathLike) -> data_lib.DatasetInfo:
    if dataset in DATASETS:
        return data_lib.info(dataset)
    spec_file = Path(dataset) / NETWORK_FILE
    if not spec_file.is_file():
        raise ValueError(
            f"Unknown dataset {dataset!r}; the zoo knows {', '.join(DATASETS)}, or give a "
            f"bnas-train run directory (holding {NETWORK_FILE})."
        )
    spec = read_json(spec_file)
    if "normalization" not in spec:
        raise ValueError(f"{spec_file}: no normalization statistics (written before 0.3).")
    n = spec["num_classes"]
    return data_lib.DatasetInfo(
        name=spec["dataset"],
        num_classes=n,
        input_shape=tuple(spec["input_shape"]),
        class_names=tuple(spec.get("class_names") or (str(i) for i in range(n))),
        mean=tuple(spec["normalization"]["mean"]),
        std=tuple(spec["normalization"]["std"]),
        num_train=0,
        num_test=0,
    )


def preprocess_input(images, dataset: str | os.PathLike = "fashion_mnist") -> tf.Tensor:
    """Scale uint8 images ``[..., H, W, C]`` (values 0..255) as the zoo models were trained.

    ``dataset``: one of ``DATASETS``, or a ``bnas-train`` run directory.

    Raises:
        ValueError: unknown dataset, or a channel count other than the dataset's.
    """
    meta = _info(dataset)
    channels = np.shape(images)[-1] if np.ndim(images) else None
    if channels != meta.input_shape[-1]:
        raise ValueError(
            f"preprocess_input: {dataset} images have {meta.input_shape[-1]} channel(s) "
            f"(shape [..., H, W, {meta.input_shape[-1]}]); got shape {tuple(np.shape(images))}."
        )
    return data_lib.normalize(images, meta.mean, meta.std)


def decode_predictions(
    preds, top: int = 5, dataset: str | os.PathLike = "fashion_mnist", from_logits: bool = True
):
    """The ``top`` classes of each prediction: ``[(index, class_name, probability), ...]``.

    ``preds`` are the model's logits ``[batch, num_classes]`` (softmax is applied) or,
    with ``from_logits=False``, probabilities.

    Raises:
        ValueError: ``preds`` is not 2-D with the dataset's number of classes.
    """
    meta = _info(dataset)
    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim != 2 or preds.shape[1] != meta.num_classes:
        raise ValueError(
            f"decode_predictions expects a batch of {meta.num_classes} {dataset} scores, shape "
            f"(batch, {meta.num_classes}); got {preds.shape}."
        )
    if from_logits:
        preds = np.exp(preds - preds.max(axis=1, keepdims=True))
        preds /= preds.sum(axis=1, keepdims=True)
    top = max(1, min(int(top), meta.num_classes))
    results = []
    for row in preds:
        order = np.argsort(-row, kind="stable")[:top]
        results.append([(int(i), meta.class_names[i], float(row[i])) for i in order])
    return results
