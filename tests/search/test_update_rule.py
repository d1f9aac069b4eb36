"""The search's update rule, tested on values (issue 20): which half each step reads,
the entropy term, the second-order gradient, weight decay and PCNN's projection loss,
and the library's defaults against the program's."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf.quantizers import get_binarization, quantizer_variables
from bnas_tf.search import Supernet, default_optimizers
from bnas_tf.search.architect import Architect
from bnas_tf.search.driver import LIBRARY_DEFAULTS, SearchConfig
from bnas_tf.search.supernet import SupernetOptions
from bnas_tf.search.unrolled import unrolled_arch_gradients

import dataclasses
import inspect

import numpy as np
import pytest
import tensorflow as tf
from supernet_helpers import make_supernet

BATCH = 4


def _halves(seed=0, size=8):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((2, BATCH, size, size, 1)), tf.float32)
    y = tf.constant(rng.integers(0, 10, (2, BATCH)), tf.int64)
    return (x[0], y[0]), (x[1], y[1])


def _net(arch_optimizer=None, optimizer=None, **kwargs):
    kwargs = {"layers": 2, "init_channels": 4, "steps": 2, "multiplier": 2, "seed": 0, **kwargs}
    net = make_supernet(10, **kwargs)
    net.compile(
        optimizer=optimizer or tf.keras.optimizers.SGD(0.01),
        arch_optimizer=arch_optimizer or tf.keras.optimizers.SGD(1.0),
    )
    net(tf.zeros((1, 8, 8, 1)))
    net.build_optimizers()
    return net


def _arch_grads(net, x, y, entropy=True):
    with tf.GradientTape() as tape:
        loss = net.loss_fn(y, net(x, training=True))
        if entropy:
            loss += net.architect.entropy_objective(net)
    return tape.gradient(loss, net.arch_variables)


# ----------------------------------------------------------------------------- train_step
def test_train_step_alpha_step_reads_the_alpha_half_with_the_entropy_term():
    """With plain SGD(1) on alpha, one train_step moves alpha by exactly
    ``grad_alpha [L(x_a) - lambda e^{-t/tau} H] + wd_a alpha``: the alpha half's loss, the
    entropy term included; the weight half's gradient, or none of the entropy term,
    gives another update."""
    # a normal and two reduction cells
    net = _net(entropy_lambda=1.0, arch_weight_decay=1e-3, layers=3)
    rng = np.random.default_rng(1)
    for v in net.arch_variables:  # far from uniform: the entropy gradient is large
        v.assign(rng.standard_normal(v.shape).astype(np.float32))
    (xw, yw), (xa, ya) = _halves()
    before = [v.numpy().copy() for v in net.arch_variables]
    expected = [g.numpy() + 1e-3 * b for g, b in zip(_arch_grads(net, xa, ya), before)]
    weight_half = [g.numpy() + 1e-3 * b for g, b in zip(_arch_grads(net, xw, yw), before)]
    no_entropy = [
        g.numpy() + 1e-3 * b for g, b in zip(_arch_grads(net, xa, ya, entropy=False), before)
    ]
    net.train_step(((xw, yw), (xa, ya)))
    moved = [b - v.numpy() for b, v in zip(before, net.arch_variables)]
    for m, e, w, n in zip(moved, expected, weight_half, no_entropy):
        np.testing.assert_allclose(m, e, rtol=1e-4, atol=1e-6)
        assert np.abs(w - e).max() > 1e-3, (
            "the two halves give the same gradient: the test cannot tell"
        )
        assert np.abs(n - e).max() > 1e-3, "the entropy term has no effect: the test cannot tell"


def test_train_step_weight_step_reads_the_weight_half():
    """The weight step (after the alpha step) follows the weight half's gradient."""
    # alpha stays put
    net = _net(
        entropy_lambda=1.0,
        weight_decay=0.0,
        grad_clip=None,
        optimizer=tf.keras.optimizers.SGD(1.0),
        arch_optimizer=tf.keras.optimizers.SGD(0.0),
    )
    (xw, yw), (xa, ya) = _halves()
    variables = net.weight_variables
    before = [v.numpy().copy() for v in variables]

    def grads(x, y):
        with tf.GradientTape() as tape:
            loss = net.loss_fn(y, net(x, training=True))
        return [g.numpy() for g in tape.gradient(loss, variables)]

    expected, other = grads(xw, yw), grads(xa, ya)
    for v, b in zip(variables, before):  # the gradient passes updated BN statistics only
        v.assign(b)
    net.train_step(((xw, yw), (xa, ya)))
    moved = np.concatenate([(b - v.numpy()).ravel() for b, v in zip(before, variables)])
    expected = np.concatenate([g.ravel() for g in expected])
    other = np.concatenate([g.ravel() for g in other])
    np.testing.assert_allclose(moved, expected, rtol=1e-3, atol=1e-5)
    assert np.abs(other - expected).max() > 1e-3


# ----------------------------------------------------------------------------- second order
def _smooth_net(optimizer_lr):
    """A supernet whose loss is smooth in alpha and w (no sign function): the DARTS space
    restricted to skip/pool ops, so that finite differences are meaningful."""
    ops = ["skip_connect", "avg_pool_3x3", "max_pool_3x3"]
    steps = 2
    active = {cell: [ops] * 5 for cell in ("normal", "reduce")}
    return _net(
        search_space="bnas_darts",
        active_ops=active,
        layers=1,
        steps=steps,
        multiplier=steps,
        entropy_lambda=0.0,
        weight_decay=0.0,
        unrolled=True,
        optimizer=tf.keras.optimizers.SGD(optimizer_lr),
    )


def _val_loss_after_virtual_step(net, train, val, xi):
    """``L_val(w - xi grad_w L_train(w, alpha), alpha)`` with w restored afterwards."""
    weights = net.weight_variables
    saved = [tf.identity(v) for v in weights]
    stats = [v for v in net.non_trainable_variables if v is not net.epoch]
    saved_stats = [tf.identity(v) for v in stats]
    with tf.GradientTape() as tape:
        loss = net.loss_fn(train[1], net(train[0], training=True))
    for v, g in zip(weights, tape.gradient(loss, weights)):
        if g is not None:
            v.assign_sub(xi * g)
    value = float(net.loss_fn(val[1], net(val[0], training=True)))
    for v, s in zip(weights + stats, saved + saved_stats):
        v.assign(s)
    return value


def test_unrolled_gradient_matches_finite_differences_of_the_unrolled_loss():
    """DARTS' second-order alpha gradient equals the central finite difference of
    ``L_val(w - xi grad_w L_train(w, alpha), alpha)`` in alpha.

    Float32 (the supernet's variables), so the check is on the whole gradient,
    ``||g - g_fd|| / ||g_fd|| < 1e-2``: with h = 1e-3 the difference quotient's rounding
    error is ~1e-7 * L / h ~ 2e-4 per entry, against a gradient norm of ~0.1. The
    Hessian-vector product is taken with r = 1e-4 (see ``unrolled_arch_gradients``:
    DARTS' r = 0.01 is itself 35 % off on this 4-channel net, whose batch-4 batch norm
    is far from linear at that scale)."""
    xi = 0.1  # a large virtual step, so that the second-order term is large
    tf.keras.utils.set_random_seed(0)
    net = _smooth_net(xi)
    rng = np.random.default_rng(2)
    net.alpha_reduce.assign(rng.standard_normal(net.alpha_reduce.shape).astype(np.float32))
    train, val = _halves(3)
    grads, _, _ = unrolled_arch_gradients(net, train, val, r=1e-4)
    active = net.masks["reduce"].numpy() > 0
    g = grads[1].numpy()[active]  # one cell: a reduction cell
    h = 1e-3
    alpha0 = net.alpha_reduce.numpy().copy()
    numeric = []
    for index in zip(*np.nonzero(active)):
        values = []
        for sign in (1.0, -1.0):
            alpha = alpha0.copy()
            alpha[index] += sign * h
            net.alpha_reduce.assign(alpha)
            values.append(_val_loss_after_virtual_step(net, train, val, xi))
        numeric.append((values[0] - values[1]) / (2 * h))
    net.alpha_reduce.assign(alpha0)
    numeric = np.array(numeric)
    error = np.linalg.norm(g - numeric) / np.linalg.norm(numeric)
    assert error < 1e-2, error
    # The first-order gradient misses the second-order term: it is measurably different.
    first = _arch_grads(net, *val, entropy=False)[1].numpy()[active]
    assert np.linalg.norm(first - numeric) / np.linalg.norm(numeric) > 10 * error


def test_unrolled_gradient_with_xi_to_zero_is_the_first_order_one():
    net = _smooth_net(1e-8)
    train, val = _halves(4)
    grads, _, _ = unrolled_arch_gradients(net, train, val)
    first = _arch_grads(net, *val, entropy=False)
    pairs = [(g, f) for g, f in zip(grads, first) if f is not None]
    assert pairs
    for g, f in pairs:
        np.testing.assert_allclose(g.numpy(), f.numpy(), rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- weight decay
def test_weight_decay_leaves_pcnn_binary_levels_alone():
    """A weight step whose only gradient is the decay term (lr 1, zero task gradient
    is impossible, so compare against the same step without decay): the decay moves the
    kernels but not PCNN's projection/level."""
    kwargs = dict(
        binarization=get_binarization("pcnn", pcnn_lambda=0.0), entropy_lambda=0.0, grad_clip=None
    )
    batch = _halves(5)[0]
    moves = {}
    for decay in (0.0, 0.5):  # two identical nets (same seeds), variables in the same order
        tf.keras.utils.set_random_seed(0)
        net = _net(weight_decay=decay, optimizer=tf.keras.optimizers.SGD(1.0), **kwargs)
        levels = {v.ref() for v in quantizer_variables(net)}
        assert levels and all("projection" in v.deref().name for v in levels)
        before = [v.numpy().copy() for v in net.weight_variables]
        net.architect.weight_step(net, *batch)
        moves[decay] = [b - v.numpy() for b, v in zip(before, net.weight_variables)]
        level_at = [i for i, v in enumerate(net.weight_variables) if v.ref() in levels]
        kernel_at = [i for i, v in enumerate(net.weight_variables) if "kernel" in v.name]
    for i in level_at:  # the decay adds nothing to the levels' step
        np.testing.assert_allclose(moves[0.5][i], moves[0.0][i], rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(moves[0.5][i], moves[0.0][i]) for i in kernel_at)


def test_final_training_excludes_quantizer_parameters_from_weight_decay():
    from bnas_tf import genotype as genotype_lib
    from bnas_tf.network import build_network

    model = build_network(
        genotype_lib.BNAS_A,
        layers=1,
        init_channels=4,
        num_classes=10,
        input_shape=(8, 8, 1),
        binarization=get_binarization("pcnn", pcnn_lambda=0.0),
    )
    optimizer = tf.keras.optimizers.SGD(1.0, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_list=quantizer_variables(model))
    levels = quantizer_variables(model)
    assert levels
    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    for v, b in zip(model.trainable_variables, before):
        if any(v is level for level in levels):
            np.testing.assert_array_equal(v.numpy(), b)
    kernels = [(v, b) for v, b in zip(model.trainable_variables, before) if "kernel" in v.name]
    assert all(not np.array_equal(v.numpy(), b) for v, b in kernels)


def test_train_network_optimizer_excludes_pcnn_levels(monkeypatch, tmp_path):
    """``train_network`` hands the quantizers' variables to exclude_from_weight_decay."""
    from bnas_tf import training

    seen = {}
    original = tf.keras.optimizers.Optimizer.exclude_from_weight_decay

    def spy(self, var_list=None, var_names=None):
        seen["vars"] = list(var_list or [])
        return original(self, var_list=var_list, var_names=var_names)

    monkeypatch.setattr(tf.keras.optimizers.Optimizer, "exclude_from_weight_decay", spy)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(training, "compile_network", stop)
    config = training.TrainConfig(
        genotype="bnas_a",
        layers=1,
        init_channels=4,
        epochs=1,
        batch_size=8,
        limit=16,
        weight_decay=1e-3,
        binarization="pcnn",
        optimizer="sgd",
    )
    with pytest.raises(Stop):
        training.train_network(config, tmp_path / "run")
    assert seen["vars"] and all("projection" in v.name for v in seen["vars"])


# ------------------------------------------------------------------------ PCNN in the objective
def test_pcnn_projection_loss_enters_the_weight_objective():
    """The weight step's loss with PCNN's projection term differs from the loss without it by
    exactly that term: with SGD(1) the step moves the kernels by grad(L_task + L_P)."""
    lam = 0.05
    net = _net(
        binarization=get_binarization("pcnn", pcnn_lambda=lam),
        entropy_lambda=0.0,
        weight_decay=0.0,
        grad_clip=None,
        optimizer=tf.keras.optimizers.SGD(1.0),
    )
    x, y = _halves(6)[0]
    variables = net.weight_variables
    with tf.GradientTape(persistent=True) as tape:
        task = net.loss_fn(y, net(x, training=True))
        projection = tf.add_n(net.losses)
    g_task = tape.gradient(task, variables)
    g_proj = tape.gradient(projection, variables)
    # The projection term is what PcnnWeight.projection_loss says for every layer's kernel.
    expected_proj = 0.0
    for layer in net.submodules:
        quantizer = getattr(layer, "kernel_quantizer", None)
        if quantizer is not None and hasattr(quantizer, "projection_loss"):
            expected_proj += float(quantizer.projection_loss(layer.kernel))
    assert float(projection) == pytest.approx(expected_proj, rel=1e-5) and expected_proj > 0
    before = [v.numpy().copy() for v in variables]
    net.architect.weight_step(net, x, y)
    moved = [b - v.numpy() for b, v in zip(before, variables)]
    with_term = [
        (gt if gt is not None else 0) + (gp if gp is not None else 0)
        for gt, gp in zip(g_task, g_proj)
    ]
    kernels = [i for i, v in enumerate(variables) if "kernel" in v.name and g_proj[i] is not None]
    assert kernels
    for i in kernels:
        np.testing.assert_allclose(moved[i], with_term[i], rtol=1e-4, atol=1e-6)
        assert np.abs(moved[i] - g_task[i].numpy()).max() > 1e-6  # without the term: another step


# ----------------------------------------------------------------------------- defaults
def test_search_config_defaults_are_the_library_defaults():
    """Every setting SearchConfig shares with Supernet / SupernetOptions / Architect /
    default_optimizers has one default."""
    library = {}
    for fn in (Supernet.__init__, default_optimizers):
        for name, p in inspect.signature(fn).parameters.items():
            if p.default is not inspect.Parameter.empty:
                library[name] = p.default
    for cls in (SupernetOptions, Architect):
        library.update({f.name: f.default for f in dataclasses.fields(cls)})
    assert library == {k: v for k, v in LIBRARY_DEFAULTS.items()}
    shared = [f for f in dataclasses.fields(SearchConfig) if f.name in library and f.name != "seed"]
    assert len(shared) >= 18
    differ = {f.name: (f.default, library[f.name]) for f in shared if f.default != library[f.name]}
    assert differ == {}
    # Kim et al.'s regularizer is on by default in both.
    assert SearchConfig().entropy_lambda == library["entropy_lambda"] == 1.0
