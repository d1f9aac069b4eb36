"""Shared helpers of the evidence benchmarks (issue 7): budgets, searches, train-and-measure.

Every study script (``search_cost.py``, ``accuracy_vs_memory.py``, ``ablations.py``,
``inference_vs_baselines.py``) takes ``--budget`` (one of ``BUDGETS``) and builds
its units of work from here, so that all networks -- searched cells, random cells,
the full-precision twin and the larq-zoo baselines -- go through **one** training
program (``train_and_measure``): the same ``bnas_tf.data`` pipeline (first
``train_limit`` Fashion-MNIST training images, per-epoch seeded shuffle, no
augmentation), the same optimizer (``bnas_tf.training.make_optimizer``: Adam,
one-cycle learning rate, max 2e-3, no weight decay -- the demo's ``flags/demo_train.cfg``),
the same loss (softmax cross-entropy on logits), batch size and epochs, evaluated
on the same test images. It is ``bnas_tf.training.train_network``'s loop without
the run-directory machinery (checkpoints, TensorBoard, drop-path, which is 0 here),
so that a larq-zoo model can go through it unchanged.

Searches run in a child process (``run_search_unit``), so that each one's peak
memory (``VmHWM``) is its own. Every unit's result is cached as JSON under
``runs/bench/<budget>/`` keyed by a hash of its whole specification, so the study
scripts share searches and trainings (``make bench`` runs ``search_cost.py`` first)
and an interrupted study resumes; ``--fresh`` ignores the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "runs" / "bench"
MARKER = "BENCH_RESULT "
DATASET = "fashion_mnist"
NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)


# ------------------------------------------------------------------------------ budgets
@dataclasses.dataclass(frozen=True)
class Budget:
    """Everything that sets the cost of a study. Searches and trainings are sized here only."""

    name: str
    train_limit: int | None  #: training images (the first N of the 60,000); None: all
    test_limit: int | None  #: test images (the first N of the 10,000); None: all
    epochs: int  #: training epochs of every network
    seeds: tuple[int, ...]  #: training seeds per network (mean and spread over them)
    batch_size: int
    layers: int  #: cells of the trained genotype networks
    init_channels: int
    search_limit: int  #: training images a search sees (split 50/50 weights / alphas)
    search_batch: int
    search_layers: int
    search_channels: int
    stage_epochs: int  #: epochs per operation-space-reduction stage; searches last 7 stages
    samples_per_op: int
    eval_batches: int
    random_genotypes: int
    zoo_max_mmacs: float | None  #: larq-zoo models above this many MMACs/image are left out
    latency_runs: int  #: timed single-image calls per model (inference study)

    @property
    def search_epochs(self) -> int:
        """Epochs of every search: those of a complete operation space reduction over the
        8 ops of ``bnas_darts`` (7 stages), so all searches run equal epochs."""
        return 7 * self.stage_epochs


BUDGETS: dict[str, Budget] = {
    # Seconds: checks that the scripts run end to end. Numbers mean nothing.
    "smoke": Budget(
        "smoke",
        train_limit=256,
        test_limit=256,
        epochs=1,
        seeds=(0,),
        batch_size=64,
        layers=3,
        init_channels=4,
        search_limit=256,
        search_batch=32,
        search_layers=3,
        search_channels=4,
        stage_epochs=1,
        samples_per_op=1,
        eval_batches=1,
        random_genotypes=2,
        zoo_max_mmacs=30.0,
        latency_runs=20,
    ),
    # About 25 min per study group on 2 quiet cores: 6,000 training images, 1 epoch,
    # 1 seed, the full 10,000-image test set; tiny searches (3 cells x 8 channels).
    "cpu-small": Budget(
        "cpu-small",
        train_limit=6000,
        test_limit=None,
        epochs=1,
        seeds=(0,),
        batch_size=128,
        layers=4,
        init_channels=16,
        search_limit=1280,
        search_batch=64,
        search_layers=3,
        search_channels=8,
        stage_epochs=1,
        samples_per_op=2,
        eval_batches=2,
        random_genotypes=5,
        zoo_max_mmacs=250.0,
        latency_runs=100,
    ),
    # A bigger machine: all 60,000 images, 10 epochs, 3 seeds, 8 x 16 networks, the
    # Fashion-MNIST search flagfiles' sizes (5 cells x 8 channels, 20,000 images).
    "full": Budget(
        "full",
        train_limit=None,
        test_limit=None,
        epochs=10,
        seeds=(0, 1, 2),
        batch_size=128,
        layers=8,
        init_channels=16,
        search_limit=20000,
        search_batch=64,
        search_layers=5,
        search_channels=8,
        stage_epochs=2,
        samples_per_op=2,
        eval_batches=4,
        random_genotypes=10,
        zoo_max_mmacs=None,
        latency_runs=200,
    ),
}

#: larq-zoo baselines tried (module, function). Each is built at the smallest input size
#: of ``ZOO_SIZES`` it accepts (28x28 Fashion-MNIST images upsampled by a bilinear
#: ``Resizing`` layer inside the model when larger).
ZOO_MODELS: tuple[tuple[str, str], ...] = (
    ("sota", "QuickNetSmall"),
    ("literature", "BiRealNet"),
    ("literature", "BinaryResNetE18"),
    ("literature", "XNORNet"),
    ("literature", "BinaryAlexNet"),
    ("literature", "DoReFaNet"),
)
ZOO_SIZES = (28, 32, 64, 96, 128, 160, 192, 224)
ZOO_NET = "zoo_net"


def add_budget_args(parser: argparse.ArgumentParser) -> None:
    """``--budget``, ``--fresh``, ``--output``."""
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu-small")
    parser.add_argument("--fresh", action="store_true", help="ignore cached unit results")
    parser.add_argument(
        "--output", default=None, help="results JSON (default: by study and budget)"
    )


def results_path(study: str, budget: Budget, output: str | None = None) -> Path:
    """``benchmarks/results/<study>_<budget>.json``; smoke runs go to ``runs/bench/smoke``."""
    if output:
        return Path(output)
    folder = CACHE / "smoke" if budget.name == "smoke" else RESULTS
    return folder / f"{study}_{budget.name.replace('-', '_')}.json"


# ------------------------------------------------------------------------------ machine
def _busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has been busy (all processes), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _status_gb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return None


class Meter:
    """Wall time, this process's CPU time and the CPU share used by *other* processes
    (0 = the machine was quiet; on 2 cores 0.5 = one core busy with other work)."""

    def __enter__(self) -> Meter:
        self.wall0, self.cpu0, self.busy0 = time.perf_counter(), time.process_time(), _busy_cpu_s()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self.wall0
        self.cpu_s = time.process_time() - self.cpu0
        busy1 = _busy_cpu_s()
        self.others_cpu_share = None
        if self.busy0 is not None and busy1 is not None and self.wall_s > 0:
            others = max(0.0, busy1 - self.busy0 - self.cpu_s)
            self.others_cpu_share = others / (self.wall_s * (os.cpu_count() or 1))

    def as_dict(self, prefix: str = "") -> dict:
        return {
            f"{prefix}wall_s": self.wall_s,
            f"{prefix}cpu_s": self.cpu_s,
            f"{prefix}others_cpu_share": self.others_cpu_share,
        }


#: The CPU features that change TensorFlow's CPU speed most (oneDNN's kernels pick by them);
#: machines of one kind differ in them, so every figure names them.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def cpu_isa() -> list[str]:
    """Which of :data:`ISA_FLAGS` this CPU has (``/proc/cpuinfo``; empty where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return [f for f in ISA_FLAGS if f in flags]


def machine_info() -> dict:
    """CPU, cores, versions, git commit, load: where and how the numbers were taken."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    from importlib import metadata

    for pkg in ("tensorflow", "tf_keras", "larq", "larq-zoo", "larq-compute-engine", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu": cpu,
        "isa": cpu_isa(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average": list(os.getloadavg()),
    }


# ------------------------------------------------------------------------------ cache
def _key(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def cached(
    budget: Budget,
    kind: str,
    name: str,
    spec: dict,
    compute: Callable[[], dict],
    fresh: bool = False,
    root: Path | None = None,
) -> dict:
    """``compute()``'s result for ``spec``, read from / written to the unit cache (under
    ``root``, default ``CACHE``)."""
    path = (root or CACHE) / budget.name / kind / f"{name}-{_key(spec)}.json"
    if path.exists() and not fresh:
        result = json.loads(path.read_text())
        result["cached"] = True
        return result
    log(f"[{budget.name}] {kind} {name} ...")
    result = {"name": name, "spec": spec, **compute()}
    # Which machine computed it: a study's units span sessions, and machines of one kind differ.
    info = machine_info()
    result["machine"] = {k: info[k] for k in ("cpu", "isa", "cores", "git_commit", "date")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=_jsonable))
    os.replace(tmp, path)
    result["cached"] = False
    return result


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def write_results(path: Path, payload: dict) -> None:
    """Write the study's JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
    os.replace(tmp, path)
    log(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


# ------------------------------------------------------------------------------ searches
#: The two method families (the project's Fashion-MNIST flagfiles): Kim et al.'s space,
#: sign+scale, Zeroise, entropy regularizer, inter-cell skips; Chen et al.'s binarized DARTS
#: space with XNOR binarization and the DARTS template (no inter-cell skips, no Zeroise).
FAMILIES: dict[str, dict] = {
    "kim": dict(
        search_space="bnas_kim",
        binarization="sign_scale",
        partial_channels=1,
        inter_cell_skip=True,
        allow_none=True,
        entropy_lambda=1.0,
        learning_rate=0.025,
        learning_rate_min=0.001,
        arch_learning_rate=3e-3,
    ),
    "darts": dict(
        search_space="bnas_darts",
        binarization="xnor",
        partial_channels=1,
        inter_cell_skip=False,
        allow_none=False,
        entropy_lambda=0.0,
        learning_rate=0.05,
        learning_rate_min=0.0,
        arch_learning_rate=6e-4,
    ),
}

#: Named searches: family + overrides. ``kim`` and ``chen`` are the searched networks;
#: ``darts`` is plain binary DARTS (Chen's setup without channel sampling and reduction).
SEARCHES: dict[str, tuple[str, dict]] = {
    "kim": ("kim", {}),
    "kim_no_zeroise": ("kim", dict(allow_none=False)),
    "kim_no_diversity": ("kim", dict(entropy_lambda=0.0)),
    "darts": ("darts", {}),
    "chen": (
        "darts",
        dict(partial_channels=4, edge_normalization=True, method="reduction"),
    ),
    "chen_no_sampling": ("darts", dict(method="reduction")),
    "chen_no_reduction": ("darts", dict(partial_channels=4, edge_normalization=True)),
}


def search_config(budget: Budget, search: str, seed: int = 0) -> dict:
    """The ``SearchConfig`` fields of named search ``search`` at ``budget``.

    All searches run ``Budget.search_epochs`` epochs. The entropy decay ``tau`` is
    Kim et al.'s 7.7 for 50 epochs scaled to the search's length.
    """
    family, overrides = SEARCHES[search]
    epochs = budget.search_epochs
    return {
        "dataset": DATASET,
        "limit": budget.search_limit,
        "batch_size": budget.search_batch,
        "layers": budget.search_layers,
        "init_channels": budget.search_channels,
        "epochs": epochs,
        "entropy_tau": 7.7 * epochs / 50,
        "genotype_selection": "best",
        "stage_epochs": budget.stage_epochs,
        "samples_per_op": budget.samples_per_op,
        "eval_batches": budget.eval_batches,
        "seed": seed,
        "verbose": 0,
        **FAMILIES[family],
        **overrides,
    }


def run_search_unit(
    budget: Budget, search: str, fresh: bool = False, timeout: float = 3600
) -> dict:
    """Run (or read from the cache) the complete search ``search`` in a child process.

    Returns wall time (the search function's, without interpreter start), CPU time, peak
    resident memory of the child (``VmHWM``) and its resident memory just before the
    search (TensorFlow imported), the genotype and the others' CPU share.
    """
    config = search_config(budget, search)
    spec = {"search": search, "config": config}
    out_dir = CACHE / budget.name / "search_runs" / search
    return cached(
        budget,
        "search",
        search,
        spec,
        lambda: search_in_child(config, out_dir, search, timeout),
        fresh,
    )


def search_in_child(config: dict, out_dir: Path, label: str, timeout: float | None) -> dict:
    """One complete search of ``SearchConfig(**config)`` in a child process writing to
    ``out_dir`` (emptied first): its result (``_search_child``) plus ``process_wall_s``."""
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "search", json.dumps(config)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    with Meter() as meter:
        proc = subprocess.run(
            [*cmd, str(out_dir)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
        )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER) :])
            result["process_wall_s"] = meter.wall_s
            return result
    raise RuntimeError(f"search {label} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def is_cached_search(budget: Budget, search: str) -> bool:
    """Whether ``run_search_unit`` would read ``search`` from the cache."""
    spec = {"search": search, "config": search_config(budget, search)}
    return (CACHE / budget.name / "search" / f"{search}-{_key(spec)}.json").exists()


def _search_child(config_json: str, out_dir: str) -> None:
    """Child process: one complete search; prints ``MARKER + json``."""
    import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
    from bnas_tf.search.driver import SearchConfig
    from bnas_tf.search.methods import run_method

    config = SearchConfig.from_flat(json.loads(config_json))
    rss_before = _status_gb("VmRSS")
    with Meter() as meter:
        result = run_method(config, out_dir, log=lambda _: None)
    if config.method in ("reduction", "cp_nas"):
        extra = {
            "stages": len(result.stages),
            "epochs_run": sum(s["epochs"][1] - s["epochs"][0] for s in result.stages),
            "stage_wall_s": [s["wall_time_s"] for s in result.stages],
        }
    elif config.method == "bmes":
        extra = {"epochs_run": config.bmes.supernet_epochs, "ops": result.ops}
    else:
        extra = {"epochs_run": len(result.history), "best_epoch": result.best_epoch}
    payload = {
        **meter.as_dict(),
        "peak_rss_gb": _status_gb("VmHWM"),
        "rss_before_search_gb": rss_before,
        "genotype": result.genotype.to_dict(),
        "genotype_str": str(result.genotype),
        # a budgeted search: the genotype at the final size, and --fit_width's widest network
        "budget": getattr(result, "budget", None),
        "budget_fit": getattr(result, "budget_fit", None),
        "budget_argmax": getattr(result, "budget_argmax", None),
        **extra,
    }
    print(MARKER + json.dumps(payload), flush=True)


# ------------------------------------------------------------------------------ models
def genotype_spec(
    budget: Budget,
    genotype: dict,
    *,
    binarization: str = "sign_scale",
    inter_cell_skip: bool = True,
    full_precision: bool = False,
    source: str = "",
) -> dict:
    """A network of ``genotype`` (a ``Genotype.to_dict()``) at the budget's size."""
    return {
        "kind": "genotype",
        "genotype": genotype,
        "layers": budget.layers,
        "init_channels": budget.init_channels,
        "binarization": binarization,
        "inter_cell_skip": inter_cell_skip,
        "full_precision": full_precision,
        "source": source,
    }


def family_spec(budget: Budget, search: str, genotype: dict, **kwargs) -> dict:
    """The network of a search's genotype, in its family's template (binarization, skips)."""
    family = FAMILIES[SEARCHES[search][0]]
    kwargs.setdefault("inter_cell_skip", family["inter_cell_skip"])
    return genotype_spec(
        budget, genotype, binarization=family["binarization"], source=f"search:{search}", **kwargs
    )


def build_model(spec: dict):
    """The Keras model of a spec (``genotype_spec``, a BMES group network or ``zoo_spec``),
    emitting logits."""
    import bnas_tf  # noqa: F401

    import tensorflow as tf

    if spec["kind"] == "bmes":
        from bnas_tf.mobilenet import GroupGenotype, build_group_network

        return build_group_network(
            GroupGenotype.from_dict(spec["genotype"]),
            num_classes=NUM_CLASSES,
            input_shape=INPUT_SHAPE,
            binarization=spec["binarization"],
        )
    if spec["kind"] == "genotype":
        from bnas_tf import network
        from bnas_tf.genotype import Genotype

        binarization = _full_precision() if spec["full_precision"] else spec["binarization"]
        return network.build_network(
            Genotype.from_dict(spec["genotype"]),
            layers=spec["layers"],
            init_channels=spec["init_channels"],
            num_classes=NUM_CLASSES,
            input_shape=INPUT_SHAPE,
            binarization=binarization,
            inter_cell_skip=spec["inter_cell_skip"],
        )
    import larq_zoo

    function = getattr(getattr(larq_zoo, spec["module"]), spec["model"])
    size = spec["input_size"]
    model = function(
        input_shape=(size, size, INPUT_SHAPE[2]),
        weights=None,
        include_top=True,
        num_classes=NUM_CLASSES,
    )
    last = model.layers[-1]
    softmax = (
        isinstance(last, tf.keras.layers.Activation)
        and last.get_config()["activation"] == "softmax"
    )
    # logits
    model = tf.keras.Model(model.inputs, last.input if softmax else model.outputs[0], name=ZOO_NET)
    if size == INPUT_SHAPE[0]:
        return model
    # larq-zoo's input_tensor= refuses Keras 2 symbolic tensors (zookeeper's type check),
    # and cloning onto a new input hangs: the zoo network is nested behind the upsampling.
    inputs = tf.keras.Input(INPUT_SHAPE)
    x = tf.keras.layers.Resizing(size, size, name="upsample")(inputs)
    return tf.keras.Model(inputs, model(x), name=f"{spec['model']}_upsampled")


def profiled(model):
    """The model ``larq.models.summary`` should profile: a nested zoo network itself
    (larq profiles the layers of one model; the upsampling has no weights or MACs)."""
    for layer in model.layers:
        if layer.name == ZOO_NET and hasattr(layer, "layers"):
            return layer
    return model


def _full_precision():
    """The searched network with its quantizers off (``bnas_tf.quantizers.FULL_PRECISION``)."""
    from bnas_tf.quantizers import FULL_PRECISION

    return FULL_PRECISION


def zoo_spec(budget: Budget, module: str, model: str) -> dict:
    """Build larq-zoo ``model`` at the smallest size of ``ZOO_SIZES`` it accepts.

    Returns the spec with ``status`` (``ok``, ``no_size`` or ``over_budget``), its profile
    and, when left out, why.
    """
    import bnas_tf  # noqa: F401
    from bnas_tf.export import model_summary

    import tensorflow as tf

    errors = {}
    for size in ZOO_SIZES:
        spec = {"kind": "zoo", "module": module, "model": model, "input_size": size}
        try:
            built = build_model(spec)
        except Exception as error:  # noqa: BLE001  (larq-zoo raises several kinds)
            errors[size] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            continue
        finally:
            tf.keras.backend.clear_session()
        profile = model_summary(profiled(built))
        mmacs = profile["macs_total"] / 1e6
        if budget.zoo_max_mmacs is not None and mmacs > budget.zoo_max_mmacs:
            return {
                **spec,
                "status": "over_budget",
                "profile": profile,
                "why": f"{mmacs:.0f} MMACs/image at {size}x{size} > the {budget.name} budget's "
                f"{budget.zoo_max_mmacs:.0f}",
            }
        return {**spec, "status": "ok", "profile": profile}
    return {
        "kind": "zoo",
        "module": module,
        "model": model,
        "status": "no_size",
        "why": f"builds at none of {ZOO_SIZES}: {errors.get(ZOO_SIZES[-1], '')}",
        "errors": errors,
    }


# ------------------------------------------------------------------------------ training
def _train_config(budget: Budget, seed: int):
    from bnas_tf.training import TrainConfig

    return TrainConfig(
        genotype="bnas_a",
        dataset=DATASET,
        limit=budget.train_limit,
        limit_test=budget.test_limit,
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        optimizer="adam",
        learning_rate=2e-3,
        lr_schedule="onecycle",
        weight_decay=0.0,
        drop_path_rate=0.0,
        augment=False,
        seed=seed,
        verbose=0,
    )


def train_once(spec: dict, budget: Budget, seed: int) -> dict:
    """Build ``spec``'s model, train it with the budget, evaluate it on the test images."""
    import bnas_tf  # noqa: F401
    from bnas_tf import data as data_lib
    from bnas_tf.export import model_summary
    from bnas_tf.training import make_optimizer

    import tensorflow as tf

    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(seed)
    config = _train_config(budget, seed)
    model = build_model(spec)
    profile = model_summary(profiled(model))
    n_train = data_lib.num_examples(DATASET, "train")
    n_train = min(n_train, budget.train_limit) if budget.train_limit else n_train
    steps = max(n_train // budget.batch_size, 1)
    model.compile(
        optimizer=make_optimizer(config, steps * budget.epochs),
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.CategoricalAccuracy(name="accuracy")],
    )

    def one_hot(x, y):
        return x, tf.one_hot(y, NUM_CLASSES)

    history = []
    with Meter() as train_meter:
        for epoch in range(budget.epochs):
            train = data_lib.load(
                DATASET,
                "train",
                batch_size=budget.batch_size,
                shuffle=True,
                seed=seed * 1000 + epoch,
                augment=False,
                limit=budget.train_limit,
                drop_remainder=True,
            ).map(one_hot)
            logs = model.fit(train, initial_epoch=epoch, epochs=epoch + 1, verbose=0).history
            history.append({k: float(v[-1]) for k, v in logs.items()})
    with Meter() as bn_meter:
        recalibrate_batch_norm(
            model,
            data_lib.load(
                DATASET,
                "train",
                batch_size=budget.batch_size,
                shuffle=True,
                seed=seed * 1000 + budget.epochs,
                limit=budget.train_limit,
            ),
        )
    test = data_lib.load(DATASET, "test", batch_size=500, limit=budget.test_limit).map(one_hot)
    with Meter() as eval_meter:
        loss, accuracy = model.evaluate(test, verbose=0)
    n_test = data_lib.num_examples(DATASET, "test")
    n_test = min(n_test, budget.test_limit) if budget.test_limit else n_test
    tf.keras.backend.clear_session()
    return {
        "seed": seed,
        "test_accuracy": float(accuracy),
        "test_loss": float(loss),
        "test_examples": n_test,
        "train_examples": steps * budget.batch_size,
        "steps": steps * budget.epochs,
        "history": history,
        "profile": profile,
        **train_meter.as_dict("train_"),
        **eval_meter.as_dict("eval_"),
        "bn_recalibration_wall_s": bn_meter.wall_s,
    }


#: BN momentum while re-estimating the moving statistics (one pass over the training images).
RECALIBRATION_MOMENTUM = 0.9


def recalibrate_batch_norm(model, images) -> int:
    """Re-estimate every batch-norm layer's moving mean and variance with the trained weights.

    After a short training (47 steps at the ``cpu-small`` budget) the moving averages of
    Keras' default momentum 0.99 still hold much of their initial (0, 1): the
    Kim-template network trained to 58 % training accuracy scored 17.5 % on the test set.
    larq-zoo models use other momenta, so without this step the comparison would turn on
    a batch-norm setting. Every network gets the same treatment: statistics reset, then one
    pass over the training images in training mode (no weight update) with momentum
    ``RECALIBRATION_MOMENTUM`` (after 47 batches 0.9^47 < 1 % of the reset values
    remain). Returns the number of layers recalibrated.
    """
    import tensorflow as tf

    layers = [m for m in model.submodules if isinstance(m, tf.keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
        layer.moving_variance.assign(tf.ones_like(layer.moving_variance))
        layer.momentum = RECALIBRATION_MOMENTUM
    step = tf.function(lambda x: model(x, training=True))  # a fresh trace sees the new momentum
    for x, _ in images:
        step(x)
    for layer, momentum in zip(layers, saved):
        layer.momentum = momentum
    return len(layers)


def _model_spec(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in ("status", "profile", "why", "errors")}


def _train_unit(budget: Budget, spec: dict, seed: int) -> dict:
    return {
        "model": spec,
        "seed": seed,
        "train": dataclasses.asdict(_train_config(budget, seed)),
        "bn_recalibration_momentum": RECALIBRATION_MOMENTUM,
    }


def is_cached_training(budget: Budget, name: str, spec: dict) -> bool:
    """Whether ``train_and_measure`` would read every seed of ``name`` from the cache."""
    spec = _model_spec(spec)
    return all(
        (
            CACHE / budget.name / "train" / f"{name}-{_key(_train_unit(budget, spec, seed))}.json"
        ).exists()
        for seed in budget.seeds
    )


def train_and_measure(budget: Budget, name: str, spec: dict, fresh: bool = False) -> dict:
    """Train ``spec`` once per seed of the budget (each cached); accuracy mean and spread.

    Returns ``name``, ``spec``, ``runs`` (per seed), ``accuracy_mean``, ``accuracy_std``
    (sample standard deviation; 0 with one seed), ``accuracy_min``/``max``, the
    ``profile`` (parameters, memory, MACs by precision) and mean training time.
    """
    spec = _model_spec(spec)
    runs = []
    for seed in budget.seeds:
        unit = _train_unit(budget, spec, seed)
        runs.append(
            cached(
                budget, "train", name, unit, lambda seed=seed: train_once(spec, budget, seed), fresh
            )
        )
    accuracies = [r["test_accuracy"] for r in runs]
    mean = sum(accuracies) / len(accuracies)
    std = (
        (sum((a - mean) ** 2 for a in accuracies) / (len(accuracies) - 1)) ** 0.5
        if len(accuracies) > 1
        else 0.0
    )
    return {
        "name": name,
        "spec": spec,
        "runs": runs,
        "seeds": list(budget.seeds),
        "accuracy_mean": mean,
        "accuracy_std": std,
        "accuracy_min": min(accuracies),
        "accuracy_max": max(accuracies),
        "profile": runs[0]["profile"],
        "train_wall_s_mean": sum(r["train_wall_s"] for r in runs) / len(runs),
        "others_cpu_share_mean": _mean([r.get("train_others_cpu_share") for r in runs]),
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def row(entry: dict, group: str) -> dict:
    """The compact table row of a ``train_and_measure`` entry."""
    p = entry["profile"]
    return {
        "name": entry["name"],
        "group": group,
        "accuracy_mean": entry["accuracy_mean"],
        "accuracy_std": entry["accuracy_std"],
        "seeds": len(entry["seeds"]),
        "params_total": p["params_total"],
        "params_1bit": p["params_1bit"],
        "memory_kib": p["memory_kib"],
        "macs_total_m": p["macs_total"] / 1e6,
        "binarized_mac_ratio": p["binarized_mac_ratio"],
        "train_wall_s": entry["train_wall_s_mean"],
        "others_cpu_share": entry["others_cpu_share_mean"],
    }


def budget_dict(budget: Budget) -> dict:
    return {**dataclasses.asdict(budget), "search_epochs": budget.search_epochs}


def fmt_acc(mean: float, std: float, seeds: int) -> str:
    """``91.23`` or ``91.23 ± 0.40`` (percent)."""
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if seeds > 1 else "")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "search":
        _search_child(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
