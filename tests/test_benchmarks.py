"""The evidence benchmarks' model builders (benchmarks/_common.py) measure what they claim."""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import genotype
from bnas_tf.export import model_summary

import json
import sys
from pathlib import Path

import pytest

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

    model = C.build_model(
        {"kind": "zoo", "module": "sota", "model": "QuickNetSmall", "input_size": 32}
    )
    assert model.input_shape == (None, *C.INPUT_SHAPE) and model.output_shape == (
        None,
        C.NUM_CLASSES,
    )
    logits = model(
        np.random.default_rng(0).normal(size=(2, *C.INPUT_SHAPE)).astype("float32")
    ).numpy()
    assert not np.allclose(logits.sum(axis=-1), 1.0)  # the softmax was removed
    direct = larq_zoo.sota.QuickNetSmall(
        input_shape=(32, 32, 1), weights=None, num_classes=C.NUM_CLASSES
    )
    assert model_summary(C.profiled(model))["macs_total"] == model_summary(direct)["macs_total"]


def test_search_speed_rounds_report_median_walls_and_per_round_ratios():
    import search_speed

    def run(wall):
        return {"wall_s": wall}

    rounds = [
        {"plain": run(300.0), "reduction": run(270.0)},
        {"plain": run(340.0), "reduction": run(260.0)},  # a stalled plain run
        {"plain": run(305.0), "reduction": {"error": "timed out"}},
    ]
    summary = search_speed.summarize_rounds(rounds)
    assert summary["median_wall_s"] == {"plain": 305.0, "reduction": 265.0}
    assert summary["ratio_reduction_over_plain"] == pytest.approx(265.0 / 305.0)
    assert summary["round_ratios"] == pytest.approx([0.9, 260.0 / 340.0])  # complete rounds only
    assert summary["results"]["plain"]["wall_s"] == 305.0  # the median run itself
    assert summary["results"]["reduction"]["wall_s"] == 260.0  # lower median of two
    only_errors = search_speed.summarize_rounds([{"plain": {"error": "x"}}])
    assert (
        only_errors["results"]["plain"] == {"error": "x"}
        and only_errors["ratio_reduction_over_plain"] is None
    )


def test_reduction_stage_ratio_counts_one_trace_per_stage_against_one_for_the_plain_search():
    import reduction_stages

    rows = [
        {"first_step_s": 10.0, "median_step_s": 1.0},
        {"first_step_s": 6.0, "median_step_s": 0.5},
    ]
    # reduction: (10 + 9 * 1) + (6 + 9 * 0.5) = 29.5; plain: 10 + 19 * 1 = 29
    assert reduction_stages.ratio_with_first_steps(rows, 10) == pytest.approx(29.5 / 29.0)
    # long stages approach the steps-only ratio (1 + 0.5) / 2
    assert reduction_stages.ratio_with_first_steps(rows, 10**6) == pytest.approx(0.75, abs=1e-4)
    with pytest.raises(ValueError, match="stage_steps=0"):
        reduction_stages.ratio_with_first_steps(rows, 0)


def test_reduction_stages_record_the_timed_network_with_the_search_space_and_k_kept():
    import reduction_stages

    metrics = {
        "config": {
            "search_space": "bnas_darts",
            "binarization": "xnor",
            "partial_channels": 4,
            "layers": 3,
            "init_channels": 8,
            "batch_size": 32,
        }
    }
    own = reduction_stages.timed_network(metrics)
    assert (own["layers"], own["init_channels"], own["batch_size"]) == (
        3,
        8,
        32,
    ) and "image" not in own
    ref = reduction_stages.timed_network(metrics, "reference")
    assert (ref["layers"], ref["init_channels"], ref["batch_size"], ref["image"]) == (
        8,
        16,
        64,
        [32, 32, 3],
    )
    assert (ref["search_space"], ref["binarization"], ref["partial_channels"]) == (
        "bnas_darts",
        "xnor",
        4,
    )


def test_report_marks_each_reduction_measurement_met_or_missed_against_0_6(tmp_path, monkeypatch):
    import json

    import report

    monkeypatch.setattr(C, "RESULTS", tmp_path)
    assert report.reduction_rows() == []  # no results files: no rows
    (tmp_path / "reduction_stages_6400_reference.json").write_text(
        json.dumps({"ratio_steps_only": 0.584})
    )
    (tmp_path / "search_speed_reduction_6400.json").write_text(
        json.dumps({"reduction": {"ratio_reduction_over_plain": 0.87}})
    )
    met, missed = report.reduction_rows("OSR: ")
    assert met.startswith("| OSR: step times") and "| met | 0.58x (" in met
    assert "timed complete small search" in missed and "| **missed** | 0.87x" in missed
    for seed, ratio in ((1, 0.66), (2, 0.69)):  # more seeds: their median decides
        (tmp_path / f"reduction_stages_6400_reference_seed{seed}.json").write_text(
            json.dumps({"ratio_steps_only": ratio})
        )
    kim = report.reduction_rows()[0]
    assert (
        "median over 3 searches' removal sequences | **missed** | 0.66x of 0.58, 0.66, 0.69 ("
        in kim
    )


def test_stall_watch_fires_once_per_period_of_one_still_stack_outside_batches():
    import stall_profile

    watch = stall_profile.StallWatch(after=3.0)
    fired = [t for t in range(12) if watch.observe(float(t), ["save", "fit"], in_batch=False)]
    assert fired == [3, 6, 9]
    moving = stall_profile.StallWatch(after=3.0)
    assert not any(moving.observe(float(t), [f"line {t}"], in_batch=False) for t in range(10))
    tracing = stall_profile.StallWatch(after=3.0)  # a long first step is not a stall
    assert not any(tracing.observe(float(t), ["trace"], in_batch=True) for t in range(10))
    assert not any(
        stall_profile.StallWatch(after=0).observe(float(t), ["x"], False) for t in range(10)
    )


def test_stall_profile_splits_a_fit_into_batches_start_up_and_tear_down():
    import stall_profile

    events = [
        ("fit_call", 0.0),
        ("batch_begin", 1.0),
        ("batch_end", 3.0),
        ("batch_begin", 3.0),
        ("batch_end", 4.0),
        ("train_end", 4.5),
        ("fit_return", 40.0),
        ("fit_call", 41.0),
        ("batch_begin", 41.0),
        ("batch_end", 42.0),
        ("train_end", 42.0),
        ("fit_return", 42.5),
    ]
    samples = [
        (2.0, ["step"]),
        (20.0, ["teardown", "fit"]),
        (30.0, ["teardown", "fit"]),
        (40.5, ["save"]),
    ]
    summary = stall_profile.summarize(events, samples, [(2, 0.2), (0, 0.01)])
    first, second = summary["fits"]
    assert (
        first["batches"] == 2 and first["first_batch_s"] == 2.0 and first["median_batch_s"] == 1.0
    )
    assert first["outside_batches_s"] == pytest.approx(37.0)
    assert first["after_train_end_s"] == pytest.approx(35.5)
    assert second["after_train_end_s"] == pytest.approx(0.5)
    assert summary["gaps_between_fits_s"] == [1.0] and summary["longest_gc_s"] == 0.2
    stacks = summary["top_stacks_outside_batches"]
    assert stacks["fit 0 outside batches"] == [
        ("teardown < fit", 2)
    ]  # the batch sample is left out
    assert stacks["between fits"] == [("save", 1)]


def test_reduction_bounds_derive_op_costs_and_the_ratio_of_each_removal_order():
    import reduction_bounds as rb

    # full step 10 s; removing conv from every edge saves 3 s, pool 1 s, none nothing
    fixed, costs = rb.op_costs(10.0, {"conv": 7.0, "pool": 9.0, "none": 10.0})
    assert rb.order_spaces(["conv", "pool", "none"], "costliest") == [
        ("costliest_1", rb.full_space(["pool", "none"]))
    ]  # stages 1 .. n - 2; stage 0 is the full space
    assert fixed == pytest.approx(6.0) and costs == pytest.approx(
        {"conv": 3.0, "pool": 1.0, "none": 0.0}
    )
    b = rb.bounds(fixed, costs)
    # two stages: the second keeps (pool, none) = 7 s, or (pool, conv) = 10 s,
    # or on average 6 + 2/3 * 4 s
    assert b["costliest_first"] == pytest.approx((10 + 7) / 20)
    assert b["cheapest_first"] == pytest.approx((10 + 10) / 20)
    assert b["random_order"] == pytest.approx((10 + 6 + 8 / 3) / 20)
    assert b["equal_cost_no_fixed"] == pytest.approx(5 / 6)
    # equal costs and no fixed part: a random order gives the op-count bound (n + 2) / (2 n)
    seven = {f"op{i}": 1.0 for i in range(7)}
    assert rb.bounds(0.0, seven)["random_order"] == pytest.approx(9 / 14)
    assert rb.bounds(0.0, seven)["costliest_first"] == pytest.approx(9 / 14)  # every order is alike
    with pytest.raises(ValueError, match="not a permutation"):
        rb.order_steps(fixed, costs, ["conv", "pool"])
    with pytest.raises(ValueError, match="no stages"):
        rb.ratio_of_steps([])


def test_reduction_bounds_predict_a_search_s_own_removal_sequence_from_its_op_shares():
    import reduction_bounds as rb

    ops = ["none", "pool", "conv"]
    full = rb.full_space(ops, edges=2)
    assert rb.without(ops, "pool", edges=2) == {
        "normal": [["none", "conv"]] * 2,
        "reduce": [["none", "conv"]] * 2,
    }
    stage1 = {
        "normal": [["none", "conv"], ["pool", "conv"]],
        "reduce": [["none", "pool"], ["none", "conv"]],
    }
    shares = rb.op_shares(stage1, ops)
    assert shares == {"none": 0.75, "pool": 0.5, "conv": 0.75}
    fixed, costs = 6.0, {"none": 0.0, "pool": 1.0, "conv": 3.0}
    assert rb.stage_step(fixed, costs, rb.op_shares(full, ops)) == pytest.approx(10.0)
    metrics = {
        "op_names": ops,
        "config": {"seed": 4},
        "stages": [{"active_ops": full}, {"active_ops": stage1}],
    }
    measured = {"metrics": "m.json", "stages": [{"median_step_s": 10.2}, {"median_step_s": 9.0}]}
    row = rb.sequence_row(fixed, costs, measured, metrics)
    assert row["seed"] == 4 and row["predicted_step_s"] == pytest.approx([10.0, 6.0 + 0.5 + 2.25])
    assert row["predicted_ratio"] == pytest.approx((10.0 + 8.75) / 20.0)
    assert row["measured_ratio"] == pytest.approx(19.2 / 20.4)
    assert row["removable_share_kept"] == pytest.approx([1.0, 2.75 / 4.0])


def test_report_lists_the_removal_order_bounds_of_each_configuration_measured(
    tmp_path, monkeypatch
):
    import json

    import report

    monkeypatch.setattr(C, "RESULTS", tmp_path)
    assert report.reduction_bound_rows() == []
    (tmp_path / "reduction_bounds_kim.json").write_text(
        json.dumps(
            {
                "full_step_s": 8.0,
                "fixed_s": 1.0,
                "bounds": {"costliest_first": 0.5, "random_order": 0.66, "cheapest_first": 0.81},
                "bounds_timed": {"costliest_first": 0.47},
                "sequences": [
                    {"measured_ratio": 0.58, "predicted_ratio": 0.6},
                    {"measured_ratio": 0.69, "predicted_ratio": 0.7},
                ],
            }
        )
    )
    (row,) = report.reduction_bound_rows()
    assert row.startswith("| Kim et al.'s space (K=1) (`")
    assert row.endswith(
        "| 8.00 | 0.12 | 0.47 (0.50) | (0.66) | (0.81) | 0.58 (0.60), 0.69 (0.70) |"
    )


def test_reduction_bounds_time_every_space_once_per_round_after_building_them_all(monkeypatch):
    import reduction_bounds as rb

    calls = []

    def fake_search_step(setup, active_ops):
        name = active_ops["normal"][0][0]
        calls.append(("build", name))
        return (lambda stream: calls.append(("step", next(stream)))), iter([name] * 10)

    monkeypatch.setattr(rb, "search_step", fake_search_step)
    spaces = [("a", rb.full_space(["a"])), ("b", rb.full_space(["b"]))]
    timings = rb.interleaved_steps(None, spaces, rounds=2)
    assert calls == [
        ("build", "a"),
        ("step", "a"),
        ("build", "b"),
        ("step", "b"),  # first steps
        ("step", "a"),
        ("step", "b"),
        ("step", "a"),
        ("step", "b"),
    ]  # rounds, interleaved
    assert set(timings) == {"a", "b"} and all(len(t["step_s"]) == 2 for t in timings.values())


def test_reduction_bounds_recompute_from_earlier_timings_and_refuse_another_network(
    tmp_path, capsys
):
    import json

    import reduction_bounds as rb

    ops = ["none", "pool", "conv"]
    config = {"search_space": "toy", "binarization": "sign_scale", "partial_channels": 1, "seed": 3}
    metrics = {
        "op_names": ops,
        "config": config,
        "stages": [{"active_ops": rb.full_space(ops)}, {"active_ops": rb.without(ops, "pool")}],
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    net = rb.timed_network(metrics, "reference")
    step = lambda s: {"first_step_s": 30.0, "median_step_s": s, "step_s": [s]}  # noqa: E731
    earlier = {
        "machine": {"nproc": 2},
        "timed_network": net,
        "peak_rss_gb": 5.0,
        "leave_one_out": {
            "full": step(10.0),
            "without_none": step(10.0),
            "without_pool": step(9.0),
            "without_conv": step(7.0),
        },
        "orders": {
            "full": step(10.0),
            "costliest_first_1": step(7.5),
            "cheapest_first_1": step(10.0),
        },
    }
    (tmp_path / "timings.json").write_text(json.dumps(earlier))
    measured = {
        "net": "reference",
        "timed_network": net,
        "metrics": str(tmp_path / "metrics.json"),
        "stages": [{"median_step_s": 10.0}, {"median_step_s": 9.2}],
    }
    (tmp_path / "measured.json").write_text(json.dumps(measured))
    out = tmp_path / "bounds.json"
    args = [
        "--config",
        str(tmp_path / "metrics.json"),
        "--timings",
        str(tmp_path / "timings.json"),
        "--output",
        str(out),
    ]
    assert rb.main(args + ["--measured", str(tmp_path / "measured.json")]) == 0
    result = json.loads(out.read_text())
    assert result["removal_orders"] == {
        "costliest_first": ["conv", "pool", "none"],
        "cheapest_first": ["none", "pool", "conv"],
    }
    assert result["bounds_timed"] == pytest.approx(
        {"costliest_first": 17.5 / 20, "cheapest_first": 1.0}
    )
    assert result["bounds"]["costliest_first"] == pytest.approx(17 / 20)  # the model: 6 + 1 + 0 s
    (seq,) = result["sequences"]
    assert seq["seed"] == 3 and seq["measured_ratio"] == pytest.approx(19.2 / 20)
    assert seq["predicted_ratio"] == pytest.approx(19 / 20)
    assert result["machine"] == {"nproc": 2} and result["peak_rss_gb"] == 5.0
    measured["timed_network"] = dict(net, layers=3)
    (tmp_path / "measured.json").write_text(json.dumps(measured))
    with pytest.raises(SystemExit):
        rb.main(args + ["--measured", str(tmp_path / "measured.json")])
    assert "timed another network" in capsys.readouterr().err


# ------------------------------------------------------------------ the evidence study
import evidence as E  # noqa: E402


def test_kendall_tau_of_agreeing_reversed_and_one_swapped_rankings():
    a = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert E.kendall_tau(a, [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert E.kendall_tau(a, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert E.kendall_tau(a, [2, 1, 3, 4, 5]) == pytest.approx(0.8)  # 9 of 10 pairs agree


def test_calibration_passes_only_when_seeds_agree_and_cells_differ_more_than_seeds():
    cells = [0.70, 0.72, 0.74, 0.76, 0.78]

    def runs(noise):
        return {
            f"c{i}": [{"val_accuracy": a + noise[i]}, {"val_accuracy": a - noise[i]}]
            for i, a in enumerate(cells)
        }

    stable = E.calibration_stats(runs([0.001] * 5))
    assert stable["kendall_tau"] == pytest.approx(1.0) and stable["passes"]
    noisy = E.calibration_stats(runs([0.03, -0.03, 0.03, -0.03, 0.03]))
    assert noisy["seed_std"] > noisy["cell_spread"] / 3 and not noisy["passes"]


def test_bootstrap_interval_excludes_zero_for_a_clear_gain_and_holds_it_for_none():
    better = [[0.80, 0.81], [0.82, 0.80], [0.81, 0.81]]
    worse = [[0.75, 0.76], [0.74, 0.76], [0.77, 0.75], [0.76, 0.74]]
    gain = E.bootstrap_difference(better, worse, reps=2000)
    assert gain["difference"] == pytest.approx(0.8083 - 0.7538, abs=1e-3)
    assert 0 < gain["low"] < gain["difference"] < gain["high"]
    same = E.bootstrap_difference(worse, worse, reps=2000)
    assert same["low"] < 0 < same["high"]


def test_study_cost_is_split_by_the_issue_whose_arm_a_unit_is(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "_root", lambda budget: tmp_path)
    budget = E.BUDGETS["smoke"]
    epyc = {"cpu": "AMD EPYC", "cores": 2, "isa": ["avx2", "avx512f"]}
    units = {
        "train/random_kim_0_e1_s0-ab": {"train_wall_s": 3600, "train_cpu_s": 7200, "machine": epyc},
        "search/kim_s0-cd": {"process_wall_s": 1800, "cpu_s": 3600},
        "search/cp_nas_s0-ef": {"process_wall_s": 900, "cpu_s": 1800},
        "train/random_darts_1_0.5x_e1_s0-01": {"train_wall_s": 360, "train_cpu_s": 720},
        "search/budget_2x_s1-23": {"process_wall_s": 360, "cpu_s": 720},
    }
    for name, unit in units.items():
        path = tmp_path / budget.name / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(unit))
    cost = E.study_cost(budget)
    assert cost["cpu_h"] == pytest.approx(3.9)
    assert {k: round(v["cpu_h"], 2) for k, v in cost["issues"].items()} == {
        "23": 3.0,
        "25": 0.5,
        "26": 0.4,
    }
    assert {k: (v["units"], round(v["cpu_h"], 2)) for k, v in cost["machines"].items()} == {
        "AMD EPYC, 2 cores, avx2 avx512f": (1, 2.0),
        "not recorded": (4, 1.9),
    }


def test_a_cached_unit_records_the_machine_that_computed_it(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "cpu_isa", lambda: ["avx2", "amx_tile"])
    first = C.cached(SMOKE, "train", "unit", {"a": 1}, lambda: {"top1": 0.5}, root=tmp_path)
    assert first["machine"]["isa"] == ["avx2", "amx_tile"] and first["cached"] is False
    assert set(first["machine"]) == {"cpu", "isa", "cores", "git_commit", "date"}
    again = C.cached(
        SMOKE, "train", "unit", {"a": 1}, lambda: pytest.fail("recomputed"), root=tmp_path
    )
    assert again["machine"] == first["machine"] and again["cached"] is True


def test_the_page_names_each_matched_network_outside_the_ops_window_with_its_neighbours():
    def unit(ratio, **extra):
        return {"size": {"init_channels": 9, "ops_ratio": ratio, **extra}}

    arms = {
        "random_darts": {
            "in": unit(1.03, neighbour_ratios={}),
            "out": unit(0.915, neighbour_ratios={"8": 0.746, "10": 1.101}),
        },
        "kim_no_skip": {"base": unit(0.4)},  # not matched: its own width by design
    }
    (line, _) = E.window_lines({"arms": arms})
    assert line.startswith("Outside the 5 % window: out at 9 channels, -8.5 % (other widths ")
    assert "10: +10.1 %" in line and "in at" not in line and "base" not in line
    del arms["random_darts"]["out"]
    assert E.window_lines({"arms": arms})[0].startswith("Every matched network is within 5 %")


def test_the_budget_table_checks_each_search_against_its_budget_and_its_random_cells():
    def unit(ops, target, *accs):
        size = {"init_channels": 9, "ops": ops, "ops_ratio": ops / target}
        return {"size": size, "runs": [{"test_accuracy": a} for a in accs]}

    half = 0.5e6  # 0.5x a DARTS target of 1 M OPs
    payload = {
        "ops_targets": {"darts": 1e6},
        "arms": {
            "budget_0.5x": {"budget_0.5x_s0": unit(0.46e6, half, 0.8, 0.82)},
            "budget_hinge_0.5x": {"budget_hinge_0.5x_s0": unit(0.56e6, half, 0.9)},
            "budget_ceiling_0.5x": {"budget_ceiling_0.5x_s0": unit(0.48e6, half, 0.95)},
            "random_darts_0.5x": {"r0": unit(0.5e6, half, 0.7), "r1": unit(0.5e6, half, 0.74)},
            "budget_2x": {"budget_2x_s0": unit(1.5e6, 2e6, 0.85, 0.86)},
            "random_darts_2x": {"r0": unit(2e6, 2e6, 0.84)},
        },
        "searches": {
            "budget_0.5x_s0": {
                "budget": {"ops": {"ratio": 0.7}},
                "budget_argmax": {"changed_ops": 5, "cost": {"ops": {"ratio": 2.39}}},
            }
        },
        "derived": {"budget_ceiling_0.5x_s0": {"budget": {"ops": {"ratio": 0.6}}}},
        "verdict": [
            {
                "a": "budget_0.5x",
                "b": "random_darts_0.5x",
                "difference": 0.09,
                "low": 0.05,
                "high": 0.12,
            },
            {
                "a": "budget_hinge_0.5x",
                "b": "random_darts_0.5x",
                "difference": 0.18,
                "low": 0.16,
                "high": 0.2,
            },
            # the arms against each other: not the random cells' column
            {
                "a": "budget_hinge_0.5x",
                "b": "budget_0.5x",
                "difference": 0.1,
                "low": 0.05,
                "high": 0.15,
            },
            {
                "a": "budget_2x",
                "b": "random_darts_2x",
                "difference": 0.015,
                "low": -0.01,
                "high": 0.03,
            },
        ],
    }
    lines = E.budget_lines(payload)
    rows = [line for line in lines if line.startswith("| 0.5x") or line.startswith("| 2x")]
    assert rows[0] == (
        "| 0.5x | 0.500 | two_sided, target | budget_0.5x_s0 | -30.0 % | 9 | 0.460 | -8.0 % | "
        "80.00 / 82.00 | 72.00 (2 cells) | +9.00 [+5.00, +12.00] |"
    )
    assert rows[1] == (  # the hinge's arm, against the same random cells
        "| 0.5x | 0.500 | hinge, target | budget_hinge_0.5x_s0 | - | 9 | 0.560 | +12.0 % | "
        "90.00 | 72.00 (2 cells) | +18.00 [+16.00, +20.00] |"
    )
    assert rows[2] == (  # its searches read as a ceiling: the derivation's record, no verdict
        "| 0.5x | 0.500 | hinge, ceiling | budget_ceiling_0.5x_s0 | -40.0 % | 9 | 0.480 | "
        "-4.0 % | 95.00 | 72.00 (2 cells) | - |"
    )
    assert "| budget_2x_s0 | - | 9 | 1.500 | -25.0 % |" in rows[3] and len(rows) == 4  # no 1x
    assert (
        "The argmax genotypes, before the derivation within the budget, at the budget's width: "
        "budget_0.5x_s0 +139.0 % (5 ops re-chosen)." in lines
    )
    assert lines[-2] == (
        "Goal per budget and arm: 0.5x two_sided, target: within 10 %, above the random cells; "
        "0.5x hinge, target: not within 10 %, above the random cells; "
        "0.5x hinge, ceiling: within 10 %, not shown above the random cells; "
        "2x two_sided, target: not within 10 %, not shown above the random cells."
    )
    assert E.budget_lines({**payload, "arms": {}}) == []


def test_the_ablations_are_read_against_the_paper_s_direction():
    def row(b, difference, low, high, searches=3):
        return {
            "a": "kim",
            "b": b,
            "difference": difference,
            "low": low,
            "high": high,
            "units_a": 3,
            "units_b": searches,
        }

    def trained(*means):
        return {f"kim_s{i}": {"runs": [{"test_accuracy": m}]} for i, m in enumerate(means)}

    payload = {
        "verdict": [
            row("kim_no_skip", 0.05, 0.01, 0.09),
            row("kim_no_zeroise", 0.004, -0.01, 0.02),
            row("kim_no_diversity", -0.03, -0.05, -0.01, searches=1),
            row("random_kim", 0.03, 0.01, 0.06),  # not an ablation
        ],
        "arms": {"kim": trained(0.8206, 0.8349, 0.83)},
    }
    lines = E.ablation_lines(payload)
    rows = [line for line in lines if line.startswith("| no ")]
    assert rows == [
        "| no inter-cell skip | +31.47 | +5.00 [+1.00, +9.00] | 3 vs 3 | agrees |",
        "| no Zeroise | +3.23 | +0.40 [-1.00, +2.00] | 3 vs 3 | same direction, not resolved |",
        "| no diversity (entropy term off) | +1.75 | -3.00 [-5.00, -1.00] | 3 vs 1 | "
        "opposite direction (one search) |",
    ]
    assert any("3 searches show here: their means span 82.06 to 83.49 %" in x for x in lines)
    payload["verdict"][2]["units_b"] = 3
    assert not any("searched once" in x for x in E.ablation_lines(payload))
    assert E.ablation_lines({"verdict": payload["verdict"][3:]}) == []


@pytest.mark.parametrize("name", sorted(E.FP_NAS_CELLS))
def test_full_precision_nas_cells_are_valid_binarized_darts_space_genotypes(name):
    g = genotype.Genotype.from_dict(E._genotype(E.FP_NAS_CELLS[name], "bnas_darts"))
    assert g.search_space == "bnas_darts" and len(g.normal) == len(g.reduce) == 8
    assert not any(op.startswith(("sep_", "dil_")) for op, _ in g.normal + g.reduce)


def test_matched_channels_land_near_the_ops_target(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "CACHE", tmp_path)
    budget = E.BUDGETS["smoke"]
    kim = E._template("kim")
    base = E.network_spec(budget, genotype.BNAS_A.to_dict(), kim)
    target = E.profile(budget, "base", base)["ops"]
    sized = E.matched_channels(budget, "bnas_a", base, target)
    assert sized["init_channels"] == budget.init_channels and sized["ops_ratio"] == 1.0
    # a cell of separable convolutions: its own OPs at 12 channels are found at 12, and the
    # BNAS-A target is met up to one channel's step
    darts = E.network_spec(budget, E._genotype(E.FP_NAS_CELLS["pc_darts"], "bnas_darts"), kim)
    at_12 = E.profile(budget, "pc_darts_c12", {**darts, "init_channels": 12})["ops"]
    assert E.matched_channels(budget, "pc_darts", darts, at_12)["init_channels"] == 12
    assert abs(E.matched_channels(budget, "pc_darts", darts, target)["ops_ratio"] - 1) < 0.15


def test_a_bmes_arm_is_profiled_at_its_searched_width(tmp_path, monkeypatch):
    """A BMES group genotype keeps its searched width (its group counts divide it) and is
    counted as larq counts the network it builds."""
    from bnas_tf.mobilenet import GroupGenotype, group_network_ops

    monkeypatch.setattr(C, "CACHE", tmp_path)
    budget = E.BUDGETS["smoke"]
    g = GroupGenotype((2, 4, 1, 8, 16, 2), width=16)
    template = E._template("darts", binarization="sign_scale")
    sized = E.size(budget, "bmes_s0", g.to_dict(), template, {"darts": 2e5, "kim": 1e6})
    ops = group_network_ops(g, C.INPUT_SHAPE, C.NUM_CLASSES)["ops"]
    assert sized["init_channels"] == 16 and sized["ops"] == ops
    assert sized["ops_ratio"] == pytest.approx(ops / 2e5)
    assert E.network_spec(budget, g.to_dict(), template, 32)["genotype"]["width"] == 16


def test_a_budgeted_arm_keeps_its_searched_width_and_is_measured_against_its_budget(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(C, "CACHE", tmp_path)
    budget = E.BUDGETS["smoke"]
    g = E._genotype(E.FP_NAS_CELLS["pc_darts"], "bnas_darts")
    fixed = E._template("darts", sizing="fixed", channels=6, target=1e5)
    sized = E.size(budget, "budget_0.5x_s0", g, fixed, {"darts": 4e5, "kim": 1e6})
    at_6 = E.profile(budget, "x", {**E.network_spec(budget, g, fixed), "init_channels": 6})
    assert sized["init_channels"] == 6 and sized["ops_ratio"] == pytest.approx(at_6["ops"] / 1e5)
    # a random cell at another budget is matched to that budget, not to its family's target
    matched = E._template("darts", target=at_6["ops"])
    assert E.size(budget, "r", g, matched, {"darts": 4e5, "kim": 1e6})["init_channels"] == 6


def test_budgeted_arms_train_each_search_at_its_fitted_width_one_budget_at_a_time(monkeypatch):
    """Each budget's searches under each penalty (``fit_width``, the fit's rule in the key), the
    hinge's searches read as a ceiling, and then its random cells, budget by budget; a
    network is the genotype ``--fit_width`` derived at the width it found, or the search's at
    the budget's width when it found none."""
    from bnas_tf.sampling import random_genotype

    budget = E.BUDGETS["smoke"]
    found = random_genotype(0, "bnas_darts").to_dict()
    refit = random_genotype(1, "bnas_darts").to_dict()
    ceiling = random_genotype(2, "bnas_darts").to_dict()
    calls, ceilings = [], []

    def fake_search(b, search, seed, fresh=False, *, extra=None, label=None, rule=None):
        calls.append((label, extra, rule))
        fit = {"budget_0.5x": {"init_channels": 3, "genotype": refit}, "budget_2x": None}
        return {"genotype": found, "budget_fit": fit.get(label)}

    def fake_ceiling(b, label, seed, extra, record, fresh=False):
        ceilings.append((label, seed, extra["budget_penalty"], record))
        return {"genotype": ceiling, "budget_fit": {"init_channels": 7, "genotype": ceiling}}

    monkeypatch.setattr(E, "run_search", fake_search)
    monkeypatch.setattr(E, "ceiling_fit", fake_ceiling)
    monkeypatch.setattr(E, "budget_widths", lambda b, t: {0.5: 5, 1.0: 8, 2.0: 12})
    arms = list(E.budget_arms(budget, {"darts": 1e6, "kim": 1e7}))
    assert [a for a, _ in arms] == [
        "budget_0.5x", "budget_hinge_0.5x", "budget_ceiling_0.5x", "random_darts_0.5x",
        "budget_1x", "budget_hinge_1x", "budget_ceiling_1x",
        "budget_2x", "budget_hinge_2x", "budget_ceiling_2x", "random_darts_2x",
    ]  # fmt: skip
    widths = {a: [t.get("channels") for _, t, _ in units.values()] for a, units in arms}
    assert widths["budget_0.5x"] == [3] and widths["budget_1x"] == [8]
    assert widths["budget_2x"] == [12]  # no fit: the budget's width
    genotypes = {a: [g for g, _, _ in units.values()] for a, units in arms}
    assert genotypes["budget_0.5x"] == [refit] and genotypes["budget_2x"] == [found]
    label, extra, rule = calls[0]
    assert label == "budget_0.5x" and extra["ops_budget"] == 0.5e6 and rule == E.BUDGET_RULE
    assert extra["budget_penalty"] == "two_sided" and extra["fit_width"] is True
    assert extra["final_init_channels"] == 5
    hinge = [(label, extra) for label, extra, _ in calls if label == "budget_hinge_0.5x"]
    assert hinge and hinge[0][1] == {**extra, "budget_penalty": "hinge"}  # the penalty only
    assert widths["budget_hinge_0.5x"] == [5]  # its own search's record, not the two-sided's
    # the ceiling reads the hinge's searches, one unit per search, at its own fitted width
    assert ceilings[0] == ("budget_hinge_0.5x", 0, "hinge", {"genotype": found, "budget_fit": None})
    assert list(dict(arms)["budget_ceiling_1x"]) == ["budget_ceiling_1x_s0"]
    assert widths["budget_ceiling_1x"] == [7] and genotypes["budget_ceiling_1x"] == [ceiling]
    random_targets = {t["target"] for _, t, _ in dict(arms)["random_darts_2x"].values()}
    assert random_targets == {2e6}
    from bnas_tf.search.budget import TARGET_WINDOW

    assert E.BUDGET_WINDOW == TARGET_WINDOW  # the page's goal is the window the fit lands in


def test_a_search_s_rule_is_part_of_its_unit_s_key(tmp_path, monkeypatch):
    """A search whose result depends on a rule its settings do not name (the fit's) is searched
    again when the rule changes, and read from the cache when it does not."""
    from bnas_tf.sampling import random_genotype

    monkeypatch.setattr(C, "CACHE", tmp_path)
    monkeypatch.setattr(E, "dev_dataset", lambda budget: "npz:/not-read")
    budget = E.BUDGETS["smoke"]
    calls = []

    def fake_child(config, out_dir, name, timeout=None):
        calls.append(name)
        return {"genotype": random_genotype(0, "bnas_darts").to_dict()}

    monkeypatch.setattr(C, "search_in_child", fake_child)
    for rule in (None, {"fit": "a"}, {"fit": "a"}, {"fit": "b"}):
        E.run_search(budget, "darts", 0, label="budget_1x", rule=rule)
    assert calls == ["budget_1x_s0"] * 3


def test_progress_reads_the_cached_units_and_computes_none(tmp_path, monkeypatch):
    """``--phase=progress``: a cached search is read, a missing one is left out (``Missing``),
    and nothing is computed."""
    from bnas_tf.sampling import random_genotype

    import dataclasses

    monkeypatch.setattr(C, "CACHE", tmp_path)
    monkeypatch.setattr(E, "dev_dataset", lambda budget: "npz:/not-read")
    budget = dataclasses.replace(E.BUDGETS["smoke"], kim_search_seeds=2)
    found = random_genotype(0, "bnas_kim").to_dict()
    monkeypatch.setattr(C, "search_in_child", lambda *args, **kwargs: {"genotype": found})
    E.run_search(budget, "kim", 1)  # seed 1 is cached, seed 0 is not

    def must_not_run(*args, **kwargs):
        raise AssertionError("the progress phase computed a unit")

    monkeypatch.setattr(C, "search_in_child", must_not_run)
    monkeypatch.setattr(E, "_CACHED_ONLY", True)
    units = E.searched(budget, "kim")
    assert list(units) == ["kim_s1"] and units["kim_s1"][0] == found
    with pytest.raises(E.Missing, match="search kim_s0"):
        E.run_search(budget, "kim", 0)
