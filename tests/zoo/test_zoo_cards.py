"""preprocess_input, decode_predictions, list_models and model cards."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import data, zoo
from bnas_tf.zoo import specs

import numpy as np
import pytest


def test_preprocess_input_is_the_training_normalisation():
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28, 1)
    x = zoo.preprocess_input(images).numpy()
    np.testing.assert_allclose(x, (images / 255.0 - 0.2860) / 0.3530, rtol=1e-5)
    rgb = np.full((1, 32, 32, 3), 255, np.uint8)
    np.testing.assert_allclose(
        zoo.preprocess_input(rgb, dataset="cifar10").numpy()[0, 0, 0],
        (1 - np.array([0.4914, 0.4822, 0.4465])) / np.array([0.2470, 0.2435, 0.2616]),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="fashion_mnist images have 1 channel"):
        zoo.preprocess_input(np.zeros((1, 28, 28, 3)))
    with pytest.raises(ValueError, match="Unknown dataset 'svhn'"):
        zoo.preprocess_input(images, dataset="svhn")


def test_decode_predictions_gives_sorted_named_probabilities():
    logits = np.array([[0.0, 3.0, 1.0, 0, 0, 0, 0, 0, 0, 2.0]])
    (top,) = zoo.decode_predictions(logits, top=3)
    assert [(i, name) for i, name, _ in top] == [(1, "Trouser"), (9, "Ankle boot"), (2, "Pullover")]
    probabilities = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert top[0][2] == pytest.approx(probabilities[1])
    (cifar,) = zoo.decode_predictions(np.eye(10)[[3]], top=1, dataset="cifar10", from_logits=False)
    assert cifar == [(3, "cat", 1.0)]
    with pytest.raises(ValueError, match=r"shape \(batch, 10\); got \(10,\)"):
        zoo.decode_predictions(np.zeros(10))


def test_model_cards_state_configuration_citation_and_decision(empty_zoo_env):
    assert zoo.list_models() == list(specs.MODELS)
    for name in specs.MODELS:
        card = zoo.model_card(name)
        info = specs.MODELS[name]
        assert card.startswith(f"# {name}\n") and info.citation in card
        assert "selects a trained instance" in card and "None published yet" in card
        if info.layers:
            assert f"{info.layers} cells x {info.init_channels} channels" in card
    assert "do not publish their depth and width" in zoo.model_card("bnasc")
    assert "12 cells x 64 channels" in zoo.model_card("BNASD") and "57.69" in zoo.model_card(
        "BNASD"
    )
    with pytest.raises(ValueError, match="Unknown zoo model 'resnet'"):
        zoo.model_card("resnet")
    assert data.info("fashion_mnist").class_names[0] == "T-shirt/top"
