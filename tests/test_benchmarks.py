"""The evidence benchmarks' model builders (benchmarks/_common.py) measure what they claim."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import genotype
from bnas_tf.export import model_summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common as C  # noqa: E402

SMOKE = C.BUDGETS["smoke"]


def test_full_precision_twin_has_the_same_weights_and_no_binary_ones():
    g = genotype.BNAS_A.to_dict()
    binary = model_summary(C.build_model(C.genotype_spec(SMOKE, g)))
    floating = model_summary(C.build_model(C.genotype_spec(SMOKE, g, full_precision=True)))
    assert binary["params_total"] == floating["params_total"]
    assert binary["params_1bit"] > 0 and binary["binarized_mac_ratio"] > 0.0
    assert floating["params_1bit"] == 0 and floating["binarized_mac_ratio"] == 0.0


def test_upsampled_zoo_model_emits_logits_and_is_profiled_as_the_zoo_network():
    pytest.importorskip("larq_zoo")
    import larq_zoo
    import numpy as np

    model = C.build_model({"kind": "zoo", "module": "sota", "model": "QuickNetSmall", "input_size": 32})
    assert model.input_shape == (None, *C.INPUT_SHAPE) and model.output_shape == (None, C.NUM_CLASSES)
    logits = model(np.random.default_rng(0).normal(size=(2, *C.INPUT_SHAPE)).astype("float32")).numpy()
    assert not np.allclose(logits.sum(axis=-1), 1.0)  # the softmax was removed
    direct = larq_zoo.sota.QuickNetSmall(input_shape=(32, 32, 1), weights=None, num_classes=C.NUM_CLASSES)
    assert model_summary(C.profiled(model))["macs_total"] == model_summary(direct)["macs_total"]
