"""Search-step speed and memory of the bnas_tf supernet, next to the PyTorch reference.

Part 1 (``--part step``, the default) times the architecture-search step of the
reference configuration of Kim et al. (gistvision/bnas): ``Supernet(10, layers=8,
init_channels=16, search_space="bnas_kim", binarization="sign_scale",
entropy_lambda=1.0)``, batch 64 of random 32x32x3 images, first-order alpha step
(with the entropy term) then weight step. Configurations:

* ``k1``: K=1 (plain DARTS), node-shared computation (``MixedOp`` default);
* ``k4``: K=4 partial channels (PC-DARTS channel sampling, edge normalization);
* ``k1_textbook``: K=1 with ``share_computation=False`` (one branch per edge and
  op, the textbook form): the effect of sharing;
* ``k1_nometa``: K=1 with Grappler's meta optimizer disabled
  (``tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})``):
  a lever on the first-step (graph optimization) time;
* ``k1_two_traces``: K=1 with ``trace_forward_once=False``: the alpha step's and the weight
  step's forward passes traced separately (the first-step lever of the nested forward);
* ``k1_bf16``, ``k4_bf16``: K=1 and K=4 with ``dtype_policy="mixed_bfloat16"`` (bfloat16
  activations and convolutions, float32 variables, alpha and losses; this machine's
  CPUs have AVX512-BF16 and AMX);
* ``k1_arenas2``, ``k1_bf16_arenas2``: K=1 float32 / bfloat16 with glibc's malloc arenas
  capped at 2 ([`bnas_tf.memory.limit_malloc_arenas`][bnas_tf.memory.limit_malloc_arenas], what
  ``bnas-search`` does by default): the peak-memory lever of allocator fragmentation.
* ``k1_recompute_arenas2`` (against ``k1_arenas2``): ``recompute_cells=True``, each cell's
  activations recomputed in the backward pass: the peak-memory lever of recomputation and its
  cost in time.

Each configuration runs in its own subprocess (``--single CONFIG``), so that its
peak resident memory (``VmHWM``) is its own. In the child, ``tf.function(net.train_step)``
is traced with ``get_concrete_function`` (Python tracing, timed separately), then
called once (Grappler optimization + first execution), then ``--steps`` more times
(median wall seconds, images/s, CPU seconds from ``time.process_time``).

Part 2 (``--part reduction``) times a complete small search with and without
Chen et al.'s operation space reduction at equal epochs (3 cells x 8 channels,
Fashion-MNIST ``limit=640``, batch 32): ``run_search`` for E epochs against
``run_reduction_search`` with ``stage_epochs=1`` starting from the first E+1 ops
of the space (E stages of 1 epoch each). The default E=6 starts the reduction
from the whole 7-op Kim space, the space the plain search uses (``run_search``
takes no op subset, so the plain search needs E=6). Each in its own subprocess.
``--reduction-limit N`` uses N images instead of 640, so that the training steps
rather than each stage's build and trace dominate; ``--reduction-repeats R`` runs R
interleaved rounds (plain, reduction) and reports median walls, since a single
search on this machine can take 30-40 s longer for no reason found (see the
README). ``benchmarks/reduction_stages.py`` then times each stage's supernet step
on its own.

Usage:

```python
.venv/bin/python benchmarks/search_speed.py --steps 3
.venv/bin/python benchmarks/search_speed.py --quick            # smoke test, seconds
.venv/bin/python benchmarks/search_speed.py --part reduction
.venv/bin/python benchmarks/search_speed.py --part reduction --reduction-limit 6400 \
    --reduction-repeats 3 --output benchmarks/results/search_speed_reduction_6400.json
# the PyTorch reference's step side by side (a venv with torch, a gistvision/bnas checkout):
.venv/bin/python benchmarks/search_speed.py --pytorch_python /tmp/torchvenv/bin/python \
    --reference_src ~/src/bnas/src
```

Writes ``--output`` (JSON) and the same path with ``.md`` (the table).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "SEARCH_SPEED_JSON:"

# Measured on this machine (../shared/reference.md, "Measured here"): 2 cores, no GPU.
REFERENCE = {
    "pytorch_bnas_kim": {
        "what": "PyTorch gistvision/bnas search step, 8 cells x 16 ch, batch 64, first-order + "
        "entropy",
        "seconds_per_step": 24.0,
        "images_per_second": 2.7,
        "peak_memory_gb": 7.2,
    },
    "pytorch_pc_darts_k4": {
        "what": "PyTorch PC-DARTS (full precision, K=4), same size",
        "seconds_per_step": 10.9,
        "images_per_second": 5.9,
        "peak_memory_gb": 3.3,
    },
    "tf_prototype_k1": {
        "what": "straightforward TF 2.21 + larq tf.function supernet (earlier prototype)",
        "seconds_per_step": 11.5,
        "images_per_second": 5.6,
        "peak_memory_gb": 6.8,
        "first_step_seconds": 120.0,
    },
    "tf_prototype_k4": {
        "what": "the same prototype with K=4",
        "seconds_per_step": 4.6,
    },
}


def pytorch_reference(step: dict | None) -> dict:
    """The PyTorch reference figures to compare with: measured in this run
    (``--pytorch_python``, ``--reference_src``) when it could be, else reference.md's."""
    measured = (step or {}).get("pytorch_reference") or {}
    if measured.get("median_step_s"):
        return {
            "what": measured["what"] + f" (torch {measured['torch']}, measured in this run)",
            "seconds_per_step": measured["median_step_s"],
            "images_per_second": measured["images_per_s"],
            "peak_memory_gb": measured["peak_rss_gb"],
            "first_step_seconds": measured["first_step_s"],
            "measured": True,
        }
    return dict(REFERENCE["pytorch_bnas_kim"], measured=False)


REFERENCE_NET = dict(
    num_classes=10,
    layers=8,
    init_channels=16,
    search_space="bnas_kim",
    binarization="sign_scale",
    entropy_lambda=1.0,
    batch=64,
    image=(32, 32, 3),
)
QUICK_NET = dict(REFERENCE_NET, layers=2, init_channels=4, batch=8)

CONFIGS = {
    "k1": dict(partial_channels=1, share_computation=True, meta_optimizer=True),
    "k4": dict(partial_channels=4, share_computation=True, meta_optimizer=True),
    "k1_textbook": dict(partial_channels=1, share_computation=False, meta_optimizer=True),
    "k1_nometa": dict(partial_channels=1, share_computation=True, meta_optimizer=False),
    "k1_two_traces": dict(
        partial_channels=1, share_computation=True, meta_optimizer=True, trace_forward_once=False
    ),
    "k1_bf16": dict(
        partial_channels=1,
        share_computation=True,
        meta_optimizer=True,
        dtype_policy="mixed_bfloat16",
    ),
    "k4_bf16": dict(
        partial_channels=4,
        share_computation=True,
        meta_optimizer=True,
        dtype_policy="mixed_bfloat16",
    ),
    "k1_bf16_arenas2": dict(
        partial_channels=1,
        share_computation=True,
        meta_optimizer=True,
        dtype_policy="mixed_bfloat16",
        malloc_arenas=2,
    ),
    "k1_arenas2": dict(
        partial_channels=1, share_computation=True, meta_optimizer=True, malloc_arenas=2
    ),
    "k1_recompute_arenas2": dict(
        partial_channels=1,
        share_computation=True,
        meta_optimizer=True,
        malloc_arenas=2,
        recompute_cells=True,
    ),
}
DEFAULT_CONFIGS = ["k1", "k4", "k1_textbook", "k1_nometa", "k1_two_traces", "k1_bf16", "k4_bf16"]


# ---------------------------------------------------------------------- helpers
def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_rss_gb() -> float:
    kb = _proc_status_kb("VmHWM")
    if kb is None:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return kb * 1024 / 1e9


def _rss_gb() -> float | None:
    kb = _proc_status_kb("VmRSS")
    return None if kb is None else kb * 1024 / 1e9


def machine_info() -> dict:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) * 1024 / 1e9, 2)
    except OSError:
        pass
    versions = {}
    try:
        from importlib import metadata

        for pkg in ("tensorflow", "tf_keras", "larq", "numpy"):
            try:
                versions[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                versions[pkg] = None
    except ImportError:
        pass
    git = {}
    for key, cmd in (
        ("commit", ["git", "rev-parse", "HEAD"]),
        ("dirty_files", ["git", "status", "--porcelain"]),
    ):
        try:
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
            git[key] = (
                out.strip()
                if key == "commit"
                else len([line for line in out.splitlines() if line.strip()])
            )
        except (OSError, subprocess.SubprocessError):
            git[key] = None
    return {
        "nproc": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "cpu_model": cpu_model,
        "mem_total_gb": mem_total,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "git": git,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": list(os.getloadavg()),
    }


def _emit(result: dict) -> None:
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def _busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has spent busy (all processes), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_child(
    args: list[str], timeout: float, *, cmd: list[str] | None = None, marker: str = MARKER
) -> dict:
    """Run this script with ``args`` in a fresh interpreter; return the JSON it emits.

    ``cmd``/``marker``: run that command instead, and read the line that starts with ``marker``.

    Also measures how busy the machine was with *other* work meanwhile: the machine's
    busy CPU seconds (/proc/stat) minus the child's own CPU seconds, as a fraction of
    the CPU capacity over the child's wall time (``others_cpu_share``; 0 = quiet).
    """
    cmd = cmd or [sys.executable, str(Path(__file__).resolve()), *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    started = time.time()
    busy0, child0 = _busy_cpu_s(), _children_cpu_s()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {
            "error": f"timed out after {timeout:.0f} s",
            "process_wall_s": time.time() - started,
        }
    wall = time.time() - started
    busy1, child1 = _busy_cpu_s(), _children_cpu_s()
    noise = {}
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0) - (child1 - child0))
        noise = {
            "process_cpu_s": child1 - child0,
            "others_cpu_s": others,
            "others_cpu_share": others / (wall * (os.cpu_count() or 1)),
        }
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(marker):
            result = json.loads(line[len(marker) :])
            result["process_wall_s"] = wall
            result.update(noise)
            return result
    tail = (proc.stderr or "")[-3000:] + (proc.stdout or "")[-1000:]
    return {
        "error": f"exit status {proc.returncode}, no result",
        "log_tail": tail,
        "process_wall_s": wall,
    }


# ---------------------------------------------------------------------- part 1: one config
def random_pairs(shape: tuple, batch: int, num_classes: int, count: int) -> list:
    """``count`` (weight batch, architecture batch) pairs of uniform images and labels
    from one generator seeded with 0."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)

    def one():
        return rng.uniform((batch, *shape)), rng.uniform(
            (batch,), maxval=num_classes, dtype=tf.int32
        )

    return [(one(), one()) for _ in range(count)]


def single_step_config(name: str, steps: int, quick: bool) -> dict:
    load_start = list(os.getloadavg())
    spec = CONFIGS[name]
    net_spec = QUICK_NET if quick else REFERENCE_NET
    import bnas_tf  # noqa: F401  (before tensorflow)

    import tensorflow as tf

    if spec.get("malloc_arenas"):
        from bnas_tf.memory import limit_malloc_arenas

        limit_malloc_arenas(spec["malloc_arenas"])  # before the first op starts the thread pools
    if not spec["meta_optimizer"]:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    from bnas_tf.search.architect import Architect
    from bnas_tf.search.supernet import Supernet, SupernetOptions, default_optimizers

    tf.keras.utils.set_random_seed(0)
    rss_after_import = _rss_gb()
    t = time.perf_counter()
    net = Supernet(
        net_spec["num_classes"],
        layers=net_spec["layers"],
        init_channels=net_spec["init_channels"],
        search_space=net_spec["search_space"],
        binarization=net_spec["binarization"],
        partial_channels=spec["partial_channels"],
        options=SupernetOptions(
            share_computation=spec["share_computation"],
            dtype_policy=spec.get("dtype_policy", "float32"),
            trace_forward_once=spec.get("trace_forward_once", True),
            recompute_cells=spec.get("recompute_cells", False),
        ),
        seed=0,
    )
    net.compile(
        **default_optimizers(1000), architect=Architect(entropy_lambda=net_spec["entropy_lambda"])
    )
    h, w, c = net_spec["image"]
    net(tf.zeros((1, h, w, c)))
    net.build_optimizers()
    build_s = time.perf_counter() - t
    rss_after_build = _rss_gb()

    batch = net_spec["batch"]
    data = random_pairs((h, w, c), batch, net_spec["num_classes"], 1)[0]
    train_fn = tf.function(net.train_step)

    def sync(logs):
        return {k: float(v.numpy()) for k, v in logs.items()}

    t, c0 = time.perf_counter(), time.process_time()
    concrete = train_fn.get_concrete_function(data)
    trace_s, trace_cpu = time.perf_counter() - t, time.process_time() - c0
    num_graph_ops = len(concrete.graph.get_operations())
    del concrete
    t, c0 = time.perf_counter(), time.process_time()
    first_logs = sync(train_fn(data))
    first_call_s, first_call_cpu = time.perf_counter() - t, time.process_time() - c0

    step_s, step_cpu, logs = [], [], first_logs
    for _ in range(steps):
        t, c0 = time.perf_counter(), time.process_time()
        logs = sync(train_fn(data))
        step_s.append(time.perf_counter() - t)
        step_cpu.append(time.process_time() - c0)
    median = statistics.median(step_s) if step_s else None
    return {
        "config": name,
        "net": net_spec,
        **spec,
        "edge_normalization": bool(net.edge_normalization),
        "weights": int(sum(int(tf.size(v)) for v in net.weight_variables)),
        "graph_ops": num_graph_ops,
        "build_s": build_s,
        "trace_s": trace_s,
        "trace_cpu_s": trace_cpu,
        "first_call_s": first_call_s,
        "first_call_cpu_s": first_call_cpu,
        "first_step_s": trace_s + first_call_s,
        "step_s": step_s,
        "step_cpu_s": step_cpu,
        "median_step_s": median,
        "images_per_s": batch / median if median else None,
        "median_cpu_s_per_step": statistics.median(step_cpu) if step_cpu else None,
        "cpu_utilization": (statistics.median(step_cpu) / median) if median else None,
        "rss_after_import_gb": rss_after_import,
        "rss_after_build_gb": rss_after_build,
        "peak_rss_gb": _peak_rss_gb(),
        "first_logs": first_logs,
        "last_logs": logs,
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
    }


# ---------------------------------------------------------------------- part 2: one search
TINY_SEARCH = dict(
    dataset="fashion_mnist",
    limit=640,
    batch_size=32,
    layers=3,
    init_channels=8,
    search_space="bnas_kim",
    binarization="sign_scale",
    entropy_lambda=1.0,
    verbose=0,
)


def _tiny_search(limit: int | None) -> dict:
    """The complete search's settings; ``limit`` overrides the images of Fashion-MNIST used."""
    return dict(TINY_SEARCH, **({"limit": limit} if limit else {}))


def single_search(kind: str, epochs: int, limit: int | None = None) -> dict:
    load_start = list(os.getloadavg())
    import bnas_tf  # noqa: F401  (before tensorflow)
    from bnas_tf import ops as ops_lib
    from bnas_tf.search.cell import num_edges
    from bnas_tf.search.driver import SearchConfig, run_search
    from bnas_tf.search.reduction_search import run_reduction_search

    import tensorflow as tf  # noqa: F401

    search = _tiny_search(limit)
    ops = list(ops_lib.search_space(search["search_space"]))
    if epochs + 1 > len(ops):
        raise SystemExit(
            f"--reduction-epochs {epochs}: the space has only {len(ops)} ops (at most "
            f"{len(ops) - 1})."
        )
    start_ops = ops[: epochs + 1]
    full_space = len(start_ops) == len(ops)
    config = SearchConfig.from_flat(
        {"epochs": epochs, **search, **({} if kind == "plain" else {"method": "reduction"})}
    )
    out_dir = tempfile.mkdtemp(prefix=f"search_speed_{kind}_")
    t = time.perf_counter()
    c0 = time.process_time()
    if kind == "plain":
        if not full_space:
            raise SystemExit(
                "the plain search (run_search) takes the full space only: use --reduction-epochs 6"
            )
        result = run_search(config, out_dir)
        inner = result.wall_time
        extra = {"epochs_run": len(result.history)}
    else:
        active = (
            None
            if full_space
            else {cell: [list(start_ops)] * num_edges() for cell in ("normal", "reduce")}
        )
        result = run_reduction_search(config, out_dir, active_ops=active, log=lambda _: None)
        inner = result.wall_time
        extra = {
            "stages": len(result.stages),
            "stage_wall_s": [s["wall_time_s"] for s in result.stages],
            "stage_train_s": [s["train_time_s"] for s in result.stages],
            "samples_evaluated": sum(len(s["samples"]) for s in result.stages),
        }
    wall = time.perf_counter() - t
    return {
        "kind": kind,
        "search": search,
        "epochs": epochs,
        "start_ops": start_ops,
        "wall_s": wall,
        "cpu_s": time.process_time() - c0,
        "function_wall_time_s": inner,
        "genotype": str(result.genotype),
        "peak_rss_gb": _peak_rss_gb(),
        "output_dir": out_dir,
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        **extra,
    }


# ---------------------------------------------------------------------- reports
def _f(value, digits=1, suffix=""):
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _others_share(result: dict) -> str:
    """The other processes' CPU share during a timed run, in percent."""
    share = result.get("others_cpu_share")
    return _f(None if share is None else 100 * share, 0, "%")


def step_ratios(results: dict, quick: bool = False, ref: dict | None = None) -> dict:
    """Ratios to the reference numbers (only for the reference configuration) and between configs.

    ``ref``: the PyTorch reference's figures (``pytorch_reference``)."""
    ref, pc = ref or REFERENCE["pytorch_bnas_kim"], REFERENCE["pytorch_pc_darts_k4"]
    proto, proto4 = REFERENCE["tf_prototype_k1"], REFERENCE["tf_prototype_k4"]
    ratios = {}
    for name, r in results.items():
        if quick or r.get("error") or not r.get("median_step_s"):
            continue
        ratios[name] = {
            "images_per_s_vs_pytorch_reference": r["images_per_s"] / ref["images_per_second"],
            "speedup_vs_pytorch_reference": ref["seconds_per_step"] / r["median_step_s"],
            "peak_memory_vs_pytorch_reference": r["peak_rss_gb"] / ref["peak_memory_gb"],
            "speedup_vs_tf_prototype": (proto4 if r["partial_channels"] == 4 else proto)[
                "seconds_per_step"
            ]
            / r["median_step_s"],
            "first_step_vs_tf_prototype": r["first_step_s"] / proto["first_step_seconds"],
        }
        if r["partial_channels"] == 4:
            ratios[name]["speedup_vs_pytorch_pc_darts"] = (
                pc["seconds_per_step"] / r["median_step_s"]
            )
            ratios[name]["peak_memory_vs_pytorch_pc_darts"] = (
                r["peak_rss_gb"] / pc["peak_memory_gb"]
            )
    k1 = results.get("k1", {})
    if k1.get("median_step_s"):
        for other, key in (
            ("k4", "k4_speedup_vs_k1"),
            ("k1_textbook", "sharing_speedup_textbook_over_shared"),
        ):
            o = results.get(other, {})
            if o.get("median_step_s"):
                ratios[key] = (
                    k1["median_step_s"] / o["median_step_s"]
                    if other == "k4"
                    else o["median_step_s"] / k1["median_step_s"]
                )
        tb = results.get("k1_textbook", {})
        if tb.get("peak_rss_gb"):
            ratios["peak_memory_textbook_over_shared"] = tb["peak_rss_gb"] / k1["peak_rss_gb"]
            ratios["first_step_textbook_over_shared"] = tb["first_step_s"] / k1["first_step_s"]
        nm = results.get("k1_nometa", {})
        if nm.get("first_step_s"):
            ratios["nometa_first_step_over_k1"] = nm["first_step_s"] / k1["first_step_s"]
            ratios["nometa_first_call_over_k1"] = nm["first_call_s"] / k1["first_call_s"]
            ratios["nometa_step_time_over_k1"] = nm["median_step_s"] / k1["median_step_s"]
    return ratios


def step_table(
    results: dict, quick: bool, ref: dict | None = None, measured_ref: dict | None = None
) -> str:
    ref = ref or REFERENCE["pytorch_bnas_kim"]
    lines = [
        "| config | K | shared | first step s (trace + 1st call) | s/step (median) | img/s | CPU "
        f"s/step | peak RSS GB | img/s vs PyTorch {ref['images_per_second']:.1f} | mem vs PyTorch "
        f"{ref['peak_memory_gb']:.1f} GB | other load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if r.get("error"):
            lines.append(f"| {name} | error: {r['error']} | | | | | | | | | |")
            continue
        label = name + (" (no Grappler meta optimizer)" if not r["meta_optimizer"] else "")
        if not r.get("trace_forward_once", True):
            label += " (forward traced twice)"
        if r.get("dtype_policy", "float32") != "float32":
            label += f" ({r['dtype_policy']})"
        if r.get("malloc_arenas"):
            label += f" (malloc arenas {r['malloc_arenas']})"
        lines.append(
            f"| {label} | {r['partial_channels']} | {'yes' if r['share_computation'] else 'no'} | "
            f"{_f(r['first_step_s'])} ({_f(r['trace_s'])} + {_f(r['first_call_s'])}) | "
            f"{_f(r['median_step_s'], 2)} | {_f(r['images_per_s'], 1)} | "
            f"{_f(r['median_cpu_s_per_step'], 1)} | {_f(r['peak_rss_gb'], 2)} "
            + (
                "| – | – "
                if quick
                else f"| {_f(r['images_per_s'] / ref['images_per_second'], 2, 'x')} "
                f"| {_f(r['peak_rss_gb'] / ref['peak_memory_gb'], 2, 'x')} "
            )
            + f"| {_f(100 * r['others_cpu_share'] if 'others_cpu_share' in r else None, 0, '%')} |"
        )
    if measured_ref and measured_ref.get("median_step_s"):
        m = measured_ref
        lines.append(
            f"| PyTorch reference (gistvision/bnas, torch {m['torch']}, this run) | 1 | – | "
            f"{_f(m['first_step_s'])} | {_f(m['median_step_s'], 2)} | {_f(m['images_per_s'], 1)} "
            f"| {_f(m['median_cpu_s_per_step'], 1)} | {_f(m['peak_rss_gb'], 2)} | 1.00x | 1.00x | "
            f"{_f(100 * m['others_cpu_share'] if 'others_cpu_share' in m else None, 0, '%')} |"
        )
    elif measured_ref and measured_ref.get("error"):
        lines.append(
            f"| PyTorch reference (this run) | error: {measured_ref['error']} | | | | | | | | | |"
        )
    if not quick:
        for key, label in (
            ("pytorch_bnas_kim", "PyTorch reference (gistvision/bnas)"),
            ("pytorch_pc_darts_k4", "PyTorch PC-DARTS K=4"),
            ("tf_prototype_k1", "TF prototype K=1"),
            ("tf_prototype_k4", "TF prototype K=4"),
        ):
            p = REFERENCE[key]
            lines.append(
                f"| {label} (reference.md) | {4 if 'k4' in key else 1} | – | "
                f"{_f(p.get('first_step_seconds'))} | {_f(p['seconds_per_step'], 1)} | "
                f"{_f(p.get('images_per_second'), 1)} | – | {_f(p.get('peak_memory_gb'), 1)} | | "
                "| 0% |"
            )
    return "\n".join(lines)


def ratio_lines(ratios: dict) -> str:
    lines = []
    for key, value in ratios.items():
        if isinstance(value, dict):
            lines.append(f"- {key}: " + ", ".join(f"{k} {v:.2f}" for k, v in value.items()))
        else:
            lines.append(f"- {key}: {value:.2f}")
    return "\n".join(lines)


def reduction_table(results: dict) -> str:
    lines = [
        "| search | epochs | wall s | CPU s | peak RSS GB | other load | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        if r.get("error"):
            lines.append(f"| {kind} | error: {r['error']} | | | | | |")
            continue
        note = (
            f"{r['stages']} stages x 1 epoch; stage wall s: "
            f"{', '.join(f'{s:.1f}' for s in r['stage_wall_s'])}; {r['samples_evaluated']} "
            "sampled architectures evaluated"
            if kind == "reduction"
            else "run_search"
        )
        lines.append(
            f"| {kind} | {r['epochs']} | {_f(r['wall_s'])} | {_f(r['cpu_s'])} | "
            f"{_f(r['peak_rss_gb'], 2)} | "
            f"{_f(100 * r['others_cpu_share'] if 'others_cpu_share' in r else None, 0, '%')} | "
            f"{note} |"
        )
    return "\n".join(lines)


def summarize_rounds(rounds: list[dict]) -> dict:
    """Medians over interleaved rounds of (plain, reduction) searches.

    ``results[kind]`` is the run of median wall time of each kind (for the table);
    ``ratio_reduction_over_plain`` = median reduction wall / median plain wall, and
    ``round_ratios`` the ratio within each complete round.
    """
    out: dict = {"results": {}, "round_ratios": [], "ratio_reduction_over_plain": None}
    walls = {}
    for kind in ("plain", "reduction"):
        ok = [r[kind] for r in rounds if kind in r and not r[kind].get("error")]
        if ok:
            ok.sort(key=lambda r: r["wall_s"])
            out["results"][kind] = ok[(len(ok) - 1) // 2]  # the lower median: a real run
            walls[kind] = statistics.median(r["wall_s"] for r in ok)
        elif any(kind in r for r in rounds):
            out["results"][kind] = next(r[kind] for r in rounds if kind in r)  # the error
    for r in rounds:
        if all(k in r and not r[k].get("error") for k in ("plain", "reduction")):
            out["round_ratios"].append(r["reduction"]["wall_s"] / r["plain"]["wall_s"])
    out["median_wall_s"] = walls
    if len(walls) == 2:
        out["ratio_reduction_over_plain"] = walls["reduction"] / walls["plain"]
    return out


def _summary(step: dict) -> dict:
    machine = step.get("machine")
    keys = (
        "first_step_s",
        "median_step_s",
        "images_per_s",
        "median_cpu_s_per_step",
        "peak_rss_gb",
        "others_cpu_share",
    )
    return {
        "date": (machine or {}).get("date"),
        "load_average_at_start": (machine or {}).get("load_average_at_start"),
        "steps": step.get("steps"),
        "results": {
            name: {k: r.get(k) for k in keys} if not r.get("error") else {"error": r["error"]}
            for name, r in step.get("results", {}).items()
        },
    }


def _write(output: Path, payload: dict, markdown: str) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown + "\n")


def _existing(output: Path) -> dict:
    try:
        return json.loads(output.read_text())
    except (OSError, ValueError):
        return {}


def _run_line(part: dict) -> str:
    m = part.get("machine") or {}
    if not m:
        return ""
    load = ", ".join(f"{x:.2f}" for x in m.get("load_average_at_start", []))
    git = m.get("git", {})
    return (
        f"Run {m.get('date')} (git {str(git.get('commit'))[:10]}, {git.get('dirty_files')} files "
        f"modified by others); load average at start {load}.\n"
    )


def _markdown(payload: dict) -> str:
    m = payload["machine"]
    parts = [
        "# Search speed (bnas_tf)",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total_gb']} GB; TensorFlow "
        f"{m['versions'].get('tensorflow')}, larq {m['versions'].get('larq')}.",
        "Generated by `benchmarks/search_speed.py`; reference rows from `../shared/reference.md` "
        "(same machine type).",
    ]
    if payload.get("notes"):
        parts += ["", "Notes:", "", *[f"- {note}" for note in payload["notes"]]]
    step = payload.get("step")
    if step:
        parts += [
            "",
            "## Search step",
            "",
            _run_line(step),
            f"{'Quick smoke configuration' if step['quick'] else 'Reference configuration'}: "
            f"{json.dumps(step['net'])}; first-order alpha step with the entropy term, then the "
            f"weight step; {step['steps']} timed steps after the first. Peak RSS = VmHWM of a "
            "fresh process per config (includes the TensorFlow runtime). GB = 1e9 bytes. *Other "
            "load*: CPU time of other processes on the machine while the config ran, as a share "
            "of all CPUs (0% = quiet machine).",
            "",
            step_table(
                step["results"],
                step["quick"],
                pytorch_reference(step),
                step.get("pytorch_reference"),
            ),
            "",
            "Ratios:",
            "",
            ratio_lines(step["ratios"]),
        ]
    for run in payload.get("previous_step_runs", []):
        parts += [
            "",
            f"Earlier run ({run['date']}, {run['steps']} timed steps), kept for comparison: "
            + "; ".join(
                f"{name} "
                + (
                    r["error"]
                    if "error" in r
                    else f"{_f(r['median_step_s'], 2)} s/step, "
                    f"first step {_f(r['first_step_s'])} s, "
                    f"CPU {_f(r['median_cpu_s_per_step'])} s/step, peak {_f(r['peak_rss_gb'], 2)} "
                    f"GB, other load {_others_share(r)}"
                )
                for name, r in run["results"].items()
            )
            + ".",
        ]
    red = payload.get("reduction")
    if red:
        parts += [
            "",
            "## Complete tiny search: with and without operation space reduction",
            "",
            _run_line(red),
            f"{json.dumps(red['search'])}; equal epochs ({red['epochs']}). Each in a fresh "
            "process; wall time includes data loading, tracing (once per stage for the "
            "reduction) and checkpoints.",
            "",
            reduction_table(red["results"]),
        ]
        rounds = red.get("rounds") or []
        if len(rounds) > 1:
            parts += [
                "",
                f"{len(rounds)} rounds, each a plain then a reduction search; the table shows "
                "the run of median wall time of each kind. Wall s per round: "
                + "; ".join(
                    ", ".join(
                        f"{k} {_f(r[k].get('wall_s'))}" for k in ("plain", "reduction") if k in r
                    )
                    for r in rounds
                )
                + ".",
            ]
        if red.get("ratio_reduction_over_plain") is not None:
            line = f"Wall time ratio reduction / plain: {red['ratio_reduction_over_plain']:.2f}"
            if len(red.get("round_ratios", [])) > 1:
                per_round = ", ".join(f"{x:.2f}" for x in red["round_ratios"])
                line += f" (median walls); per round: {per_round}"
            parts += ["", line]
        for run in payload.get("previous_reduction_runs", []):
            parts += [
                "",
                f"Earlier run ({run['date']}), kept for comparison: "
                + "; ".join(
                    f"{k} {_f(r.get('wall_s'))} s wall (other load {_others_share(r)})"
                    for k, r in run["results"].items()
                )
                + f"; ratio {_f(run.get('ratio_reduction_over_plain'), 2)}.",
            ]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("step", "reduction", "all"), default="step")
    parser.add_argument(
        "--steps", type=int, default=5, help="timed steps per config after the first"
    )
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--quick", action="store_true", help="a tiny smoke configuration (seconds)")
    parser.add_argument(
        "--reduction-epochs", type=int, default=6, help="epochs of each tiny search (part 2)"
    )
    parser.add_argument(
        "--reduction-limit",
        type=int,
        default=None,
        help=f"images of Fashion-MNIST in each search of part 2 (default {TINY_SEARCH['limit']}; "
        "larger makes the training steps, not the per-stage tracing, dominate)",
    )
    parser.add_argument(
        "--reduction-repeats",
        type=int,
        default=1,
        help="rounds of (plain, reduction) searches in part 2, interleaved; medians are reported",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    parser.add_argument(
        "--pytorch_python",
        help="a Python with torch: time the PyTorch reference's step in this run too",
    )
    parser.add_argument(
        "--reference_src", help="gistvision/bnas's src/ folder (with --pytorch_python)"
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks/results/search_speed.json"
    )
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the .md table from --output"
    )
    parser.add_argument("--single", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--single-search", choices=("plain", "reduction"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reduction_repeats < 1:
        parser.error(f"--reduction-repeats {args.reduction_repeats}: needs at least 1 round.")
    if bool(args.pytorch_python) != bool(args.reference_src):
        parser.error("--pytorch_python and --reference_src go together.")

    if args.single:
        _emit(single_step_config(args.single, args.steps, args.quick))
        return 0
    if args.single_search:
        _emit(single_search(args.single_search, args.reduction_epochs, args.reduction_limit))
        return 0

    payload = _existing(args.output)  # keep the other part's results
    payload.pop("machine_previous", None)
    if args.render:
        markdown = _markdown(payload)
        args.output.with_suffix(".md").write_text(markdown + "\n")
        print(markdown)
        return 0
    payload["machine"] = machine_info()
    payload["reference"] = REFERENCE
    print(f"load average at start: {payload['machine']['load_average_at_start']}", flush=True)

    if args.part in ("step", "all"):
        configs = args.configs or DEFAULT_CONFIGS
        if payload.get("step") and not payload["step"].get("quick"):
            # Keep a summary of the earlier run (e.g. one on a busy machine) next to the new one.
            payload.setdefault("previous_step_runs", []).append(_summary(payload["step"]))
        step = {
            "machine": payload["machine"],
            "quick": args.quick,
            "steps": args.steps,
            "net": QUICK_NET if args.quick else REFERENCE_NET,
            "results": {},
            "ratios": {},
        }
        payload["step"] = step
        if args.pytorch_python and args.reference_src and not args.quick:
            print(f"[{time.strftime('%H:%M:%S')}] PyTorch reference ...", flush=True)
            harness = Path(__file__).resolve().with_name("pytorch_reference_step.py")
            cmd = [
                args.pytorch_python,
                str(harness),
                "--reference_src",
                args.reference_src,
                "--steps",
                str(args.steps),
            ]
            step["pytorch_reference"] = _run_child(
                [], args.timeout, cmd=cmd, marker="PYTORCH_REFERENCE_JSON:"
            )
            print(
                "  PyTorch reference: "
                f"{step['pytorch_reference'].get('median_step_s') or step['pytorch_reference']}",
                flush=True,
            )
        for name in configs:
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
            child = ["--single", name, "--steps", str(args.steps)] + (
                ["--quick"] if args.quick else []
            )
            r = _run_child(child, args.timeout)
            step["results"][name] = r
            step["ratios"] = step_ratios(step["results"], args.quick, pytorch_reference(step))
            print(
                f"  {name}: "
                + (
                    r["error"]
                    if r.get("error")
                    else f"first step {r['first_step_s']:.1f} s, {r['median_step_s']:.2f} s/step, "
                    f"{r['images_per_s']:.1f} img/s, peak {r['peak_rss_gb']:.2f} GB"
                ),
                flush=True,
            )
            _write(args.output, payload, _markdown(payload))

    if args.part in ("reduction", "all"):
        if payload.get("reduction"):
            old = payload["reduction"]
            payload.setdefault("previous_reduction_runs", []).append(
                {
                    "date": old.get("machine", {}).get("date"),
                    "ratio_reduction_over_plain": old.get("ratio_reduction_over_plain"),
                    "results": {
                        k: {
                            x: r.get(x)
                            for x in ("wall_s", "cpu_s", "others_cpu_share", "error")
                            if x in r
                        }
                        for k, r in old.get("results", {}).items()
                    },
                }
            )
        red = {
            "machine": payload["machine"],
            "search": _tiny_search(args.reduction_limit),
            "epochs": args.reduction_epochs,
            "results": {},
        }
        payload["reduction"] = red
        rounds = red["rounds"] = []
        child = ["--reduction-epochs", str(args.reduction_epochs)]
        if args.reduction_limit:
            child += ["--reduction-limit", str(args.reduction_limit)]
        for i in range(args.reduction_repeats):
            rounds.append({})
            for kind in (
                "plain",
                "reduction",
            ):  # interleaved: both kinds see the same machine drift
                when = time.strftime("%H:%M:%S")
                print(
                    f"[{when}] tiny search {i + 1}/{args.reduction_repeats}: {kind} ...", flush=True
                )
                r = _run_child(["--single-search", kind, *child], args.timeout)
                rounds[-1][kind] = r
                print(
                    f"  {kind}: " + (r["error"] if r.get("error") else f"{r['wall_s']:.1f} s"),
                    flush=True,
                )
                red.update(summarize_rounds(rounds))
                _write(args.output, payload, _markdown(payload))

    payload["machine"]["load_average_at_end"] = list(os.getloadavg())
    markdown = _markdown(payload)
    _write(args.output, payload, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
