"""Step time of each stage's supernet of an operation space reduction search, side by side.

``search_speed.py --part reduction`` times a whole reduction search, tracing and
sample evaluation included. This separates the part the reduction is meant to cut:
for every stage of a finished search (its ``metrics.json``), the supernet restricted
to that stage's active ops is built in this one process and its search step (alpha
step + weight step) timed on the same fixed batches, after its first (tracing) call.

The sum over stages of ``steps_per_epoch x stage_epochs x step`` against the same
sum for the first stage's (full-space) supernet is the wall-time ratio a reduction
search would reach if building, tracing and evaluating samples cost nothing:

```python
ratio_steps_only = sum_k step_k / (n_stages * step_0)
```

Usage (after ``search_speed.py --part reduction``, which keeps the search's folder):

```python
.venv/bin/python benchmarks/reduction_stages.py \
    --metrics /tmp/search_speed_reduction_XXXX/metrics.json \
    --output benchmarks/results/reduction_stages.json
# the same stages' op spaces in the reference configuration, where steps dominate:
.venv/bin/python benchmarks/reduction_stages.py --net reference --steps 3 \
    --metrics benchmarks/results/search_speed_reduction_6400_metrics.json \
    --output benchmarks/results/reduction_stages_6400_reference.json
```
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_speed import REFERENCE_NET, TINY_SEARCH, _peak_rss_gb, machine_info, random_pairs  # noqa: E402

# The search settings that shape the timed supernets (recorded with the results).
_NETWORK_FIELDS = (
    "search_space",
    "binarization",
    "partial_channels",
    "edge_normalization",
    "inter_cell_skip",
    "entropy_lambda",
    "layers",
    "init_channels",
    "batch_size",
)


def timed_network(metrics: dict, network: str = "search") -> dict:
    """The supernet settings ``time_stages`` times: the search's own, or with
    ``network="reference"`` its op spaces at the reference size (8 cells, 16 channels,
    batch 64, 32x32x3); the search space, binarization and K stay the search's."""
    net = {k: metrics["config"].get(k) for k in _NETWORK_FIELDS}
    if network == "reference":
        net.update(
            layers=REFERENCE_NET["layers"],
            init_channels=REFERENCE_NET["init_channels"],
            batch_size=REFERENCE_NET["batch"],
            image=list(REFERENCE_NET["image"]),
        )
    return net


def stage_setup(metrics: dict, network: str = "search") -> tuple:
    """``(config, num_classes, input_shape, batches)`` for timing ``metrics``' op spaces.

    ``network="search"``: the searched network on the search's own batches; ``"reference"``:
    the same op spaces (the cells' active ops do not depend on the cell count) in the
    reference configuration (8 cells, 16 channels, batch 64, 32x32x3, random batches).
    """
    import bnas_tf  # noqa: F401  (before tensorflow)
    from bnas_tf import data as data_lib
    from bnas_tf.search.driver import SearchConfig

    import dataclasses

    config = SearchConfig(
        **{
            k: v
            for k, v in metrics["config"].items()
            if k in SearchConfig.__dataclass_fields__
            and not isinstance(v, dict)  # the nested method configs keep their defaults
        }
    )
    if network == "reference":
        net = timed_network(metrics, network)
        config = dataclasses.replace(
            config,
            layers=net["layers"],
            init_channels=net["init_channels"],
            batch_size=net["batch_size"],
        )
        input_shape, num_classes = tuple(net["image"]), REFERENCE_NET["num_classes"]
        return (
            config,
            num_classes,
            input_shape,
            random_pairs(input_shape, config.batch_size, num_classes, 2),
        )
    info = data_lib.info(config.dataset)
    pairs = data_lib.search_splits(config.dataset, seed=config.seed, **config.split_args())
    return config, info.num_classes, info.input_shape, list(pairs.take(4))


def search_step(setup: tuple, active_ops: dict):
    """The search step (alpha step + weight step) of the supernet restricted to ``active_ops``,
    and a batch stream for it: ``step(stream)`` runs one step."""
    from bnas_tf.search.driver import build_supernet

    import itertools

    config, num_classes, input_shape, batches = setup
    net = build_supernet(config, num_classes, input_shape, 100, active_ops=active_ops)
    net.build_optimizers()
    return net.make_train_function(), itertools.cycle(batches)


def timed_call(step, stream) -> float:
    """Wall seconds of one ``step(stream)``."""
    t = time.perf_counter()
    step(stream)
    return time.perf_counter() - t


def time_stages(metrics: dict, steps: int, network: str = "search") -> list[dict]:
    """Per stage of ``metrics``: first step and median step of its supernet
    (``network`` as in ``stage_setup``)."""
    setup = stage_setup(metrics, network)
    rows = []
    for stage in metrics["stages"]:
        step, stream = search_step(setup, stage["active_ops"])
        first = timed_call(step, stream)
        times = [timed_call(step, stream) for _ in range(steps)]
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
        print(
            f"stage {stage['stage']}: {active} ops, first {first:.1f} s, "
            f"{rows[-1]['median_step_s']:.3f} s/step",
            flush=True,
        )
    return rows


def ratio_of_steps(steps: Sequence[float]) -> float:
    """Reduction / plain wall time for equal stages, steps only: ``sum_k T_k / (len * T_0)``."""
    if not steps:
        raise ValueError("ratio_of_steps: no stages.")
    return sum(steps) / (len(steps) * steps[0])


def ratio_with_first_steps(rows: list[dict], stage_steps: int) -> float:
    """Reduction / plain wall time over the steps and each supernet's first (tracing) step:

    ```python
    sum_k (first_k + (N - 1) step_k) / (first_0 + (n N - 1) step_0)
    ```

    for ``n`` stages of ``N`` steps each; the plain search traces once. Building the
    supernets and evaluating the samples (1-2.5 s per stage each) are left out.
    """
    if stage_steps < 1:
        raise ValueError(f"stage_steps={stage_steps}: a stage has at least one step.")
    reduction = sum(r["first_step_s"] + (stage_steps - 1) * r["median_step_s"] for r in rows)
    base = rows[0]
    plain = base["first_step_s"] + (len(rows) * stage_steps - 1) * base["median_step_s"]
    return reduction / plain


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--metrics", type=Path, required=True, help="metrics.json of a reduction search"
    )
    parser.add_argument(
        "--steps", type=int, default=8, help="timed steps per stage after the first"
    )
    parser.add_argument(
        "--net",
        choices=("search", "reference"),
        default="search",
        help="time the searched network (default) or each stage's op space in the reference "
        "configuration (8 cells x 16 channels, batch 64, 32x32x3)",
    )
    parser.add_argument(
        "--stage-steps",
        type=int,
        nargs="+",
        default=None,
        help="also report the ratio with each supernet's first step for stages of these many "
        "steps (default: the search's steps_per_epoch x stage_epochs)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent / "results/reduction_stages.json",
    )
    args = parser.parse_args(argv)
    if not args.metrics.is_file():
        parser.error(
            f"--metrics {args.metrics}: no such file (run search_speed.py --part reduction first)"
        )
    metrics = json.loads(args.metrics.read_text())
    if "stages" not in metrics:
        parser.error(
            f"--metrics {args.metrics}: not the metrics.json of a reduction search (no 'stages')"
        )
    rows = time_stages(metrics, args.steps, args.net)
    base = rows[0]["median_step_s"]
    payload = {
        "machine": machine_info(),
        "search": {k: metrics["config"].get(k) for k in TINY_SEARCH},
        "net": args.net,
        "timed_network": timed_network(metrics, args.net),
        "metrics": str(args.metrics),
        "stages": rows,
        "step_vs_first_stage": [r["median_step_s"] / base for r in rows],
        "ratio_steps_only": ratio_of_steps([r["median_step_s"] for r in rows]),
        "first_step_s_sum": sum(r["first_step_s"] for r in rows),
        "ratio_with_first_steps": {
            str(n): ratio_with_first_steps(rows, n)
            for n in args.stage_steps
            or [metrics["steps_per_epoch"] * metrics.get("reduction", {}).get("stage_epochs", 1)]
        },
        "peak_rss_gb": _peak_rss_gb(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(
        f"steps-only ratio reduction / plain: {payload['ratio_steps_only']:.2f}; "
        f"first steps (tracing) {payload['first_step_s_sum']:.1f} s in all; with them: "
        + ", ".join(
            f"{x:.2f} at {n} steps per stage" for n, x in payload["ratio_with_first_steps"].items()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
