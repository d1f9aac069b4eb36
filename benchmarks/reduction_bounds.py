"""What operation space reduction can save at all: per-op step costs and removal-order bounds.

Removal saves what the removed ops cost, so the wall-time ratio of a reduction search
against the plain one depends on *which* ops its scores remove first. This benchmark
times, at the reference size (8 cells x 16 channels, batch 64, 32x32x3) and in one
process, the search step of the full op space and of every space with one op removed
from all edges (leave-one-out). All supernets are built first, then timed one step each
in turn for several rounds, so that a drifting machine shifts them alike. The difference
is that op's cost summed over the edges, and what remains is the part no removal
touches:

```python
c_o = T_full - T_{-o}            F = T_full - sum_o c_o
```

(stem, edge preprocessing, classifier, optimizer, with K > 1 the bypassed channels).
With ``n`` ops per edge and ``n - 1`` stages of equal length, stage ``k`` keeping
``n - k`` ops on every edge, a removal order reaches:

```python
ratio = sum_k T_k / ((n - 1) T_0),   T_k = F + sum_o c_o * (share of edges keeping o at stage k)
```

- **costliest first** on every edge: the lowest ratio a removal rule can reach (with
  costs pooled over the edges, as here);
- **cheapest first**: the highest;
- **uniform random order** per edge: ``E[T_k] = F + (n - k) / n * sum_o c_o``; with
  ``F = 0`` this is ``(n + 2) / (2 n)`` (0.64 for Kim et al.'s 7 ops, 0.63 for the
  DARTS space's 8): above 0.6 before any fixed cost;
- **the searches' own removal sequences** (a reduction search's ``metrics.json``):
  predicted from each stage's op shares with this additive model, next to the ratio
  ``reduction_stages.py`` measured for the same stages.

The two extreme orders are also *timed*, not only modelled: a second round of supernets,
one per stage of each order (the same ops on every edge), again interleaved with the full
space. Model and timing side by side check the additive model.

Usage (on 2 cores about 20 minutes for Kim et al.'s space, 35 for Chen et al.'s K=4):

```python
.venv/bin/python benchmarks/reduction_bounds.py \
    --config benchmarks/results/search_reduction_6400_seed1_metrics.json \
    --measured benchmarks/results/reduction_stages_6400_reference*.json \
    --output benchmarks/results/reduction_bounds_kim.json
```
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bnas_tf  # noqa: E402,F401  (Keras 2 before TensorFlow)
from bnas_tf.genotype import CELL_TYPES  # noqa: E402
from bnas_tf.search.cell import num_edges  # noqa: E402

from reduction_stages import ratio_of_steps, search_step, stage_setup, timed_call, timed_network  # noqa: E402
from search_speed import _peak_rss_gb, machine_info  # noqa: E402

EDGES_PER_CELL = num_edges()


def full_space(op_names: Sequence[str], edges: int = EDGES_PER_CELL) -> dict[str, list[list[str]]]:
    """Every op on every edge of both cell types."""
    return {cell: [list(op_names)] * edges for cell in CELL_TYPES}


def without(
    op_names: Sequence[str], op: str, edges: int = EDGES_PER_CELL
) -> dict[str, list[list[str]]]:
    """The full space with ``op`` removed from every edge."""
    return full_space([o for o in op_names if o != op], edges)


def op_costs(
    full_step: float, leave_one_out: Mapping[str, float]
) -> tuple[float, dict[str, float]]:
    """``(F, {op: c_op})`` from the full space's step and each leave-one-out step.

    ``c_op = full_step - leave_one_out[op]``; ``F = full_step - sum(c_op)``. A cost near
    zero may come out slightly negative (timing noise); it is kept as measured.
    """
    costs = {op: full_step - step for op, step in leave_one_out.items()}
    return full_step - sum(costs.values()), costs


def op_shares(
    active_ops: Mapping[str, Sequence[Sequence[str]]], op_names: Sequence[str]
) -> dict[str, float]:
    """Share of all edges (both cell types) on which each op is still active."""
    edges = [set(ops) for cell in CELL_TYPES for ops in active_ops[cell]]
    return {op: sum(op in ops for ops in edges) / len(edges) for op in op_names}


def stage_step(fixed: float, costs: Mapping[str, float], shares: Mapping[str, float]) -> float:
    """Additive model of one stage's step: ``F + sum_o c_o * share_o``."""
    return fixed + sum(costs[op] * shares.get(op, 0.0) for op in costs)


def order_steps(fixed: float, costs: Mapping[str, float], order: Sequence[str]) -> list[float]:
    """Stage steps when every edge removes its ops in ``order`` (the last op is kept)."""
    if sorted(order) != sorted(costs):
        raise ValueError(f"order {list(order)} is not a permutation of the ops {sorted(costs)}.")
    return [stage_step(fixed, costs, {op: 1.0 for op in order[k:]}) for k in range(len(order) - 1)]


def random_order_steps(fixed: float, costs: Mapping[str, float]) -> list[float]:
    """Expected stage steps when each edge removes its ops in a uniformly random order:
    an op survives to stage ``k`` on ``(n - k) / n`` of the edges."""
    n = len(costs)
    return [stage_step(fixed, costs, {op: (n - k) / n for op in costs}) for k in range(n - 1)]


def bounds(fixed: float, costs: Mapping[str, float]) -> dict[str, float]:
    """Ratios of the costliest-first, random and cheapest-first removal orders, and the
    op-count bound ``(n + 2) / (2 n)`` of equal-cost ops without fixed cost."""
    by_cost = sorted(costs, key=costs.get)
    n = len(costs)
    return {
        "costliest_first": ratio_of_steps(order_steps(fixed, costs, by_cost[::-1])),
        "random_order": ratio_of_steps(random_order_steps(fixed, costs)),
        "cheapest_first": ratio_of_steps(order_steps(fixed, costs, by_cost)),
        "equal_cost_no_fixed": (n + 2) / (2 * n),
    }


def sequence_row(fixed: float, costs: Mapping[str, float], measured: dict, metrics: dict) -> dict:
    """A search's own removal sequence: the model's ratio next to the measured one."""
    ops = metrics["op_names"]
    shares = [op_shares(stage["active_ops"], ops) for stage in metrics["stages"]]
    predicted = [stage_step(fixed, costs, s) for s in shares]
    measured_steps = [r["median_step_s"] for r in measured["stages"]]
    return {
        "seed": metrics["config"].get("seed"),
        "metrics": measured["metrics"],
        "measured_ratio": ratio_of_steps(measured_steps),
        "predicted_ratio": ratio_of_steps(predicted),
        "predicted_step_s": predicted,
        "measured_step_s": measured_steps,
        # the share of the plain step's removable cost each stage still spends
        "removable_share_kept": [
            (p - fixed) / (predicted[0] - fixed) if predicted[0] != fixed else None
            for p in predicted
        ],
    }


def interleaved_steps(
    setup: tuple, spaces: Sequence[tuple[str, dict]], rounds: int
) -> dict[str, dict]:
    """Build every named op space's search step (and run its first, tracing step), then
    time one step of each in turn for ``rounds`` rounds."""
    built = {}
    for name, active_ops in spaces:
        step, stream = search_step(setup, active_ops)
        built[name] = (step, stream, timed_call(step, stream))
        print(f"{name}: first step {built[name][2]:.1f} s", flush=True)
    times: dict[str, list[float]] = {name: [] for name in built}
    for r in range(rounds):
        for name, (step, stream, _) in built.items():
            times[name].append(timed_call(step, stream))
        print(f"round {r}: " + ", ".join(f"{n} {t[-1]:.2f}" for n, t in times.items()), flush=True)
    return {
        name: {
            "first_step_s": built[name][2],
            "median_step_s": statistics.median(times[name]),
            "step_s": times[name],
        }
        for name in built
    }


def order_spaces(order: Sequence[str], tag: str) -> list[tuple[str, dict]]:
    """The op spaces of stages ``1 .. n - 2`` when every edge removes its ops in ``order``
    (stage 0 is the full space)."""
    return [(f"{tag}_{k}", full_space(order[k:])) for k in range(1, len(order) - 1)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        help="metrics.json of a reduction search: its search space, binarization and K are timed",
    )
    parser.add_argument(
        "--measured",
        type=Path,
        nargs="*",
        default=[],
        help="reduction_stages.py --net reference results to check the model against",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="timed steps per op space after the first, one per round over all spaces",
    )
    parser.add_argument(
        "--timings",
        type=Path,
        default=None,
        help="take the op spaces' timings from this earlier output instead of timing them "
        "(to check the model against more --measured files)",
    )
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    for path in [args.config, *args.measured, *([args.timings] if args.timings else [])]:
        if not path.is_file():
            parser.error(f"{path}: no such file")
    metrics = json.loads(args.config.read_text())
    if "op_names" not in metrics:
        parser.error(
            f"--config {args.config}: not the metrics.json of a reduction search (no 'op_names')"
        )
    ops = metrics["op_names"]
    measured = [json.loads(p.read_text()) for p in args.measured]
    network = timed_network(metrics, "reference")
    for path, m in zip(args.measured, measured):
        if m.get("net") != "reference" or m["timed_network"] != network:
            parser.error(
                f"--measured {path}: timed another network than --config's at the reference size"
            )

    leave_one_out = [("full", full_space(ops))] + [
        (f"without_{op}", without(ops, op)) for op in ops
    ]
    if args.timings:
        earlier = json.loads(args.timings.read_text())
        if earlier.get("timed_network") != network:
            parser.error(
                f"--timings {args.timings}: timed another network than --config's at the "
                "reference size"
            )
        if list(earlier["leave_one_out"]) != [name for name, _ in leave_one_out]:
            parser.error(f"--timings {args.timings}: its op spaces are not --config's ({ops})")
        loo, ordered, machine = earlier["leave_one_out"], earlier["orders"], earlier["machine"]
    else:
        setup = stage_setup(metrics, "reference")
        loo = interleaved_steps(setup, leave_one_out, args.rounds)
    full = loo["full"]["median_step_s"]
    fixed, costs = op_costs(full, {op: loo[f"without_{op}"]["median_step_s"] for op in ops})
    by_cost = sorted(costs, key=costs.get)
    orders = {"costliest_first": by_cost[::-1], "cheapest_first": by_cost}
    if not args.timings:
        gc.collect()  # the leave-one-out supernets hold about 1 GB each (K=4): free them first
        spaces = [("full", full_space(ops))] + [
            s for tag, o in orders.items() for s in order_spaces(o, tag)
        ]
        ordered = interleaved_steps(setup, spaces, args.rounds)
    timed_orders = {
        tag: ratio_of_steps(
            [ordered["full"]["median_step_s"]]
            + [ordered[name]["median_step_s"] for name, _ in order_spaces(o, tag)]
        )
        for tag, o in orders.items()
    }
    sequences = []
    for m in measured:
        seq_metrics = json.loads(Path(m["metrics"]).read_text())
        sequences.append(sequence_row(fixed, costs, m, seq_metrics))
    payload = {
        "machine": machine if args.timings else machine_info(),
        "timed_network": network,
        "config": str(args.config),
        "rounds": args.rounds,
        "leave_one_out": loo,
        "orders": ordered,
        "full_step_s": full,
        "fixed_s": fixed,
        "op_cost_s": costs,
        "removal_orders": orders,
        "bounds": bounds(fixed, costs),
        "bounds_timed": timed_orders,
        "sequences": sequences,
        "peak_rss_gb": earlier["peak_rss_gb"] if args.timings else _peak_rss_gb(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    b = payload["bounds"]
    print(
        f"full step {full:.3f} s, fixed {fixed:.3f} s; costs "
        + ", ".join(f"{op} {c:.3f}" for op, c in costs.items())
    )
    print(
        f"ratio: costliest first {b['costliest_first']:.3f}, random order "
        f"{b['random_order']:.3f}, cheapest first {b['cheapest_first']:.3f}; equal cost, no fixed "
        f"part {b['equal_cost_no_fixed']:.3f}"
    )
    print("timed: " + ", ".join(f"{tag} {r:.3f}" for tag, r in timed_orders.items()))
    for s in sequences:
        print(
            f"seed {s['seed']}: measured {s['measured_ratio']:.3f}, model "
            f"{s['predicted_ratio']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
