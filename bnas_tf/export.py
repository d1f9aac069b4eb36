"""Export a trained binary network for deployment: Larq Compute Engine, TFLite, SavedModel.

The deployable form of a binary network is an LCE flatbuffer, in which each binary
convolution is an ``LceBconv2d`` op: 1-bit packed weights, XOR + popcount
accumulation, and the per-channel scale of the kernel quantizer and the following
batch normalization folded into the op's output transform:

```python
from bnas_tf import export
from bnas_tf.training import load_trained

model, _ = load_trained("runs/train")
export.export_model(model, "runs/train/model.lce.tflite")        # format="lce"
export.count_ops(open("runs/train/model.lce.tflite", "rb").read())
# {'LceBconv2d': 20, 'LceQuantize': 20, 'CONV_2D': 3, ...}
```

or from the shell (``bnas-export``, [`bnas_tf.apps.export`][bnas_tf.apps.export]):

```sh
bnas-export --model_dir=runs/train --format=lce --output=model.tflite
```

Formats (``FORMATS``):

* ``"lce"``: ``larq_compute_engine.convert_keras_model``. The flatbuffer is
  checked: if the model has binary convolutions (``binary_conv_layers``: a
  ``QuantConv2D`` whose input *and* kernel quantizers are 1-bit) but the converter
  produced no ``LceBconv2d`` op, ``convert_lce`` raises ``ValueError`` instead of
  writing what would be a float model in disguise.
* ``"tflite"``: the stock ``tf.lite.TFLiteConverter``; the binarization is kept as
  float ``SIGN`` and ``CONV_2D`` ops (runs anywhere, no speed-up).
* ``"saved_model"``: a TensorFlow SavedModel directory (``model.save``).

Which binarizations become LCE binary kernels (``LCE_SUPPORT``, checked for every
binarization by ``tests/test_export.py``): all three of ``BINARIZATIONS``.
The converter works on the frozen graph, where the kernel quantizer is applied to a
constant; it constant-folds the quantizer and accepts any kernel whose values are
``+-alpha_o`` per output channel o, folding ``alpha_o`` into the output multiplier.
XNOR-Net's ``mean|W|`` scale, PCNN's learned projection level and Kim et al.'s
mean-centring + clip + scale all give such kernels. A quantizer whose scale is *not*
per output channel (per input channel, say) is left as a float ``CONV_2D`` between
``LceQuantize`` / ``LceDequantize``.

Binary *depthwise* convolutions (``QuantDepthwiseConv2D``, the first half of
``bin_sep_conv_*`` in Chen et al.'s search space) have no LCE binary kernel: they are
run as float ``DEPTHWISE_CONV_2D`` on dequantized +-1 inputs (their pointwise halves
are ``LceBconv2d``). Dilated binary convolutions (``bin_dil_conv_*``) do map.
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)

import collections
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import larq as lq
import tensorflow as tf

__all__ = [
    "FORMATS",
    "LCE_BINARY_OPS",
    "LCE_SUPPORT",
    "export_model",
    "convert",
    "convert_lce",
    "lce_report",
    "count_ops",
    "binary_conv_layers",
    "binary_depthwise_layers",
    "model_summary",
    "summary",
    "default_output",
]

FORMATS: tuple[str, ...] = ("lce", "tflite", "saved_model")

LCE_BINARY_OPS: tuple[str, ...] = ("LceBconv2d",)
"""Custom ops of the Larq Compute Engine that compute on 1-bit packed weights."""

LCE_SUPPORT: dict[str, str] = {
    "xnor": "LceBconv2d: alpha_o = mean|W_o| is folded into the output multiplier.",
    "sign_scale": (
        "LceBconv2d: the mean-centring and clip act on the constant kernel and are folded "
        "by the converter, alpha_o goes into the output multiplier."
    ),
    "pcnn": "LceBconv2d: the learned projection level a_o is folded into the output multiplier.",
}
"""How each binarization of ``BINARIZATIONS`` is deployed by LCE."""

_DEFAULT_NAMES = {"lce": "model.lce.tflite", "tflite": "model.tflite", "saved_model": "saved_model"}


def default_output(model_dir: str | os.PathLike, format: str) -> Path:
    """Where ``bnas-export`` writes ``format`` when ``--output`` is not given."""
    _check_format(format)
    return Path(model_dir) / _DEFAULT_NAMES[format]


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}; choose one of {FORMATS}.")


def _layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    """All layers of ``model``, nested models and ``Sequential`` blocks included."""
    found = [m for m in model.submodules if isinstance(m, tf.keras.layers.Layer)]
    return [layer for layer in found if not isinstance(layer, tf.keras.Model)]


def _precision(quantizer) -> int | None:
    return getattr(quantizer, "precision", None) if quantizer is not None else None


def _binary_convs(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    return [
        layer
        for layer in _layers(model)
        if isinstance(layer, lq.layers.QuantConv2D)
        and _precision(layer.input_quantizer) == 1
        and _precision(layer.kernel_quantizer) == 1
    ]


def binary_conv_layers(model: tf.keras.Model) -> list[str]:
    """Names of the ``QuantConv2D`` layers LCE can run as ``LceBconv2d``: 1-bit input and kernel."""
    return [layer.name for layer in _binary_convs(model)]


def binary_depthwise_layers(model: tf.keras.Model) -> list[str]:
    """Names of the binary ``QuantDepthwiseConv2D`` layers (LCE runs them in float)."""
    return [
        layer.name
        for layer in _layers(model)
        if isinstance(layer, lq.layers.QuantDepthwiseConv2D)
        and _precision(layer.depthwise_quantizer) == 1
    ]


def _schema():
    try:
        from larq_compute_engine.mlir.python import tflite_schema as schema
    except ImportError:  # pragma: no cover - the schema ships with larq-compute-engine
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def count_ops(flatbuffer: bytes) -> dict[str, int]:
    """How many operators of each kind a TFLite / LCE flatbuffer holds, over all subgraphs.

    Builtin ops are named as in the TFLite schema (``CONV_2D``, ``FULLY_CONNECTED``),
    custom ops by their custom code (``LceBconv2d``, ``LceQuantize``). The flatbuffer is
    parsed directly (no interpreter, so no kernel registration is needed).

    Raises:
        ValueError: ``flatbuffer`` is not a TFLite model.
    """
    data = bytes(flatbuffer)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("Not a TFLite flatbuffer (file identifier 'TFL3' missing).")
    schema = _schema()
    builtin_names = {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    model = schema.Model.GetRootAsModel(data, 0)
    codes = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        custom = code.CustomCode()
        if custom:
            codes.append(custom.decode() if isinstance(custom, bytes) else str(custom))
            continue
        # Schema v3a: builtin codes > 127 live in BuiltinCode, older ones in the deprecated byte.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        codes.append(builtin_names.get(builtin, f"BUILTIN_{builtin}"))
    counts: collections.Counter[str] = collections.Counter()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            counts[codes[subgraph.Operators(o).OpcodeIndex()]] += 1
    return dict(counts)


def lce_report(model: tf.keras.Model, flatbuffer: bytes) -> dict:
    """What the LCE converter made of ``model``'s binary layers.

    Returns a dict: ``op_counts``, ``binary_conv_layers`` (QuantConv2D with 1-bit
    input and kernel), ``lce_bconv_ops`` (``LceBconv2d`` in the flatbuffer),
    ``binary_depthwise_layers`` (run as float by LCE), ``binarizations`` (the
    kernel quantizers of the binary layers, by class name) and ``all_binary_mapped``.
    """
    ops = count_ops(flatbuffer)
    binary = _binary_convs(model)
    bconv = sum(ops.get(name, 0) for name in LCE_BINARY_OPS)
    quantizers = sorted({type(layer.kernel_quantizer).__name__ for layer in binary})
    return {
        "op_counts": ops,
        "binary_conv_layers": len(binary),
        "lce_bconv_ops": bconv,
        "binary_depthwise_layers": len(binary_depthwise_layers(model)),
        "kernel_quantizers": quantizers,
        "all_binary_mapped": bconv >= len(binary),
        "bytes": len(flatbuffer),
    }


def convert_lce(model: tf.keras.Model, *, strict: bool = False, **converter_kwargs: Any) -> bytes:
    """The LCE flatbuffer of ``model``, checked to contain binary kernels.

    Args:
        model: a Keras 2 model with larq layers.
        strict: also raise when only *some* binary convolutions became
            ``LceBconv2d`` (by default that is a warning).
        **converter_kwargs: passed to ``larq_compute_engine.convert_keras_model``
            (``target``, ``inference_input_type``, ...).

    Raises:
        ValueError: the model has binary ``QuantConv2D`` layers and the converter
            produced no ``LceBconv2d`` op (the flatbuffer would run them in float).
    """
    import larq_compute_engine as lce

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Saved-model conversion failed")
        flatbuffer = lce.convert_keras_model(model, **converter_kwargs)
    report = lce_report(model, flatbuffer)
    binary, bconv = report["binary_conv_layers"], report["lce_bconv_ops"]
    if binary and not bconv:
        raise ValueError(
            f"The Larq Compute Engine converter produced no LceBconv2d op for the {binary} binary "
            f"QuantConv2D layers of {model.name!r} (kernel quantizers: "
            f"{', '.join(report['kernel_quantizers'])}); the flatbuffer would compute them in "
            f"float (ops: {report['op_counts']}). LCE maps a binary convolution only when its "
            "input quantizer is a sign (ste_sign) and its quantized kernel is +-alpha per output "
            "channel; use one of the binarizations xnor, sign_scale or pcnn, or export with "
            "format='tflite' for a float model."
        )
    if bconv < binary:
        message = (
            f"Only {bconv} of the {binary} binary QuantConv2D layers of {model.name!r} became "
            "LceBconv2d ops; the others run in float."
        )
        if strict:
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    return flatbuffer


def _convert_tflite(model: tf.keras.Model) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return converter.convert()


def convert(model: tf.keras.Model, format: str = "lce", *, strict: bool = False) -> bytes:
    """The flatbuffer of ``model`` in ``format`` (``"lce"`` or ``"tflite"``)."""
    _check_format(format)
    if format == "saved_model":
        raise ValueError(
            "A SavedModel is a directory, not bytes: use export_model(format='saved_model')."
        )
    return convert_lce(model, strict=strict) if format == "lce" else _convert_tflite(model)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(
                f"{path} exists; pass overwrite=True (--overwrite) to replace it."
            )


def export_model(
    model: tf.keras.Model,
    path: str | os.PathLike,
    format: str = "lce",
    *,
    overwrite: bool = False,
    strict: bool = False,
) -> Path:
    """Write ``model`` to ``path`` as an LCE flatbuffer, a TFLite flatbuffer or a SavedModel.

    Args:
        model: the Keras model (for a trained run:
            [`load_trained`][bnas_tf.training.load_trained]).
        path: output file (``lce``, ``tflite``) or directory (``saved_model``); parent
            directories are created.
        format: one of ``FORMATS``.
        overwrite: replace an existing ``path``.
        strict: ``lce`` only: raise unless every binary convolution became ``LceBconv2d``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: unknown format, or (``lce``) no binary kernel produced (see
            ``convert_lce``). Nothing is written then.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    _check_format(format)
    path = Path(path)
    _refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "saved_model":
        if path.exists():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        model.save(str(path), save_format="tf", include_optimizer=False)
        return path
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory; give a file name for the {format} flatbuffer."
        )
    flatbuffer = convert(model, format, strict=strict)
    # Write next to the target, then rename: a failed write never leaves half a model.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(flatbuffer)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _nested_macs(model: tf.keras.Model) -> dict[int, int]:
    """``{bits: MACs}`` of the composite layers whose convolutions larq's profile does not see
    (it counts top-level layers only): those with a ``mac_count()``, e.g. DARTS'
    [`FactorizedReduce`][bnas_tf.ops.FactorizedReduce]."""
    macs: dict[int, int] = {}
    for layer in _layers(model):
        for bits, count in getattr(layer, "mac_count", dict)().items():
            macs[bits] = macs.get(bits, 0) + int(count)
    return macs


def model_summary(model: tf.keras.Model) -> dict:
    """Parameter counts, memory and MACs of ``model`` by precision (larq's ``ModelProfile``).

    Keys: ``params_1bit``, ``params_32bit``, ``params_other``, ``params_total``,
    ``memory_bytes`` / ``memory_kib`` (1-bit weights at 1 bit, the rest at their
    width), ``fp32_equivalent_bytes`` / ``fp32_equivalent_kib`` (all weights at 32
    bits), ``compression_ratio`` (memory / fp32 equivalent, as larq reports it),
    ``macs_1bit``, ``macs_32bit``, ``macs_total``, ``binarized_mac_ratio`` and
    ``binary_conv_layers`` / ``binary_depthwise_layers`` (layer counts).
    Memory follows larq: batch-norm ``beta``/``gamma`` paired with moving statistics
    are counted once (they fold into the statistics at inference). MACs add those of composite
    layers larq does not look into (``mac_count()``: DARTS' factorized reduce).
    """
    profile = lq.models.ModelProfile(model)
    params_1bit = profile.weight_count(1)
    params_32bit = profile.weight_count(32)
    params_total = profile.weight_count()
    memory_bits = profile.memory
    fp32_bits = profile.fp_equivalent_memory
    nested = _nested_macs(model)
    macs_1bit = profile.op_count("mac", 1) + nested.get(1, 0)
    macs_32bit = profile.op_count("mac", 32) + nested.get(32, 0)
    macs_total = profile.op_count("mac") + sum(nested.values())
    return {
        "params_1bit": int(params_1bit),
        "params_32bit": int(params_32bit),
        "params_other": int(params_total - params_1bit - params_32bit),
        "params_total": int(params_total),
        "memory_bytes": memory_bits / 8,
        "memory_kib": memory_bits / 8 / 1024,
        "fp32_equivalent_bytes": fp32_bits / 8,
        "fp32_equivalent_kib": fp32_bits / 8 / 1024,
        "compression_ratio": memory_bits / fp32_bits if fp32_bits else float("nan"),
        "macs_1bit": int(macs_1bit),
        "macs_32bit": int(macs_32bit),
        "macs_total": int(macs_total),
        "binarized_mac_ratio": macs_1bit / macs_total if macs_total else 0.0,
        "binary_conv_layers": len(binary_conv_layers(model)),
        "binary_depthwise_layers": len(binary_depthwise_layers(model)),
    }


def summary(model: tf.keras.Model, print_fn: Callable[[str], object] | None = print) -> dict:
    """Print ``larq.models.summary`` of ``model`` and return ``model_summary``.

    ``print_fn=None`` prints nothing.
    """
    if print_fn is not None:
        lq.models.summary(model, print_fn=print_fn)
    return model_summary(model)
