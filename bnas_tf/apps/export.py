"""``bnas-export``: write a trained run as an LCE / TFLite flatbuffer or a SavedModel.

    bnas-export --model_dir=runs/train --format=lce --output=runs/bnas.tflite
    bnas-export --model_dir=runs/train --format=saved_model

``--format=lce`` (default) runs binary convolutions as ``LceBconv2d`` ops and fails
(exit status 1, nothing written) if the converter produced none for a model that has
binary convolutions. Without ``--output`` the file goes into the run directory
(``model.lce.tflite``, ``model.tflite`` or ``saved_model/``). An existing output is
never replaced without ``--overwrite``. See docs/export.md.
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.apps import common, startup

import json
from pathlib import Path

from absl import app, flags

FORMATS = ("lce", "tflite", "saved_model")


def define_flags(flag_values=flags.FLAGS) -> None:
    flags.DEFINE_string(
        "model_dir",
        None,
        "A bnas-train run directory (network.json + weights.h5).",
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "format",
        "lce",
        FORMATS,
        "lce: Larq Compute Engine flatbuffer with binary kernels; tflite: stock TFLite "
        "converter (float); saved_model: TensorFlow SavedModel directory.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "output",
        None,
        "Output file (directory for saved_model). Default: model.lce.tflite, "
        "model.tflite or saved_model/ in --model_dir.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool("overwrite", False, "Replace an existing --output.", flag_values=flag_values)
    flags.DEFINE_bool(
        "strict",
        False,
        "lce: fail unless every binary convolution became an LceBconv2d op "
        "(by default only a model with none fails).",
        flag_values=flag_values,
    )
    flags.DEFINE_bool("summary", True, "Print the larq model summary.", flag_values=flag_values)
    flags.mark_flag_as_required("model_dir", flag_values=flag_values)


def export_from_flags(flag_values=flags.FLAGS) -> dict:
    """Run the export described by parsed ``flag_values``; returns what was written.

    Raises:
        app.UsageError: an existing output without ``--overwrite``, or a bad ``--model_dir``.
        ValueError: ``--format=lce`` produced no binary kernel
            ([`convert_lce`][bnas_tf.export.convert_lce]).
    """
    from bnas_tf import export
    from bnas_tf.training import NETWORK_FILE

    model_dir = Path(flag_values.model_dir)
    output = (
        Path(flag_values.output)
        if flag_values.output
        else export.default_output(model_dir, flag_values.format)
    )
    # Refuse before the (slow) model build and conversion.
    if (output.exists() or output.is_symlink()) and not flag_values.overwrite:
        raise app.UsageError(f"--output {output} exists; pass --overwrite to replace it.")
    if not (model_dir / NETWORK_FILE).exists():
        raise app.UsageError(
            f"--model_dir: {model_dir / NETWORK_FILE} not found; is it a bnas-train run?"
        )

    from bnas_tf.training import load_trained

    try:
        model, spec = load_trained(model_dir)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise app.UsageError(f"--model_dir: {error}") from None
    profile = export.summary(model, print_fn=print if flag_values.summary else None)
    try:
        path = export.export_model(
            model,
            output,
            flag_values.format,
            overwrite=flag_values.overwrite,
            strict=flag_values.strict,
        )
    except FileExistsError as error:
        raise app.UsageError(str(error)) from None
    result = {
        "model_dir": str(model_dir),
        "output": str(path),
        "format": flag_values.format,
        "binarization": spec.get("binarization"),
        "summary": profile,
    }
    if flag_values.format == "saved_model":
        print(f"Wrote SavedModel {path}")
        return result
    flatbuffer = path.read_bytes()
    ops = export.count_ops(flatbuffer)
    bconv = sum(ops.get(name, 0) for name in export.LCE_BINARY_OPS)
    result.update(bytes=len(flatbuffer), op_counts=ops, lce_bconv_ops=bconv)
    print("Ops: " + json.dumps(dict(sorted(ops.items()))))
    print(
        f"Wrote {path} ({len(flatbuffer) / 1024:.1f} KiB, {flag_values.format}): {bconv} "
        f"LceBconv2d ops for {profile['binary_conv_layers']} binary convolutions, "
        f"{profile['binary_depthwise_layers']} binary depthwise convolutions (float in LCE); "
        f"weights {profile['memory_kib']:.1f} KiB (1-bit packed) vs "
        f"{profile['fp32_equivalent_kib']:.1f} KiB as float32."
    )
    return result


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        export_from_flags(flags.FLAGS)
    except ValueError as error:
        common.fail(str(error))


def run() -> None:
    define_flags()
    startup.run_program(main, __doc__)


if __name__ == "__main__":
    run()
