"""Search under a budget (issue 26): the cost model, the expected cost, the penalty."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf.genotype import BNAS_A, Genotype
from bnas_tf.network import build_network
from bnas_tf.ops import SEARCH_SPACES
from bnas_tf.sampling import random_genotype
from bnas_tf.search import Architect, Supernet
from bnas_tf.search.budget import (
    Budget,
    BudgetedArchitect,
    check,
    fit_width,
    hinge,
    two_sided,
)
from bnas_tf.search.cell import edge_inputs
from bnas_tf.search.cost import CostModel, network_cost, op_cost
from bnas_tf.search.driver import SearchConfig

import dataclasses
import json

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


def test_cost_models_of_one_network_count_it_once(models, monkeypatch):
    """A second cost model of the same final network reuses the first one's counts (read-only);
    another network (here: another binarization) is counted anew; a whole genotype's network at
    another width is built once however often it is asked for."""
    from bnas_tf.search import cost

    model = models[("bnas_darts", False)]
    again = CostModel("bnas_darts", inter_cell_skip=False, **SIZE)
    assert again.tables is model.tables and again.fixed is model.fixed
    with pytest.raises(ValueError, match="read-only"):
        again.tables["normal"]["ops"][0, 0] = 0.0
    xnor = CostModel("bnas_darts", inter_cell_skip=False, binarization="xnor", **SIZE)
    assert xnor.tables is not model.tables

    built = []
    monkeypatch.setattr(cost, "_NETWORK_COSTS", {})  # the counts below are not a network's
    monkeypatch.setattr(cost, "network_cost", lambda net: built.append(net) or {"ops": 1.0})
    genotype = random_genotype(5, "bnas_darts")
    assert model.exact_at(genotype, 13) == model.exact_at(genotype, 13) == {"ops": 1.0}
    model.exact_at(genotype, 14)
    assert [net.count_params() > 0 for net in built] == [True, True]


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
    assert float(two_sided(tf.constant(125.0), 100.0)) == pytest.approx(0.25)
    assert float(two_sided(tf.constant(80.0), 100.0)) == pytest.approx(0.2)


@pytest.mark.parametrize("form", ["hinge", "two_sided"])
def test_under_the_budget_only_the_two_sided_penalty_pulls_toward_dearer_ops(models, form):
    """A budget of twice the uniform expectation: the hinge adds nothing (a ceiling), the
    two-sided penalty's descent raises the logits of the ops dearer than the edge's mean (a
    target). An unknown form is refused by its flag's name."""
    from supernet_helpers import make_supernet

    model = models[("bnas_darts", False)]
    net = make_supernet(10, layers=3, init_channels=8, search_space="bnas_darts", seed=0)
    budget = Budget({"ops": 2 * float(model.supernet_expected(net))}, model, form)
    alphas = [net.alpha(cell) for cell in CELLS]
    with tf.GradientTape() as tape:
        loss = BudgetedArchitect(cost_weight=1.0, budget=budget).extra_arch_loss(net)
    grads = tape.gradient(loss, alphas)
    if form == "hinge":
        assert float(loss) == 0.0 and all(g is None or not np.any(g.numpy()) for g in grads)
        return
    assert float(loss) == pytest.approx(0.5, rel=1e-5)
    for cell, g in zip(CELLS, grads):
        for e, costs in enumerate(model.tables[cell]["ops"]):
            order = np.argsort(costs)
            assert g.numpy()[e, order[-1]] < 0 < g.numpy()[e, order[0]]
    with pytest.raises(ValueError, match="budget_penalty must be one of hinge, two_sided"):
        Budget({"ops": 1.0}, model, "barrier")


class _QuadraticCost:
    """A cost model whose network at ``c`` channels costs ``c^2`` OPs and ``c`` KiB."""

    init_channels = 8

    def __init__(self):
        self.built = []

    def exact_at(self, genotype, channels):
        self.built.append(channels)
        return {"ops": float(channels**2), "memory_kib": float(channels)}


@pytest.mark.parametrize(
    "ops,memory,widest,expected",
    [
        (121.0, 1e3, 1024, 11),  # wider than the budget's width: 8 and 16, then bisected
        (30.0, 1e3, 1024, 5),  # narrower: 8 and 4, then bisected
        (1e3, 13.5, 1024, 13),  # the memory bound is the binding one
        (1e6, 1e6, 20, 20),  # everything fits: the widest allowed
        (3.9, 1e3, 1024, None),  # not even 2 channels
    ],
)
def test_fit_width_finds_the_widest_network_within_every_bound(ops, memory, widest, expected):
    model = _QuadraticCost()
    budget = Budget({"ops": ops, "memory_kib": memory}, model)
    fitted = fit_width(BNAS_A, budget, widest=widest)
    if expected is None:
        assert fitted is None and min(model.built) == 2
        return
    assert fitted["init_channels"] == expected and len(model.built) <= 2 * 10
    assert all(r["within"] for r in fitted["report"].values())
    assert fitted["report"]["ops"]["ratio"] == pytest.approx(expected**2 / ops)
    if expected < widest:
        assert (expected + 1) ** 2 > ops or expected + 1 > memory


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
    assert json.loads(json.dumps(report)) == report  # plain numbers: the benchmarks' JSON


@pytest.mark.parametrize(
    "form,fill", [("hinge", None), ("two_sided", None), ("hinge", 0.95)], ids=str
)
def test_a_budgeted_search_with_fit_width_writes_the_network_to_train(
    tiny_idx_dir_module, tmp_path, form, fill
):
    """The program end to end (``bnas-search``'s run), with a budget that a random genotype
    costs at 6 channels and a final network of 3, at which no genotype lands within 10 % of it:
    the penalty and ``fit_width`` are recorded; each epoch keeps what derives its genotype;
    under a ceiling the fitted width is the widest at which the genotype is within the budget
    (one channel more is over it), under a target (the two-sided penalty, or a ``target_fill``
    with the hinge) it is the genotype derived again at a width where it lands; either way the
    network to train is written to ``genotype_fit.json``."""
    from bnas_tf.search.budget import derive_within
    from bnas_tf.search.driver import rederive
    from bnas_tf.search.methods import get_method, run_method

    def ops(genotype, channels):
        net = build_network(
            genotype, layers=1, init_channels=channels, input_shape=(28, 28, 1),
            inter_cell_skip=False, binarization="xnor",
        )  # fmt: skip
        return network_cost(net)["ops"]

    bound = ops(random_genotype(0, "bnas_darts"), 6)
    config = SearchConfig(
        data_dir=str(tiny_idx_dir_module), limit=16, batch_size=8, epochs=1, layers=1,
        init_channels=4, search_space="bnas_darts", binarization="xnor", inter_cell_skip=False,
        allow_none=False, entropy_lambda=0.0, verbose=0, ops_budget=bound, final_layers=1,
        final_init_channels=3, budget_penalty=form, fit_width=True, target_fill=fill,
    )  # fmt: skip
    result = run_method(config, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["budget_penalty"] == form
    # each epoch's genotype is derived within the budget; what derives it is kept beside it
    assert metrics["budget"]["ops"]["within"]
    record = metrics["history"][metrics["best_epoch"]]
    assert {"genotype_argmax", "op_probabilities", "op_choosable"} <= set(record)
    width = metrics["budget_fit"]["init_channels"]
    assert result.budget_fit["init_channels"] == width
    fitted = Genotype.load(tmp_path / "genotype_fit.json")
    assert fitted.to_dict() == metrics["budget_fit"]["genotype"]
    assert f"fitted: {width} channels (genotype_fit.json)" in get_method("darts").summary(result)
    # derived again from the run's files under the same budget: the search's own end
    genotype, report, refit = rederive(tmp_path, config.budget(10, (28, 28, 1)))
    assert genotype == result.genotype and report == metrics["budget"]
    assert refit == metrics["budget_fit"]
    if fill is not None:  # the same alphas read as a ceiling: the genotype widened as it is
        ceiling = dataclasses.replace(config.budget(10, (28, 28, 1)), target_fill=0.0)
        genotype, _, refit = rederive(tmp_path, ceiling)
        assert refit["genotype"] == genotype.to_dict() and genotype.to_dict() != record["genotype"]
        wide = refit["init_channels"]
        assert ops(genotype, wide) <= bound < ops(genotype, wide + 1)
    if form == "hinge" and fill is None:
        assert fitted == result.genotype
        assert ops(result.genotype, width) <= bound < ops(result.genotype, width + 1)
        return
    budget = config.budget(10, (28, 28, 1)).at_width(width)
    again = derive_within(
        Genotype.from_dict(record["genotype_argmax"]),
        {c: np.asarray(p) for c, p in record["op_probabilities"].items()},
        budget,
        {c: np.asarray(a) for c, a in record["op_choosable"].items()},
    )
    assert again == fitted and ops(fitted, width) == pytest.approx(
        metrics["budget_fit"]["report"]["ops"]["cost"]
    )
    assert 0.9 * bound <= ops(fitted, width) <= bound and width != 3


def _landing_order(base: int, span: float = 2.0) -> list[int]:
    """The widths ``land_target`` tries, in turn: the budget's own, then outward, the wider
    first."""
    out = [base]
    for step in range(1, base + 1):
        out += [c for c in (base + step, base - step) if 2 <= c and base / span <= c <= base * span]
    return out


@pytest.mark.parametrize("where", ["at_the_width", "narrower"])
def test_land_target_keeps_the_nearest_width_where_the_derived_genotype_lands(models, where):
    """A target the priciest genotype lands at its own width (3 % under): kept as it is, at that
    width. A target under the cheapest network at the budget's width: the derivation cannot
    land it there; ``land_target`` re-derives at the widths outward and keeps the first that
    lands, each nearer width failing to."""
    from bnas_tf.search.budget import TARGET_WINDOW, derive_within, land_target

    model = models[("bnas_darts", False)]
    dear = _dear_genotype(model)
    probs = _probabilities(model, dear)
    allowed = {c: np.ones_like(probs[c]) for c in CELLS}
    for c in CELLS:
        allowed[c][:, model.op_names.index("none")] = 0
    if where == "at_the_width":
        bound = model.exact(dear)["ops"] / 0.97
    else:
        bound = 0.8 * model.floor("ops")
    budget = Budget({"ops": bound}, model, "two_sided")
    found = land_target(dear, probs, budget, allowed)
    report = found["report"]["ops"]
    assert 1 - TARGET_WINDOW <= report["ratio"] <= 1 and report["within"]
    channels = found["init_channels"]
    at = budget.at_width(channels)
    assert found["genotype"] == derive_within(dear, probs, at, allowed)
    assert report["cost"] == pytest.approx(at.cost_model.exact(found["genotype"])["ops"])
    if where == "at_the_width":
        assert channels == model.init_channels and found["genotype"] == dear
        return
    assert channels < model.init_channels
    for nearer in _landing_order(model.init_channels)[
        : _landing_order(model.init_channels).index(channels)
    ]:
        other = budget.at_width(nearer)
        assert not budget.lands(check(derive_within(dear, probs, other, allowed), other))


def test_land_target_takes_the_closest_width_where_none_lands(models):
    """Only the budget's own width to try (``span=1``) and a target its priciest genotype on
    these edges reaches only 80 % of: that genotype, the closest under it; a target under the
    cheapest network: ``None``."""
    from bnas_tf.search.budget import land_target

    model = models[("bnas_darts", False)]
    dear = _dear_genotype(model)
    probs = _probabilities(model, dear)
    allowed = {c: np.ones_like(probs[c]) for c in CELLS}
    inputs = edge_inputs(model.steps)
    priciest = Genotype(
        **{
            **dear.to_dict(),
            **{
                c: [
                    (
                        model.op_names[
                            int(np.argmax(model.tables[c]["ops"][inputs.index((i // 2, j))]))
                        ],
                        j,
                    )
                    for i, (_, j) in enumerate(getattr(dear, c))
                ]
                for c in CELLS
            },
        }
    )
    bound = model.exact(priciest)["ops"] / 0.8
    found = land_target(dear, probs, Budget({"ops": bound}, model, "two_sided"), allowed, span=1)
    assert found["init_channels"] == model.init_channels and found["genotype"] == priciest
    assert found["report"]["ops"]["ratio"] == pytest.approx(0.8)
    under = Budget({"ops": 0.5 * model.floor("ops")}, model, "two_sided")
    assert land_target(dear, probs, under, allowed, span=1) is None


def _dear_genotype(model: CostModel) -> Genotype:
    """Every edge of both cells a 5x5 separable convolution, each node reading inputs 0 and 1
    or its two predecessors (the priciest genotype of the DARTS space, near enough)."""
    edges = tuple(("bin_sep_conv_5x5", j) for node in range(4) for j in (0, 1 + node)[:2])
    concat = tuple(range(2, 6))
    return Genotype(edges, concat, edges, concat, search_space="bnas_darts")


def _probabilities(model: CostModel, genotype: Genotype, weak: set[tuple[str, int]] = frozenset()):
    """Op probabilities that prefer the genotype's op on each of its edges: 0.9 against 0.1 / 7
    for the rest, or (on the ``weak`` ``(cell, position)`` edges) 0.15 against 0.85 / 7."""
    inputs = edge_inputs(model.steps)
    probs = {}
    for cell in CELLS:
        p = np.full((model.edges, len(model.op_names)), 0.1 / 7)
        for position, (op, j) in enumerate(getattr(genotype, cell)):
            e = inputs.index((position // 2, j))
            strong = (cell, position) not in weak
            p[e] = 0.1 / 7 if strong else 0.85 / 7
            p[e, model.op_names.index(op)] = 0.9 if strong else 0.15
        probs[cell] = p
    return probs


def test_derive_within_keeps_the_budget_losing_the_least_probability(models):
    """The priciest genotype under a budget halfway to the cheapest: the derivation lands within
    it, keeps every edge's input, re-chooses the weakly preferred edges before the strong ones,
    and ends maximal (no op it gave up fits back in)."""
    from bnas_tf.search.budget import derive_within

    model = models[("bnas_darts", False)]
    dear = _dear_genotype(model)
    weak = {("normal", 0), ("normal", 3), ("reduce", 1)}
    probs = _probabilities(model, dear, weak)
    allowed = {c: np.ones_like(probs[c]) for c in CELLS}
    for c in CELLS:
        allowed[c][:, model.op_names.index("none")] = 0  # DARTS derives no Zeroise
    cheap = model.floor("ops")
    bound = cheap + 0.9 * (model.exact(dear)["ops"] - cheap)
    budget = Budget({"ops": bound}, model)
    derived = derive_within(dear, probs, budget, allowed)
    assert not check(dear, budget)["ops"]["within"] and check(derived, budget)["ops"]["within"]
    changed = set()
    for cell in CELLS:
        for position, ((op, j), (old, i)) in enumerate(
            zip(getattr(derived, cell), getattr(dear, cell))
        ):
            assert j == i and op != "none"
            if op != old:
                changed.add((cell, position))
    assert changed and changed <= weak  # the weak edges suffice here, and go first
    inputs = edge_inputs(model.steps)
    for cell in CELLS:  # maximal: every likelier op on an edge would break the budget
        for position, (op, j) in enumerate(getattr(derived, cell)):
            e = inputs.index((position // 2, j))
            for k, name in enumerate(model.op_names):
                if (
                    allowed[cell][e, k]
                    and probs[cell][e, k] > probs[cell][e, model.op_names.index(op)]
                ):
                    edges = list(getattr(derived, cell))
                    edges[position] = (name, j)
                    swapped = Genotype(**{**derived.to_dict(), cell: edges})
                    assert not check(swapped, budget)["ops"]["within"]


def test_derive_within_leaves_a_fitting_genotype_and_floors_an_unreachable_budget(models):
    from bnas_tf.search.budget import derive_within

    model = models[("bnas_darts", False)]
    dear = _dear_genotype(model)
    probs = _probabilities(model, dear)
    roomy = Budget({"ops": 2 * model.exact(dear)["ops"]}, model)
    assert derive_within(dear, probs, roomy) == dear
    impossible = Budget({"ops": 0.5 * model.fixed["ops"]}, model)
    floored = derive_within(dear, probs, impossible)
    costs = model.tables
    inputs = edge_inputs(model.steps)
    for cell in CELLS:  # every edge at its cheapest op: as close as the space gets
        for position, (op, j) in enumerate(getattr(floored, cell)):
            e = inputs.index((position // 2, j))
            assert costs[cell]["ops"][e, model.op_names.index(op)] == costs[cell]["ops"][e].min()
    assert not check(floored, impossible)["ops"]["within"]


def test_a_supernet_derives_within_a_budget_its_argmax_genotype_breaks(models):
    """Alphas that favour the 5x5 separable convolutions: the argmax genotype is over a budget
    halfway to the cheapest network, ``genotype(budget)`` is within it on the same edges."""
    from supernet_helpers import make_supernet

    model = models[("bnas_darts", False)]
    net = make_supernet(
        10, layers=3, init_channels=8, search_space="bnas_darts", allow_none=False, seed=0
    )
    conv = model.op_names.index("bin_sep_conv_5x5")
    for cell in CELLS:
        alpha = net.alpha(cell)
        alpha.assign(tf.one_hot(tf.fill([model.edges], conv), len(model.op_names)) * 2.0)
    argmax = net.genotype()
    cheap = model.floor("ops")
    budget = Budget({"ops": cheap + 0.5 * (model.exact(argmax)["ops"] - cheap)}, model)
    derived = net.genotype(budget)
    assert not check(argmax, budget)["ops"]["within"] and check(derived, budget)["ops"]["within"]
    for cell in CELLS:
        assert [j for _, j in getattr(derived, cell)] == [j for _, j in getattr(argmax, cell)]
        assert all(op != "none" for op, _ in getattr(derived, cell))


def test_derive_within_fills_back_what_a_cheap_downgrade_overshot(models):
    """A budget just under the priciest genotype, one edge nearly indifferent between its 5x5
    convolution (0.30), a max pool (0.28, free) and a 3x3 convolution (0.285): giving up the
    least probability per OP saved drops that edge to the pool, far under the budget; the fill
    then takes the likelier 3x3 convolution back, and nothing else changes."""
    from bnas_tf.search.budget import derive_within

    model = models[("bnas_darts", False)]
    dear = _dear_genotype(model)
    probs = _probabilities(model, dear)
    e = edge_inputs(model.steps).index((0, 0))
    row = np.full(len(model.op_names), (1 - 0.865) / 5)
    for op, p in (("bin_sep_conv_5x5", 0.30), ("bin_sep_conv_3x3", 0.285), ("max_pool_3x3", 0.28)):
        row[model.op_names.index(op)] = p
    probs["normal"][e] = row
    budget = Budget({"ops": model.exact(dear)["ops"] - 100.0}, model)
    derived = derive_within(dear, probs, budget)
    assert derived.normal == (("bin_sep_conv_3x3", 0), *dear.normal[1:])
    assert derived.reduce == dear.reduce and check(derived, budget)["ops"]["within"]


@pytest.mark.parametrize(
    "form,fill", [("hinge", None), ("two_sided", None), ("hinge", 0.95), ("two_sided", 0)]
)
def test_derive_within_fills_a_target_budget_and_leaves_a_ceiling(models, form, fill):
    """A genotype of pools, far under a budget 1/0.9 of the cheapest network: a ceiling (the
    hinge, or a ``target_fill`` of 0) keeps it; a target (the two-sided penalty, or a
    ``target_fill`` with the hinge) is filled to between ``TARGET_FILL`` of the budget and the
    budget, by the dearer ops that give up the least probability: the weakly held edges first."""
    from bnas_tf.search.budget import TARGET_FILL, derive_within

    model = models[("bnas_darts", False)]
    dear = _dear_genotype(model)
    normal, reduce = (tuple(("max_pool_3x3", j) for _, j in getattr(dear, c)) for c in CELLS)
    pools = Genotype(
        normal, dear.normal_concat, reduce, dear.reduce_concat, search_space="bnas_darts"
    )
    weak = {("normal", 1), ("normal", 4), ("reduce", 2)}
    probs = _probabilities(model, pools, weak)
    inputs = edge_inputs(model.steps)
    for cell, position in weak:  # the 5x5 convolution nearly as likely as the pool
        e = inputs.index((position // 2, getattr(pools, cell)[position][1]))
        probs[cell][e, model.op_names.index("bin_sep_conv_5x5")] = 0.14
    bound = model.exact(pools)["ops"] / 0.9
    derived = derive_within(pools, probs, Budget({"ops": bound}, model, form, fill))
    if (form, fill) in (("hinge", None), ("two_sided", 0)):
        assert derived == pools
        return
    assert TARGET_FILL * bound <= model.exact(derived)["ops"] <= bound
    changed = {
        (c, i)
        for c in CELLS
        for i, (a, b) in enumerate(zip(getattr(derived, c), getattr(pools, c)))
        if a != b
    }
    assert weak <= changed
    assert [j for _, j in derived.normal] == [j for _, j in pools.normal]


def test_target_fill_makes_either_penalty_s_budget_a_target():
    """By default a two-sided budget is filled to ``TARGET_FILL`` and a hinge budget not at all;
    a ``target_fill`` fills under either penalty (the hinge then stays a ceiling for alpha);
    it needs the derivation within the budget, and a share in [0, 1]."""
    from bnas_tf.search.budget import TARGET_FILL
    from bnas_tf.settings import SettingError

    def budget(**kwargs):
        config = SearchConfig(
            ops_budget=3e5, search_space="bnas_darts", inter_cell_skip=False, **kwargs
        )
        return config.validate().budget(10, (28, 28, 1))

    assert budget().fill is None and budget(budget_penalty="two_sided").fill == TARGET_FILL
    assert budget(target_fill=0.9).fill == 0.9 and budget(target_fill=0.9).form == "hinge"
    assert budget(budget_penalty="two_sided", target_fill=0).fill is None
    with pytest.raises(SettingError, match="target_fill.*derive_within_budget"):
        SearchConfig(ops_budget=3e5, target_fill=0.9, derive_within_budget=False).validate()
    with pytest.raises(SettingError, match="target_fill.*method=darts"):
        SearchConfig(ops_budget=3e5, target_fill=0.9, method="reduction").validate()
    with pytest.raises(SettingError, match="target_fill"):
        SearchConfig(ops_budget=3e5, target_fill=1.5).validate()
    with pytest.raises(ValueError, match="target_fill must be in"):
        Budget({"ops": 3e5}, budget().cost_model, "two_sided", 1.5)


def test_rederive_names_a_run_that_keeps_nothing_to_derive_from(tmp_path, models):
    """A run whose selected epoch has no op probabilities (searched without a budget's
    derivation) is refused with the file, the epoch and the flags that keep them."""
    from bnas_tf.search.driver import rederive

    record = {"epoch": 0, "genotype": random_genotype(0, "bnas_darts").to_dict()}
    (tmp_path / "metrics.json").write_text(json.dumps({"best_epoch": 0, "history": [record]}))
    budget = Budget({"ops": 1e6}, models[("bnas_darts", False)])
    with pytest.raises(ValueError, match=r"metrics.json: the selected epoch \(0\) keeps no op"):
        rederive(tmp_path, budget)
