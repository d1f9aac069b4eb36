"""The search interface (issue 25): settings declared once, ``--method``, and the two methods
added on it: CP-NAS (child-parent reduction) and BMES (evolution over group counts)."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf import genotype as genotype_lib
from bnas_tf import settings
from bnas_tf.export import model_summary
from bnas_tf.mobilenet import GroupGenotype, build_group_network, group_network_ops
from bnas_tf.quantizers import FULL_PRECISION
from bnas_tf.search.architect import Architect
from bnas_tf.search.bmes import BMESConfig, Evolution, GroupSupernet, _MaskedGroupConv, fitness
from bnas_tf.search.child_parent import (
    ChildArchitect,
    ChildParentReduction,
    kernel_reconstruction_loss,
)
from bnas_tf.search.driver import METHOD_NAMES, SearchConfig
from bnas_tf.search.methods import METHODS, run_method
from bnas_tf.search.reduction import ReductionConfig
from bnas_tf.search.reduction_search import run_reduction_search

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from supernet_helpers import make_supernet

CELLS = ("normal", "reduce")


# ----------------------------------------------------------------------------- settings
def test_every_search_flag_is_declared_once_with_its_help():
    from bnas_tf.apps import search as search_app

    values = flags.FlagValues()
    search_app.define_flags(values)
    fields = dict((settings.flag_name(f), f) for _, f in settings.flat_fields(SearchConfig))
    # The architect's settings: SearchConfig's fields are Architect's, help and check included.
    arch = {f.name: f for f in dataclasses.fields(Architect)}
    for name, field in arch.items():
        assert fields[name].metadata == field.metadata and fields[name].default == field.default
        assert values[name].help.startswith(field.metadata["help"])
    # The nested methods' settings are flags of their own names, with their help.
    assert values["reduction_temperature"].help.startswith("Temperature of the softmax")
    assert values["cp_beta"].default == 2.0 and values["bmes_groups"].default == "1,2,4,8,16"
    assert all(values[name].help for name in fields)


def test_from_flat_routes_nested_settings_and_refuses_unknown_ones():
    config = SearchConfig.from_flat(
        {"method": "cp_nas", "stage_epochs": 3, "reduction_temperature": 0.5, "cp_beta": 1.0}
    )
    assert config.reduction == ReductionConfig(stage_epochs=3, temperature=0.5)
    assert config.cp_nas.beta_p == 1.0 and config.bmes == BMESConfig()
    with pytest.raises(settings.SettingError, match="operation_space_reduction is not a search"):
        SearchConfig.from_flat({"operation_space_reduction": True})


@pytest.mark.parametrize(
    "changes, field, problem",
    [
        (dict(method="evolution"), "method", "must be one of darts, reduction, cp_nas, bmes"),
        (dict(entropy_tau=0.0), "entropy_tau", "must be positive"),
        (dict(reduction=ReductionConfig(stage_epochs=0)), "stage_epochs", "positive integer"),
        (dict(method="bmes", memory_budget=64.0), "memory_budget", "applies to the cell searches"),
        (dict(fit_width=True), "fit_width", "needs a budget (--ops_budget or --memory_budget)"),
        (dict(budget_penalty="log_barrier"), "budget_penalty", "must be one of hinge, two_sided"),
        (
            dict(method="reduction", ops_budget=1e5, budget_penalty="two_sided"),
            "budget_penalty",
            "--method=darts only",
        ),
        (dict(train_portion=1.0), "train_portion", "must be in (0, 1)"),
    ],
)
def test_library_errors_name_the_field_and_programs_add_the_dashes(changes, field, problem):
    from bnas_tf.apps import common

    with pytest.raises(settings.SettingError) as caught:
        dataclasses.replace(SearchConfig(), **changes).validate()
    assert caught.value.field == field and problem in str(caught.value)
    assert not str(caught.value).startswith("--")
    assert str(common.usage_error(caught.value)).startswith(f"--{field} ")


def test_every_method_is_registered_with_a_citation():
    assert tuple(METHODS) == METHOD_NAMES == ("darts", "reduction", "cp_nas", "bmes")
    assert all(m.citation and m.name == name for name, m in METHODS.items())


# ----------------------------------------------------------------------------- CP-NAS
def _samples(ops_per_edge):
    """One sample per op, every edge using op i in sample i (two edges, two cell types)."""
    return [{cell: [op, op] for cell in CELLS} for op in ops_per_edge]


def test_cp_nas_removes_first_the_op_that_both_child_and_parent_score_low():
    ops = ["a", "b", "c"]
    state = ChildParentReduction(ops, 2, ReductionConfig(temperature=0.05), beta_p=2.0)
    smaller = state.o_smaller({cell: np.zeros((2, 3)) for cell in CELLS})
    assert smaller == {cell: [ops, ops] for cell in CELLS}  # every active op is sampled
    child = [0.60, 0.50, 0.40]
    parent = [0.70, 0.80, 0.45]  # c: low for both; b: low child, high parent
    z = state.indicator(child, parent)
    np.testing.assert_allclose(z, [0.8, 1.1, 0.5])
    state.update_scores(smaller, _samples(ops), list(z))
    removed = state.remove_worst()
    assert {r["op"] for r in removed} == {"c"} and len(removed) == 4


def test_cp_nas_with_beta_p_zero_scores_by_the_child_alone():
    """beta_P = 0: z is the child's accuracy, and the parent cannot change what is removed; with
    beta_P = 2 the same accuracies remove another op."""
    ops = ["a", "b", "c"]
    child = [0.60, 0.50, 0.55]
    parent = [0.65, 0.90, 0.30]  # b: worst child, best parent
    removed = {}
    for beta in (0.0, 2.0):
        state = ChildParentReduction(ops, 2, ReductionConfig(temperature=0.05), beta_p=beta)
        smaller = state.o_smaller({cell: np.zeros((2, 3)) for cell in CELLS})
        z = state.indicator(child, parent)
        if beta == 0.0:
            np.testing.assert_allclose(z, child)
        state.update_scores(smaller, _samples(ops), list(z))
        removed[beta] = {r["op"] for r in state.remove_worst()}
    assert removed[0.0] == {"b"} and removed[2.0] == {"c"}


def test_child_architect_adds_the_kernel_reconstruction_term_to_the_weight_step():
    """With SGD(1) the child's weight step moves each binary kernel by the gradient of
    ``L_task + w * L_H``; the plain architect's step by that of ``L_task``."""
    x = tf.random.stateless_normal((4, 8, 8, 1), (1, 2))
    y = tf.constant([0, 1, 2, 3], tf.int64)
    moves = {}
    for weight in (0.0, 0.5):
        tf.keras.utils.set_random_seed(0)
        net = make_supernet(10, layers=1, init_channels=4, steps=1, multiplier=1, seed=0)
        architect = ChildArchitect(weight_decay=0.0, grad_clip=None, recon_weight=weight)
        net.compile(
            optimizer=tf.keras.optimizers.SGD(1.0),
            arch_optimizer=tf.keras.optimizers.SGD(0.0),
            architect=architect,
        )
        net(x[:1])
        net.build_optimizers()
        variables = net.weight_variables
        before = [v.numpy().copy() for v in variables]
        with tf.GradientTape() as tape:
            recon = kernel_reconstruction_loss(net)
        g_recon = tape.gradient(recon, variables)
        architect.weight_step(net, x, y)
        moves[weight] = [b - v.numpy() for b, v in zip(before, variables)]
    kernels = [i for i, g in enumerate(g_recon) if g is not None]
    assert kernels and float(recon) > 0
    for i in kernels:
        np.testing.assert_allclose(
            moves[0.5][i] - moves[0.0][i], 0.5 * g_recon[i].numpy(), rtol=1e-3, atol=1e-6
        )


def test_cp_nas_search_trains_a_full_precision_parent_and_resumes(tmp_path, tiny_idx_dir):
    """2 stages (3 ops per edge); killed after stage 0 is saved, then resumed to the end."""
    config = SearchConfig(
        method="cp_nas",
        data_dir=str(tiny_idx_dir),
        limit=64,
        batch_size=8,
        layers=2,
        init_channels=4,
        entropy_lambda=0.0,
        search_space="bnas_kim",
        verbose=0,
        reduction=ReductionConfig(stage_epochs=1, samples_per_op=1, eval_batches=1),
    )
    ops = ["max_pool_3x3", "avg_pool_3x3", "bin_conv_3x3"]
    start = {cell: [ops] * 14 for cell in CELLS}

    class Interrupt(Exception):
        pass

    def killing_log(line):
        if line.startswith("stage 0:") and "ops removed" in line:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_reduction_search(config, tmp_path, active_ops=start, log=killing_log)
    stage0 = json.loads((tmp_path / "reduction_state.json").read_text())["stages"][0]
    result = run_reduction_search(config, tmp_path, active_ops=start, resume=True, log=print)
    assert result.stages[0] == stage0 and len(result.stages) == 2
    # Each sample was scored by child and parent; its credit is z = 2 (A_P - A_C) + A_C.
    np.testing.assert_allclose(
        stage0["indicators"],
        [2 * (p - c) + c for c, p in zip(stage0["accuracies"], stage0["parent_accuracies"])],
    )
    assert len(stage0["samples"]) == 3 and "loss" in stage0["parent_train"]
    assert stage0["parent_accuracies"] != stage0["accuracies"]  # two networks scored them
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["method"] == "cp_nas"
    assert genotype_lib.get(str(tmp_path / "genotype.json")) == result.genotype


def test_cp_nas_child_is_binary_with_the_reconstruction_loss_and_its_parent_full_precision():
    from bnas_tf.search.reduction_search import build_stage_supernet

    config = SearchConfig(method="cp_nas", layers=1, init_channels=4, search_space="bnas_kim")
    active = {cell: [["max_pool_3x3", "bin_conv_3x3"]] * 14 for cell in CELLS}
    child = build_stage_supernet(config, 10, (8, 8, 1), 1, active, "model")
    parent = build_stage_supernet(config, 10, (8, 8, 1), 1, active, "parent")

    def quantized(net):
        return [m for m in net.submodules if getattr(m, "kernel_quantizer", None) is not None]

    assert quantized(child) and not quantized(parent)
    assert isinstance(child.architect, ChildArchitect) and child.architect.recon_weight == 1e-3
    assert type(parent.architect) is Architect


# ----------------------------------------------------------------------------- BMES
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_masked_group_conv_computes_a_group_convolution(groups):
    tf.keras.utils.set_random_seed(groups)
    layer = _MaskedGroupConv(4, 1, [1, 2, 4], FULL_PRECISION)
    x = tf.random.stateless_normal((2, 5, 5, 4), (3, groups))
    layer.build(x.shape)
    out = layer(x, [1, 2, 4].index(groups)).numpy()
    size = 4 // groups
    kernel = layer.kernel.numpy()
    expected = np.concatenate(
        [
            tf.nn.conv2d(
                x[..., i * size : (i + 1) * size],
                kernel[:, :, i * size : (i + 1) * size, i * size : (i + 1) * size],
                1,
                "SAME",
            ).numpy()
            for i in range(groups)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [(1, 1, 1, 1, 1, 1), (16, 1, 1, 1, 1, 1), (2, 4, 1, 8, 16, 2)])
def test_group_network_ops_count_what_larq_counts(groups):
    genotype = GroupGenotype(groups, width=16)
    model = build_group_network(genotype, num_classes=10, input_shape=(28, 28, 1))
    counted = group_network_ops(genotype, (28, 28, 1), 10)
    summary = model_summary(model)
    assert (counted["macs_1bit"], counted["macs_32bit"]) == (
        summary["macs_1bit"],
        summary["macs_32bit"],
    )


def test_group_genotype_round_trips_and_refuses_bad_groups(tmp_path):
    genotype = GroupGenotype((2, 4, 1, 8, 16, 2), width=16)
    path = genotype.save(tmp_path / "genotype.json")
    assert genotype_lib.get(str(path)) == genotype
    assert genotype_lib.get(json.dumps(genotype.to_dict())) == genotype
    with pytest.raises(ValueError, match="block 1: 3 groups do not divide its 16 input channels"):
        GroupGenotype((1, 3, 1, 1, 1, 1), width=16)
    with pytest.raises(ValueError, match="5 group counts for 6 blocks"):
        GroupGenotype((1, 1, 1, 1, 1), width=16)


def _evolution(budget=None, seed=0, **changes):
    config = BMESConfig(
        population=8, generations=4, parents=3, mutations=3, crossovers=3, **changes
    )
    choices = [[1, 2, 4, 8]] * 5

    def ops(groups):
        return float(sum(64 / g for g in groups))

    return Evolution(choices, config, ops=ops, ops_budget=budget, seed=seed), ops


def test_evolution_never_scores_an_architecture_over_the_budget_and_finds_the_best():
    """Score: the more groups on the first block and the fewer on the others, the better; under
    a budget the evolution must trade them."""
    evolution, ops = _evolution(budget=120.0)

    def score(groups):
        assert ops(groups) <= 120.0, "an architecture above the budget was evaluated"
        return groups[0] / 8 - sum(groups[1:]) / 100

    for _ in range(6):
        evolution.step(score)
    best = evolution.best()
    assert ops(best) <= 120.0
    ranked = sorted(evolution.scores, key=evolution.fitness, reverse=True)
    assert best == ranked[0]
    assert evolution.fitness(best) == pytest.approx(
        evolution.scores[best] * (ops(best) / 120.0) ** -0.07
    )
    # later generations breed from the parents: the best improves on the random first one
    assert evolution.history[-1]["best_fitness"] >= evolution.history[0]["best_fitness"]


def test_evolution_state_round_trips_and_refuses_an_impossible_budget():
    evolution, _ = _evolution()
    evolution.step(lambda g: sum(g) / 40)
    again, _ = _evolution(seed=7)
    again.load_state_dict(json.loads(json.dumps(evolution.state_dict())))
    assert again.next_population() == evolution.next_population()
    with pytest.raises(settings.SettingError, match="below the cheapest architecture"):
        _evolution(budget=10.0)
    assert fitness(0.5, 100.0, None) == 0.5


def test_bmes_search_resumes_and_its_genotype_trains_and_reloads(tmp_path, tiny_idx_dir):
    from bnas_tf.training import TrainConfig, load_trained, train_network

    config = SearchConfig(
        method="bmes",
        data_dir=str(tiny_idx_dir),
        limit=64,
        batch_size=8,
        verbose=0,
        ops_budget=2e5,
        bmes=BMESConfig(
            width=8,
            supernet_epochs=1,
            population=4,
            generations=2,
            parents=2,
            mutations=2,
            crossovers=2,
            calibration_batches=1,
            candidate_batches=1,
        ),
    )

    class Interrupt(Exception):
        pass

    def killing_log(line):
        if line.startswith("generation 0"):
            raise Interrupt

    with pytest.raises(Interrupt):
        run_method(config, tmp_path / "killed", log=killing_log)
    resumed = run_method(config, tmp_path / "killed", resume=True, log=print)
    straight = run_method(config, tmp_path / "straight", log=print)
    assert resumed.genotype == straight.genotype and resumed.accuracy == straight.accuracy
    assert resumed.ops <= 2e5 and len(resumed.history) == 2
    path = tmp_path / "straight" / "genotype.json"
    train = TrainConfig(
        genotype=str(path),
        data_dir=str(tiny_idx_dir),
        limit=32,
        limit_test=16,
        epochs=1,
        batch_size=8,
        verbose=0,
    )
    metrics = train_network(train, tmp_path / "train")
    model, spec = load_trained(tmp_path / "train")
    assert spec["genotype"] == straight.genotype.to_dict() and metrics["test"]["examples"] == 16
    assert any("_group_conv" in layer.name for layer in model.layers)


def test_group_supernet_draws_one_choice_per_block_per_step():
    net = GroupSupernet(10, width=8, group_set=(1, 2, 4, 8))
    assert net.choices == [[1, 2, 4, 8]] * 6
    draws = np.stack([net.sample_choice().numpy() for _ in range(200)])
    assert draws.shape == (200, 6) and draws.min() == 0 and draws.max() == 3
    with pytest.raises(ValueError, match="block 0: 3 groups is not one of its choices"):
        net.set_genotype((3, 1, 1, 1, 1, 1))


def test_candidate_scoring_reestimates_batch_norm_statistics_and_restores_them():
    from bnas_tf.search.bmes import _Scorer

    net = GroupSupernet(10, width=8, group_set=(1, 2, 4, 8))
    x = tf.random.stateless_normal((16, 28, 28, 1), (5, 6))
    net(x[:1])
    saved = [v.numpy().copy() for v in net.non_trainable_variables]
    scorer = _Scorer(net, x, [(x[:8], np.arange(8) % 10)])
    accuracy = scorer((2, 4, 1, 8, 8, 2))
    assert 0.0 <= accuracy <= 1.0
    stem_conv, stem_bn = net.stem.layers
    conv_out = stem_conv(x).numpy()
    # the statistics are those of the calibration batch, not a moving average
    np.testing.assert_allclose(stem_bn.moving_mean.numpy(), conv_out.mean((0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(
        stem_bn.moving_variance.numpy(), conv_out.var((0, 1, 2)), rtol=1e-3, atol=1e-5
    )
    scorer.restore()
    for v, s in zip(net.non_trainable_variables, saved):
        np.testing.assert_array_equal(v.numpy(), s)
    assert stem_bn.momentum == 0.99  # training keeps its momentum
