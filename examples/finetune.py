"""Fine-tune a pretrained zoo model on another task, in plain Keras.

The task: tell apart the four upper-body garments of Fashion-MNIST (T-shirt/top,
Pullover, Coat, Shirt), the classes the 10-way model confuses most, with a new
4-way head. ``BNASB(weights="fashion_mnist", include_top=False)`` gives the binary
feature extractor; the script

1. trains only the new head for ``--freeze_epochs`` (the zoo layers frozen, their
   batch norms in inference mode),
2. fine-tunes everything for ``--epochs`` with a 10x lower learning rate,

with standard callbacks (EarlyStopping, ReduceLROnPlateau, ModelCheckpoint, CSVLogger),
then saves the model (``model.save``), loads it back with
``tf.keras.models.load_model(..., safe_mode=True)`` (the zoo's layers and quantizers are
registered Keras serializables, no ``custom_objects`` needed) and prints its
``larq.models.summary``.

    python examples/finetune.py                                  # a few minutes on 2 CPU cores
    python examples/finetune.py --train_examples=256 --epochs=1  # a smoke test
    python examples/finetune.py --weights=none                   # the same from random init
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (first: selects Keras 2 before TensorFlow is imported)
from bnas_tf import data, zoo

import argparse
import json
import time
from pathlib import Path

import larq as lq
import numpy as np
import tensorflow as tf

TOPS = (0, 2, 4, 6)  # T-shirt/top, Pullover, Coat, Shirt


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="BNASB", help="Zoo model (bnas_tf.zoo.list_models()).")
    parser.add_argument(
        "--weights",
        default="fashion_mnist",
        help="Published weights name, weights file, or 'none' (random init).",
    )
    parser.add_argument(
        "--classes",
        default=",".join(map(str, TOPS)),
        help="Fashion-MNIST classes of the new task, comma-separated.",
    )
    parser.add_argument(
        "--train_examples",
        type=int,
        default=2000,
        help="Training images of the new task (10 %% of them for validation).",
    )
    parser.add_argument(
        "--test_examples", type=int, default=1000, help="Test images of the new task."
    )
    parser.add_argument(
        "--freeze_epochs", type=int, default=1, help="Epochs training only the head."
    )
    parser.add_argument(
        "--epochs", type=int, default=2, help="Epochs fine-tuning the whole network."
    )
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--data_dir", default=None, help="Fashion-MNIST IDX directory.")
    parser.add_argument("--output_dir", default="runs/finetune")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def task_arrays(split: str, classes: tuple[int, ...], limit: int, data_dir: str | None):
    """Images of ``classes`` (preprocessed) and their labels renumbered 0..len(classes)-1."""
    images, labels = data.load_arrays("fashion_mnist", split, data_dir=data_dir)
    keep = np.flatnonzero(np.isin(labels, classes))[:limit]
    if len(keep) == 0:
        raise SystemExit(f"No {split} images of classes {classes}.")
    relabel = {c: i for i, c in enumerate(classes)}
    return zoo.preprocess_input(images[keep]).numpy(), np.array([relabel[c] for c in labels[keep]])


def build(
    model_name: str, weights: str | None, num_classes: int
) -> tuple[tf.keras.Model, tf.keras.Model]:
    """(whole model, pretrained feature extractor): the zoo features plus a new head, flat."""
    base = zoo.get(model_name)(weights=weights, include_top=False, input_shape=(28, 28, 1))
    x = tf.keras.layers.GlobalAveragePooling2D(name="task_pool")(base.output)
    x = tf.keras.layers.Dropout(0.2, name="task_dropout")(x)
    outputs = tf.keras.layers.Dense(num_classes, name="task_logits")(x)
    return tf.keras.Model(base.input, outputs, name=f"{model_name.lower()}_finetuned"), base


def compile_model(model: tf.keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    tf.keras.utils.set_random_seed(args.seed)
    classes = tuple(int(c) for c in args.classes.split(","))
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    x, y = task_arrays("train", classes, args.train_examples, args.data_dir)
    x_test, y_test = task_arrays("test", classes, args.test_examples, args.data_dir)
    weights = None if args.weights.lower() == "none" else args.weights
    model, base = build(args.model, weights, len(classes))
    callbacks = [
        tf.keras.callbacks.EarlyStopping("val_loss", patience=2, restore_best_weights=True),
        tf.keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=1),
        tf.keras.callbacks.ModelCheckpoint(
            str(output / "best.weights.h5"),
            "val_accuracy",
            save_best_only=True,
            save_weights_only=True,
        ),
        tf.keras.callbacks.CSVLogger(str(output / "history.csv"), append=True),
    ]
    fit = dict(batch_size=args.batch_size, validation_split=0.1, callbacks=callbacks, verbose=2)
    started = time.time()

    # 1. the new head only; frozen batch norms run in inference mode (Keras 2 semantics)
    for layer in base.layers:
        layer.trainable = False
    compile_model(model, args.learning_rate)
    if args.freeze_epochs:
        model.fit(x, y, epochs=args.freeze_epochs, **fit)
    # 2. everything, gently
    for layer in base.layers:
        layer.trainable = True
    compile_model(model, args.learning_rate / 10)
    model.fit(
        x, y, initial_epoch=args.freeze_epochs, epochs=args.freeze_epochs + args.epochs, **fit
    )
    seconds = time.time() - started

    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    path = output / "finetuned.keras"
    model.save(path)
    restored = tf.keras.models.load_model(path, safe_mode=True)
    same = np.allclose(
        restored.predict(x_test[:16], verbose=0), model.predict(x_test[:16], verbose=0), atol=1e-5
    )
    lq.models.summary(restored)
    names = [data.info("fashion_mnist").class_names[c] for c in classes]
    results = {
        "task": names,
        "test_accuracy": float(accuracy),
        "test_examples": int(len(y_test)),
        "train_examples": int(len(y)),
        "fit_seconds": seconds,
        "saved": str(path),
        "reload_identical": bool(same),
    }
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"{args.model}({args.weights!r}) fine-tuned on {names}: test top-1 {accuracy:.4f} on "
        f"{len(y_test)} images ({seconds:.0f} s); saved to {path}, reloaded identically: {same}"
    )
    return results


if __name__ == "__main__":
    main()
