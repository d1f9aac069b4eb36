"""Final-network training speed and memory, next to the PyTorch reference's ``train.py`` step.

Part 1 (``--part step``, the default) times one training step of a final binary network as
``bnas-train`` builds and compiles it (``build_network``, ``TrainConfig``'s SGD with momentum
0.9 and the one-cycle schedule, categorical cross-entropy, accuracy), through ``model.fit`` on
a repeated batch of 64 random images, each configuration in its own subprocess so that its
peak resident memory (``VmHWM``) is its own:

* ``bnas_a``: BNAS-A (Kim et al.'s CIFAR cell), 20 cells x 36 channels, CIFAR stem, 32x32x3,
  sign + scale binarization, float32 (the reference's ``train.py`` configuration);
* ``bnas_a_xnor``, ``bnas_a_pcnn``: the other binarizations;
* ``bnas_a_bf16``: ``dtype_policy="mixed_bfloat16"``;
* ``bnas_a_spe4``: ``compile(steps_per_execution=4)`` (the per-step Python and dispatch cost);
* ``bnas_a_xla``: ``compile(jit_compile=True)`` (XLA on the static final network);
* ``latest_cell_64`` (``_bf16``): Kim et al.'s ImageNet cell ``latest_cell``, 12 cells x 32
  channels, ImageNet stem, 64x64x3, 1000 classes (the ImageNet network at a size that fits
  a 2-core machine).

A first ``fit`` call of one execution traces and runs the step (``first_step_s``); a second,
of ``--steps`` steps, is timed per step by a callback (median wall seconds, images/s) and in
CPU seconds (``time.process_time``). With ``--pytorch_python`` and ``--reference_src`` the
reference's own training step (``pytorch_reference_step.py --mode train``: gistvision/bnas
``train.py``, BNAS-A) is timed in the same run and the ratios are based on it.

Part 2 (``--part epoch``) runs ``bnas-train --flagfile=flags/demo_train.cfg`` for one epoch
of ``--epoch-limit`` Fashion-MNIST images with a published genotype, so that the data
pipeline, the callbacks and the checkpoint count: images/s of its training loop
(``metrics.json``'s ``train_time_s``), the program's wall time and the test top-1, for each
``--epoch-policies`` x ``--epoch-seeds`` (the accuracy check of ``mixed_bfloat16``).

```sh
.venv/bin/python benchmarks/train_speed.py --steps 6
.venv/bin/python benchmarks/train_speed.py --quick                      # smoke test
.venv/bin/python benchmarks/train_speed.py --configs bnas_a bnas_a_spe4 --pytorch_python \\
    /tmp/torchvenv/bin/python --reference_src ~/src/bnas/src
.venv/bin/python benchmarks/train_speed.py --part epoch --epoch-policies float32 mixed_bfloat16 \\
    --epoch-seeds 0 1 --epoch-limit-test 0 --output benchmarks/results/train_bf16_accuracy.json
```

Writes ``--output`` (JSON) and the same path with ``.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from search_speed import MARKER, ROOT, _emit, _f, _peak_rss_gb, _run_child, machine_info

__all__ = ["CONFIGS", "NETS", "MARKER", "single_step_config", "markdown", "main"]

NETS = {
    "bnas_a": dict(
        genotype="bnas_a",
        layers=20,
        init_channels=36,
        stem="cifar",
        image=(32, 32, 3),
        num_classes=10,
    ),
    "latest_cell_64": dict(
        genotype="latest_cell",
        layers=12,
        init_channels=32,
        stem="imagenet",
        image=(64, 64, 3),
        num_classes=1000,
    ),
    # the demo's network (flags/demo_train.cfg): 4 cells x 16 channels on Fashion-MNIST
    "demo": dict(
        genotype="bnas_a",
        layers=4,
        init_channels=16,
        stem="cifar",
        image=(28, 28, 1),
        num_classes=10,
        batch=128,
    ),
}
QUICK_NET = dict(NETS["bnas_a"], layers=3, init_channels=8)
BATCH = 64

CONFIGS = {
    "bnas_a": dict(net="bnas_a"),
    "bnas_a_xnor": dict(net="bnas_a", binarization="xnor"),
    "bnas_a_pcnn": dict(net="bnas_a", binarization="pcnn"),
    "bnas_a_bf16": dict(net="bnas_a", dtype_policy="mixed_bfloat16"),
    "bnas_a_spe4": dict(net="bnas_a", steps_per_execution=4),
    "bnas_a_xla": dict(net="bnas_a", jit_compile=True),
    "latest_cell_64": dict(net="latest_cell_64"),
    "latest_cell_64_bf16": dict(net="latest_cell_64", dtype_policy="mixed_bfloat16"),
    "demo": dict(net="demo"),
    "demo_spe8": dict(net="demo", steps_per_execution=8),
    "demo_xla": dict(net="demo", jit_compile=True),
    "demo_spe8_xla": dict(net="demo", steps_per_execution=8, jit_compile=True),
}
DEFAULT_CONFIGS = ["bnas_a", "bnas_a_xnor", "bnas_a_pcnn", "bnas_a_spe4", "latest_cell_64"]
REFERENCE_MARKER = "PYTORCH_REFERENCE_JSON:"
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "train_speed.json"


# --------------------------------------------------------------------- part 1: one config
def single_step_config(name: str, steps: int, quick: bool) -> dict:
    """Time ``CONFIGS[name]``'s training step in this process (run it in a fresh one)."""
    spec = dict(CONFIGS[name])
    net = QUICK_NET if quick else NETS[spec["net"]]
    batch = net.get("batch", BATCH)
    import bnas_tf  # noqa: F401  (before tensorflow)
    from bnas_tf import genotype as genotype_lib
    from bnas_tf.network import build_network, set_drop_path_progress
    from bnas_tf.quantizers import quantizer_variables
    from bnas_tf.training import TrainConfig, compile_network, make_optimizer

    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    config = TrainConfig(
        genotype=net["genotype"],
        layers=net["layers"],
        init_channels=net["init_channels"],
        binarization=spec.get("binarization", "sign_scale"),
        batch_size=batch,
        dtype_policy=spec.get("dtype_policy", "float32"),
    )
    t = time.perf_counter()
    model = build_network(
        genotype_lib.get(net["genotype"]),
        layers=net["layers"],
        init_channels=net["init_channels"],
        num_classes=net["num_classes"],
        input_shape=net["image"],
        stem=net["stem"],
        binarization=config.binarization,
        drop_path_rate=config.drop_path_rate,
        dtype_policy=config.dtype_policy,
    )
    set_drop_path_progress(model, 0.0)
    optimizer = make_optimizer(config, 1000)
    optimizer.exclude_from_weight_decay(var_list=quantizer_variables(model))
    spe = spec.get("steps_per_execution", 1)
    compile_network(
        model,
        config,
        optimizer,
        auxiliary=False,
        steps_per_execution=spe,
        jit_compile=spec.get("jit_compile", False),
    )
    build_s = time.perf_counter() - t

    rng = tf.random.Generator.from_seed(0)
    x = rng.uniform((batch, *net["image"]))
    y = tf.one_hot(
        rng.uniform((batch,), maxval=net["num_classes"], dtype=tf.int32), net["num_classes"]
    )
    data = tf.data.Dataset.from_tensors((x, y)).repeat()

    class Timer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self._t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    t, c = time.perf_counter(), time.process_time()
    first = model.fit(data, steps_per_epoch=spe, epochs=1, verbose=0).history
    first_s, first_cpu = time.perf_counter() - t, time.process_time() - c
    steps = max(spe, steps - steps % spe)
    timer = Timer()
    t, c = time.perf_counter(), time.process_time()
    last = model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer]).history
    fit_s, fit_cpu = time.perf_counter() - t, time.process_time() - c
    per_step = [s / spe for s in timer.times]
    median = statistics.median(per_step)
    return {
        "config": name,
        **spec,
        "net": net,
        "batch": batch,
        "quick": quick,
        "parameters": int(model.count_params()),
        "build_s": build_s,
        "first_step_s": first_s,
        "first_step_cpu_s": first_cpu,
        "steps": steps,
        "step_s": per_step,
        "median_step_s": median,
        "images_per_s": batch / median,
        "fit_s_per_step": fit_s / steps,
        "cpu_s_per_step": fit_cpu / steps,
        "peak_rss_gb": _peak_rss_gb(),
        "first_loss": float(first["loss"][-1]),
        "last_loss": float(last["loss"][-1]),
    }


def pytorch_reference(args) -> dict | None:
    """The reference's ``train.py`` step, timed in a subprocess of its own Python."""
    if not (args.pytorch_python and args.reference_src):
        return None
    cmd = [
        args.pytorch_python,
        str(Path(__file__).with_name("pytorch_reference_step.py")),
        "--mode=train",
        f"--reference_src={args.reference_src}",
        f"--steps={args.reference_steps}",
        f"--batch_size={BATCH}",
    ]
    if args.quick:
        cmd += [f"--layers={QUICK_NET['layers']}", f"--init_channels={QUICK_NET['init_channels']}"]
    return _run_child([], args.timeout, cmd=cmd, marker=REFERENCE_MARKER)


# --------------------------------------------------------------------- part 2: a bnas-train epoch
def epoch_run(args, policy: str = "float32", seed: int = 0) -> dict:
    """One ``bnas-train`` epoch of the demo flags on ``--epoch-limit`` Fashion-MNIST images,
    evaluated on ``--epoch-limit-test`` test images (0: all 10,000)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "bnas_tf.apps.train",
            "--flagfile=flags/demo_train.cfg",
            f"--genotype={args.epoch_genotype}",
            "--epochs=1",
            f"--limit={args.epoch_limit}",
            *([f"--limit_test={args.epoch_limit_test}"] if args.epoch_limit_test else []),
            f"--dtype_policy={policy}",
            f"--seed={seed}",
            "--verbose=0",
            f"--output_dir={tmp}/train",
            *args.epoch_flags,
        ]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
        wall = time.perf_counter() - started
        if proc.returncode:
            return {"error": f"exit status {proc.returncode}", "log_tail": proc.stderr[-3000:]}
        metrics = json.loads((Path(tmp) / "train" / "metrics.json").read_text())
    config = metrics["config"]
    images = (args.epoch_limit // config["batch_size"]) * config["batch_size"]
    return {
        "dtype_policy": policy,
        "seed": seed,
        "command": " ".join(cmd[1:]).replace(tmp, "TMP"),
        "program_wall_s": wall,
        "train_time_s": metrics["train_time_s"],
        "images": images,
        "images_per_s": images / metrics["train_time_s"],
        "loss": metrics["history"][-1]["loss"],
        "accuracy": metrics["history"][-1]["accuracy"],
        "test_accuracy": metrics["test"]["accuracy"],
        "test_examples": metrics["test"]["examples"],
    }


# --------------------------------------------------------------------- report
def markdown(payload: dict) -> str:
    m = payload["machine"]
    ref = payload.get("pytorch_reference") or {}
    lines = [
        "# Final-network training speed (`benchmarks/train_speed.py`)",
        "",
        f"{m['cpu_model']}, {m['nproc']} cores, TF {m['versions'].get('tensorflow')}, "
        f"{m['date']}, git {str(m['git'].get('commit'))[:10]}; batch {BATCH}.",
        "",
    ]
    if ref.get("median_step_s"):
        lines += [
            f"PyTorch reference (gistvision/bnas `train.py` step, BNAS-A, torch {ref['torch']}, "
            f"same run): {ref['median_step_s']:.2f} s/step, {ref['images_per_s']:.1f} img/s, "
            f"peak {ref['peak_rss_gb']:.2f} GB, first step {ref['first_step_s']:.1f} s.",
            "",
        ]
    elif ref.get("error"):
        lines += [f"PyTorch reference: {ref['error']}.", ""]
    lines += [
        "| config | s/step | img/s | vs PyTorch | CPU s/step | peak GB | vs PyTorch "
        "| first step s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in payload["results"].items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | | | |")
            continue
        same_net = CONFIGS.get(name, {}).get("net") == "bnas_a" and ref.get("median_step_s")
        speed = f"{r['images_per_s'] / ref['images_per_s']:.2f}x" if same_net else "–"
        memory = f"{r['peak_rss_gb'] / ref['peak_rss_gb']:.2f}x" if same_net else "–"
        lines.append(
            f"| {name} | {_f(r['median_step_s'], 2)} | {_f(r['images_per_s'], 1)} | {speed} | "
            f"{_f(r['cpu_s_per_step'], 2)} | {_f(r['peak_rss_gb'], 2)} | {memory} | "
            f"{_f(r['first_step_s'], 1)} |"
        )
    epochs = payload.get("epochs") or []
    if epochs:
        lines += [
            "",
            f"`bnas-train` epochs (`{epochs[0]['command']}`, policy and seed as below):",
            "",
            "| dtype policy | seed | training loop s | img/s | program s | test top-1 |",
            "|---|---|---|---|---|---|",
        ]
    for e in epochs:
        if "error" in e:
            lines.append(f"| {e['dtype_policy']} | {e['seed']} | {e['error']} | | | |")
            continue
        lines.append(
            f"| {e['dtype_policy']} | {e['seed']} | {e['train_time_s']:.1f} | "
            f"{e['images_per_s']:.1f} | {e['program_wall_s']:.1f} | "
            + (
                f"{100 * e['test_accuracy']:.2f} % ({e['test_examples']}) |"
                if "test_accuracy" in e
                else "– |"
            )
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("step", "epoch", "all"), default="step")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    parser.add_argument("--quick", action="store_true", help="a 3-cell network: a smoke test")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    parser.add_argument("--pytorch_python", help="a Python with torch (the reference's step)")
    parser.add_argument("--reference_src", help="gistvision/bnas's src/ folder")
    parser.add_argument("--reference_steps", type=int, default=4)
    parser.add_argument("--epoch-limit", type=int, default=12800)
    parser.add_argument("--epoch-genotype", default="bnas_a")
    parser.add_argument("--epoch-limit-test", type=int, default=256, help="0: all test images")
    parser.add_argument("--epoch-policies", nargs="+", default=["float32"])
    parser.add_argument("--epoch-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epoch-flags", nargs="*", default=[], help="extra bnas-train flags")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.single:
        _emit(single_step_config(args.single, args.steps, args.quick))
        return 0

    payload = {"machine": machine_info(), "results": {}}
    if args.part in ("step", "all"):
        payload["pytorch_reference"] = pytorch_reference(args)
        for name in args.configs:
            child = ["--single", name, "--steps", str(args.steps), *(["--quick"] * args.quick)]
            cmd = [sys.executable, str(Path(__file__).resolve()), *child]
            payload["results"][name] = _run_child(child, args.timeout, cmd=cmd)
            print(name, json.dumps(payload["results"][name])[:300], flush=True)
    if args.part in ("epoch", "all"):
        payload["epochs"] = []
        for seed in args.epoch_seeds:
            for policy in args.epoch_policies:
                try:
                    run = epoch_run(args, policy, seed)
                except subprocess.TimeoutExpired:
                    run = {"dtype_policy": policy, "seed": seed, "error": "timed out"}
                payload["epochs"].append(run)
                print("epoch", json.dumps(run)[:300], flush=True)
    text = markdown(payload)
    print(text)
    if not args.quick:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(payload, indent=1) + "\n")
        args.output.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
