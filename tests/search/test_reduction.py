"""Tests of Chen et al.'s operation space reduction (:mod:`bnas_tf.search.reduction`).

The bookkeeping (O_smaller, sampling, scores, removal, state, genotype) is tested in
pure Python. Two tiny supernets (3 cells x 4 channels on 8x8 inputs) are built once
for the module: one over 4 ops per edge, and the one of the space after a reduction
stage. The full staged loop runs once on the tiny IDX files.
"""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf.genotype import Genotype
from bnas_tf.ops import SEARCH_SPACES
from bnas_tf.search import Architect, Supernet, default_optimizers
from bnas_tf.search.driver import SearchConfig
from bnas_tf.search.reduction import (
    OperationSpaceReduction,
    ReductionConfig,
    evaluate_architectures,
    single_path_alphas,
)
from bnas_tf.search.reduction_search import run_reduction_search
from bnas_tf.search.transfer import transfer_weights

import json
import math

import numpy as np
import pytest
import tensorflow as tf

SPACE = "bnas_kim"
OPS = SEARCH_SPACES[SPACE]  # 7 ops
EDGES = 14
CELLS = ("normal", "reduce")


def _uniform(ops):
    return {cell: [list(ops)] * EDGES for cell in CELLS}


def _rotating(k, shift=0):
    """k ops per edge, a different subset on each edge (so widened convs serve varied edge sets)."""
    return {
        cell: [
            [OPS[(e + c * 3 + shift + 2 * i) % len(OPS)] for i in range(k)] for e in range(EDGES)
        ]
        for c, cell in enumerate(CELLS)
    }


def _alphas(seed=0):
    rng = np.random.default_rng(seed)
    return {cell: rng.standard_normal((EDGES, len(OPS))) for cell in CELLS}


# ----------------------------------------------------------------------------- pure Python
def test_o_smaller_is_the_lower_alpha_half():
    red = OperationSpaceReduction(OPS, EDGES, ReductionConfig(), seed=0)
    alphas = _alphas()
    small = red.o_smaller(alphas)
    for cell in CELLS:
        for e in range(EDGES):
            order = np.argsort(alphas[cell][e])
            assert sorted(small[cell][e]) == sorted(OPS[i] for i in order[:3])  # floor(7 / 2)
    red = OperationSpaceReduction(OPS, EDGES, ReductionConfig(smaller_rounding="ceil"), seed=0)
    assert all(len(ops) == 4 for ops in red.o_smaller(alphas)["reduce"])
    assert [red.smaller_size(n) for n in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 3]
    red = OperationSpaceReduction(OPS, EDGES, ReductionConfig(), seed=0)
    assert [red.smaller_size(n) for n in (1, 2, 3, 4, 5, 8)] == [1, 1, 1, 2, 2, 4]


def test_samples_use_each_o_smaller_op_once_per_round_on_every_edge():
    red = OperationSpaceReduction(OPS, EDGES, ReductionConfig(samples_per_op=3), seed=0)
    small = {
        "normal": [list(OPS[:3])] * 7 + [list(OPS[3:5])] * 7,  # edges with fewer ops reuse
        "reduce": [[OPS[e % len(OPS)]] for e in range(EDGES)],
    }
    samples = red.sample_architectures(small, np.random.default_rng(1))
    m = 3
    assert len(samples) == 3 * m
    for r in range(3):
        rnd = samples[r * m : (r + 1) * m]
        for cell in CELLS:
            for e in range(EDGES):
                used = [s[cell][e] for s in rnd]
                assert set(used) == set(small[cell][e])
                counts = [used.count(op) for op in small[cell][e]]
                assert max(counts) - min(counts) <= 1
    # The draws are random: not the same order in every round.
    orders = {tuple(s["normal"][0] for s in samples[r * m : (r + 1) * m]) for r in range(3)}
    assert len(orders) > 1


def test_scores_follow_the_running_update_exactly():
    ops = list(OPS[:4])  # none, max_pool, avg_pool, bin_dil_conv_3x3
    config = ReductionConfig(temperature=0.5)
    red = OperationSpaceReduction(OPS, EDGES, config, seed=0, active_ops=_uniform(ops))
    small = {cell: [ops[:2]] * EDGES for cell in CELLS}  # O_smaller = {none, max_pool}
    samples = [
        {cell: [ops[0]] * EDGES for cell in CELLS},
        {cell: [ops[1]] * EDGES for cell in CELLS},
        {cell: [ops[0]] * EDGES for cell in CELLS},
        {cell: [ops[1]] * EDGES for cell in CELLS},
    ]
    accuracies = [0.2, 0.5, 0.4, 0.7]
    expected = {op: 0.0 for op in ops}
    for _stage in range(2):
        mean0, mean1 = (0.2 + 0.4) / 2, (0.5 + 0.7) / 2
        z = np.array([mean0, mean1]) / 0.5
        lik = np.exp(z) / np.exp(z).sum()
        outside = 0.5 * (lik.max() + lik.mean())
        likelihood = {ops[0]: lik[0], ops[1]: lik[1], ops[2]: outside, ops[3]: outside}
        expected = {op: expected[op] / 2 + likelihood[op] for op in ops}
        got = red.update_scores(small, samples, accuracies)
        for cell in CELLS:
            for e in range(EDGES):
                assert got[cell][e] == pytest.approx(likelihood, rel=1e-12)
                assert red.scores[cell][e] == pytest.approx(expected, rel=1e-12)
    # Ops outside O_smaller: half of (max + mean) of the O_smaller likelihoods.
    assert outside == pytest.approx(0.5 * (lik[1] + 0.5))
    removed = red.remove_worst()
    assert {(r["cell"], r["op"]) for r in removed} == {(c, ops[0]) for c in CELLS}
    assert len(removed) == 2 * EDGES and red.stage == 1
    assert all(r["score"] == pytest.approx(expected[ops[0]]) for r in removed)
    assert red.active_ops == _uniform(ops[1:])


def test_single_op_o_smaller_needs_no_samples_and_ties_fall_to_alpha():
    ops = ["max_pool_3x3", "bin_conv_3x3"]
    red = OperationSpaceReduction(OPS, EDGES, ReductionConfig(), seed=0, active_ops=_uniform(ops))
    alphas = {cell: np.zeros((EDGES, len(OPS))) for cell in CELLS}
    alphas["normal"][:, OPS.index("bin_conv_3x3")] = -1.0  # the conv has the lower alpha here
    small = red.o_smaller(alphas)
    assert small["normal"][0] == ["bin_conv_3x3"] and small["reduce"][0] == ["max_pool_3x3"]
    lik = red.update_scores(small, [], [])
    assert lik["normal"][0] == {"max_pool_3x3": 1.0, "bin_conv_3x3": 1.0}
    removed = red.remove_worst()
    assert {r["op"] for r in removed if r["cell"] == "normal"} == {"bin_conv_3x3"}
    # Equal alphas: the op earlier in the space goes.
    assert {r["op"] for r in removed if r["cell"] == "reduce"} == {"max_pool_3x3"}
    assert red.done and red.stages_left == 0


def test_update_scores_rejects_inconsistent_samples():
    red = OperationSpaceReduction(
        OPS, EDGES, ReductionConfig(), seed=0, active_ops=_uniform(OPS[:4])
    )
    small = {cell: [list(OPS[:2])] * EDGES for cell in CELLS}
    only_first = [{cell: [OPS[0]] * EDGES for cell in CELLS}]
    with pytest.raises(ValueError, match="no sample used"):
        red.update_scores(small, only_first, [0.5])
    with pytest.raises(ValueError, match="not in O_smaller"):
        red.update_scores(small, [{cell: [OPS[3]] * EDGES for cell in CELLS}], [0.5])


def test_state_dict_round_trips_through_json():
    red = OperationSpaceReduction(
        OPS, EDGES, ReductionConfig(temperature=0.1), seed=3, active_ops=_rotating(4)
    )
    small = red.o_smaller(_alphas(1))
    samples = red.sample_architectures(small)
    accuracies = list(np.random.default_rng(0).uniform(size=len(samples)))
    red.update_scores(small, samples, accuracies)
    red.remove_worst()
    state = json.loads(json.dumps(red.state_dict()))
    other = OperationSpaceReduction(OPS, EDGES, ReductionConfig(temperature=0.1), seed=99)
    other.load_state_dict(state)
    assert other.state_dict() == red.state_dict()
    assert other.active_ops == red.active_ops and other.scores == red.scores
    # The sampler continues identically.
    small = red.o_smaller(_alphas(2))
    assert red.sample_architectures(small) == other.sample_architectures(small)
    with pytest.raises(ValueError, match="State of a reduction"):
        OperationSpaceReduction(SEARCH_SPACES["bnas_darts"], EDGES, seed=0).load_state_dict(state)


def test_genotype_keeps_the_two_best_scored_edges_per_node():
    red = OperationSpaceReduction(OPS, EDGES, ReductionConfig(), seed=0, active_ops=_rotating(1))
    assert red.done
    # Node 2 (edges 5..8): edge 7 and 5 score highest.
    red.scores["normal"][7] = {k: 3.0 for k in red.scores["normal"][7]}
    red.scores["normal"][5] = {k: 2.0 for k in red.scores["normal"][5]}
    genotype = red.genotype()
    assert isinstance(genotype, Genotype) and genotype.search_space == SPACE
    ops = red.active_ops["normal"]
    assert genotype.normal[4:6] == ((ops[5][0], 0), (ops[7][0], 2))
    # Equal scores elsewhere: the first edges win.
    assert genotype.normal[:2] == ((ops[0][0], 0), (ops[1][0], 1))
    with pytest.raises(ValueError, match="not finished"):
        OperationSpaceReduction(OPS, EDGES, seed=0).genotype()


def test_genotype_without_none_ranks_a_none_edge_last_despite_its_score():
    """Node 1 of the reduction cell (edges 2, 3, 4 from inputs 0, 1, 2): edge 2 is left with
    `none` and scores highest; edges 3 and 4 keep convolutions with distinct, lower scores.
    No two scores tie, so the edge-order tie-break cannot decide the outcome."""
    active = {cell: [["max_pool_3x3"]] * EDGES for cell in CELLS}
    active["reduce"] = list(active["reduce"])
    active["reduce"][2:5] = [["none"], ["bin_conv_3x3"], ["bin_conv_5x5"]]
    red = OperationSpaceReduction(OPS, EDGES, ReductionConfig(), seed=0, active_ops=active)
    assert red.done
    for cell in CELLS:
        for e in range(EDGES):
            (op,) = red.active_ops[cell][e]
            red.scores[cell][e] = {op: 1.0 + 0.01 * e}  # distinct everywhere
    red.scores["reduce"][2] = {"none": 9.0}
    red.scores["reduce"][3] = {"bin_conv_3x3": 2.0}
    red.scores["reduce"][4] = {"bin_conv_5x5": 3.0}
    # allow_none: the two best scores, none (input 0) and bin_conv_5x5 (input 2).
    assert red.genotype(allow_none=True).reduce[2:4] == (("none", 0), ("bin_conv_5x5", 2))
    # allow_none=False: none ranks last, though it scores highest.
    assert red.genotype(allow_none=False).reduce[2:4] == (("bin_conv_3x3", 1), ("bin_conv_5x5", 2))


# ----------------------------------------------------------------------------- supernets
def _net(active_ops):
    net = Supernet(10, layers=3, init_channels=4, search_space=SPACE, active_ops=active_ops, seed=0)
    net.compile(**default_optimizers(10))
    net(tf.zeros((1, 8, 8, 1)))
    return net


def _batches(n=2, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            tf.constant(rng.standard_normal((batch, 8, 8, 1)).astype(np.float32)),
            rng.integers(0, 10, batch).astype(np.int32),
        )
        for _ in range(n)
    ]


def _branch_count(net):
    return sum(len(m._branch) for cell in net.cells for m in cell.mixed_ops)


@pytest.fixture(scope="module")
def stage():
    """One reduction stage on a 4-ops-per-edge supernet, and the supernet of the smaller space."""
    tf.keras.utils.set_random_seed(0)
    red = OperationSpaceReduction(
        OPS,
        EDGES,
        ReductionConfig(samples_per_op=1, eval_batches=1),
        seed=0,
        active_ops=_rotating(4),
    )
    old = _net(red.active_ops)
    before = red.active_ops
    small = red.o_smaller(old)
    samples = red.sample_architectures(small)
    accuracies = red.evaluate_samples(old, samples, _batches(1))
    red.update_scores(small, samples, accuracies)
    removed = red.remove_worst(old)
    new = _net(red.active_ops)
    return red, old, new, before, removed, samples, accuracies


def test_a_stage_removes_one_op_per_edge_and_shrinks_the_supernet(stage):
    red, old, new, before, removed, samples, accuracies = stage
    assert len(samples) == 2 and all(0.0 <= a <= 1.0 for a in accuracies)
    assert len(removed) == 2 * EDGES
    for cell in CELLS:
        for e in range(EDGES):
            gone = [r["op"] for r in removed if r["cell"] == cell and r["edge"] == e]
            assert len(gone) == 1
            assert sorted(red.active_ops[cell][e] + gone) == sorted(before[cell][e])
    assert new.active_ops == red.active_ops
    # A removed op (other than the never-computed `none`) leaves every cell of its type.
    per_cell = {
        cell: sum(1 for r in removed if r["cell"] == cell and r["op"] != "none") for cell in CELLS
    }
    kinds = ["reduce" if c.reduction else "normal" for c in old.cells]
    assert _branch_count(old) - _branch_count(new) == sum(per_cell[k] for k in kinds)
    assert any(r["op"] != "none" for r in removed)
    assert new.count_params() < old.count_params()
    assert len(new.trainable_variables) <= len(old.trainable_variables)


def test_evaluate_sample_changes_no_variable_and_restores_alpha(stage):
    red, old, *_ = stage
    before = [v.numpy().copy() for v in old.weights]
    alphas = [a.numpy().copy() for a in old.arch_variables]
    sample = {c: [ops[-1] for ops in old.active_ops[c]] for c in CELLS}
    for bn_mode in ("batch", "moving"):
        red.config.bn_mode = bn_mode
        acc = red.evaluate_sample(old, sample, _batches(1, seed=1))
        assert 0.0 <= acc <= 1.0
    red.config.bn_mode = "batch"
    for b, v in zip(before, old.weights):
        np.testing.assert_array_equal(b, v.numpy(), err_msg=v.name)
    for a, v in zip(alphas, old.arch_variables):
        np.testing.assert_array_equal(a, v.numpy())
    # The one-hot alphas select exactly the sampled op.
    table = single_path_alphas(old, sample)
    probs = tf.nn.softmax(np.where(old.masks["normal"].numpy() > 0, table["normal"], -1e9)).numpy()
    onehot = np.zeros_like(probs)
    for e, op in enumerate(sample["normal"]):
        onehot[e, old.op_names.index(op)] = 1.0
    # One-hot up to float32 rounding: some CPUs' vectorized exp gives exp(0) = 1 - 2**-24.
    np.testing.assert_allclose(probs, onehot, rtol=0, atol=1e-6)


def _randomize(net, seed=0):
    rng = np.random.default_rng(seed)
    for v in net.weights:
        if v.dtype == tf.bool or v.dtype.is_integer:
            continue
        if "moving_variance" in v.name:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
        else:
            v.assign(0.5 * rng.standard_normal(v.shape).astype(np.float32))


def test_transfer_weights_keeps_the_function_of_the_surviving_ops(stage):
    red, old, new, before, removed, *_ = stage
    saved = [v.numpy().copy() for v in old.weights]
    try:
        _randomize(old, seed=1)
        # Removed ops get alpha -1e9: the old supernet then computes the new one's function.
        for r in removed:
            alpha = old.alpha(r["cell"])
            value = alpha.numpy()
            value[r["edge"], OPS.index(r["op"])] = -1e9
            alpha.assign(value)
        copied = transfer_weights(old, new)
        metric_variables = sum(len(m.weights) for m in new.metrics)
        assert copied == len(new.weights) - metric_variables  # every weight but the metrics' sums
        x = _batches(1, batch=4, seed=2)[0][0]
        np.testing.assert_allclose(
            new(x, training=False).numpy(), old(x, training=False).numpy(), rtol=1e-4, atol=1e-4
        )
    finally:
        for v, value in zip(old.weights, saved):
            v.assign(value)


def test_transfer_weights_rejects_ops_the_old_supernet_lacks(stage):
    _, old, new, *_ = stage
    with pytest.raises(ValueError, match="not in the old supernet"):
        transfer_weights(new, old)


# ----------------------------------------------------------------------------- the loop
class _Interrupt(Exception):
    pass


def test_reduction_search_ends_with_one_op_per_edge(tmp_path, tiny_idx_dir):
    """2 stages (3 ops per edge); killed after stage 0 is saved, then resumed to the end."""
    config = SearchConfig(
        data_dir=str(tiny_idx_dir),
        limit=64,
        batch_size=8,
        layers=2,
        init_channels=4,
        entropy_lambda=0.0,
        search_space=SPACE,
        verbose=0,
        method="reduction",
        reduction=ReductionConfig(
            stage_epochs=1, samples_per_op=1, eval_batches=1, smaller_rounding="ceil"
        ),
    )
    start = _rotating(3, shift=1)
    lines = []

    def killing_log(line):
        lines.append(line)
        if line.startswith("stage 0:") and "ops removed" in line:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_reduction_search(config, tmp_path, active_ops=start, log=killing_log)
    assert not (tmp_path / "genotype.json").exists()
    assert {p.name.split(".")[0] for p in (tmp_path / "checkpoints").iterdir()} == {"stage-1"}
    stage0 = json.loads((tmp_path / "reduction_state.json").read_text())["stages"]
    result = run_reduction_search(config, tmp_path, active_ops=start, resume=True, log=lines.append)
    assert result.stages[0] == stage0[0]
    # 3 ops per edge: 2 stages, 2 removals per edge.
    assert [s["stage"] for s in result.stages] == [0, 1]
    assert len(result.removals) == 2 * 2 * EDGES
    for cell in CELLS:
        for e in range(EDGES):
            gone = [r["op"] for r in result.removals if r["cell"] == cell and r["edge"] == e]
            assert len(gone) == 2 and set(gone) < set(start[cell][e])
    # ceil(2/2) = 1
    assert len(result.stages[0]["samples"]) == 2 and result.stages[1]["samples"] == []
    assert (
        result.stages[0]["weights_transferred"] == 0 and result.stages[1]["weights_transferred"] > 0
    )
    assert result.stages[1]["epochs"] == [1, 2]
    assert sum(": removed " in line for line in lines) == len(result.removals)
    assert any(line.startswith("Resuming") for line in lines)
    genotype = Genotype.load(tmp_path / "genotype.json")
    assert genotype == result.genotype and genotype.search_space == SPACE
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["removals"] == result.removals and len(metrics["stage_wall_time_s"]) == 2
    final = metrics["final_ops"]
    assert all(len(ops) == 1 for cell in CELLS for ops in final[cell])
    for cell in CELLS:
        for (op, source), node in zip(getattr(genotype, cell), [0, 0, 1, 1, 2, 2, 3, 3]):
            edge = sum(2 + i for i in range(node)) + source
            assert final[cell][edge] == [op]
    # Resuming a finished search only rebuilds the last supernet and rewrites the same cell.
    again = run_reduction_search(config, tmp_path, active_ops=start, resume=True, log=lines.append)
    assert again.genotype == result.genotype and again.removals == result.removals
    assert {p.name.split(".")[0] for p in (tmp_path / "checkpoints").iterdir()} == {"stage-2"}
    assert math.isfinite(result.wall_time)


def test_evaluate_architectures_ranks_the_trained_path_above_a_random_one():
    """Train one single path of a two-op supernet (alpha frozen one-hot on bin_conv_3x3):
    evaluated with the supernet's weights, that path scores above the bin_conv_5x5 path,
    whose convolutions kept their random initial weights (the stem and classifier were
    trained with the 3x3 path)."""
    tf.keras.utils.set_random_seed(0)
    ops = ["bin_conv_3x3", "bin_conv_5x5"]
    active = {cell: [ops] * EDGES for cell in CELLS}
    # alpha never moves
    net = Supernet(2, layers=3, init_channels=8, search_space=SPACE, active_ops=active, seed=0)
    net.compile(
        **default_optimizers(200, learning_rate=0.05),
        architect=Architect(entropy_lambda=0.0, weight_decay=0.0, arch_warmup_epochs=1000),
    )
    net(tf.zeros((1, 8, 8, 1)))
    trained = {c: ["bin_conv_3x3"] * EDGES for c in CELLS}
    untrained = {c: ["bin_conv_5x5"] * EDGES for c in CELLS}
    for cell, table in single_path_alphas(net, trained).items():
        net.alpha(cell).assign(table)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 8, 8, 1)).astype(np.float32)
    x[:64, :4] += 1.5  # class 0: bright top half; class 1: bright bottom half
    x[64:, 4:] += 1.5
    y = np.repeat([0, 1], 64)
    order = rng.permutation(128)
    x, y = x[order], y[order]
    before = [v.numpy().copy() for v in net.weight_variables]
    ds = tf.data.Dataset.from_tensor_slices(((x, y), (x, y))).batch(16)
    net.fit(ds, epochs=4, verbose=0)
    # the 5x5 convolutions received no gradient: their weight is p = 0
    conv5 = [
        v
        for cell in net.cells
        for mixed in cell.mixed_ops
        for key, layers in mixed.op_layers.items()
        if key.startswith("bin_conv_5x5")
        for v in layers.trainable_weights
    ]
    assert conv5
    for v in conv5:
        b = before[[w.ref() for w in net.weight_variables].index(v.ref())]
        np.testing.assert_array_equal(v.numpy(), b)
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
    good, bad = evaluate_architectures(net, [trained, untrained], batches)
    # the random 5x5 path still passes the trained stem's brightness on: 0.85 (oneDNN
    # kernels, AMD Zen 3) to below 0.8 (Eigen kernels); the trained path scores 1.0
    assert good > 0.8 and good > bad + 0.1, (good, bad)


# ----------------------------------------------------------------------------- budget
def test_a_budget_keeps_the_ops_the_cheapest_cell_needs_and_fits_the_final_cell():
    """Scores favour bin_conv_5x5 everywhere, but it costs 10 per edge and the pools 0: a bound
    of 10 above the floor allows one convolution in the whole genotype. The reduction must keep a
    pool on enough edges, and the final cell swaps convolutions out until it fits; without the
    bound the same scores give all-convolution cells."""
    ops = ["max_pool_3x3", "avg_pool_3x3", "bin_conv_5x5"]
    cost = np.zeros((EDGES, len(OPS)))
    cost[:, OPS.index("bin_conv_5x5")] = 10.0
    tables = {cell: cost for cell in CELLS}

    def run(bound):
        red = OperationSpaceReduction(
            OPS, EDGES, ReductionConfig(), seed=0, active_ops=_uniform(ops)
        )
        if bound is not None:
            red.constrain(tables, 100.0, bound)
        while not red.done:
            for cell in CELLS:
                for e, active in enumerate(red.active_ops[cell]):
                    for op in active:  # the convolution scores best, max_pool worst
                        red.scores[cell][e][op] = {"bin_conv_5x5": 3, "avg_pool_3x3": 2}.get(op, 1)
            removed = red.remove_worst()
        return red, removed

    free, _ = run(None)
    assert all(op == "bin_conv_5x5" for cell in CELLS for op, _ in getattr(free.genotype(), cell))
    red, _ = run(110.0)
    genotype = red.genotype()
    convs = sum(op == "bin_conv_5x5" for cell in CELLS for op, _ in getattr(genotype, cell))
    assert convs <= 1 and red.min_cost() <= 110.0
    assert any("kept_for_budget" in r for r in red.removals)
