"""Step time of each stage's supernet of an operation space reduction search, side by side.

``search_speed.py --part reduction`` times a whole reduction search, tracing and
sample evaluation included. This separates the part the reduction is meant to cut:
for every stage of a finished search (its ``metrics.json``), the supernet restricted
to that stage's active ops is built in this one process and its search step (alpha
step + weight step) timed on the same fixed batches, after its first (tracing) call.

The sum over stages of ``steps_per_epoch x stage_epochs x step`` against the same
sum for the first stage's (full-space) supernet is the wall-time ratio a reduction
search would reach if building, tracing and evaluating samples cost nothing::

    ratio_steps_only = sum_k step_k / (n_stages * step_0)

Usage (after ``search_speed.py --part reduction``, which keeps the search's folder)::

    .venv/bin/python benchmarks/reduction_stages.py \
        --metrics /tmp/search_speed_reduction_XXXX/metrics.json \
        --output benchmarks/results/reduction_stages.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_speed import TINY_SEARCH, _peak_rss_gb, machine_info  # noqa: E402


def time_stages(metrics: dict, steps: int) -> list[dict]:
    import bnas_tf  # noqa: F401  (before tensorflow)
    from bnas_tf import data as data_lib
    from bnas_tf.search.driver import SearchConfig, build_supernet

    config = SearchConfig(**{k: v for k, v in metrics["config"].items() if k in SearchConfig.__dataclass_fields__})
    info = data_lib.info(config.dataset)
    pairs = data_lib.search_splits(
        config.dataset,
        seed=config.seed,
        data_dir=config.data_dir,
        batch_size=config.batch_size,
        portion=config.train_portion,
        limit=config.limit,
    )
    batches = list(pairs.take(4))
    rows = []
    for stage in metrics["stages"]:
        net = build_supernet(config, info.num_classes, info.input_shape, 100, active_ops=stage["active_ops"])
        net.build_optimizers()
        step = net.make_train_function()
        stream = iter(batches * (steps + 1))
        t = time.perf_counter()
        step(stream)
        first = time.perf_counter() - t
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            step(stream)
            times.append(time.perf_counter() - t)
        active = sum(len(ops) for cell in ("normal", "reduce") for ops in stage["active_ops"][cell])
        rows.append(
            {
                "stage": stage["stage"],
                "active_ops": active,
                "first_step_s": first,
                "median_step_s": statistics.median(times),
                "step_s": times,
                "search_train_time_s": stage.get("train_time_s"),
                "search_wall_time_s": stage.get("wall_time_s"),
            }
        )
        print(f"stage {stage['stage']}: {active} ops, first {first:.1f} s, {rows[-1]['median_step_s']:.3f} s/step", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=Path, required=True, help="metrics.json of a reduction search")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per stage after the first")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results/reduction_stages.json")
    args = parser.parse_args(argv)
    if not args.metrics.is_file():
        parser.error(f"--metrics {args.metrics}: no such file (run search_speed.py --part reduction first)")
    metrics = json.loads(args.metrics.read_text())
    if "stages" not in metrics:
        parser.error(f"--metrics {args.metrics}: not the metrics.json of a reduction search (no 'stages')")
    rows = time_stages(metrics, args.steps)
    base = rows[0]["median_step_s"]
    payload = {
        "machine": machine_info(),
        "search": {k: metrics["config"].get(k) for k in TINY_SEARCH},
        "metrics": str(args.metrics),
        "stages": rows,
        "step_vs_first_stage": [r["median_step_s"] / base for r in rows],
        "ratio_steps_only": sum(r["median_step_s"] for r in rows) / (len(rows) * base),
        "first_step_s_sum": sum(r["first_step_s"] for r in rows),
        "peak_rss_gb": _peak_rss_gb(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"steps-only ratio reduction / plain: {payload['ratio_steps_only']:.2f}; "
          f"first steps (tracing) {payload['first_step_s_sum']:.1f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
