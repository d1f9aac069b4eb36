"""Search under a budget (issue 26): the cost model, the expected cost, the penalty."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf.genotype import Genotype
from bnas_tf.network import build_network
from bnas_tf.sampling import random_genotype
from bnas_tf.search.budget import Budget, BudgetedArchitect, check, hinge
from bnas_tf.search.cell import edge_inputs
from bnas_tf.search.cost import CostModel, network_cost
from bnas_tf.search.driver import SearchConfig, run_search

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
    model = models[(space, skip)]
    for seed in range(2):
        genotype = random_genotype(seed, space, allow_none=True)
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


@pytest.mark.parametrize("space,skip", [("bnas_kim", True), ("bnas_darts", False)])
def test_expected_cost_with_one_hot_alpha_is_the_derived_networks_exact_cost(models, space, skip):
    model = models[(space, skip)]
    genotype = random_genotype(3, space, allow_none=True)
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


def test_hinge_is_zero_under_the_budget_and_the_relative_overshoot_over_it():
    assert float(hinge(tf.constant(90.0), 100.0)) == 0.0
    assert float(hinge(tf.constant(125.0), 100.0)) == pytest.approx(0.25)


def test_a_tight_budget_ends_with_a_cheaper_genotype_under_it(tmp_path, tiny_idx_dir):
    """The same tiny search with and without --ops_budget: the budgeted one derives a cheaper
    genotype, under the budget at the final size. The budget: the final network's fixed part
    plus a third of what uniform alphas expect its edges to cost (so the penalty binds)."""
    base = dict(
        data_dir=str(tiny_idx_dir),
        limit=64,
        batch_size=8,
        epochs=2,
        layers=2,
        init_channels=4,
        search_space="bnas_darts",
        binarization="xnor",
        allow_none=False,
        inter_cell_skip=False,
        entropy_lambda=0.0,
        arch_learning_rate=0.1,
        verbose=0,
        final_layers=3,
        final_init_channels=8,
    )
    model = CostModel("bnas_darts", inter_cell_skip=False, binarization="xnor", **SIZE)
    uniform = {
        c: tf.fill((model.edges, len(model.op_names)), 1 / len(model.op_names)) for c in CELLS
    }
    fixed = model.fixed["ops"]
    budget = fixed + (float(model.expected(uniform, None, "ops")) - fixed) / 3
    free = run_search(SearchConfig(**base), tmp_path / "free")
    tight = run_search(
        SearchConfig(**base, ops_budget=budget, cost_weight=10.0), tmp_path / "tight"
    )
    assert tight.budget["ops"]["budget"] == budget and free.budget is None
    assert tight.budget["ops"]["cost"] < model.exact(free.genotype)["ops"]
    assert tight.budget["ops"]["within"], tight.budget


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
