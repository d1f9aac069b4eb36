"""``bnas-publish``: turn a finished ``bnas-train`` run into a zoo entry.

    bnas-publish --run_dir=runs/zoo/bnasb/train --name=BNASB
    bnas-publish --run_dir=RUN --name=MyNet --model=BNASA --weights_name=fashion_mnist

Writes the full and ``notop`` weight files, their SHA-256, the model card and the
registry entry into the zoo directory (``--zoo_dir``, else ``$BNAS_TF_ZOO_DIR``, else
a source checkout's ``zoo/``; the installed package's own copy is refused); see
[`bnas_tf.zoo.publish`][bnas_tf.zoo.publish]. Afterwards
``bnas_tf.zoo.get(NAME)(weights=WEIGHTS_NAME)`` loads it.
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.apps import startup

from absl import app, flags


def define_flags(flag_values=flags.FLAGS) -> None:
    flags.DEFINE_string(
        "run_dir", None, "A finished bnas-train run directory.", flag_values=flag_values
    )
    flags.DEFINE_string(
        "name",
        None,
        "Zoo model: a built-in one (BNASA, BNASB, BNASC, BNASFM, ...) or a new name.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "model",
        None,
        "For a new --name: the built-in model it derives from (recorded in its card).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "weights_name",
        "fashion_mnist",
        "Name of the trained instance (the weights= argument that loads it).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "zoo_dir",
        None,
        "Zoo directory holding registry.json (default "
        "$BNAS_TF_ZOO_DIR, else a source checkout's zoo/; an installed package's "
        "own copy is refused).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "description",
        None,
        "For a new --name: one paragraph for its card.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "overwrite", False, "Replace an existing registry entry.", flag_values=flag_values
    )
    flags.mark_flag_as_required("run_dir", flag_values=flag_values)
    flags.mark_flag_as_required("name", flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from bnas_tf.zoo.publish import publish

    FLAGS = flag_values
    try:
        entry = publish(
            FLAGS.run_dir,
            FLAGS.name,
            weights_name=FLAGS.weights_name,
            base_model=FLAGS.model,
            zoo_dir=FLAGS.zoo_dir,
            overwrite=FLAGS.overwrite,
            description=FLAGS.description,
            print_fn=print,
        )
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from None
    for key in ("file", "notop_file", "card"):
        print(f"  {key}: {entry[key]}")


def run() -> None:
    define_flags()
    startup.run_program(main, __doc__)


if __name__ == "__main__":
    run()
