"""The repository's published zoo: files intact, within budget, accurate as their cards say.

Each check of a model runs once its weights are in ``zoo/registry.json`` and is skipped,
saying so, only while the registry lacks the entry.
"""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import data, zoo
from bnas_tf.zoo import registry
from bnas_tf.zoo.publish import MAX_ZOO_BYTES

import numpy as np
import pytest

PUBLISHED_ON_FASHION_MNIST = ("BNASA", "BNASB", "BNASC", "BNASFM")


@pytest.fixture
def repo_zoo(monkeypatch, tmp_path):
    """The repository's zoo/ with a private download cache."""
    monkeypatch.delenv(registry.ZOO_DIR_ENV, raising=False)
    monkeypatch.delenv(registry.ZOO_URL_ENV, raising=False)
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return registry.load()


def _entry(reg, name):
    entry = reg["models"].get(name, {}).get("weights", {}).get("fashion_mnist")
    if entry is None:
        pytest.skip(f"{name} fashion_mnist weights are not published in zoo/registry.json yet")
    return entry


def test_published_files_are_intact_and_within_budget(repo_zoo):
    total = 0
    for model in repo_zoo["models"].values():
        for entry in model.get("weights", {}).values():
            for key in ("", "notop_"):
                path = registry.zoo_dir() / entry[f"{key}file"]
                assert path.stat().st_size == entry[f"{key}size"], path
                assert registry.sha256(path) == entry[f"{key}sha256"], path
                total += entry[f"{key}size"]
            assert (registry.zoo_dir() / entry["card"]).is_file()
    assert total < MAX_ZOO_BYTES


def test_bnasb_top1_measured_on_the_10000_test_images_matches_its_card(repo_zoo, fashion_dir):
    """BNASB's top-1 measured here, on all 10,000 real test images (not the figure the
    registry stores), is within 0.3 points of its card's and at least 90 %."""
    entry = _entry(repo_zoo, "BNASB")
    images, labels = data.load_arrays("fashion_mnist", "test", data_dir=fashion_dir)
    assert len(labels) == 10_000
    model = zoo.get("BNASB")(weights="fashion_mnist")
    logits = model.predict(zoo.preprocess_input(images), batch_size=500, verbose=0)
    top1 = float(np.mean(np.argmax(logits, axis=1) == labels))
    card = (registry.zoo_dir() / entry["card"]).read_text()
    stated = entry["metrics"]["top1"]
    assert f"{100 * stated:.2f} %" in card or f"{100 * stated:.2f}%" in card, (
        "the card states another top-1"
    )
    assert abs(top1 - stated) <= 0.003, (top1, stated)
    assert top1 >= 0.90
    _check_decoded(logits)


def _check_decoded(logits):
    decoded = zoo.decode_predictions(logits[:1], top=1)
    assert decoded[0][0][1] == data.info("fashion_mnist").class_names[int(np.argmax(logits[0]))]


# BNASB's card is checked on all 10,000 test images above; the others on the first 100.
@pytest.mark.parametrize("name", [n for n in PUBLISHED_ON_FASHION_MNIST if n != "BNASB"])
def test_pretrained_top1_on_real_test_images_matches_the_card(name, repo_zoo, fashion_dir):
    entry = _entry(repo_zoo, name)
    images, labels = data.load_arrays("fashion_mnist", "test", data_dir=fashion_dir, limit=100)
    model = zoo.get(name)(weights="fashion_mnist")
    logits = model.predict(zoo.preprocess_input(images), batch_size=50, verbose=0)
    top1 = float(np.mean(np.argmax(logits, axis=1) == labels))
    # 100 images: a binomial standard error of about 3 points at 90 %
    assert abs(top1 - entry["metrics"]["top1"]) <= 0.07, (top1, entry["metrics"]["top1"])
    _check_decoded(logits)


def test_bnasb_under_mixed_bfloat16_predicts_as_in_float32(repo_zoo, fashion_dir):
    """The published float32 weights, built with ``dtype_policy="mixed_bfloat16"``: the same
    classes on at least 97 % of the first 200 real test images, float32 logits."""
    _entry(repo_zoo, "BNASB")
    images, labels = data.load_arrays("fashion_mnist", "test", data_dir=fashion_dir, limit=200)
    x = zoo.preprocess_input(images)
    full = zoo.get("BNASB")(weights="fashion_mnist")
    half = zoo.get("BNASB")(weights="fashion_mnist", dtype_policy="mixed_bfloat16")
    a = full.predict(x, batch_size=100, verbose=0)
    b = half.predict(x, batch_size=100, verbose=0)
    assert b.dtype == np.float32
    agree = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    assert agree >= 0.97, agree
    assert float(np.mean(np.argmax(b, axis=1) == labels)) >= 0.85
