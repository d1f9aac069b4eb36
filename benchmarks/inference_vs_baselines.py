"""Inference: LCE binary TFLite latency of the searched networks vs the larq-zoo baselines.

The networks of ``accuracy_vs_memory.py`` (same budget: the searched genotypes from the shared
search cache, one random cell, the full-precision twin and the larq-zoo models that build within the
budget) are converted by [`bnas_tf.export.convert_lce`][bnas_tf.export.convert_lce] (binary
convolutions become ``LceBconv2d``) and run by ``larq_compute_engine.testing.Interpreter`` (1
thread, default kernels), one 28x28x1 image per call, timed in interleaved rounds by
``inference_latency.time_variants`` so that load from other processes hits all models alike. Latency
does not depend on the weights, so the models are not trained here. On x86-64 LCE runs portable C++
kernels; its optimized kernels are for 64-bit ARM.

    python benchmarks/inference_vs_baselines.py --budget=cpu-small
"""

from __future__ import annotations

import argparse
import sys
import types

import _common as C


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_budget_args(parser)
    args = parser.parse_args(argv)
    budget = C.BUDGETS[args.budget]
    out = C.results_path("inference_vs_baselines", budget, args.output)

    import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
    from bnas_tf import export
    from bnas_tf.sampling import random_genotype

    import inference_latency as il
    import numpy as np
    import tensorflow as tf

    specs: dict[str, dict] = {}
    for name in ("kim", "chen"):
        search = C.run_search_unit(budget, name, args.fresh)
        specs[f"searched_{name}"] = C.family_spec(budget, name, search["genotype"])
    specs["full_precision_kim"] = {**specs["searched_kim"], "full_precision": True}
    specs["random_0"] = C.genotype_spec(
        budget, random_genotype(0, "bnas_kim").to_dict(), source="random:0"
    )
    left_out = []
    for module, model in C.ZOO_MODELS:
        spec = C.zoo_spec(budget, module, model)
        if spec["status"] == "ok":
            specs[f"{model}@{spec['input_size']}"] = spec
        else:
            left_out.append({"name": model, "why": spec["why"]})

    entries, runners = {}, {}
    for name, spec in specs.items():
        C.log(f"[{budget.name}] converting {name}")
        tf.keras.utils.set_random_seed(0)
        model = C.build_model(spec)
        with C.Meter() as meter:
            flatbuffer = export.convert_lce(model, strict=False)
        ops = export.count_ops(flatbuffer)
        entries[name] = {
            "profile": export.model_summary(C.profiled(model)),
            "flatbuffer_bytes": len(flatbuffer),
            "lce_bconv2d": ops.get("LceBconv2d", 0),
            "ops": ops,
            "conversion_s": meter.wall_s,
        }
        runners[name] = il.lce_runner(flatbuffer, 1)
    images = np.random.default_rng(1).random((1, 1, *C.INPUT_SHAPE), dtype=np.float32)
    rounds = 5
    timing = types.SimpleNamespace(
        warmup=10, rounds=rounds, runs_per_round=max(budget.latency_runs // rounds, 1)
    )
    with C.Meter() as meter:
        stats = il.time_variants(runners, timing, images[0])
    for name, s in stats.items():
        entries[name]["latency"] = s
    payload = {
        "study": "inference_vs_baselines",
        "budget": C.budget_dict(budget),
        "machine": C.machine_info(),
        "command": " ".join(["benchmarks/inference_vs_baselines.py", *(argv or sys.argv[1:])]),
        "method": {
            "runtime": "larq_compute_engine.testing.Interpreter, 1 thread, default kernels",
            "warmup": timing.warmup,
            "rounds": timing.rounds,
            "runs_per_round": timing.runs_per_round,
            "others_cpu_share": meter.others_cpu_share,
        },
        "models": entries,
        "left_out": left_out,
    }
    C.write_results(out, payload)
    plot(payload, out.with_suffix(".png"))
    for name, e in entries.items():
        print(
            f"{name:24s} median {e['latency']['median_ms']:8.3f} ms  p90 "
            f"{e['latency']['p90_ms']:8.3f} ms  flatbuffer {e['flatbuffer_bytes'] / 1024:8.1f} "
            f"KiB  LceBconv2d {e['lce_bconv2d']:3d}"
        )
    return payload


def plot(payload: dict, path) -> None:
    """Median latency (bars, p90 as error) per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = payload["models"]
    names = sorted(models, key=lambda n: models[n]["latency"]["median_ms"])
    med = [models[n]["latency"]["median_ms"] for n in names]
    p90 = [models[n]["latency"]["p90_ms"] - models[n]["latency"]["median_ms"] for n in names]
    colors = [
        "tab:red"
        if n.startswith("searched")
        else "tab:green"
        if n.startswith("full")
        else "tab:gray"
        if n.startswith("random")
        else "tab:blue"
        for n in names
    ]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    bars = ax.barh(names, med, xerr=[[0] * len(p90), p90], color=colors, capsize=2)
    ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=6)
    ax.set_xlabel("LCE single-image latency, ms (median; whisker: p90), 1 thread, x86-64")
    ax.set_title(f"budget {payload['budget']['name']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
