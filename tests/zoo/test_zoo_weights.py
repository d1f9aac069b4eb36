"""Published weights: fetched by hash, full and notop agree, saved and loaded without code."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import zoo
from bnas_tf.training import load_trained
from bnas_tf.zoo import registry

import shutil
from pathlib import Path

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

X = np.random.default_rng(3).normal(size=(4, 28, 28, 1)).astype("float32")


def _cached(cache: Path, entry: dict, notop: bool) -> Path:
    return cache / registry.CACHE_SUBDIR / Path(entry["notop_file" if notop else "file"]).name


def test_full_and_notop_weights_give_the_same_features(tiny_zoo_env, tiny_run):
    full = zoo.BNASA(weights="fashion_mnist")
    trained, _ = load_trained(tiny_run)  # the published model computes what the run computed
    np.testing.assert_allclose(
        full.predict(X, verbose=0), trained.predict(X, verbose=0), rtol=1e-5, atol=1e-5
    )
    notop = zoo.BNASA(weights="fashion_mnist", include_top=False)
    entry = registry.weights_entry("BNASA", "fashion_mnist")
    assert entry["notop_sha256"] != entry["sha256"]  # two files, both fetched
    assert notop.output_shape[1:] == full.get_layer("final_relu").output_shape[1:]
    features = tf.keras.Model(full.input, full.get_layer("final_relu").output)
    np.testing.assert_allclose(
        notop.predict(X, verbose=0), features.predict(X, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert not any(layer.name == "logits" for layer in notop.layers)


@pytest.mark.parametrize("notop", [False, True])
def test_corrupted_cache_file_is_not_used(notop, tiny_zoo_env, tmp_path):
    entry = registry.weights_entry("BNASA", "fashion_mnist")
    path = Path(registry.fetch("BNASA", "fashion_mnist", notop=notop))
    assert path == _cached(tmp_path / "keras_cache", entry, notop)
    path.write_bytes(b"corrupted" + path.read_bytes()[9:])
    again = registry.fetch("BNASA", "fashion_mnist", notop=notop)  # re-fetched from the zoo
    assert registry.sha256(again) == entry["notop_sha256" if notop else "sha256"]


@pytest.mark.parametrize("notop", [False, True])
def test_mirror_with_a_wrong_file_is_refused(notop, tiny_zoo_env, tmp_path, monkeypatch):
    entry = registry.weights_entry("BNASA", "fashion_mnist")
    key = "notop_file" if notop else "file"
    mirror = tmp_path / "mirror"
    (mirror / "weights").mkdir(parents=True)
    wrong = tiny_zoo_env / entry["file" if notop else "notop_file"]  # the other, valid-looking file
    shutil.copy(wrong, mirror / entry[key])
    monkeypatch.setenv(registry.ZOO_URL_ENV, mirror.as_uri())
    with pytest.raises(registry.WeightsHashError, match="SHA-256 does not match the registry's"):
        zoo.BNASA(weights="fashion_mnist", include_top=not notop)
    assert not _cached(tmp_path / "keras_cache", entry, notop).exists()
    # the same mirror holding the right file is accepted
    shutil.copy(tiny_zoo_env / entry[key], mirror / entry[key])
    assert (
        registry.sha256(registry.fetch("BNASA", "fashion_mnist", notop=notop))
        == entry["notop_sha256" if notop else "sha256"]
    )


def test_unreachable_mirror_names_the_url(tiny_zoo_env, tmp_path, monkeypatch):
    monkeypatch.setenv(registry.ZOO_URL_ENV, (tmp_path / "nowhere").as_uri())
    with pytest.raises(
        OSError, match="Cannot fetch BNASA weights 'fashion_mnist' from file://.*nowhere"
    ):
        registry.fetch("BNASA", "fashion_mnist")


def test_keras_save_and_safe_load_round_trip(tiny_zoo_env, tmp_path):
    model = zoo.BNASA(weights="fashion_mnist")
    model.save(tmp_path / "bnasa.keras")
    restored = tf.keras.models.load_model(tmp_path / "bnasa.keras", safe_mode=True)
    np.testing.assert_allclose(
        restored.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-5, atol=1e-5
    )
    assert lq.models.summary(restored, print_fn=lambda line: None) is None


def _lambda_model():
    inputs = tf.keras.Input((28, 28, 1))
    x = tf.keras.layers.Lambda(lambda t: t * 2.0, name="stem_bn")(inputs)
    return tf.keras.Model(
        inputs, tf.keras.layers.Dense(10, name="logits")(tf.keras.layers.Flatten()(x))
    )


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_saved_model_with_a_lambda_layer_is_refused(tmp_path, empty_zoo_env):
    model = _lambda_model()
    model.save(tmp_path / "evil.keras")
    with pytest.raises(ValueError, match="Lambda layer"):
        tf.keras.models.load_model(tmp_path / "evil.keras", safe_mode=True)
    # A whole model in HDF5 (whose config names the Lambda) is not a weights file.
    model.save(tmp_path / "evil.h5")
    with pytest.raises(ValueError, match="whole saved model .* not a weights file"):
        zoo.BNASB(weights=str(tmp_path / "evil.h5"))
    with pytest.raises(ValueError, match="not an HDF5 weights file"):
        zoo.BNASB(weights=str(tmp_path / "evil.keras"))
