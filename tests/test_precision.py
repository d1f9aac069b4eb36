"""``dtype_policy`` of the final networks: bfloat16 compute, float32 state, same weights."""

import bnas_tf  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from bnas_tf import genotype as genotype_lib
from bnas_tf.network import build_network
from bnas_tf.precision import DTYPE_POLICIES, check_dtype_policy, policy_scope
from bnas_tf.training import TrainConfig

import numpy as np
import pytest
import tensorflow as tf

BINARIZATIONS = ("sign_scale", "xnor", "pcnn")


def _net(binarization: str, dtype_policy: str, seed: int = 0, **kwargs) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(seed)
    return build_network(
        genotype_lib.LATEST_CELL,
        layers=3,
        init_channels=8,
        num_classes=10,
        input_shape=(16, 16, 1),
        binarization=binarization,
        dtype_policy=dtype_policy,
        **kwargs,
    )


@pytest.mark.parametrize("binarization", BINARIZATIONS)
def test_mixed_bfloat16_computes_cells_in_bfloat16_and_keeps_state_in_float32(binarization):
    model = _net(binarization, "mixed_bfloat16")
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored after the build
    assert {v.dtype for v in model.variables if v.dtype.is_floating} == {tf.float32}
    convs = [layer for layer in model.layers if "conv" in layer.name and layer.weights]
    assert convs and {layer.compute_dtype for layer in convs} == {"bfloat16"}
    assert model.get_layer("logits").compute_dtype == "float32"
    assert model.output.dtype == tf.float32
    features = _net(binarization, "mixed_bfloat16", include_top=False)
    assert features.output.dtype == tf.float32


@pytest.mark.parametrize("binarization", BINARIZATIONS)
def test_the_same_weights_give_the_same_predictions_under_both_policies(binarization):
    x = tf.random.stateless_uniform((32, 16, 16, 1), seed=(1, 2))
    full = _net(binarization, "float32")
    half = _net(binarization, "mixed_bfloat16", seed=1)
    half.set_weights(full.get_weights())
    a, b = full(x, training=False).numpy(), half(x, training=False).numpy()
    # bfloat16 keeps 8 bits of mantissa and a sign can flip near zero, so the logits differ a
    # little (correlation 0.99 here) but rank the classes alike; a network of other weights
    # (seed 1) does not.
    other = _net(binarization, "float32", seed=1)(x, training=False).numpy()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.9
    assert np.corrcoef(a.ravel(), other.ravel())[0, 1] < 0.9


@pytest.mark.parametrize("binarization", BINARIZATIONS)
def test_a_bfloat16_training_step_updates_float32_weights(binarization):
    model = _net(binarization, "mixed_bfloat16", drop_path_rate=0.2)
    model.compile(
        optimizer=tf.keras.optimizers.SGD(0.05, momentum=0.9),
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    x = tf.random.stateless_uniform((16, 16, 16, 1), seed=(3, 4))
    y = tf.one_hot(tf.range(16) % 10, 10)
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert sum(changed) > len(changed) // 2
    assert {w.dtype for w in model.trainable_weights} == {tf.float32}


def test_policy_scope_restores_the_global_policy_after_an_error():
    with pytest.raises(RuntimeError), policy_scope("mixed_bfloat16"):
        assert tf.keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        raise RuntimeError("boom")
    assert tf.keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("policy", DTYPE_POLICIES)
def test_train_config_accepts_each_policy(policy):
    assert TrainConfig(dtype_policy=policy).validate().dtype_policy == policy


def test_bad_policies_are_refused_with_the_flag_named():
    with pytest.raises(ValueError, match=r"--dtype_policy must be one of float32, mixed_bfloat16"):
        TrainConfig(dtype_policy="float16").validate()
    with pytest.raises(ValueError, match="dtype_policy must be one of"):
        _net("sign_scale", "bfloat16")
    assert check_dtype_policy("float32") == "float32"
