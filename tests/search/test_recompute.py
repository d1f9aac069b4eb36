"""``SupernetOptions.recompute_cells``: the same step with each cell's activations recomputed in
the backward pass (:func:`bnas_tf.memory.recompute_grad`)."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf.search.driver import SearchConfig
from bnas_tf.settings import SettingError

import numpy as np
import pytest
import tensorflow as tf
from supernet_helpers import make_supernet

# K=1 (no beta) and K=2 (channel sampling, beta on), in Kim's space (cheaper to trace than the
# DARTS space's separable convolutions); one (reduction) cell, since recomputation is per cell
# and tracing the step is the slow part.
CONFIGS = {
    "k1": dict(search_space="bnas_kim", partial_channels=1),
    "k2-beta": dict(search_space="bnas_kim", partial_channels=2),
}
SMALL = dict(layers=1, init_channels=4, steps=2, multiplier=2, seed=0)


def _pair(config):
    """Two supernets with the same weights, one recomputing its cells."""
    nets = []
    for recompute in (False, True):
        tf.keras.utils.set_random_seed(0)
        net = make_supernet(10, recompute_cells=recompute, **SMALL, **config)
        net(tf.zeros((2, 8, 8, 1)))
        nets.append(net)
    nets[1].set_weights(nets[0].get_weights())
    return nets


def _batch(seed=0, size=4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((size, 8, 8, 1)).astype(np.float32)
    return x, rng.integers(0, 10, size).astype(np.int64)


def _moving_statistics(net):
    return [v.numpy() for v in net.variables if "moving_" in v.name]


def _agree(a, b) -> None:
    """Equal up to float rounding. Not element for element: the recomputed forward may round
    differently (another oneDNN kernel order), which can flip the sign of a pre-activation near
    0 and move the gradients upstream of it a little. A statistic moved twice differs in
    almost every element (measured: 28 % agree)."""
    a = np.concatenate([np.ravel(g) for g in a])
    b = np.concatenate([np.ravel(g) for g in b])
    assert np.isclose(a, b, rtol=1e-3, atol=1e-5).mean() > 0.9
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.98


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_step(name):
    """One training-mode forward and backward: the loss, the gradients of alpha and beta and of
    the weights, and the moved batch-norm statistics are those of the plain step (the backward
    pass's second forward leaves the statistics where the first one put them)."""
    x, y = _batch()
    nets = _pair(CONFIGS[name])
    before = _moving_statistics(nets[0])
    results = []
    for net in nets:

        @tf.function
        def step(net=net):
            with tf.GradientTape() as tape:
                loss = net.loss_fn(y, net(x, training=True))
            arch, weights = tape.gradient(loss, [net.arch_variables, net.weight_variables])
            return loss, arch, weights

        results.append(step())
    (loss0, *plain), (loss1, *recomputed) = results
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    for grads0, grads1 in zip(plain, recomputed):
        assert [g is None for g in grads0] == [g is None for g in grads1]
        _agree([g for g in grads0 if g is not None], [g for g in grads1 if g is not None])
    after = [_moving_statistics(net) for net in nets]
    assert np.mean([not np.allclose(b, a) for b, a in zip(before, after[0])]) > 0.5
    _agree(after[0], after[1])


def test_pcnn_and_bmes_refused():
    with pytest.raises(ValueError, match="recompute_cells cannot be used with PCNN"):
        make_supernet(10, recompute_cells=True, binarization="pcnn", **SMALL)
    with pytest.raises(SettingError, match="recompute_cells cannot be used with PCNN"):
        SearchConfig(recompute_cells=True, binarization="pcnn").validate()
    with pytest.raises(SettingError, match="recompute_cells .* method='bmes' has none"):
        SearchConfig(recompute_cells=True, method="bmes").validate()


def test_the_search_flag_reaches_the_supernet():
    assert SearchConfig(recompute_cells=True).supernet_options().recompute_cells
    assert not SearchConfig().supernet_options().recompute_cells
