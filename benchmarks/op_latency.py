"""Latency of every op of both search spaces as a single-layer LCE flatbuffer (issue 26's table).

Each op is built alone as the final network builds it (``bnas_tf.search.cost.op_model``: Kim et
al.'s space with sign + scale, Chen et al.'s DARTS space with XNOR) at the five positions of the
demo's final network (Fashion-MNIST 28x28, 16 channels: normal cells at 28x28 x 16, 14x14 x 32
and 7x7 x 64, the stride-2 edges of the two reduction cells from 28x28 x 32 and 14x14 x 64),
converted by ``larq_compute_engine`` (``bnas_tf.export.convert_lce``) and run by
``lce.testing.Interpreter`` with one thread, next to its OPs (binary MACs / 64 + float MACs) and
memory from the cost tables. All flatbuffers are converted first; then they are timed in
interleaved rounds (every op once per round, ``--rounds`` x ``--runs_per_round`` calls), so that
load from other processes hits them alike. An empty model (input -> output) gives the
interpreter's per-call overhead, subtracted in the ``net`` column.

**Caveat.** LCE's optimized binary kernels are hand-written for 64-bit ARM; on x86-64 it runs
portable C++ kernels. These latencies rank the ops on this machine's CPU, not on a phone or a
Raspberry Pi, where the binary convolutions are relatively faster. The OPs column is the
hardware-independent cost the budgets use.

    python benchmarks/op_latency.py            # writes benchmarks/results/op_latency.{json,md}
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import export
from bnas_tf.ops import SEARCH_SPACES
from bnas_tf.search.cost import op_cost, op_model

import argparse
import json
from pathlib import Path

import _common as C
import numpy as np
import tensorflow as tf
from evidence import kendall_tau
from inference_latency import lce_runner, time_variants

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "op_latency.json"
#: (input size, channels, stride) of the demo's final network's edges (28x28, 16 channels).
POSITIONS = ((28, 16, 1), (28, 32, 2), (14, 32, 1), (14, 64, 2), (7, 64, 1))
BINARIZATION = {"bnas_kim": "sign_scale", "bnas_darts": "xnor"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs_per_round", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def runner(flatbuffer: bytes, shape: tuple[int, ...]):
    """``inference_latency.lce_runner`` (one thread) on a fixed random input of ``shape``; it
    ignores the image ``time_variants`` hands every runner (the ops' inputs differ in shape)."""
    run = lce_runner(flatbuffer, 1)
    image = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    return lambda _image: run(image)


def units() -> list[dict]:
    """Every (space, op, position) to time; ``none`` costs nothing and is left out."""
    rows = []
    for space, ops in SEARCH_SPACES.items():
        for op in ops:
            if op == "none":
                continue
            for size, channels, stride in POSITIONS:
                rows.append(dict(space=space, op=op, size=size, channels=channels, stride=stride))
    return rows


def markdown(payload: dict) -> str:
    m = payload["machine"]
    lines = [
        "# Op latency as single-layer LCE flatbuffers",
        "",
        f"`benchmarks/op_latency.py`, {m['cpu']}, {m['date']}, "
        f"git {str(m['git_commit'])[:10]}; LCE {m['versions']['larq-compute-engine']}, 1 thread, "
        f"median of {payload['calls']} calls per op. Interpreter overhead (empty model): "
        f"{payload['overhead_us']:.1f} us, subtracted in *net*. "
        "LCE's fast binary kernels are for 64-bit ARM; x86-64 runs its portable ones.",
        "",
        "| space | op | input | stride | OPs (k) | memory KiB | us | net us | net ns per OP |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        per_op = f"{1e3 * r['net_us'] / r['ops']:.2f}" if r["ops"] else "-"
        lines.append(
            f"| {r['space']} | {r['op']} | {r['size']}x{r['size']}x{r['channels']} | "
            f"{r['stride']} | {r['ops'] / 1e3:.1f} | {r['memory_kib']:.2f} | "
            f"{r['median_us']:.1f} | {r['net_us']:.1f} | {per_op} |"
        )
    lines += [
        "",
        "Kendall tau between OPs and net latency, per position (all ops of both spaces):",
        "",
    ]
    for key, tau in payload["tau_by_position"].items():
        lines.append(f"- {key}: {tau:.2f}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    rows = units()
    runners = {}
    inputs = tf.keras.Input((8, 8, 4))
    empty = tf.keras.Model(inputs, tf.keras.layers.Activation("linear")(inputs))
    runners["empty"] = runner(export.convert_lce(empty), (8, 8, 4))
    for r in rows:
        model = op_model(r["op"], r["channels"], r["size"], r["stride"], BINARIZATION[r["space"]])
        r.update(op_cost(r["op"], r["channels"], r["size"], r["stride"], BINARIZATION[r["space"]]))
        flatbuffer = export.convert_lce(model)
        r["binary_kernels"] = export.count_ops(flatbuffer).get("LceBconv2d", 0)
        key = f"{r['space']}/{r['op']}/{r['size']}/{r['channels']}/{r['stride']}"
        runners[key] = runner(flatbuffer, (r["size"], r["size"], r["channels"]))
        print(f"converted {key}", flush=True)
    stats = time_variants(runners, args, None)  # interleaved rounds, medians over all calls
    overhead = 1e3 * stats.pop("empty")["median_ms"]
    for r, timing in zip(rows, stats.values()):
        r["median_us"] = 1e3 * timing["median_ms"]
        r["p90_us"] = 1e3 * timing["p90_ms"]
        r["net_us"] = max(r["median_us"] - overhead, 0.0)
    tau = {}
    for size, channels, stride in POSITIONS:
        at = [
            r for r in rows if (r["size"], r["channels"], r["stride"]) == (size, channels, stride)
        ]
        tau[f"{size}x{size}x{channels} stride {stride}"] = kendall_tau(
            [r["ops"] for r in at], [r["net_us"] for r in at]
        )
    payload = {
        "machine": C.machine_info(),
        "calls": args.rounds * args.runs_per_round,
        "overhead_us": overhead,
        "rows": rows,
        "tau_by_position": tau,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=1) + "\n")
    args.output.with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))
    return payload


if __name__ == "__main__":
    main()
