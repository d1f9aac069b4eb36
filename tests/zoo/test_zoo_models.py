"""Every zoo model function: what it builds, and every argument it refuses."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import genotype as genotype_lib
from bnas_tf import zoo
from bnas_tf.network import min_input_size
from bnas_tf.training import load_trained
from bnas_tf.zoo import models, specs

import inspect
import math

import numpy as np
import pytest
import tensorflow as tf

MODEL_NAMES = list(specs.MODELS)
CODED = [n for n in MODEL_NAMES if specs.MODELS[n].genotype is not None]  # all but BNASFM


def _env(request, name):
    """BNASFM exists only once published: use the tiny zoo for it, an empty zoo otherwise."""
    return request.getfixturevalue("tiny_zoo_env" if name == "BNASFM" else "empty_zoo_env")


def _custom_shape(stem, channels):
    return (12, 20, channels) if stem == "cifar" else (40, 56, channels)


def test_every_model_is_exported_and_listed():
    assert MODEL_NAMES == [
        "BNASA",
        "BNASB",
        "BNASC",
        "BNASD",
        "BNASE",
        "BNASF",
        "BNASG",
        "BNASH",
        "BNASXNOR",
        "BNASFM",
    ]
    for name in MODEL_NAMES:
        fn = getattr(zoo, name)
        assert fn is zoo.get(name) is zoo.get(name.lower())
        assert fn.__name__ == name
        params = inspect.signature(fn).parameters
        assert list(params) == [
            "input_shape",
            "input_tensor",
            "weights",
            "include_top",
            "num_classes",
            "binarization",
            "dtype_policy",
        ]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
        with pytest.raises(TypeError):
            fn((28, 28, 1))  # keyword-only, like larq-zoo
        assert specs.MODELS[name].citation.split(".")[0] in fn.__doc__


def test_published_configurations_of_kim_et_al():
    # gistvision/bnas: ImageNet configs (cells x channels) of BNAS-D..H; BNAS-A is 20 x 36.
    configs = {
        n: (specs.MODELS[f"BNAS{n}"].layers, specs.MODELS[f"BNAS{n}"].init_channels)
        for n in "ADEFGH"
    }
    assert configs == {
        "A": (20, 36),
        "D": (12, 64),
        "E": (12, 68),
        "F": (15, 68),
        "G": (11, 74),
        "H": (16, 128),
    }
    for letter in "ABC":
        assert specs.MODELS[f"BNAS{letter}"].genotype == "bnas_a"
    for letter in "DEFGH":
        assert specs.MODELS[f"BNAS{letter}"].genotype == "latest_cell"
        assert specs.MODELS[f"BNAS{letter}"].stem == "imagenet"
    assert specs.MODELS["BNASXNOR"].genotype == "bnas_xnor_1"
    assert specs.MODELS["BNASXNOR"].binarization == "xnor"


@pytest.mark.parametrize("name", CODED)
def test_default_arguments_build_the_reference_configuration(name, empty_zoo_env, monkeypatch):
    """weights=None with every other argument left default: the reference network's arguments."""
    calls = []
    monkeypatch.setattr(
        models, "build_from_spec", lambda spec, **kw: calls.append((spec, kw)) or "model"
    )
    assert zoo.get(name)(weights=None) == "model"
    ((spec, kwargs),) = calls
    info = specs.MODELS[name]
    expected_shape = {
        "cifar10": (32, 32, 3),
        "fashion_mnist": (28, 28, 1),
        "imagenet2012": (224, 224, 3),
    }
    assert kwargs["input_shape"] == expected_shape[info.dataset]
    assert kwargs["num_classes"] == {"imagenet2012": 1000}.get(info.dataset, 10)
    assert kwargs["include_top"] is True and kwargs["input_tensor"] is None
    assert (spec["layers"], spec["init_channels"], spec["stem"]) == (
        info.layers,
        info.init_channels,
        info.stem,
    )
    assert spec["binarization"] == info.binarization
    assert spec["inter_cell_skip"] == (name != "BNASXNOR")
    assert genotype_lib.Genotype.from_dict(spec["genotype"]) == genotype_lib.get(info.genotype)


def test_default_build_is_the_paper_network(empty_zoo_env):
    model = zoo.BNASA(weights=None)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    assert model.count_params() == pytest.approx(5.58e6, rel=0.01)  # Kim et al.: about 5.58 M
    cells = {layer.name.split("_")[0] for layer in model.layers if layer.name.startswith("cell")}
    assert len(cells) == 20


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_custom_input_tensor_without_top(name, request):
    """Every model builds on a caller's tensor of a non-default shape; its features have rank 4."""
    _env(request, name)
    spec = models.resolve(name, None)[0]
    shape = _custom_shape(spec["stem"], spec["input_shape"][2])
    tensor = tf.keras.Input(shape)
    model = zoo.get(name)(weights=None, input_tensor=tensor, include_top=False)
    assert model.inputs[0] is tensor
    reductions = int(math.log2(min_input_size(spec["stem"])))
    height, width = (math.ceil(s / 2**reductions) for s in shape[:2])
    # 4 concatenated nodes of init_channels * 2 * 2 channels after the two reduction cells
    assert model.output_shape == (None, height, width, 16 * spec["init_channels"])


@pytest.mark.parametrize("name", ["BNASFM"])
def test_pretrained_default_input_shape_and_custom_size(name, tiny_zoo_env):
    model = zoo.get(name)()  # default weights: the published fashion_mnist instance
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    bigger = zoo.get(name)(input_shape=(36, 44, 1))
    assert bigger.output_shape == (None, 10)
    x = np.random.default_rng(0).normal(size=(2, 36, 44, 1)).astype("float32")
    assert np.isfinite(bigger.predict(x, verbose=0)).all()


def test_run_directory_builds_the_runs_architecture(tiny_run, empty_zoo_env):
    model = zoo.BNASB(weights=str(tiny_run))
    reference, _ = load_trained(tiny_run)
    x = np.random.default_rng(1).normal(size=(3, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(
        model.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_input_smaller_than_the_reductions_is_refused(name, request):
    _env(request, name)
    spec = models.resolve(name, None)[0]
    smallest = min_input_size(spec["stem"])
    with pytest.raises(ValueError, match=f"too small.*at least {smallest}x{smallest}"):
        zoo.get(name)(weights=None, input_shape=(smallest - 1, smallest, spec["input_shape"][2]))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_unknown_weights_name_lists_the_available_ones(name, tiny_zoo_env):
    expected = "'fashion_mnist'" if name in ("BNASA", "BNASB", "BNASFM") else "none published yet"
    with pytest.raises(ValueError, match=f"available: {expected}"):
        zoo.get(name)(weights="imagenet")


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(28, 28)), r"\(height, width, channels\)"),
        (dict(input_shape=(28, 28, 0)), "positive channel count"),
        (dict(binarization="ternary"), "unknown binarization 'ternary'"),
        (dict(num_classes=1), "num_classes must be an integer >= 2"),
        (
            dict(input_shape=(64, 64, 3), input_tensor=tf.keras.Input((48, 48, 3))),
            "disagrees with input_tensor",
        ),
        (dict(weights=3), "weights must be None"),
    ],
)
def test_bad_arguments_are_refused(name, kwargs, message, request):
    _env(request, name)
    with pytest.raises(ValueError, match=message):
        zoo.get(name)(**{"weights": None, **kwargs})


@pytest.mark.parametrize("name", ["BNASA", "BNASB", "BNASFM"])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_classes=5), "num_classes must be 10 .got 5.*include_top=False"),
        (dict(input_shape=(28, 28, 3)), "trained on 1-channel images"),
        (dict(binarization="xnor"), "trained with binarization 'sign_scale'"),
    ],
)
def test_pretrained_weights_refuse_what_they_cannot_take(name, kwargs, message, tiny_zoo_env):
    with pytest.raises(ValueError, match=message):
        zoo.get(name)(weights="fashion_mnist", **kwargs)


def test_unpublished_default_weights_say_so(empty_zoo_env):
    with pytest.raises(
        ValueError, match=r"published weights name of BNASB \(available: none published yet\)"
    ):
        zoo.BNASB()
    with pytest.raises(ValueError, match="bnas-publish --run_dir RUN --name BNASFM"):
        zoo.BNASFM(weights=None)


def test_weights_file_of_another_architecture_is_refused(tiny_zoo, empty_zoo_env):
    # tiny (3-cell) weights into BNASB's coded 8-cell reference configuration
    from bnas_tf.zoo import registry

    tiny = tiny_zoo / registry.load(tiny_zoo)["models"]["BNASB"]["weights"]["fashion_mnist"]["file"]
    with pytest.raises(
        ValueError, match="does not fit bnasb: it has no weights for .* of its layers"
    ):
        zoo.BNASB(weights=str(tiny))


def test_weights_directory_without_a_run_is_refused(tmp_path, empty_zoo_env):
    with pytest.raises(ValueError, match="directory without network.json"):
        zoo.BNASA(weights=str(tmp_path))
    with pytest.raises(
        ValueError, match="neither a published weights name .* nor an existing file"
    ):
        zoo.BNASA(weights=str(tmp_path / "missing.h5"))


def test_unknown_model_lists_the_models(empty_zoo_env):
    with pytest.raises(ValueError, match="Unknown zoo model 'BNASZ'; available: BNASA, BNASB"):
        zoo.get("BNASZ")
