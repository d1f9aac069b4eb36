"""Tests of the search supernet (:mod:`bnas_tf.search.supernet`) and its regularizer.

Tracing a supernet's ``train_step`` is the slow part (tens of seconds), so every
search is run once per configuration in the module-scoped ``searched`` fixture.
"""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf.genotype import Genotype
from bnas_tf.ops import SEARCH_SPACES
from bnas_tf.search import default_optimizers, edge_inputs, entropy_coefficient
from bnas_tf.search.regularizers import edge_entropy, masked_softmax

import math
import types

import numpy as np
import pytest
import tensorflow as tf
from supernet_helpers import make_supernet

SPACES = sorted(SEARCH_SPACES)
EDGES = 14
SAMPLES, BATCH, EPOCHS = 8, 4, 2


def _small_net(**kwargs):
    """A supernet that is never traced: only its alphas are used (one cell is enough)."""
    kwargs = {"layers": 1, "init_channels": 4, **kwargs}
    return make_supernet(10, **kwargs)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, SAMPLES, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, (2, SAMPLES)).astype(np.int64)
    return x, y


def _snapshot(variables):
    return [v.numpy().copy() for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def _must_train(net):
    """Weight variables that certainly reach the loss: stem, classifier, cell inputs and
    the mixed ops of the edges leaving input node 0."""
    layers = [net.stem, net.classifier]
    for cell in net.cells:
        layers += [cell.preprocess0, cell.preprocess1, cell.mixed_ops[0]]
    variables = {v.ref() for layer in layers for v in layer.trainable_weights}
    assert len(variables) > 10
    return [v.ref() in variables for v in net.weight_variables]


def _assert_trained(net, before):
    changed = _changed(before, net.weight_variables)
    must_train = _must_train(net)
    stale = [v.name for v, c, m in zip(net.weight_variables, changed, must_train) if m and not c]
    assert stale == []
    assert sum(changed) > 0.5 * len(changed)


# ----------------------------------------------------------------------------- the search
# Cells with 2 intermediate nodes (5 edges) instead of 4 (14 edges): tracing the
# train step is then about 2.5x cheaper; the alternating update does not depend on it.
SMALL_CELL = dict(steps=2, multiplier=2)
CONFIGS = {
    # 3 cells: a normal cell then two reduction cells.
    "kim-3cells": dict(search_space="bnas_kim", layers=3, partial_channels=1),
    # 2 cells: both are reduction cells; channel sampling turns edge normalization on.
    # Plain binary DARTS has no entropy term (Kim et al.'s lambda would also pull on the
    # unused alpha_normal, which the test below checks stays put).
    "darts-2cells-K2": dict(
        search_space="bnas_darts", layers=2, partial_channels=2, entropy_lambda=0.0
    ),
    # bfloat16 cells (float32 variables, alpha and losses), with channel sampling.
    "kim-3cells-K2-bf16": dict(
        search_space="bnas_kim", layers=3, partial_channels=2, dtype_policy="mixed_bfloat16"
    ),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def searched(request):
    """A supernet searched for 2 epochs of 2 steps, with arch_warmup_epochs=1."""
    config = CONFIGS[request.param]
    tf.keras.utils.set_random_seed(0)
    net = make_supernet(10, init_channels=4, arch_warmup_epochs=1, seed=0, **SMALL_CELL, **config)
    net.compile(**default_optimizers(total_steps=SAMPLES // BATCH * EPOCHS))
    x, y = _data()
    net(x[0, :BATCH])  # build, so that the initial weights can be recorded
    arch0 = _snapshot(net.arch_variables)
    weights0 = _snapshot(net.weight_variables)
    at_epoch_end = []

    class Record(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            at_epoch_end.append(_snapshot(net.arch_variables))

    ds = tf.data.Dataset.from_tensor_slices(((x[0], y[0]), (x[1], y[1]))).batch(BATCH)
    history = net.fit(ds, epochs=EPOCHS, verbose=0, callbacks=[Record()])
    return types.SimpleNamespace(
        net=net,
        config=config,
        arch0=arch0,
        weights0=weights0,
        at_epoch_end=at_epoch_end,
        history=history.history,
        batch=(x[0, :BATCH], y[0, :BATCH]),
    )


def test_search_changes_alpha_and_weights(searched):
    net = searched.net
    changed = _changed(searched.arch0, net.arch_variables)
    final = dict(zip([v.name for v in net.arch_variables], changed))
    assert final[net.alpha_reduce.name]
    # With layers=2 there is no normal cell: alpha_normal gets no gradient and stays put.
    has_normal = any(not cell.reduction for cell in net.cells)
    assert has_normal == (searched.config["layers"] == 3)
    assert final[net.alpha_normal.name] == has_normal
    if searched.config["partial_channels"] > 1:
        assert net.edge_normalization
        assert final[net.beta_reduce.name]
    _assert_trained(net, searched.weights0)
    for key in ("loss", "arch_loss", "entropy", "accuracy", "arch_accuracy"):
        assert len(searched.history[key]) == EPOCHS
    assert np.isfinite(searched.history["loss"]).all()


def test_arch_warmup(searched):
    """arch_warmup_epochs=1: no architecture step in epoch 0, some in epoch 1."""
    net = searched.net
    after_epoch0, after_epoch1 = searched.at_epoch_end
    for before, after in zip(searched.arch0, after_epoch0):
        np.testing.assert_array_equal(after, before)
    assert any(not np.array_equal(a, b) for a, b in zip(searched.arch0, after_epoch1))
    assert int(net.epoch.numpy()) == EPOCHS - 1
    assert searched.history["arch_loss"][0] == 0.0  # never updated in epoch 0
    assert searched.history["arch_loss"][1] > 0.0
    assert int(net.arch_optimizer.iterations.numpy()) == SAMPLES // BATCH  # epoch 1 only
    assert int(net.optimizer.iterations.numpy()) == SAMPLES // BATCH * EPOCHS


def test_weight_optimizer_holds_no_arch_variable(searched):
    net = searched.net

    def base(v):
        return v.name.split("/")[-1]

    arch_names = {base(v) for v in net.arch_variables}
    weight_names = {base(v) for v in net.weight_variables}
    assert not arch_names & weight_names
    slots = [v for v in net.optimizer.variables() if not v.name.startswith("iteration")]
    assert slots, "the weight optimizer has momentum slots"
    assert not {base(v) for v in slots} & arch_names
    # SGD with momentum: exactly one slot per weight variable.
    assert len(slots) == len(net.weight_variables)
    arch_slots = {
        base(v) for v in net.arch_optimizer.variables() if not v.name.startswith("iteration")
    }
    assert base(net.alpha_reduce) in arch_slots
    assert not arch_slots & weight_names


def test_arch_and_weight_variables_partition_trainables(searched):
    net = searched.net
    arch = {v.ref() for v in net.arch_variables}
    weights = {v.ref() for v in net.weight_variables}
    assert not arch & weights
    assert arch | weights == {v.ref() for v in net.trainable_variables}
    assert len(net.arch_variables) == (4 if net.edge_normalization else 2)
    assert net.epoch.ref() not in arch | weights


def test_weight_step_leaves_alpha_unchanged(searched):
    net = searched.net
    arch = _snapshot(net.arch_variables)
    weights = _snapshot(net.weight_variables)
    arch_iterations = int(net.arch_optimizer.iterations.numpy())
    net.architect.weight_step(net, *searched.batch)
    for before, v in zip(arch, net.arch_variables):
        np.testing.assert_array_equal(v.numpy(), before)
    _assert_trained(net, weights)
    assert int(net.arch_optimizer.iterations.numpy()) == arch_iterations


@pytest.mark.parametrize("space", SPACES)
def test_every_edge_reaches_the_loss(space):
    # One reduction cell with 2 nodes: edges (node, input) = (0,0) (0,1) (1,0) (1,1) (1,2).
    net = _small_net(search_space=space, **SMALL_CELL)
    x, y = _data()
    with tf.GradientTape() as tape:
        loss = net.loss_fn(y[0, :BATCH], net(x[0, :BATCH], training=True))
    grad_alpha, *grad_weights = tape.gradient(loss, [net.alpha_reduce, *net.weight_variables])
    dead_rows = [e for e in range(net.edges) if not np.any(grad_alpha.numpy()[e])]
    dead_weights = [v.name for v, g in zip(net.weight_variables, grad_weights) if g is None]
    assert (dead_rows, dead_weights) == ([], [])


# ----------------------------------------------------------------------------- entropy
@pytest.mark.parametrize("space", SPACES)
def test_mean_entropy_is_log_n_at_uniform_alpha(space):
    net = _small_net(search_space=space)
    n = len(SEARCH_SPACES[space])
    # Initialised close to uniform.
    assert abs(float(net.mean_entropy()) - math.log(n)) < 1e-4
    net.alpha_normal.assign(tf.zeros_like(net.alpha_normal))
    net.alpha_reduce.assign(tf.zeros_like(net.alpha_reduce))
    assert float(net.mean_entropy()) == pytest.approx(math.log(n), rel=1e-6)
    net.alpha_reduce.assign(tf.one_hot([1] * EDGES, n) * 50.0)
    assert float(net.mean_entropy()) == pytest.approx(math.log(n) / 2, rel=1e-4)


@pytest.mark.parametrize("space", SPACES)
def test_mean_entropy_uses_active_op_masks(space):
    ops = SEARCH_SPACES[space]
    active = [list(ops[: 1 + e % len(ops)]) for e in range(EDGES)]
    net = _small_net(search_space=space, active_ops={"normal": active, "reduce": active})
    # Zero logits on the active ops, large random ones on the removed ops (masked out).
    alpha = 3.0 * np.random.default_rng(0).standard_normal((EDGES, len(ops))).astype(np.float32)
    for e, edge in enumerate(active):
        alpha[e, : len(edge)] = 0.0
    net.alpha_normal.assign(alpha)
    net.alpha_reduce.assign(alpha)
    expected = np.mean([math.log(len(edge)) for edge in active])
    assert float(net.mean_entropy()) == pytest.approx(expected, rel=1e-5)
    probs = net.op_probabilities("normal").numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    for e, edge in enumerate(active):
        np.testing.assert_array_equal(probs[e, len(edge) :], 0.0)


@pytest.mark.parametrize("space", SPACES)
def test_entropy_term_pushes_alpha_towards_uniform(space):
    net = _small_net(search_space=space, entropy_lambda=1.0)
    rng = np.random.default_rng(0)
    for alpha in (net.alpha_normal, net.alpha_reduce):
        alpha.assign(rng.standard_normal(alpha.shape).astype(np.float32))
    entropy0 = float(net.mean_entropy())
    with tf.GradientTape() as tape:
        objective = net.architect.entropy_objective(net)  # -lambda exp(-t / tau) H_bar, t = 0
    grads = tape.gradient(objective, [net.alpha_normal, net.alpha_reduce])
    for alpha, grad in zip((net.alpha_normal, net.alpha_reduce), grads):
        a, g = alpha.numpy(), grad.numpy()
        rows = np.arange(EDGES)
        # Descent lowers the largest logit and raises the smallest one.
        assert (g[rows, a.argmax(axis=1)] > 0).all()
        assert (g[rows, a.argmin(axis=1)] < 0).all()
        np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-6)  # softmax shift invariance
        # d(-H)/d alpha_k = p_k (log p_k + H) / n_edges_total
        p = tf.nn.softmax(a).numpy()
        h = -(p * np.log(p)).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(g, p * (np.log(p) + h) / (2 * EDGES), rtol=1e-4, atol=1e-7)
        alpha.assign_sub(0.5 * grad)
    assert float(net.mean_entropy()) > entropy0


def test_entropy_coefficient_decays_with_epoch():
    lam, tau = 2.0, 7.7
    values = [float(entropy_coefficient(lam, tau, t)) for t in range(5)]
    for t, value in enumerate(values):
        assert value == pytest.approx(lam * math.exp(-t / tau), rel=1e-6)
    assert all(a > b for a, b in zip(values, values[1:]))
    as_int64 = entropy_coefficient(lam, tau, tf.constant(3, tf.int64))
    assert float(as_int64) == pytest.approx(values[3])
    net = _small_net(entropy_lambda=lam, entropy_tau=tau)
    entropy = float(net.mean_entropy())
    for t in (0, 4):
        net.epoch.assign(t)
        objective = float(net.architect.entropy_objective(net))
        assert objective == pytest.approx(-values[t] * entropy, rel=1e-5)
    off = _small_net(entropy_lambda=0.0)
    assert float(off.architect.entropy_objective(off)) == 0.0


def test_edge_entropy_handles_zero_probabilities():
    probs = tf.constant([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(edge_entropy(probs).numpy(), [math.log(2), 0.0], atol=1e-7)
    masked = masked_softmax(tf.constant([[1.0, 2.0, 30.0]]), tf.constant([[1.0, 1.0, 0.0]]))
    expected = [[1 / (1 + math.e), math.e / (1 + math.e), 0.0]]
    np.testing.assert_allclose(masked.numpy(), expected, rtol=1e-6)


# ----------------------------------------------------------------------------- genotype
def _check_structure(g, space_ops, allow_none=True):
    for cell in ("normal", "reduce"):
        edges = getattr(g, cell)
        assert len(edges) == 8
        assert getattr(g, f"{cell}_concat") == (2, 3, 4, 5)
        for node in range(4):
            (op_a, in_a), (op_b, in_b) = edges[2 * node], edges[2 * node + 1]
            assert in_a < in_b < node + 2  # two distinct inputs, sorted
            for op in (op_a, op_b):
                assert op in space_ops
                assert allow_none or op != "none"


@pytest.mark.parametrize("allow_none", [True, False])
@pytest.mark.parametrize("space", SPACES)
def test_genotype_is_valid(space, allow_none):
    net = _small_net(search_space=space, allow_none=allow_none)
    rng = np.random.default_rng(1)
    for alpha in (net.alpha_normal, net.alpha_reduce):
        alpha.assign(rng.standard_normal(alpha.shape).astype(np.float32) * 2)
    g = net.genotype()
    assert g.search_space == space
    assert g.validate(space) is g
    _check_structure(g, SEARCH_SPACES[space], allow_none)


# (edge, op index in the space, logit): per node the two edges with the largest logits win.
HAND_ALPHA = {
    0: (1, 3.0),
    1: (2, 2.0),  # node 0: edges 0, 1
    2: (3, 1.0),
    3: (4, 4.0),
    4: (5, 3.0),  # node 1: edges 3, 4
    5: (6, 5.0),
    6: (1, 0.5),
    7: (2, 1.0),
    8: (3, 2.0),  # node 2: edges 5, 8
    9: (4, 0.5),
    10: (5, 1.0),
    11: (6, 6.0),
    12: (1, 0.2),
    13: (2, 3.0),  # node 3: 11, 13
}


def _hand_alpha(n_ops, shift=0):
    alpha = np.zeros((EDGES, n_ops), np.float32)
    for e, (op, logit) in HAND_ALPHA.items():
        alpha[e, 1 + (op - 1 + shift) % (n_ops - 1)] = logit
    return alpha


@pytest.mark.parametrize("space", SPACES)
def test_genotype_from_hand_set_alpha(space):
    ops = SEARCH_SPACES[space]
    net = _small_net(search_space=space)
    net.alpha_normal.assign(_hand_alpha(len(ops)))
    net.alpha_reduce.assign(_hand_alpha(len(ops), shift=2))

    def expected(shift):
        def op(i):
            return ops[1 + (i - 1 + shift) % (len(ops) - 1)]

        return (
            (op(1), 0),
            (op(2), 1),
            (op(4), 1),
            (op(5), 2),
            (op(6), 0),
            (op(3), 3),
            (op(6), 2),
            (op(2), 4),
        )

    g = net.genotype()
    assert g == Genotype(expected(0), (2, 3, 4, 5), expected(2), (2, 3, 4, 5), search_space=space)
    if space == "bnas_kim":  # spelled out once
        assert g.normal == (
            ("max_pool_3x3", 0),
            ("avg_pool_3x3", 1),
            ("bin_dil_conv_5x5", 1),
            ("bin_conv_3x3", 2),
            ("bin_conv_5x5", 0),
            ("bin_dil_conv_3x3", 3),
            ("bin_conv_5x5", 2),
            ("avg_pool_3x3", 4),
        )


@pytest.mark.parametrize("space", SPACES)
def test_genotype_allow_none(space):
    ops = SEARCH_SPACES[space]
    alpha = np.zeros((EDGES, len(ops)), np.float32)
    alpha[:, 0] = 5.0  # 'none' dominates every edge ...
    alpha[:, 3] = 1.0  # ... then op 3
    for allow_none, expected_op in ((True, "none"), (False, ops[3])):
        net = _small_net(search_space=space, allow_none=allow_none)
        net.alpha_normal.assign(alpha)
        net.alpha_reduce.assign(alpha)
        g = net.genotype()
        assert {op for op, _ in g.normal + g.reduce} == {expected_op}


@pytest.mark.parametrize("space", SPACES)
def test_genotype_respects_active_ops(space):
    ops = SEARCH_SPACES[space]
    active = [[op for op in ops if op != ops[e % len(ops)]] for e in range(EDGES)]
    net = _small_net(search_space=space, active_ops={"normal": active, "reduce": active})
    alpha = np.zeros((EDGES, len(ops)), np.float32)
    for e in range(EDGES):
        alpha[e, e % len(ops)] = 10.0  # the removed op has by far the largest logit
        alpha[e, (e + 1) % len(ops)] = 1.0
    net.alpha_normal.assign(alpha)
    net.alpha_reduce.assign(alpha)
    probs = net.op_probabilities("normal").numpy()
    np.testing.assert_array_equal(probs[np.arange(EDGES), np.arange(EDGES) % len(ops)], 0.0)
    g = net.genotype()
    rows = edge_inputs()
    for cell in ("normal", "reduce"):
        chosen = []
        for i, (op, source) in enumerate(getattr(g, cell)):
            e = rows.index((i // 2, source))
            chosen.append(e)
            assert op in active[e]
            assert op == ops[(e + 1) % len(ops)]
        assert len(set(chosen)) == 8


def test_genotype_uses_edge_normalization():
    net = _small_net(search_space="bnas_kim", partial_channels=2)
    assert net.edge_normalization
    n = len(SEARCH_SPACES["bnas_kim"])
    alpha = np.zeros((EDGES, n), np.float32)
    alpha[:, 5] = 2.0  # every edge equally strong: beta decides
    beta = np.array([0, 0, 0, 5, 4, 3, 0, 2, 0, 0, 1, 0, 2, 0], np.float32)
    for cell in ("normal", "reduce"):
        net.alpha(cell).assign(alpha)
        net.beta(cell).assign(beta)
    betas = net.edge_betas("normal").numpy()
    for start, size in ((0, 2), (2, 3), (5, 4), (9, 5)):
        assert betas[start : start + size].sum() == pytest.approx(1.0, rel=1e-6)
    op = SEARCH_SPACES["bnas_kim"][5]
    expected = ((op, 0), (op, 1), (op, 1), (op, 2), (op, 0), (op, 2), (op, 1), (op, 3))
    g = net.genotype()
    assert g.normal == expected and g.reduce == expected


def test_genotype_without_none_skips_dead_edges():
    ops = SEARCH_SPACES["bnas_kim"]
    active = [list(ops) for _ in range(EDGES)]
    active[2] = ["none"]  # node 1 reads inputs 0 (dead), 1 and 2
    net = _small_net(
        search_space="bnas_kim", allow_none=False, active_ops={"normal": active, "reduce": active}
    )
    g = net.genotype()
    assert all(op != "none" for op, _ in g.normal + g.reduce)
    assert [source for _, source in g.normal[2:4]] == [1, 2]


# ----------------------------------------------------------------------------- errors
def test_partial_channels_must_divide_init_channels():
    with pytest.raises(ValueError, match=r"partial_channels K=3 .* init_channels=4"):
        _small_net(partial_channels=3)
    with pytest.raises(ValueError, match=r"K=0"):
        _small_net(partial_channels=0)


def test_active_ops_unknown_op():
    active = [list(SEARCH_SPACES["bnas_kim"]) for _ in range(EDGES)]
    active[5] = ["max_pool_3x3", "bin_sep_conv_3x3"]  # not in bnas_kim
    with pytest.raises(ValueError) as err:
        _small_net(search_space="bnas_kim", active_ops={"normal": active, "reduce": active})
    message = str(err.value)
    assert "edge 5" in message and "bin_sep_conv_3x3" in message and "bnas_kim" in message


def test_active_ops_wrong_edge_count_or_empty_edge():
    full = [list(SEARCH_SPACES["bnas_kim"]) for _ in range(EDGES)]
    with pytest.raises(ValueError, match=r"active_ops\['reduce'\] has 13 edges, expected 14"):
        _small_net(active_ops={"normal": full, "reduce": full[:-1]})
    empty = [list(edge) for edge in full]
    empty[0] = []
    with pytest.raises(ValueError, match=r"edge 0: no ops"):
        _small_net(active_ops={"normal": empty, "reduce": full})


def test_mixed_bfloat16_cells_float32_variables_and_logits():
    before = tf.keras.mixed_precision.global_policy().name
    net = make_supernet(10, layers=3, init_channels=4, dtype_policy="mixed_bfloat16", **SMALL_CELL)
    assert tf.keras.mixed_precision.global_policy().name == before  # restored after building
    logits = net(_data()[0][0, :BATCH], training=True)
    assert logits.dtype == tf.float32
    assert net.stem.compute_dtype == "bfloat16"
    assert {cell.compute_dtype for cell in net.cells} == {"bfloat16"}
    assert {m.compute_dtype for cell in net.cells for m in cell.mixed_ops} == {"bfloat16"}
    assert net.classifier.compute_dtype == "float32"
    assert {v.dtype for v in net.trainable_variables} == {tf.float32}


def test_mixed_bfloat16_gradients_follow_float32():
    """Same initial weights: bfloat16 cells give nearly the float32 loss and gradients
    (not equal: bfloat16 rounding flips the sign of some pre-activations near 0)."""
    x, y = _data()
    results = {}
    for policy in ("float32", "mixed_bfloat16"):
        tf.keras.utils.set_random_seed(0)
        net = make_supernet(
            10, layers=3, init_channels=8, dtype_policy=policy, seed=0, **SMALL_CELL
        )
        net(x[0], training=True)
        with tf.GradientTape() as tape:
            loss = net.loss_fn(y[0], net(x[0], training=True))
        results[policy] = (
            float(loss),
            tape.gradient(loss, net.arch_variables + net.weight_variables),
        )
    (l32, g32), (l16, g16) = results["float32"], results["mixed_bfloat16"]
    assert abs(l16 - l32) < 0.05 * l32
    assert all(g.dtype == tf.float32 for g in g16)
    flat32 = np.concatenate([g.numpy().ravel() for g in g32])
    flat16 = np.concatenate([g.numpy().ravel() for g in g16])
    assert flat32 @ flat16 / np.linalg.norm(flat32) / np.linalg.norm(flat16) > 0.9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dtype_policy="mixed_float16"), "dtype_policy must be one of float32, mixed_bfloat16"),
        (dict(num_classes=1), "num_classes must be at least 2"),
        (dict(layers=0), "layers must be at least 1"),
        (dict(entropy_tau=0.0), "entropy_tau must be positive"),
        (dict(search_space="nope"), "Unknown search space 'nope'"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"num_classes": 10, "layers": 2, "init_channels": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_supernet(args.pop("num_classes"), **args)


def test_compile_needs_both_optimizers():
    net = _small_net()
    optimizers = default_optimizers(total_steps=10)
    with pytest.raises(ValueError, match="needs both `optimizer` and `arch_optimizer`"):
        net.compile(optimizer=optimizers["optimizer"])
    with pytest.raises(ValueError, match="arch_optimizer"):
        net.compile(arch_optimizer=optimizers["arch_optimizer"])
    net.compile(**optimizers)
    assert net.arch_optimizer is optimizers["arch_optimizer"]
    assert net.optimizer is optimizers["optimizer"]


def test_default_optimizers():
    opt = default_optimizers(total_steps=100)
    sgd, adam = opt["optimizer"], opt["arch_optimizer"]
    assert isinstance(sgd, tf.keras.optimizers.SGD) and sgd.momentum == pytest.approx(0.9)
    schedule = tf.keras.optimizers.schedules.deserialize(sgd.get_config()["learning_rate"])
    assert float(schedule(0)) == pytest.approx(0.025)
    assert float(schedule(100)) == pytest.approx(0.001, rel=1e-4)
    assert isinstance(adam, tf.keras.optimizers.Adam)
    assert float(adam.learning_rate) == pytest.approx(3e-4)
    assert adam.beta_1 == pytest.approx(0.5) and adam.beta_2 == pytest.approx(0.999)
