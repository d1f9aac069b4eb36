"""Search under a budget (issue 26): the cost model, the expected cost, the penalty."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf.genotype import BNAS_A, Genotype
from bnas_tf.network import build_network
from bnas_tf.ops import SEARCH_SPACES
from bnas_tf.sampling import random_genotype
from bnas_tf.search import Architect, Supernet
from bnas_tf.search.budget import Budget, BudgetedArchitect, check, hinge
from bnas_tf.search.cell import edge_inputs
from bnas_tf.search.cost import CostModel, network_cost, op_cost
from bnas_tf.search.driver import SearchConfig

import numpy as np
import pytest
import tensorflow as tf

CELLS = ("normal", "reduce")
SIZE = dict(layers=3, init_channels=8, input_shape=(28, 28, 1))


@pytest.fixture(scope="module")
def models():
    return {
        ("bnas_kim", True): CostModel("bnas_kim", inter_cell_skip=True, **SIZE),
        ("bnas_darts", False): CostModel("bnas_darts", inter_cell_skip=False, **SIZE),
    }


@pytest.mark.parametrize("space,skip", [("bnas_kim", True), ("bnas_darts", False)])
def test_network_cost_is_the_fixed_part_plus_its_edges_op_costs(models, space, skip):
    """Exact for random genotypes and for BNAS-A, whose reduction cell reads only input 0 (its
    input 1's preprocessing is not in the network)."""
    model = models[(space, skip)]
    genotypes = [random_genotype(seed, space, allow_none=True) for seed in range(2)]
    if space == "bnas_kim":
        genotypes.append(BNAS_A)
        assert model.used_inputs(BNAS_A.reduce) == {0}
    for genotype in genotypes:
        net = build_network(genotype, num_classes=10, inter_cell_skip=skip, **SIZE)
        exact, measured = model.exact(genotype), network_cost(net)
        for metric in ("ops", "memory_kib"):
            assert exact[metric] == pytest.approx(measured[metric], rel=1e-9)


def _one_hot(model: CostModel, genotype: Genotype):
    """Alphas (as probabilities) one-hot on the genotype's ops and betas that keep exactly its
    two edges per node (+-30: softmax weights within 1e-13 of 0 and 1)."""
    probs, betas = {}, {}
    inputs = edge_inputs(model.steps)
    for cell in CELLS:
        p = np.full((model.edges, len(model.op_names)), 0.0, np.float32)
        p[:, 0] = 1.0  # the unkept edges: any op, their share is 0
        b = np.full(model.edges, -30.0, np.float32)
        for position, (op, j) in enumerate(getattr(genotype, cell)):
            e = inputs.index((position // 2, j))
            p[e] = 0.0
            p[e, model.op_names.index(op)] = 1.0
            b[e] = 30.0
        probs[cell], betas[cell] = tf.constant(p), tf.constant(b)
    return probs, betas


def _reading_both_inputs(space: str, seed: int) -> Genotype:
    """A random genotype whose first node reads both cell inputs through convolutions."""
    genotype = random_genotype(seed, space, allow_none=True)
    conv = next(op for op in SEARCH_SPACES[space] if "conv" in op)
    normal, reduce = (((conv, 0), (conv, 1), *getattr(genotype, c)[2:]) for c in CELLS)
    concat = genotype.normal_concat
    return Genotype(normal, concat, reduce, concat, search_space=space)


@pytest.mark.parametrize("space,skip", [("bnas_kim", True), ("bnas_darts", False)])
def test_expected_cost_with_one_hot_alpha_is_the_derived_networks_exact_cost(models, space, skip):
    """Within the fixed part: the expectation counts both inputs' preprocessing, so the genotype
    reads both."""
    model = models[(space, skip)]
    genotype = _reading_both_inputs(space, 3)
    assert all(model.used_inputs(getattr(genotype, c)) == {0, 1} for c in CELLS)
    probs, betas = _one_hot(model, genotype)
    for metric in ("ops", "memory_kib"):
        expected = float(model.expected(probs, betas, metric))
        assert expected == pytest.approx(model.exact(genotype)[metric], rel=1e-5)


def test_expected_cost_gradient_points_toward_cheaper_ops(models):
    model = models[("bnas_darts", False)]
    alpha = {cell: tf.Variable(tf.zeros((model.edges, len(model.op_names)))) for cell in CELLS}
    with tf.GradientTape() as tape:
        probs = {cell: tf.nn.softmax(alpha[cell]) for cell in CELLS}
        cost = model.expected(probs, None, "ops")
    grads = tape.gradient(cost, [alpha[c] for c in CELLS])
    for cell, g in zip(CELLS, grads):
        costs = model.tables[cell]["ops"]
        for e in range(model.edges):
            # a descent step lowers the logits of the ops dearer than the edge's mean cost
            order = np.argsort(costs[e])
            assert g.numpy()[e, order[-1]] > 0 > g.numpy()[e, order[0]]
            assert np.corrcoef(g.numpy()[e], costs[e])[0, 1] > 0.99


def test_the_stride2_skip_counts_its_float_1x1_convolutions():
    """DARTS' factorized reduce (the stride-2 ``skip_connect``) is two float 1x1 convolutions of
    C/2 outputs on the halved grid; larq's profile does not look inside the layer, the cost
    tables must: 14 x 14 pixels x 32 outputs x 32 inputs float MACs."""
    assert op_cost("skip_connect", 32, 28, 2, "xnor")["ops"] == 14 * 14 * 32 * 32
    assert op_cost("skip_connect", 32, 28, 1, "xnor")["ops"] == 0.0  # the identity

    def network(reduce_op):
        genotype = Genotype.from_dict(
            {"normal": [["max_pool_3x3", 0], ["max_pool_3x3", 1]] * 4,
             "reduce": [[reduce_op, 0], ["max_pool_3x3", 1]] * 4,
             "normal_concat": [2, 3, 4, 5], "reduce_concat": [2, 3, 4, 5]}
        )  # fmt: skip
        return build_network(
            genotype, layers=3, init_channels=8, input_shape=(28, 28, 1),
            inter_cell_skip=False, binarization="xnor",
        )  # fmt: skip

    # four stride-2 skips in each reduction cell: 28x28 x 16 channels, then 14x14 x 32
    skips = 4 * (
        op_cost("skip_connect", 16, 28, 2, "xnor")["ops"]
        + op_cost("skip_connect", 32, 14, 2, "xnor")["ops"]
    )
    difference = (
        network_cost(network("skip_connect"))["ops"] - network_cost(network("max_pool_3x3"))["ops"]
    )
    assert skips > 0 and difference == pytest.approx(skips)


def test_hinge_is_zero_under_the_budget_and_the_relative_overshoot_over_it():
    assert float(hinge(tf.constant(90.0), 100.0)) == 0.0
    assert float(hinge(tf.constant(125.0), 100.0)) == pytest.approx(0.25)


def _tiny_search(model: CostModel, budget: float | None, halves) -> Genotype:
    """Three epochs of a one-cell supernet over three ops of the DARTS space."""
    tf.keras.utils.set_random_seed(0)
    active = {c: [["max_pool_3x3", "skip_connect", "bin_sep_conv_5x5"]] * 14 for c in CELLS}
    net = Supernet(
        10,
        layers=1,
        init_channels=4,
        search_space="bnas_darts",
        binarization="xnor",
        active_ops=active,
        inter_cell_skip=False,
        allow_none=False,
        seed=0,
    )
    kwargs = dict(entropy_lambda=0.0, weight_decay=0.0)
    architect = (
        Architect(**kwargs)
        if budget is None
        else BudgetedArchitect(**kwargs, cost_weight=10.0, budget=Budget({"ops": budget}, model))
    )
    net.compile(
        optimizer=tf.keras.optimizers.SGD(0.01),
        arch_optimizer=tf.keras.optimizers.Adam(0.1),
        architect=architect,
    )
    net.fit(halves, epochs=3, verbose=0)
    return net.genotype()


def test_a_tight_budget_ends_with_a_cheaper_genotype_under_it():
    """The same tiny search with and without a budget on its final network (3 cells x 8
    channels): the budgeted one derives a cheaper genotype, under the budget. The budget: the
    cheapest network's cost plus a third of what uniform alphas add to it (so it binds)."""
    model = CostModel("bnas_darts", inter_cell_skip=False, binarization="xnor", **SIZE)
    active = [model.op_names.index(o) for o in ("max_pool_3x3", "skip_connect", "bin_sep_conv_5x5")]
    uniform = np.zeros((model.edges, len(model.op_names)), np.float32)
    uniform[:, active] = 1 / 3
    full = float(model.expected({c: tf.constant(uniform) for c in CELLS}, None, "ops"))
    # the cheapest network: pools and skips only, both inputs preprocessed
    floor = model.floor("ops")
    budget = floor + (full - floor) / 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, (2, 16))
    halves = tf.data.Dataset.from_tensor_slices(((x[0], y[0]), (x[1], y[1]))).batch(8)
    free, tight = _tiny_search(model, None, halves), _tiny_search(model, budget, halves)
    assert model.exact(tight)["ops"] < model.exact(free)["ops"]
    assert check(tight, Budget({"ops": budget}, model))["ops"]["within"]


def test_search_config_budget_is_for_the_final_network():
    config = SearchConfig(
        ops_budget=3e5, memory_budget=40.0, layers=2, init_channels=4, final_layers=3,
        final_init_channels=8, search_space="bnas_darts", inter_cell_skip=False,
    )  # fmt: skip
    budget = config.budget(10, (28, 28, 1))
    assert budget.bounds == {"ops": 3e5, "memory_kib": 40.0}
    assert (budget.cost_model.layers, budget.cost_model.init_channels) == (3, 8)
    assert isinstance(config.architect(budget), BudgetedArchitect)
    assert (
        config.architect(budget).budget is budget and SearchConfig().budget(10, (28, 28, 1)) is None
    )


def test_budgeted_architect_adds_the_penalty_to_the_architecture_loss(models):
    from supernet_helpers import make_supernet

    model = models[("bnas_darts", False)]
    net = make_supernet(10, layers=3, init_channels=8, search_space="bnas_darts", seed=0)
    expected = float(model.supernet_expected(net))
    budget = Budget({"ops": expected / 2}, model)
    architect = BudgetedArchitect(cost_weight=3.0, budget=budget)
    assert float(architect.extra_arch_loss(net)) == pytest.approx(3.0 * 1.0, rel=1e-5)
    report = check(random_genotype(0, "bnas_darts"), budget)
    assert set(report) == {"ops"} and report["ops"]["ratio"] == pytest.approx(
        report["ops"]["cost"] / (expected / 2)
    )
