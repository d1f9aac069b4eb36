"""Single-image inference latency of one BNAS network in five runtimes.

For each genotype (BNAS-A and latest_cell by default; 8 cells x 16 channels, 28x28x1,
10 classes) the same network is timed as

* ``keras_float``: the latent-weight model, i.e. the same architecture built with no
  quantizers and the binary model's latent weights (a full-precision network of the
  same size; ``larq.context.quantized_scope`` only changes what ``get_weights`` returns,
  not the forward pass, so a rebuilt model is the way to switch quantizers off);
* ``keras_binary``: the fake-quantized larq model (float ops computing sign(x) * q(W));
* ``tflite_float`` / ``tflite_binary``: those two models through the stock
  ``tf.lite.TFLiteConverter``, run by ``tf.lite.Interpreter`` (XNNPACK delegate on by
  default), 1 and 2 threads for the float one;
* ``lce``: the Larq Compute Engine flatbuffer (``LceBconv2d`` binary kernels), run by
  ``larq_compute_engine.testing.Interpreter`` with its three binary-convolution kernels:
  the default (ruy-based im2col BGEMM; 1 and 2 threads), ``use_reference_bconv`` and
  ``use_indirect_bgemm`` (1 and 2 threads, and 1 thread plus the XNNPACK delegate for
  the float ops). LCE's hand-written assembly kernels are for 64-bit ARM; on x86-64 its
  kernels are portable C++, so these numbers do not show what LCE does on a phone or a
  Raspberry Pi.

Keras is called through a ``tf.function`` with a fixed ``[1, 28, 28, 1]`` signature (no
``predict`` overhead) and TensorFlow's default thread pools. Latency = one call with a
NumPy image in and the logits back as NumPy, measured with ``time.perf_counter``. The
variants are timed in interleaved rounds (round-robin, ``--rounds`` x ``--runs_per_round``
calls each) after ``--warmup`` calls, so that load from other processes on a shared
machine hits all of them alike; medians and 90th percentiles are over all rounds.

    # writes benchmarks/results/inference_latency.json
    python benchmarks/inference_latency.py
    python benchmarks/inference_latency.py --layers=20 --init_channels=36 --output=/tmp/lat.json

Prints a markdown table; ``speedup`` columns are the Keras median divided by the variant's.
"""

from __future__ import annotations

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import export, genotype, network
from bnas_tf.quantizers import Binarization

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import larq as lq
import larq_compute_engine as lce
import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "inference_latency.json"
FLOAT = Binarization("float", None, None, "no quantizers: the latent-weight model")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--genotypes", default="bnas_a,latest_cell", help="Comma-separated published genotypes."
    )
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--init_channels", type=int, default=16)
    parser.add_argument("--binarization", default="sign_scale")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs_per_round", type=int, default=40)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    return parser.parse_args(argv)


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "usable_cores": cores,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "larq": getattr(lq, "__version__", "?"),
        "larq_compute_engine": lce.__version__,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()
        or "default (all cores)",
    }


def build_models(name: str, args) -> tuple[tf.keras.Model, tf.keras.Model]:
    """The binary model and its latent-weight float twin (same layers, same weights)."""
    kwargs = dict(
        layers=args.layers,
        init_channels=args.init_channels,
        num_classes=10,
        input_shape=(28, 28, 1),
    )
    tf.keras.utils.set_random_seed(0)
    binary = network.build_network(
        genotype.PUBLISHED[name], binarization=args.binarization, **kwargs
    )
    # Non-trivial BN statistics, as after training (the latency does not depend on them).
    rng = np.random.default_rng(0)
    for layer in binary.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
    floating = network.build_network(genotype.PUBLISHED[name], binarization=FLOAT, **kwargs)
    for layer in floating.layers:
        if layer.weights:
            layer.set_weights(binary.get_layer(layer.name).get_weights()[: len(layer.weights)])
    return binary, floating


def keras_runner(model):
    fn = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([1, 28, 28, 1], tf.float32)],
    )

    def run(image):
        return fn(image).numpy()

    return run


def tflite_runner(flatbuffer: bytes, threads: int):
    interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=threads)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def run(image):
        interpreter.set_tensor(input_index, image)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return run


def lce_runner(flatbuffer: bytes, threads: int, **options):
    interpreter = lce.testing.Interpreter(flatbuffer, num_threads=threads, **options)
    wrapper = interpreter.interpreter  # one predict() call per image, without the generator

    def run(image):
        return wrapper.predict([image])[0]

    return run


def time_variants(runners: dict, args, image) -> dict:
    for run in runners.values():
        for _ in range(args.warmup):
            run(image)
    samples = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            for _ in range(args.runs_per_round):
                start = time.perf_counter()
                run(image)
                samples[name].append(time.perf_counter() - start)
    stats = {}
    for name, values in samples.items():
        ms = np.asarray(values) * 1e3
        stats[name] = {
            "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()),
            "min_ms": float(ms.min()),
            "n": int(ms.size),
        }
    return stats


def bench_genotype(name: str, args) -> dict:
    binary, floating = build_models(name, args)
    started = time.time()
    lce_fb = export.convert_lce(binary, strict=True)
    lce_s = time.time() - started
    started = time.time()
    tflite_float_fb = export.convert(floating, "tflite")
    tflite_binary_fb = export.convert(binary, "tflite")
    tflite_s = time.time() - started
    profile = export.model_summary(binary)

    runners = {
        "keras_float": keras_runner(floating),
        "keras_binary": keras_runner(binary),
        "tflite_float_1t": tflite_runner(tflite_float_fb, 1),
        "tflite_float_2t": tflite_runner(tflite_float_fb, 2),
        "tflite_binary_1t": tflite_runner(tflite_binary_fb, 1),
        "lce_1t": lce_runner(lce_fb, 1),
        "lce_2t": lce_runner(lce_fb, 2),
        "lce_reference_1t": lce_runner(lce_fb, 1, use_reference_bconv=True),
        "lce_indirect_1t": lce_runner(lce_fb, 1, use_indirect_bgemm=True),
        "lce_indirect_2t": lce_runner(lce_fb, 2, use_indirect_bgemm=True),
        "lce_indirect_xnnpack_1t": lce_runner(lce_fb, 1, use_indirect_bgemm=True, use_xnnpack=True),
    }
    # Sanity: every runtime computes its model (binary runtimes vs the fake-quantized Keras).
    images = np.random.default_rng(1).random((8, 1, 28, 28, 1), dtype=np.float32)
    checks = {}
    for variant, run in runners.items():
        reference = runners["keras_float" if "float" in variant else "keras_binary"]
        got = np.stack([run(image) for image in images])
        want = np.stack([reference(image) for image in images])
        checks[variant] = {
            "max_abs_logit_diff": float(np.abs(got - want).max()),
            "argmax_agreement": f"{int((got.argmax(-1) == want.argmax(-1)).sum())}/{len(images)}",
        }

    stats = time_variants(runners, args, images[0])
    keras = stats["keras_binary"]["median_ms"]
    keras_float = stats["keras_float"]["median_ms"]
    for variant in stats.values():
        variant["speedup_vs_keras_binary"] = keras / variant["median_ms"]
        variant["speedup_vs_keras_float"] = keras_float / variant["median_ms"]
    return {
        "genotype": name,
        "best": min(stats, key=lambda variant: stats[variant]["median_ms"]),
        "network": {
            "layers": args.layers,
            "init_channels": args.init_channels,
            "input_shape": [28, 28, 1],
            "num_classes": 10,
            "binarization": args.binarization,
        },
        "profile": profile,
        "flatbuffer_bytes": {
            "lce": len(lce_fb),
            "tflite_float": len(tflite_float_fb),
            "tflite_binary": len(tflite_binary_fb),
        },
        "lce_ops": export.count_ops(lce_fb),
        "conversion_s": {"lce": lce_s, "tflite_both": tflite_s},
        "checks": checks,
        "latency": stats,
    }


def markdown(results: dict) -> str:
    lines = []
    for entry in results["genotypes"]:
        net = entry["network"]
        lines.append(
            f"\n**{entry['genotype']}** ({net['layers']} cells x {net['init_channels']} channels, "
            f"28x28x1; {entry['profile']['binary_conv_layers']} binary convs -> "
            f"{entry['lce_ops'].get('LceBconv2d', 0)} LceBconv2d; binarized MACs "
            f"{entry['profile']['binarized_mac_ratio']:.1%}; flatbuffer LCE "
            f"{entry['flatbuffer_bytes']['lce'] / 1024:.0f} KiB vs TFLite float "
            f"{entry['flatbuffer_bytes']['tflite_float'] / 1024:.0f} KiB)\n"
        )
        lines.append(
            "| runtime | median ms | p90 ms | speedup vs Keras binary | speedup vs Keras float |"
        )
        lines.append("|---|---:|---:|---:|---:|")
        for name, s in entry["latency"].items():
            lines.append(
                f"| {name} | {s['median_ms']:.3f} | {s['p90_ms']:.3f} | "
                f"{s['speedup_vs_keras_binary']:.2f}x | {s['speedup_vs_keras_float']:.2f}x |"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.time()
    info = machine_info()
    info["load_average_start"] = os.getloadavg()
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": info,
        "method": {
            "warmup": args.warmup,
            "rounds": args.rounds,
            "runs_per_round": args.runs_per_round,
            "latency": "one image, NumPy in, NumPy logits out, time.perf_counter; rounds "
            "interleave variants",
        },
        "genotypes": [],
    }
    for name in args.genotypes.split(","):
        results["genotypes"].append(bench_genotype(name.strip(), args))
    info["load_average_end"] = os.getloadavg()
    results["wall_s"] = time.time() - started
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nwrote {output} ({results['wall_s']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
