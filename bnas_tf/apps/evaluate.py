"""``bnas-evaluate``: top-1 accuracy of a trained run on its dataset's test split.

bnas-evaluate --model_dir=runs/train --output_dir=runs/eval
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.apps import common, startup

from absl import app, flags


def define_flags(flag_values=flags.FLAGS) -> None:
    flags.DEFINE_string("model_dir", None, "A bnas-train run directory.", flag_values=flag_values)
    flags.DEFINE_string("split", "test", "Split to evaluate.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "IDX or TFDS data directory.", flag_values=flag_values)
    flags.DEFINE_integer(
        "limit", None, "Evaluate only the first N examples.", lower_bound=1, flag_values=flag_values
    )
    flags.DEFINE_integer("batch_size", 256, "Batch size.", lower_bound=1, flag_values=flag_values)
    flags.mark_flag_as_required("model_dir", flag_values=flag_values)
    common.define_run_flags(flag_values, output_required=False)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from bnas_tf.runs import write_json
    from bnas_tf.training import evaluate_trained, load_trained, summary_text

    FLAGS = flags.FLAGS
    try:
        model, spec = load_trained(FLAGS.model_dir)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise app.UsageError(f"--model_dir: {error}") from None
    print(summary_text(model))
    results = evaluate_trained(
        FLAGS.model_dir,
        split=FLAGS.split,
        data_dir=FLAGS.data_dir,
        limit=FLAGS.limit,
        batch_size=FLAGS.batch_size,
    )
    print(
        f"{spec['dataset']} {FLAGS.split}: top-1 {results['accuracy']:.4f} on "
        f"{results['examples']} images"
    )
    if FLAGS.output_dir:
        output_dir = common.start_run("bnas-evaluate", FLAGS)
        write_json(output_dir / "metrics.json", {"model_dir": FLAGS.model_dir, **results})


def run() -> None:
    define_flags()
    startup.run_program(main, __doc__)


if __name__ == "__main__":
    run()
