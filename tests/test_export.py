"""Export to the Larq Compute Engine: binary kernels for every binarization, agreement with Keras,
the refusal to write a float model in disguise, op counting, and the ``bnas-export`` program."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import export, genotype, network
from bnas_tf.apps import export as export_app
from bnas_tf.quantizers import BINARIZATIONS, get_binarization

import os
import subprocess
import sys
from pathlib import Path

import larq as lq
import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
N_COMPARE = 16


def _randomize_batch_norms(model, rng):
    """Non-trivial BN statistics and affine parameters, negative scales included.

    A few ``fit`` steps move the moving statistics by only ~1 - 0.99**steps, so the BN
    folding of the converter would be tested near the identity; set them outright.
    """
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.3, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            if layer.scale:
                sign = np.where(rng.random(n) < 0.2, -1.0, 1.0)
                layer.gamma.assign((sign * rng.uniform(0.5, 1.5, n)).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.2, n).astype("float32"))


def _train_steps(model, x, y, steps):
    """A few eager Adam steps on the cross-entropy plus ``model.losses`` (PCNN's projection loss).

    Eager rather than ``fit``: tracing a training function costs more than the steps.
    """
    optimizer = tf.keras.optimizers.Adam(1e-2)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for step in range(steps):
        batch = slice(16 * (step % 2), 16 * (step % 2) + 16)
        with tf.GradientTape() as tape:
            loss = loss_fn(y[batch], model(x[batch], training=True)) + tf.add_n(
                model.losses or [0.0]
            )
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))


# Every binarization, and XNOR-Net with its activation scaling map K (``xnor+K``).
METHODS = [(name, False) for name in sorted(BINARIZATIONS)] + [("xnor", True)]


@pytest.fixture(scope="module", params=METHODS, ids=[f"{n}{'+K' if k else ''}" for n, k in METHODS])
def converted(request):
    """A tiny trained latest_cell network of one binarization, its LCE flatbuffer, test inputs."""
    binarization, scale = request.param
    tf.keras.utils.set_random_seed(0)
    model = network.build_network(
        genotype.PUBLISHED["latest_cell"],
        layers=3,
        init_channels=8,
        num_classes=10,
        input_shape=(28, 28, 1),
        binarization=get_binarization(binarization, xnor_activation_scale=scale),
    )
    rng = np.random.default_rng(0)
    x = rng.random((32, 28, 28, 1), dtype=np.float32)
    y = np.arange(32) % 10
    _train_steps(model, x, y, steps=3)  # latent weights and PCNN levels move
    _randomize_batch_norms(model, rng)
    flatbuffer = export.convert_lce(model, strict=True)
    inputs = rng.random((N_COMPARE, 28, 28, 1), dtype=np.float32)
    return binarization, model, flatbuffer, inputs


def test_every_binarization_maps_to_lce_binary_kernels(converted):
    binarization, model, flatbuffer, _ = converted
    report = export.lce_report(model, flatbuffer)
    ops = report["op_counts"]
    # 3 cells of latest_cell: 2 preprocessing + 8 node convs in the normal cell 0, 2 + 3 in
    # each of the reduction cells 1 and 2 (max-pool edges elsewhere).
    assert report["binary_conv_layers"] == 20
    assert ops["LceBconv2d"] == report["lce_bconv_ops"] == 20
    assert report["all_binary_mapped"]
    # Binary inputs are bit-packed once per binary conv input (LceQuantize), and nothing is
    # dequantized back to float: every QuantConv2D runs on packed bits.
    assert ops["LceQuantize"] > 0 and "LceDequantize" not in ops
    # Only the full-precision stem and the two reduction-cell skip convs stay CONV_2D.
    assert ops.get("CONV_2D", 0) == 3
    assert binarization in export.LCE_SUPPORT and "LceBconv2d" in export.LCE_SUPPORT[binarization]


def test_lce_interpreter_agrees_with_keras(converted):
    """The LCE flatbuffer computes the fake-quantized Keras model.

    The binary part is exact in both (XOR/popcount vs. a float conv of +-1 values is exact
    integer arithmetic); what differs is float rounding: LCE folds the kernel scale and the
    BN that follows into a per-channel multiplier/bias and sums in another order, ~1e-7
    relative per op, measured ~3e-6 on logits of size ~5 through the ~10 layers of this
    network. Tolerance: 1e-3 * max(1, max|logit|), three orders above that. A pre-activation
    within rounding distance of 0 can have its sign flipped by that rounding, which changes
    a binary activation from -1 to +1 and the logits by far more than rounding; that is
    legitimate but rare, so one example of the 16 may exceed the tolerance (and one argmax
    may change), the others must not.
    """
    import larq_compute_engine as lce

    _, model, flatbuffer, inputs = converted
    keras_logits = model(inputs, training=False).numpy()
    interpreter = lce.testing.Interpreter(flatbuffer, num_threads=1)
    assert interpreter.input_shapes[0][1:] == (28, 28, 1)
    lce_logits = interpreter.predict(inputs)
    assert lce_logits.shape == keras_logits.shape == (N_COMPARE, 10)
    assert np.isfinite(lce_logits).all()
    agree = int((lce_logits.argmax(1) == keras_logits.argmax(1)).sum())
    assert agree >= N_COMPARE - 1, f"argmax agrees on {agree}/{N_COMPARE}"
    tolerance = 1e-3 * max(1.0, float(np.abs(keras_logits).max()))
    per_example = np.abs(lce_logits - keras_logits).max(axis=1)
    assert (per_example <= tolerance).sum() >= N_COMPARE - 1, (per_example, tolerance)
    assert np.median(per_example) <= tolerance


def test_model_summary_counts_one_bit_weights(converted):
    _, model, _, _ = converted
    lines = []
    info = export.summary(model, print_fn=lines.append)
    assert any("Ratio of MACs that are binarized" in line for line in lines)
    profile = lq.models.ModelProfile(model)
    assert info["params_1bit"] == profile.weight_count(1) > 0
    assert info["params_32bit"] == profile.weight_count(32) > 0
    assert info["params_total"] == info["params_1bit"] + info["params_32bit"] + info["params_other"]
    assert info["memory_bytes"] == pytest.approx(
        (info["params_1bit"] + 32 * (info["params_32bit"])) / 8, rel=0.2
    )
    assert info["memory_kib"] == pytest.approx(info["memory_bytes"] / 1024)
    assert info["compression_ratio"] < 1.0
    assert 0.5 < info["binarized_mac_ratio"] < 1.0
    assert info["macs_1bit"] + info["macs_32bit"] == info["macs_total"]
    assert info["binary_conv_layers"] == 20 and info["binary_depthwise_layers"] == 0


@lq.utils.register_keras_custom_object
class _PerInputChannelSign(lq.quantizers.Quantizer):
    """A 1-bit kernel quantizer whose scale is per *input* channel: LCE cannot fold it."""

    precision = 1

    def call(self, inputs):
        scale = tf.reduce_mean(tf.abs(inputs), axis=[0, 1, 3], keepdims=True)
        return scale * lq.quantizers.ste_sign(inputs)


def _single_conv_model(kernel_quantizer, input_quantizer="ste_sign"):
    inputs = tf.keras.Input((8, 8, 4))
    x = tf.keras.layers.BatchNormalization()(inputs)
    x = lq.layers.QuantConv2D(
        8,
        3,
        padding="same",
        use_bias=False,
        input_quantizer=input_quantizer,
        kernel_quantizer=kernel_quantizer,
        kernel_constraint="weight_clip",
    )(x)
    return tf.keras.Model(inputs, x, name="one_conv")


def test_unmappable_binarization_raises_and_writes_nothing(tmp_path):
    model = _single_conv_model(_PerInputChannelSign())
    target = tmp_path / "model.tflite"
    with pytest.raises(
        ValueError, match=r"no LceBconv2d op for the 1 binary QuantConv2D.*_PerInputChannelSign"
    ):
        export.export_model(model, target, "lce")
    assert not target.exists() and not list(tmp_path.iterdir())


def test_count_ops_and_float_formats(tmp_path):
    model = _single_conv_model("sign_scale")
    fb = export.convert(model, "lce")
    ops = export.count_ops(fb)
    assert ops["LceQuantize"] == ops["LceBconv2d"] == 1 and "CONV_2D" not in ops
    assert set(ops) <= {"LceQuantize", "LceBconv2d", "MUL", "ADD"}  # BN before the sign: MUL/ADD
    path = export.export_model(model, tmp_path / "float.tflite", "tflite")
    ops = export.count_ops(path.read_bytes())
    assert ops["CONV_2D"] == 1 and ops["SIGN"] >= 1 and "LceBconv2d" not in ops
    with pytest.raises(ValueError, match="Not a TFLite flatbuffer"):
        export.count_ops(b"not a model at all")
    with pytest.raises(ValueError, match="Unknown export format"):
        export.export_model(model, tmp_path / "x", "onnx")
    with pytest.raises(FileExistsError, match="overwrite"):
        export.export_model(model, path, "tflite")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "stale").write_text("x")
    with pytest.raises(FileExistsError):
        export.export_model(model, saved, "saved_model")
    assert export.export_model(model, saved, "saved_model", overwrite=True) == saved
    assert (saved / "saved_model.pb").exists() and not (saved / "stale").exists()
    restored = tf.keras.models.load_model(saved)
    x = np.random.default_rng(0).random((2, 8, 8, 4), dtype=np.float32)
    np.testing.assert_allclose(
        restored(x, training=False), model(x, training=False), rtol=1e-6, atol=1e-6
    )
    # Kernel-only binarization (float activations) is not a binary conv for LCE: no error.
    assert export.binary_conv_layers(_single_conv_model("ste_sign", input_quantizer=None)) == []


def _run(module, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_idx_dir_module):
    from bnas_tf.training import TrainConfig, train_network

    out = tmp_path_factory.mktemp("export_run")
    train_network(
        TrainConfig(
            genotype="latest_cell",
            layers=3,
            init_channels=4,
            epochs=1,
            batch_size=16,
            limit=64,
            limit_test=32,
            data_dir=str(tiny_idx_dir_module),
            verbose=0,
        ),
        out,
    )
    return out


def test_export_program_end_to_end(trained_run):
    """``bnas-export`` on a trained run, replacing an existing file (--overwrite)."""
    from bnas_tf.training import load_trained

    import larq_compute_engine as lce

    output = trained_run / "bnas.tflite"
    output.write_bytes(b"stale")
    result = _run(
        "bnas_tf.apps.export",
        f"--model_dir={trained_run}",
        "--format=lce",
        f"--output={output}",
        "--overwrite",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Ratio of MACs that are binarized" in result.stdout
    assert "20 LceBconv2d ops for 20 binary convolutions" in result.stdout
    flatbuffer = output.read_bytes()
    assert export.count_ops(flatbuffer)["LceBconv2d"] == 20
    model, _ = load_trained(trained_run)
    images = np.random.default_rng(3).random((4, 28, 28, 1), dtype=np.float32)
    expected = model(images, training=False).numpy()
    actual = lce.testing.Interpreter(flatbuffer).predict(images)
    np.testing.assert_allclose(
        actual, expected, atol=1e-3 * max(1.0, float(np.abs(expected).max()))
    )


def _flag_values(*args):
    values = flags.FlagValues()
    export_app.define_flags(values)
    values(["bnas-export", *args])
    return values


def test_export_program_refuses_to_overwrite(trained_run):
    """Default output paths, the refusal without --overwrite (before building a model), bad runs."""
    assert export_app.FORMATS == export.FORMATS
    with pytest.raises(app.UsageError, match="network.json not found"):
        export_app.export_from_flags(_flag_values(f"--model_dir={trained_run / 'nope'}"))
    for format, name in (
        ("lce", "model.lce.tflite"),
        ("tflite", "model.tflite"),
        ("saved_model", "saved_model"),
    ):
        default = export.default_output(trained_run, format)
        assert default == trained_run / name
        if format == "saved_model":
            default.mkdir()
            (default / "keep").write_text("keep me")
        else:
            default.write_bytes(b"keep me")
        with pytest.raises(app.UsageError, match="exists; pass --overwrite"):
            export_app.export_from_flags(
                _flag_values(f"--model_dir={trained_run}", f"--format={format}")
            )
        kept = default / "keep" if format == "saved_model" else default
        assert kept.read_bytes() == b"keep me"
    explicit = trained_run / "mine.tflite"
    explicit.write_bytes(b"keep me")
    with pytest.raises(app.UsageError, match="exists; pass --overwrite"):
        export_app.export_from_flags(
            _flag_values(f"--model_dir={trained_run}", f"--output={explicit}")
        )
    assert explicit.read_bytes() == b"keep me"
