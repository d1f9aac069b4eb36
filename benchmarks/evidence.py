"""The evidence study: do the searches find better binary cells than chance, at equal cost?

Every arm is trained with one recipe, at matched OPs, on the same data; every unit (an OPs
profile, a search, a training) is cached under ``runs/bench/<budget>/`` by its whole
specification, so the study resumes where it stopped and spans sessions. ``--phase`` runs
one part, ``all`` (the default) runs them in order:

1. **data**: Fashion-MNIST's 60,000 training images split once: the first 50,000 are the
   development set (searches and training), the last 10,000 the validation set (every choice:
   the epoch kept, the recipe's length); the 10,000 test images are touched only for the
   reported top-1. The split is an ``npz:`` dataset (``bnas_tf.sources``), so the searches'
   child processes read it by name.
2. **ops**: each network's OPs (binary MACs / 64 + float MACs, Bi-Real Net's convention, from
   ``larq.models.summary``) and memory (1-bit weights at 1 bit) as a function of its channels.
   The target is the median OPs of the random cells of the network's template at the base
   size; every network is then built with the ``init_channels`` that brings its OPs closest
   to it (``OPs(c)`` is
   ``a c^2 + b c + d`` exactly: fitted on three widths, checked at the chosen one).
3. **calibrate**: the first ``calibration_cells`` random Kim cells, each trained with two
   seeds at E epochs for E in ``candidate_epochs``, smallest first, until the two seeds'
   rankings agree (Kendall tau >= 0.6 on validation top-1) and the seed-to-seed standard
   deviation is below a third of the spread between cells. The first E that passes is the
   recipe (the last candidate if none does, said in the results).
4. **search**: the arms' searches on the development set, child processes (peak memory
   per search, CPU time): Kim et al. (``bnas_kim``, sign + scale, entropy), Chen et al.
   (``bnas_darts``, XNOR, K=4, operation space reduction), plain binary DARTS, and Kim's
   ablations (no inter-cell skip, no Zeroise, no diversity).
5. **train**: every arm at matched OPs with the recipe: searched cells, random cells of both
   spaces, the published cells (BNAS-A, ``BNAS_XNOR_1``) and the full-precision-searched DARTS
   (V2) and PC-DARTS cells binarized in the DARTS template.
6. **report**: ``benchmarks/results/evidence_<budget>.json`` and ``docs/evidence.md``: the
   verdict table (hierarchical bootstrap over search seeds, cells and training seeds), the
   accuracy-vs-OPs and -memory plot, the ablations, the search cost.

```sh
.venv/bin/python benchmarks/evidence.py --budget=smoke            # minutes: the harness runs
.venv/bin/python benchmarks/evidence.py --budget=evidence         # the study (resumable)
.venv/bin/python benchmarks/evidence.py --budget=evidence --phase=calibrate
```
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import _common as C
import numpy as np

STUDY = "evidence"
HELD_OUT = 10_000
#: Where the study's unit results are kept: committed with the results, so that a study that
#: spans sessions loses nothing (the smoke budget's stay in ``runs/bench``).
UNITS = C.RESULTS / "evidence_units"
DOC = C.ROOT / "docs" / "evidence.md"


@dataclasses.dataclass(frozen=True)
class EvidenceBudget:
    """What sets the study's cost. ``name`` keys the cache folder."""

    name: str
    dev_images: int | None  #: development (training) images used, of the 50,000
    val_images: int | None  #: validation images, of the 10,000 held out
    test_images: int | None  #: test images, of the 10,000
    layers: int  #: cells of every trained network
    init_channels: int  #: base width (the OPs targets are the random cells' medians here)
    batch_size: int
    candidate_epochs: tuple[int, ...]
    calibration_cells: int
    search_images: int  #: development images a search sees (halved: weights / alphas)
    search_batch: int
    search_layers: int
    search_channels: int
    search_epochs: int  #: epochs of the DARTS-style searches; reduction: 1 epoch per stage
    samples_per_op: int
    eval_batches: int
    kim_search_seeds: int
    chen_search_seeds: int
    darts_search_seeds: int
    random_kim: int
    random_darts: int
    train_seeds: int  #: training seeds of every network
    searched_train_seeds: int  #: of the searched cells
    channel_range: tuple[int, int] = (4, 64)
    ops_tolerance: float = 0.05


BUDGETS = {
    # The harness end to end in minutes; numbers mean nothing.
    "smoke": EvidenceBudget(
        "evidence-smoke",
        dev_images=512,
        val_images=256,
        test_images=256,
        layers=3,
        init_channels=8,
        batch_size=64,
        candidate_epochs=(1, 2),
        calibration_cells=3,
        search_images=256,
        search_batch=32,
        search_layers=3,
        search_channels=4,
        search_epochs=1,
        samples_per_op=1,
        eval_batches=1,
        kim_search_seeds=1,
        chen_search_seeds=1,
        darts_search_seeds=1,
        random_kim=3,
        random_darts=2,
        train_seeds=1,
        searched_train_seeds=1,
        channel_range=(4, 16),
    ),
    # The study: at most 12 CPU-hours on a 2-core machine. 12 channels: a random Kim cell at
    # 16 took 683 CPU-s per epoch of 50,000 images (AMD Zen 3, oneDNN), which for the ~65
    # trainings and 10 searches would exceed the 12 CPU-hours.
    "evidence": EvidenceBudget(
        "evidence",
        dev_images=None,
        val_images=None,
        test_images=None,
        layers=4,
        init_channels=12,
        batch_size=128,
        # One epoch is the only candidate the 12 CPU-hours allow: an epoch of a network here
        # is ~490 CPU-s, and issue 23's arms alone are 68 trainings (~9.3 CPU-hours per epoch
        # of each) and 10 searches. The calibration still measures whether it passes.
        candidate_epochs=(1,),
        calibration_cells=8,
        search_images=10_000,
        search_batch=64,
        search_layers=3,
        search_channels=8,
        search_epochs=6,
        samples_per_op=2,
        eval_batches=4,
        kim_search_seeds=3,
        chen_search_seeds=2,
        darts_search_seeds=2,
        random_kim=10,
        random_darts=5,
        train_seeds=2,
        searched_train_seeds=3,
    ),
}

# Full-precision NAS cells, binarized in the DARTS template (the comparison of Kim et al.,
# Table 1). Genotypes from quark0/darts `cnn/genotypes.py` (DARTS_V2; Liu, Simonyan, Yang,
# ICLR 2019) and yuhuixu1993/PC-DARTS `genotypes.py` (PCDARTS; Xu et al., ICLR 2020); their
# separable and dilated convolutions become the binarized ones of `bnas_darts`.
_FP_TO_BINARY = {
    "sep_conv_3x3": "bin_sep_conv_3x3",
    "sep_conv_5x5": "bin_sep_conv_5x5",
    "dil_conv_3x3": "bin_dil_sep_conv_3x3",
    "dil_conv_5x5": "bin_dil_sep_conv_5x5",
}
FP_NAS_CELLS = {
    "darts_v2": {
        "normal": [
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2),
        ],
        "reduce": [
            ("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1),
        ],
    },
    "pc_darts": {
        "normal": [
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1),
        ],
        "reduce": [
            ("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2),
        ],
    },
}  # fmt: skip

#: The searches of the study: (family of ``_common.FAMILIES``, overrides, template overrides).
SEARCHES = {
    "kim": ("kim", {}),
    "chen": (
        "darts",
        dict(partial_channels=4, edge_normalization=True, method="reduction"),
    ),
    "darts": ("darts", {}),
    # The survey chapter's methods (issue 25), one search seed each: CP-NAS in Chen et al.'s
    # setting; BMES in its own space (a binary MobileNet), width 40 so that its OPs range
    # (0.39-1.18 M at 28x28, depthwise to dense) holds the DARTS template's target (0.90 M
    # with the factorized reduce counted), which is its --ops_budget.
    "cp_nas": (
        "darts",
        dict(partial_channels=4, edge_normalization=True, method="cp_nas", cp_beta=2.0),
    ),
    "bmes": ("kim", dict(method="bmes", bmes_width=40)),
    "kim_no_skip": ("kim", dict(inter_cell_skip=False)),
    "kim_no_zeroise": ("kim", dict(allow_none=False)),
    "kim_no_diversity": ("kim", dict(entropy_lambda=0.0)),
}
ABLATIONS = ("kim_no_skip", "kim_no_zeroise", "kim_no_diversity")


def _root(budget: EvidenceBudget) -> Path:
    return C.CACHE if budget.name.endswith("smoke") else UNITS


class Missing(LookupError):
    """A unit the study has not computed yet: ``--phase=progress`` leaves out what needs it."""


#: ``--phase=progress``: read the cached units, compute none.
_CACHED_ONLY = False


def cached(budget: EvidenceBudget, kind: str, name: str, spec: dict, compute, fresh=False):
    """``_common.cached`` under the study's unit folder (``Missing`` when only reading)."""
    if _CACHED_ONLY:

        def compute():
            raise Missing(f"{kind} {name}")

    return C.cached(budget, kind, name, spec, compute, fresh, root=_root(budget))


# ------------------------------------------------------------------------------ data
def dev_dataset(budget: EvidenceBudget) -> str:
    """The ``npz:`` dataset of the development set (train) and the validation set (test)."""
    path = C.CACHE / budget.name / "fashion_mnist_dev_val.npz"
    if not path.exists():
        import bnas_tf  # noqa: F401
        from bnas_tf import data as data_lib

        x, y = data_lib.load_arrays(C.DATASET, "train")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(
            tmp,
            x_train=x[:-HELD_OUT, ..., 0],
            y_train=y[:-HELD_OUT],
            x_test=x[-HELD_OUT:, ..., 0],
            y_test=y[-HELD_OUT:],
        )
        os.replace(tmp, path)
    return f"npz:{path}"


# ------------------------------------------------------------------------------ networks
def _genotype(cells: dict, space: str) -> dict:
    concat = [2, 3, 4, 5]
    return {
        "normal": [[_FP_TO_BINARY.get(op, op), i] for op, i in cells["normal"]],
        "normal_concat": concat,
        "reduce": [[_FP_TO_BINARY.get(op, op), i] for op, i in cells["reduce"]],
        "reduce_concat": concat,
        "search_space": space,
    }


def _template(family: str, **overrides) -> dict:
    """A network template: the family's binarization and inter-cell skips; ``sizing`` is
    ``matched`` (channels for the family's OPs target) or ``base`` (the base width)."""
    f = C.FAMILIES[family]
    return {
        "family": family,
        "binarization": f["binarization"],
        "inter_cell_skip": f["inter_cell_skip"],
        "sizing": "matched",
        **overrides,
    }


def network_spec(budget: EvidenceBudget, genotype: dict, template: dict, channels=None) -> dict:
    """``_common.genotype_spec`` in ``template``, at ``channels`` (default: the base width); a
    BMES group genotype: its binary MobileNet at its searched width (its group counts need not
    divide another)."""
    if genotype.get("kind") == "bmes":
        return {"kind": "bmes", "genotype": genotype, "binarization": template["binarization"]}
    spec = C.genotype_spec(
        budget,
        genotype,
        binarization=template["binarization"],
        inter_cell_skip=template["inter_cell_skip"],
    )
    return {**spec, "init_channels": channels or budget.init_channels}


def random_cells(budget: EvidenceBudget) -> dict[str, tuple[dict, dict]]:
    """``name -> (genotype, template)`` of the random arms: Kim's space with Zeroise (the
    search may choose it), the DARTS space without it (DARTS' derivation never picks it)."""
    import bnas_tf  # noqa: F401
    from bnas_tf.sampling import random_genotype

    cells = {}
    for i in range(budget.random_kim):
        g = random_genotype(1000 + i, "bnas_kim", allow_none=True).to_dict()
        cells[f"random_kim_{i}"] = (g, _template("kim"))
    for i in range(budget.random_darts):
        g = random_genotype(2000 + i, "bnas_darts", allow_none=False).to_dict()
        cells[f"random_darts_{i}"] = (g, _template("darts"))
    return cells


def published_cells() -> dict[str, tuple[dict, dict]]:
    import bnas_tf  # noqa: F401
    from bnas_tf import genotype as genotype_lib

    return {
        "bnas_a": (genotype_lib.get("bnas_a").to_dict(), _template("kim")),
        "bnas_xnor_1": (genotype_lib.get("bnas_xnor_1").to_dict(), _template("darts")),
        **{
            f"fp_{name}": (_genotype(cells, "bnas_darts"), _template("kim"))
            for name, cells in FP_NAS_CELLS.items()
        },
    }


#: Keys the profiles with how OPs are counted: 2 adds the float 1x1 convolutions of DARTS'
#: factorized reduce (the stride-2 skip), which larq's profile does not look into.
OPS_COUNTING = 2


def profile(budget: EvidenceBudget, name: str, spec: dict, fresh: bool = False) -> dict:
    """OPs, memory and parameters of ``spec`` (cached)."""

    def compute() -> dict:
        import bnas_tf  # noqa: F401
        from bnas_tf.export import model_summary

        import tensorflow as tf

        tf.keras.backend.clear_session()
        p = model_summary(C.profiled(C.build_model(spec)))
        tf.keras.backend.clear_session()
        return {"profile": p, "ops": p["macs_1bit"] / 64 + p["macs_32bit"]}

    return cached(budget, "profile", name, {**spec, "ops_counting": OPS_COUNTING}, compute, fresh)


def matched_channels(budget: EvidenceBudget, name: str, spec: dict, target: float) -> dict:
    """The ``init_channels`` whose OPs come closest to ``target``, with its profile.

    ``OPs(c) = a c^2 + b c + d`` (every conv is channels x channels, the stem and the
    classifier channels x constant): fitted on three widths, every integer width of
    ``channel_range`` predicted, the best one (and its neighbours when the prediction is
    off) built and profiled.
    """
    lo, hi = budget.channel_range
    widths = (lo, (lo + hi) // 2, hi)
    ops = [profile(budget, f"{name}_c{c}", {**spec, "init_channels": c})["ops"] for c in widths]
    a, b, d = np.polyfit(widths, ops, 2)
    candidates = sorted(range(lo, hi + 1), key=lambda c: abs((a * c * c + b * c + d) / target - 1))
    best = None
    for c in candidates[:3]:
        p = profile(budget, f"{name}_c{c}", {**spec, "init_channels": c})
        if best is None or abs(p["ops"] / target - 1) < abs(best[1]["ops"] / target - 1):
            best = (c, p)
    c, p = best
    neighbours = {}  # what one channel less or more would give (for the page's window check)
    for n in (c - 1, c + 1):
        try:
            q = profile(budget, f"{name}_c{n}", {**spec, "init_channels": n})
            neighbours[str(n)] = q["ops"] / target
        except Missing:  # --phase=progress: not profiled
            pass
    return {
        "init_channels": c,
        "ops": p["ops"],
        "ops_ratio": p["ops"] / target,
        "neighbour_ratios": neighbours,
        **p["profile"],
    }


#: The issue's matched-OPs window: every network within 5 % of its OPs target.
OPS_WINDOW = 0.05


def window_lines(payload: dict) -> list[str]:
    """The page's sentence on OPs-matched networks outside the OPs window, with their
    neighbours' gaps (at narrow widths one channel moves the OPs by more than the window). The
    networks not matched (the no-skip ablation, BMES, the budgeted searches) are left out."""
    out = []
    for units in payload["arms"].values():
        for unit, u in units.items():
            z = u["size"]
            if "neighbour_ratios" not in z or abs(z["ops_ratio"] - 1) <= OPS_WINDOW:
                continue
            around = ", ".join(
                f"{n}: {100 * (r - 1):+.1f} %" for n, r in z["neighbour_ratios"].items()
            )
            out.append(
                f"{unit} at {z['init_channels']} channels, {100 * (z['ops_ratio'] - 1):+.1f} %"
                + (f" (other widths {around})" if around else "")
            )
    if not out:
        return [f"Every matched network is within {100 * OPS_WINDOW:.0f} % of its OPs target.", ""]
    return [
        f"Outside the {100 * OPS_WINDOW:.0f} % window: " + "; ".join(out) + ". The closest "
        "integer width is kept: where one channel moves the OPs by more than the window's "
        f"{200 * OPS_WINDOW:.0f} % span, no width may land inside it.",
        "",
    ]


# ------------------------------------------------------------------------------ training
def train_once(budget: EvidenceBudget, spec: dict, epochs: int, seed: int) -> dict:
    """The recipe: Adam, one-cycle learning rate (max 2e-3), no weight decay, no augmentation,
    batch ``batch_size``, ``epochs`` epochs on the development set; after each epoch top-1 on
    the validation set; the weights of the best validation epoch are kept and scored on the
    test set."""
    import bnas_tf  # noqa: F401
    from bnas_tf import data as data_lib
    from bnas_tf.training import TrainConfig, make_optimizer

    import tensorflow as tf

    dev = dev_dataset(budget)
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(seed)
    model = C.build_model(spec)
    n = data_lib.num_examples(dev, "train")
    n = min(n, budget.dev_images) if budget.dev_images else n
    steps = n // budget.batch_size
    config = TrainConfig(
        optimizer="adam",
        learning_rate=2e-3,
        lr_schedule="onecycle",
        weight_decay=0.0,
        epochs=epochs,
        batch_size=budget.batch_size,
        seed=seed,
    )
    model.compile(
        optimizer=make_optimizer(config, steps * epochs),
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.CategoricalAccuracy(name="accuracy")],
    )

    def one_hot(x, y):
        return x, tf.one_hot(y, C.NUM_CLASSES)

    val = data_lib.load(dev, "test", batch_size=500, limit=budget.val_images).map(one_hot)
    history, best, best_weights = [], -1.0, None
    with C.Meter() as meter:
        for epoch in range(epochs):
            train = data_lib.load(
                dev,
                "train",
                batch_size=budget.batch_size,
                shuffle=True,
                seed=seed * 1000 + epoch,
                limit=budget.dev_images,
                drop_remainder=True,
            ).map(one_hot)
            logs = model.fit(train, verbose=0).history
            val_loss, val_acc = model.evaluate(val, verbose=0)
            history.append(
                {"loss": logs["loss"][-1], "accuracy": logs["accuracy"][-1], "val": val_acc}
            )
            if val_acc > best:
                best, best_weights, best_epoch = val_acc, model.get_weights(), epoch + 1
    model.set_weights(best_weights)
    test = data_lib.load(C.DATASET, "test", batch_size=500, limit=budget.test_images)
    _, test_acc = model.evaluate(test.map(one_hot), verbose=0)
    tf.keras.backend.clear_session()
    return {
        "val_accuracy": float(best),
        "best_epoch": best_epoch,
        "test_accuracy": float(test_acc),
        "history": history,
        **meter.as_dict("train_"),
    }


def train(budget, name: str, spec: dict, epochs: int, seeds, fresh: bool = False) -> list[dict]:
    """``spec`` trained once per seed (each a cached unit)."""
    return [
        cached(
            budget,
            "train",
            f"{name}_e{epochs}_s{seed}",
            {"model": spec, "epochs": epochs, "seed": seed, "recipe": "adam-onecycle-2e-3-v1"},
            lambda seed=seed: train_once(budget, spec, epochs, seed),
            fresh,
        )
        for seed in seeds
    ]


# ------------------------------------------------------------------------------ statistics
def kendall_tau(a, b) -> float:
    """Kendall's tau-b of two score vectors."""
    n, concordant, discordant, ties_a, ties_b = len(a), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    pairs = concordant + discordant
    denominator = math.sqrt((pairs + ties_a) * (pairs + ties_b))
    return (concordant - discordant) / denominator if denominator else 0.0


def calibration_stats(runs: dict[str, list[dict]], key: str = "val_accuracy") -> dict:
    """Seed agreement of the calibration cells: tau between the first two seeds' rankings,
    pooled seed-to-seed standard deviation, standard deviation of the cells' means."""
    names = sorted(runs)
    seed0 = [runs[n][0][key] for n in names]
    seed1 = [runs[n][1][key] for n in names]
    pooled = math.sqrt(np.mean([np.var([r[key] for r in runs[n]], ddof=1) for n in names]))
    spread = float(np.std([np.mean([r[key] for r in runs[n]]) for n in names], ddof=1))
    tau = kendall_tau(seed0, seed1)
    return {
        "kendall_tau": tau,
        "seed_std": pooled,
        "cell_spread": spread,
        "passes": tau >= 0.6 and pooled < spread / 3,
    }


def bootstrap_difference(
    groups_a: list[list[float]], groups_b: list[list[float]], reps: int = 10_000, seed: int = 0
) -> dict:
    """Mean of arm A minus mean of arm B with a 95 % hierarchical bootstrap interval.

    Each arm is a list of units (a search seed or a random cell), each unit a list of its
    training seeds' accuracies; a replicate resamples units, then seeds within each unit.
    """
    rng = np.random.default_rng(seed)

    def replicate(groups) -> float:
        units = [groups[i] for i in rng.integers(len(groups), size=len(groups))]
        return float(np.mean([np.mean(rng.choice(u, size=len(u))) for u in units]))

    def point(groups) -> float:
        return float(np.mean([np.mean(u) for u in groups]))

    diffs = np.array([replicate(groups_a) - replicate(groups_b) for _ in range(reps)])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {
        "difference": point(groups_a) - point(groups_b),
        "low": float(low),
        "high": float(high),
        "units_a": len(groups_a),
        "units_b": len(groups_b),
    }


# ------------------------------------------------------------------------------ searches
def search_config(budget: EvidenceBudget, search: str, seed: int) -> dict:
    family, overrides = SEARCHES[search]
    f = C.FAMILIES[family]
    config = {
        "dataset": dev_dataset(budget),
        "limit": budget.search_images,
        "batch_size": budget.search_batch,
        "layers": budget.search_layers,
        "init_channels": budget.search_channels,
        "epochs": budget.search_epochs,
        "entropy_tau": 7.7 * budget.search_epochs / 50,
        "genotype_selection": "best",
        "stage_epochs": 1,
        "samples_per_op": budget.samples_per_op,
        "eval_batches": budget.eval_batches,
        "seed": seed,
        "verbose": 0,
        **f,
        **overrides,
    }
    return config


def run_search(
    budget: EvidenceBudget,
    search: str,
    seed: int,
    fresh: bool = False,
    *,
    extra: dict | None = None,
    label: str | None = None,
    rule: dict | None = None,
) -> dict:
    """One search in a child process (its own peak memory), cached; ``extra`` settings on top of
    the named search's (cached as ``label``); ``rule``, what the settings do not name but the
    result depends on, added to the unit's key."""
    config = {**search_config(budget, search, seed), **(extra or {})}
    search = label or search
    if config.get("method") == "bmes":  # the DARTS template's OPs target is its budget
        config["ops_budget"] = ops_targets(budget)["darts"]
    key = {k: v for k, v in config.items() if k != "dataset"}
    key["data"] = f"fashion_mnist[:-{HELD_OUT}]"
    key.update(rule or {})

    out_dir = C.CACHE / budget.name / "search_runs" / f"{search}_s{seed}"

    def compute() -> dict:
        return C.search_in_child(config, out_dir, f"{search}_s{seed}", timeout=None)

    return cached(budget, "search", f"{search}_s{seed}", key, compute, fresh)


def search_seeds(budget: EvidenceBudget) -> dict[str, int]:
    return {
        "kim": budget.kim_search_seeds,
        "chen": budget.chen_search_seeds,
        "darts": budget.darts_search_seeds,
        **{a: 1 for a in ABLATIONS},
        "cp_nas": 1,
        "bmes": 1,
    }


# ------------------------------------------------------------------------------ the study
def ops_targets(budget: EvidenceBudget) -> dict[str, float]:
    """Per template family, the median OPs of its random cells at the base size."""
    targets = {}
    for family in ("kim", "darts"):
        ops = [
            profile(budget, f"base_{name}", network_spec(budget, g, t))["ops"]
            for name, (g, t) in random_cells(budget).items()
            if t["family"] == family
        ]
        targets[family] = float(np.median(ops))
    return targets


def size(budget: EvidenceBudget, unit: str, g: dict, t: dict, targets: dict) -> dict:
    """The unit's width and profile: matched to its family's OPs target, or the base width."""
    target = t.get("target") or targets[t["family"]]
    spec = network_spec(budget, g, t)
    if t["sizing"] == "fixed":  # a budgeted search's network: the width it was searched for
        p = profile(budget, f"{unit}_c{t['channels']}", {**spec, "init_channels": t["channels"]})
        return {
            "init_channels": t["channels"],
            "ops": p["ops"],
            "ops_ratio": p["ops"] / target,
            **p["profile"],
        }
    if g.get("kind") == "bmes":  # searched under the OPs budget at its own width
        p = profile(budget, f"{unit}_w{g['width']}", spec)
        return {
            "init_channels": g["width"],
            "ops": p["ops"],
            "ops_ratio": p["ops"] / target,
            **p["profile"],
        }
    if t["sizing"] == "matched":
        return matched_channels(budget, unit, spec, target)
    p = profile(budget, f"{unit}_c{budget.init_channels}", spec)
    return {
        "init_channels": budget.init_channels,
        "ops": p["ops"],
        "ops_ratio": p["ops"] / target,
        **p["profile"],
    }


def calibrate(budget: EvidenceBudget, targets: dict, fresh: bool = False) -> dict:
    cells = list(random_cells(budget).items())[: budget.calibration_cells]
    steps = []
    for epochs in budget.candidate_epochs:
        runs = {}
        for name, (g, t) in cells:
            try:
                channels = size(budget, name, g, t, targets)["init_channels"]
                spec = network_spec(budget, g, t, channels)
                runs[name] = train(budget, name, spec, epochs, (0, 1), fresh)
            except Missing:
                continue
        stats = {**calibration_stats(runs), "cells": len(runs)}
        C.log(f"calibration E={epochs}: {stats}")
        steps.append({"epochs": epochs, **stats})
        if stats["passes"]:
            break
    return {"candidates": steps, "epochs": steps[-1]["epochs"], "passed": steps[-1]["passes"]}


def train_seeds(budget: EvidenceBudget, search: str) -> int:
    """Training seeds of each network a search found: ``searched_train_seeds`` (issue 23: 3 for
    the searched arms) for every search but the budgeted ones (issue 26: two search seeds of two
    trainings each per budget), random and published cells ``train_seeds``."""
    single = (*ABLATIONS, "cp_nas", "bmes")
    if search in ("kim", "chen", "darts", *single):
        return budget.searched_train_seeds
    return budget.train_seeds


def searched(budget: EvidenceBudget, search: str, fresh: bool = False) -> dict[str, tuple]:
    """``unit -> (genotype, template, training seeds)`` of one searched arm (runs its searches)."""
    family, _ = SEARCHES[search]
    # the no-skip ablation keeps the base width (Kim et al.'s ablations change one thing):
    # at matched OPs it would be several times wider, the skips' float 1x1 convolutions
    # being most of the Kim template's OPs
    skip = {"inter_cell_skip": False, "sizing": "base"} if search == "kim_no_skip" else {}
    if search == "bmes":  # its OPs target is the DARTS template's; binarization its own
        template = _template("darts", binarization=C.FAMILIES[family]["binarization"])
    else:
        template = _template(family, **skip)
    seeds = train_seeds(budget, search)
    units = {}
    for s in range(search_seeds(budget)[search]):
        try:
            genotype = run_search(budget, search, s, fresh)["genotype"]
        except Missing:
            continue
        units[f"{search}_s{s}"] = (genotype, template, seeds)
    return units


def arms(budget: EvidenceBudget, targets: dict, fresh: bool = False) -> Iterator[tuple[str, dict]]:
    """``(arm, {unit -> (genotype, template, training seeds)})`` in the order the study trains
    them, each arm's searches run when it comes up, so that a study stopped by its budget has the
    main comparison first: Kim-searched against random Kim-space cells (the random cells need no
    search; the calibration trained most of them), the random DARTS-space cells, CP-NAS and
    BMES (issue 25: one search each, compared with the random DARTS-space cells), the published
    and binarized full-precision-NAS cells, Chen et al.'s and plain binary DARTS, the ablations,
    then the budgeted searches (issue 26)."""
    randoms: dict[str, dict] = {}
    for name, (g, t) in random_cells(budget).items():
        arm = "random_kim" if name.startswith("random_kim") else "random_darts"
        randoms.setdefault(arm, {})[name] = (g, t, budget.train_seeds)
    yield "random_kim", randoms["random_kim"]
    yield "kim", searched(budget, "kim", fresh)
    yield "random_darts", randoms["random_darts"]
    for search in ("cp_nas", "bmes"):  # issue 25's rows: one search each, the cheapest to end
        yield search, searched(budget, search, fresh)
    for name, (g, t) in published_cells().items():
        yield name, {name: (g, t, budget.train_seeds)}
    for search in ("chen", "darts", *ABLATIONS):
        yield search, searched(budget, search, fresh)
    try:
        yield from budget_arms(budget, targets, fresh)
    except Missing:  # --phase=progress before the budgets' widths are profiled
        return


#: Issue 26: budgeted searches at these multiples of the DARTS template's OPs target, with
#: this ``--cost_weight`` (mu of the budget penalty; the program's default).
BUDGET_FACTORS = (0.5, 1.0, 2.0)
COST_WEIGHT = 2.0
#: Issue 26's searched arms, penalty -> arm prefix. ``two_sided``: the budget is a target for
#: alpha's loss and for the derivation. ``hinge`` (with ``--target_fill=0.95``): alpha's loss
#: only keeps the expected cost under the budget (a ceiling, so plain DARTS while it is under),
#: and the derivation alone aims at the target.
BUDGET_PENALTIES = {"two_sided": "budget", "hinge": "budget_hinge"}
#: The rule ``--fit_width`` follows under a target, in the budgeted searches' key: the genotype
#: derived again at the width nearest the budget's where it lands (``budget.land_target``); the
#: searches before it kept the budget's width's genotype and widened it.
BUDGET_RULE = {"fit": "land_target"}


def budget_arm(penalty: str, x: float) -> str:
    """The arm (and search label) of ``penalty``'s searches at ``x`` times the OPs target."""
    return f"{BUDGET_PENALTIES[penalty]}_{x:g}x"


def budget_widths(budget: EvidenceBudget, targets: dict) -> dict[float, int]:
    """Per budget factor, the final width at which the median random DARTS-space cell costs
    that budget (the budgeted search then chooses ops for a network of that width)."""
    cells = [(n, g, t) for n, (g, t) in random_cells(budget).items() if t["family"] == "darts"]
    ops = [profile(budget, f"base_{n}", network_spec(budget, g, t))["ops"] for n, g, t in cells]
    name, g, t = cells[int(np.argsort(ops)[len(ops) // 2])]
    spec = network_spec(budget, g, t)
    return {
        x: matched_channels(budget, name, spec, x * targets["darts"])["init_channels"]
        for x in BUDGET_FACTORS
    }


def budget_extras(budget: EvidenceBudget, targets: dict) -> dict[str, dict]:
    """Per budgeted arm (``budget_arm``: each penalty at each budget factor, factor by factor),
    the settings its searches add to plain binary DARTS: the OPs budget under that penalty, for
    a final network of the width where the median random cell costs that much, each epoch's
    genotype derived within it and filled to 95 % of it (``--derive_within_budget``,
    ``--target_fill``), and ``--fit_width``."""
    return {
        budget_arm(penalty, x): {
            "ops_budget": x * targets["darts"],
            "cost_weight": COST_WEIGHT,
            "budget_penalty": penalty,
            "fit_width": True,
            "derive_within_budget": True,
            "target_fill": 0.95,
            "final_layers": budget.layers,
            "final_init_channels": width,
        }
        for x, width in budget_widths(budget, targets).items()
        for penalty in BUDGET_PENALTIES
    }


def budget_searches(
    budget: EvidenceBudget, extras: dict[str, dict], fresh: bool = False
) -> Iterator[tuple[str, str, dict]]:
    """``(arm, unit, search record)`` of the budgeted searches with ``extras`` (a subset of
    ``budget_extras``), run when not cached, left out when missing in ``--phase=progress``."""
    for label, extra in extras.items():
        for s in range(budget.darts_search_seeds):
            try:
                found = run_search(
                    budget, "darts", s, fresh, extra=extra, label=label, rule=BUDGET_RULE
                )
            except Missing:
                continue
            yield label, f"{label}_s{s}", found


#: Issue 26's third arm: the hinge's searches derived again as a ceiling (no fill) and trained
#: at the widest width that genotype fits in. The hinge's alphas do not see the derivation, so
#: this arm and the hinge's differ in the fill alone (``bnas_tf.search.driver.rederive``).
CEILING = "budget_ceiling"
#: Issue 26's arms on the page: prefix -> the penalty, and how the derivation reads the budget.
BUDGET_READINGS = {
    BUDGET_PENALTIES["two_sided"]: "two_sided, target",
    BUDGET_PENALTIES["hinge"]: "hinge, target",
    CEILING: "hinge, ceiling",
}


def ceiling_fit(
    budget: EvidenceBudget, label: str, seed: int, extra: dict, found: dict, fresh: bool = False
) -> dict:
    """The hinge search ``label``/``seed`` (settings ``extra``, record ``found``) read as a
    ceiling: its selected epoch derived again without the fill, and ``--fit_width``'s widest
    width for that genotype (``{"genotype", "budget", "budget_fit"}``), from the search's run
    folder; cached, so the page needs the folder only once."""
    out_dir = C.CACHE / budget.name / "search_runs" / f"{label}_s{seed}"
    key = {**extra, **BUDGET_RULE, "target_fill": 0.0, "search": found["genotype"]}

    def compute() -> dict:
        import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
        from bnas_tf.search.driver import SearchConfig, rederive

        config = {**search_config(budget, "darts", seed), **extra, "target_fill": 0.0}
        ceiling = SearchConfig.from_flat(config).budget(10, (28, 28, 1))  # Fashion-MNIST
        genotype, report, fitted = rederive(out_dir, ceiling, log=C.log)
        return {"genotype": genotype.to_dict(), "budget": report, "budget_fit": fitted}

    return cached(budget, "derive", ceiling_unit(f"{label}_s{seed}"), key, compute, fresh)


def ceiling_unit(hinge_unit: str) -> str:
    """``budget_hinge_0.5x_s0`` -> ``budget_ceiling_0.5x_s0``: the hinge search's unit read as a
    ceiling."""
    return hinge_unit.replace(BUDGET_PENALTIES["hinge"], CEILING, 1)


def budget_ceilings(
    budget: EvidenceBudget, hinge: str, extra: dict, records: dict[str, dict], fresh: bool = False
) -> dict[str, dict]:
    """``ceiling_fit`` of each of the hinge arm ``hinge``'s search ``records`` (unit -> record),
    by its ``CEILING`` unit; left out when missing in ``--phase=progress``."""
    ceilings = {}
    for unit, found in records.items():
        seed = int(unit.rsplit("_s", 1)[1])
        try:
            ceilings[ceiling_unit(unit)] = ceiling_fit(budget, hinge, seed, extra, found, fresh)
        except Missing:
            continue
    return ceilings


def _fitted_units(budget: EvidenceBudget, records: dict[str, dict], extra: dict) -> dict:
    """Training units of budgeted searches' ``records``: each the genotype ``--fit_width``
    derived at the width it found (the search's own at the budget's width when it found
    none)."""
    units = {}
    for unit, found in records.items():
        fitted = found.get("budget_fit") or {}
        channels = fitted.get("init_channels") or extra["final_init_channels"]
        template = _template("darts", sizing="fixed", channels=channels, target=extra["ops_budget"])
        genotype = fitted.get("genotype") or found["genotype"]
        units[unit] = (genotype, template, budget.train_seeds)
    return units


def budget_arms(
    budget: EvidenceBudget, targets: dict, fresh: bool = False
) -> Iterator[tuple[str, dict]]:
    """Per budget factor in turn (a study cut short has whole comparisons): each penalty's arm
    (``budget_arm``: the budgeted searches' networks, ``budget_extras``); the hinge's searches
    read as a ceiling (``CEILING``, ``ceiling_fit``); then ``random_darts_<x>``, the random
    DARTS-space cells matched to the same OPs (x = 1: the ``random_darts`` arm itself)."""
    extras = budget_extras(budget, targets)
    for x in BUDGET_FACTORS:
        for penalty in BUDGET_PENALTIES:
            arm = budget_arm(penalty, x)
            records = {
                unit: found for _, unit, found in budget_searches(budget, {arm: extras[arm]}, fresh)
            }
            yield arm, _fitted_units(budget, records, extras[arm])
        hinge = budget_arm("hinge", x)  # `records`: the hinge's searches, the last penalty's
        ceilings = budget_ceilings(budget, hinge, extras[hinge], records, fresh)
        yield f"{CEILING}_{x:g}x", _fitted_units(budget, ceilings, extras[hinge])
        if x != 1.0:
            yield (
                f"random_darts_{x:g}x",
                {
                    f"{name}_{x:g}x": (g, {**t, "target": x * targets["darts"]}, 1)
                    for name, (g, t) in random_cells(budget).items()
                    if t["family"] == "darts"
                },
            )


def planned(budget: EvidenceBudget) -> dict[str, int]:
    """Trainings and searches of the whole study (issue 23's arms, then issues 25 and 26's)."""
    seeds = search_seeds(budget)
    searched_runs = sum(n * train_seeds(budget, s) for s, n in seeds.items())
    budgets = len(BUDGET_FACTORS)
    return {
        "trainings": (budget.random_kim + budget.random_darts + len(published_cells()))
        * budget.train_seeds
        + searched_runs
        + budgets * (len(BUDGET_PENALTIES) + 1) * budget.darts_search_seeds * budget.train_seeds
        + (budgets - 1) * budget.random_darts,
        "searches": sum(seeds.values())
        + budgets * len(BUDGET_PENALTIES) * budget.darts_search_seeds,
    }


def run_study(budget: EvidenceBudget, phase: str, fresh: bool = False) -> dict | None:
    global _CACHED_ONLY
    _CACHED_ONLY = phase == "progress"
    dev_dataset(budget)
    if phase == "data":
        return None
    targets = ops_targets(budget)
    C.log(f"OPs targets (median random cell at the base size): {targets}")
    if phase == "ops":
        return None
    calibration = calibrate(budget, targets, fresh)
    if phase == "calibrate":
        return None
    epochs = calibration["epochs"]
    trained: dict[str, dict] = {}
    for arm, units in arms(budget, targets, fresh):
        if phase == "search":
            continue
        for unit, (g, t, seeds) in units.items():
            try:
                sized = size(budget, unit, g, t, targets)
                spec = network_spec(budget, g, t, sized["init_channels"])
                runs = train(budget, unit, spec, epochs, range(seeds), fresh)
            except Missing:
                continue
            trained.setdefault(arm, {})[unit] = {"size": sized, "genotype": g, "runs": runs}
    if phase == "search":
        return None
    searches = {}
    for s, n in search_seeds(budget).items():
        for i in range(n):
            try:
                searches[f"{s}_s{i}"] = run_search(budget, s, i)
            except Missing:
                continue
    derived = {}
    try:
        extras = budget_extras(budget, targets)
        for arm, unit, found in budget_searches(budget, extras):
            searches[unit] = found
            if arm.startswith(BUDGET_PENALTIES["hinge"]):
                derived.update(budget_ceilings(budget, arm, extras[arm], {unit: found}))
    except Missing:  # --phase=progress before the budgets' widths are profiled
        pass
    done = sum(len(u["runs"]) for units in trained.values() for u in units.values())
    return {
        "progress": {
            "complete": phase != "progress",
            "trainings": done,
            "searches": len(searches),
            "planned": planned(budget),
        },
        "budget": dataclasses.asdict(budget),
        "machine": C.machine_info(),
        "ops_targets": targets,
        "calibration": calibration,
        "arms": trained,
        "searches": {k: {x: v[x] for x in v if x != "spec"} for k, v in searches.items()},
        "derived": derived,
        "verdict": verdict(trained),
        "cost": study_cost(budget),
    }


def _groups(trained: dict, arm: str, key: str = "test_accuracy") -> list[list[float]]:
    return [[r[key] for r in u["runs"]] for u in trained.get(arm, {}).values()]


COMPARISONS = (
    ("kim", "random_kim", "Kim-searched minus random Kim-space cells"),
    ("chen", "random_darts", "Chen-searched minus random DARTS-space cells"),
    ("darts", "random_darts", "plain binary DARTS minus random DARTS-space cells"),
    ("cp_nas", "random_darts", "CP-NAS-searched minus random DARTS-space cells"),
    (
        "bmes",
        "random_darts",
        "BMES (own space, under the DARTS OPs target) minus random DARTS cells",
    ),
    ("bnas_a", "random_kim", "published BNAS-A minus random Kim-space cells"),
    ("bnas_xnor_1", "random_darts", "published BNAS_XNOR_1 minus random DARTS-space cells"),
    # Kim et al.'s claim: the full-precision-searched cells are binarized in Kim's template and
    # matched to its OPs target (``published_cells``), so these rows are like for like.
    ("kim", "fp_darts_v2", "Kim-searched minus binarized DARTS (V2)"),
    ("kim", "fp_pc_darts", "Kim-searched minus binarized PC-DARTS"),
    ("kim", "kim_no_skip", "Kim minus its no-inter-cell-skip ablation"),
    ("kim", "kim_no_zeroise", "Kim minus its no-Zeroise ablation"),
    ("kim", "kim_no_diversity", "Kim minus its no-diversity ablation"),
    *(
        (
            f"{arm}_{x:g}x",
            "random_darts" if x == 1.0 else f"random_darts_{x:g}x",
            f"budgeted DARTS ({reading}) minus random DARTS cells at {x:g}x OPs",
        )
        for x in BUDGET_FACTORS
        for arm, reading in BUDGET_READINGS.items()
    ),
    *(  # issue 26's arms against each other: the penalty, then the fill, on the same budget
        row
        for x in BUDGET_FACTORS
        for row in (
            (
                budget_arm("hinge", x),
                budget_arm("two_sided", x),
                f"at {x:g}x OPs, the hinge minus the two-sided penalty (both filled)",
            ),
            (
                f"{CEILING}_{x:g}x",
                budget_arm("hinge", x),
                f"at {x:g}x OPs, the hinge's searches read as a ceiling minus filled",
            ),
        )
    ),
)


def verdict(trained: dict) -> list[dict]:
    rows = []
    for a, b, label in COMPARISONS:
        if trained.get(a) and trained.get(b):
            rows.append({"a": a, "b": b, "label": label, **bootstrap_difference(
                _groups(trained, a), _groups(trained, b))})  # fmt: skip
    return rows


# ------------------------------------------------------------------------------ the page
def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def arm_rows(payload: dict) -> list[dict]:
    """One row per arm: test top-1 mean and spread over all its trainings, OPs, memory."""
    rows = []
    for arm, units in payload["arms"].items():
        accs = [r["test_accuracy"] for u in units.values() for r in u["runs"]]
        sizes = [u["size"] for u in units.values()]
        rows.append(
            {
                "arm": arm,
                "units": len(units),
                "trainings": len(accs),
                "mean": float(np.mean(accs)),
                "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                "ops_m": float(np.mean([z["ops"] for z in sizes])) / 1e6,
                "ops_ratio_max": float(max(abs(z["ops_ratio"] - 1) for z in sizes)),
                "memory_kib": float(np.mean([z["memory_kib"] for z in sizes])),
                "channels": sorted({z["init_channels"] for z in sizes}),
            }
        )
    return rows


def plot(payload: dict, path: Path) -> None:
    """Test top-1 against OPs and memory, every training of every arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for arm, units in payload["arms"].items():
        xs_ops, xs_mem, ys = [], [], []
        for u in units.values():
            for r in u["runs"]:
                xs_ops.append(u["size"]["ops"] / 1e6)
                xs_mem.append(u["size"]["memory_kib"])
                ys.append(100 * r["test_accuracy"])
        marker = "x" if arm.startswith("random") else "o"
        axes[0].scatter(xs_ops, ys, label=arm, marker=marker, s=18)
        axes[1].scatter(xs_mem, ys, label=arm, marker=marker, s=18)
    axes[0].set_xlabel("OPs (M): binary MACs / 64 + float MACs")
    axes[1].set_xlabel("memory (KiB, 1-bit weights at 1 bit)")
    axes[0].set_ylabel("test top-1 (%)")
    axes[1].legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: Kim et al. (ECCV 2020), ablation on CIFAR-10, BNAS-A: top-1 of the full search minus each
#: ablation's (92.70 full; 61.23 no skip, 89.47 no Zeroise, 90.95 no diversity).
PAPER_ABLATIONS = {
    "kim_no_skip": ("no inter-cell skip", 92.70 - 61.23),
    "kim_no_zeroise": ("no Zeroise", 92.70 - 89.47),
    "kim_no_diversity": ("no diversity (entropy term off)", 92.70 - 90.95),
}


def ablation_lines(payload: dict) -> list[str]:
    """The ablations against the paper's direction: Kim-searched minus each ablation here, beside
    the paper's difference, and whether this study agrees (interval above zero), points the same
    way without resolving it, or points the other way. An ablation searched once is marked: its
    interval holds that search's training seeds, not the spread between searches, which the page
    shows as the range of the Kim searches' own means."""
    verdicts = {(v["a"], v["b"]): v for v in payload["verdict"]}
    rows, single = [], False
    for arm, (name, paper) in PAPER_ABLATIONS.items():
        v = verdicts.get(("kim", arm))
        if v is None:
            continue
        if v["low"] > 0:
            reading = "agrees"
        elif v["difference"] > 0:
            reading = "same direction, not resolved"
        else:
            reading = "opposite direction" + ("" if v["high"] < 0 else ", not resolved")
        if v.get("units_b") == 1:
            reading, single = reading + " (one search)", True
        rows.append(
            f"| {name} | +{paper:.2f} | {100 * v['difference']:+.2f} "
            f"[{100 * v['low']:+.2f}, {100 * v['high']:+.2f}] | "
            f"{v.get('units_a', '-')} vs {v.get('units_b', '-')} | {reading} |"
        )
    if not rows:
        return []
    notes = []
    means = [
        np.mean([r["test_accuracy"] for r in u["runs"]])
        for u in payload.get("arms", {}).get("kim", {}).values()
    ]
    if single and len(means) > 1:
        notes = [
            "An ablation searched once: its interval holds that search's training seeds only, "
            "not the spread between searches of one method, which Kim et al.'s own "
            f"{len(means)} searches show here: their means span {_pct(min(means))} to "
            f"{_pct(max(means))} %.",
            "",
        ]
    return [
        "## Ablations against the paper's direction",
        "",
        "Kim-searched minus each ablation (points). The paper's: Kim et al., ECCV 2020, CIFAR-10, "
        "BNAS-A (full search 92.70 %). The no-skip ablation keeps the base width (fewer OPs).",
        "",
        "| ablation | paper | here [95 %] | searches | reading |",
        "|---|---|---|---|---|",
        *rows,
        "",
        *notes,
    ]


#: Issue 26's goal: each budgeted search's network within 10 % of its OPs budget (the window
#: ``--fit_width`` lands a target in: ``bnas_tf.search.budget.TARGET_WINDOW``).
BUDGET_WINDOW = 0.10


def budget_lines(payload: dict) -> list[str]:
    """Issue 26's table: per OPs budget and arm (``BUDGET_READINGS``), each budgeted network
    (its OPs against the budget) and test top-1 over its training seeds, the random DARTS-space
    cells matched to the same budget, and the verdict's difference; then whether each arm meets the
    goal (within ``BUDGET_WINDOW`` of the budget, and above the random cells with the interval
    above zero)."""
    arms, target = payload["arms"], payload["ops_targets"]["darts"]
    random_arm = {a: b for a, b, _ in COMPARISONS if b.startswith("random")}  # its random cells
    verdicts = {(v["a"], v["b"]): v for v in payload["verdict"]}
    rows, goals, argmax = [], [], []
    records = {**payload.get("searches", {}), **payload.get("derived", {})}
    for x in BUDGET_FACTORS:
        for prefix, reading in BUDGET_READINGS.items():
            searched = f"{prefix}_{x:g}x"
            if not arms.get(searched):
                continue
            randoms = random_arm[searched]
            random_accs = [
                r["test_accuracy"] for u in arms.get(randoms, {}).values() for r in u["runs"]
            ]
            random_cell = (
                f"{_pct(np.mean(random_accs))} ({len(arms[randoms])} cells)" if random_accs else "-"
            )
            v = verdicts.get((searched, randoms))
            diff = (
                f"{100 * v['difference']:+.2f} [{100 * v['low']:+.2f}, {100 * v['high']:+.2f}]"
                if v
                else "-"
            )
            within = True
            for unit, u in arms[searched].items():
                z, accs = u["size"], [r["test_accuracy"] for r in u["runs"]]
                within &= abs(z["ops_ratio"] - 1) <= BUDGET_WINDOW
                record = records.get(unit) or {}
                own = (record.get("budget") or {}).get("ops")
                before = record.get("budget_argmax")
                if before:
                    argmax.append(
                        f"{unit} {100 * (before['cost']['ops']['ratio'] - 1):+.1f} % "
                        f"({before['changed_ops']} ops re-chosen)"
                    )
                rows.append(
                    f"| {x:g}x | {x * target / 1e6:.3f} | {reading} | {unit} | "
                    + (f"{100 * (own['ratio'] - 1):+.1f} % | " if own else "- | ")
                    + f"{z['init_channels']} | {z['ops'] / 1e6:.3f} | "
                    f"{100 * (z['ops_ratio'] - 1):+.1f} % | "
                    f"{' / '.join(_pct(a) for a in accs)} | {random_cell} | {diff} |"
                )
            beats = bool(v and v["low"] > 0)
            goals.append(
                f"{x:g}x {reading}: {'within' if within else 'not within'} "
                f"{100 * BUDGET_WINDOW:.0f} %, "
                + ("above the random cells" if beats else "not shown above the random cells")
            )
    if not rows:
        return []
    return [
        "## Search under an OPs budget (issue 26)",
        "",
        "Plain binary DARTS with `--ops_budget` at 0.5x, 1x and 2x the DARTS template's target "
        f"(`--cost_weight={COST_WEIGHT:g} --derive_within_budget --fit_width`), each searched "
        "for the width at which the median random DARTS-space cell costs its budget. Three "
        "arms (penalty, budget): `two_sided, target`, the budget a target for alpha's loss and "
        "for the derivation (`--budget_penalty=two_sided`); `hinge, target`, a ceiling for "
        "alpha's loss (nothing while the expected cost is under it) and a target for the "
        "derivation only (`--budget_penalty=hinge --target_fill=0.95`); `hinge, ceiling`, the "
        "same hinge searches derived again without the fill (`rederive`: their alphas do not "
        "see the derivation, so the two hinge arms differ in the fill alone). Under a target the "
        "network trained is the genotype derived again at the width nearest the budget's where "
        "it lands within 10 %; under a ceiling, the genotype at the widest width it fits in. "
        "The column after the search: the genotype's own landing at the budget's width. Each "
        "against the random DARTS-space cells matched to the same "
        f"budget. Goal: within {100 * BUDGET_WINDOW:.0f} % of the budget, and above the random "
        "cells (interval above zero).",
        "",
        "| budget | OPs budget (M) | penalty, budget | search | genotype at the budget's width | "
        "channels trained | OPs (M) | vs budget | test top-1 % (training seeds) | "
        "random cells % | difference [95 %] |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *(
            [
                "The argmax genotypes, before the derivation within the budget, at the budget's "
                "width: " + "; ".join(argmax) + ".",
                "",
            ]
            if argmax
            else []
        ),
        "Goal per budget and arm: " + "; ".join(goals) + ".",
        "",
    ]


def _progress_lines(payload: dict) -> list[str]:
    progress = payload.get("progress", {"complete": True})
    if progress["complete"]:
        return []
    plan = progress["planned"]
    return [
        '!!! warning "Study in progress"',
        f"    {progress['trainings']} of {plan['trainings']} trainings and "
        f"{progress['searches']} of {plan['searches']} searches are done "
        "(`benchmarks/evidence.py --phase=progress` wrote this page from the units cached so "
        "far; the study resumes where it stopped). Arms without a finished unit are missing "
        "below, and the verdict covers the arms done.",
        "",
    ]


def markdown(payload: dict, image: str) -> str:
    b, m, cal = payload["budget"], payload["machine"], payload["calibration"]
    lines = [
        "# Evidence: searched binary cells against chance, at equal cost",
        "",
        "Written by `benchmarks/evidence.py` from "
        f"`benchmarks/results/evidence_{payload['budget_key']}.json` only.",
        f"{m['cpu']}, {m['cores']} cores, TF {m['versions'].get('tensorflow')}, "
        f"git {str(m['git_commit'])[:10]}, {m['date']}.",
        "",
        "Fashion-MNIST: the first 50,000 training images train (and the searches search on "
        f"{b['search_images']:,} of them), the last 10,000 validate (the epoch kept, the "
        "recipe's length), the 10,000 test images give the top-1 below. Every network: "
        f"{b['layers']} cells, Adam with a one-cycle learning rate (max 2e-3), batch "
        f"{b['batch_size']}, {cal['epochs']} epoch(s), its channels chosen so that its OPs "
        "(binary MACs / 64 + float MACs) are those of the median random cell of its template at "
        f"{b['init_channels']} channels: {payload['ops_targets']['kim'] / 1e6:.3f} M in Kim et "
        f"al.'s (sign + scale, inter-cell skips; also the binarized DARTS and PC-DARTS cells), "
        f"{payload['ops_targets']['darts'] / 1e6:.3f} M in the DARTS template (XNOR, no "
        "skips). One target for both would make the DARTS-template networks several times "
        "wider: the skips' float 1x1 convolutions are most of the Kim template's OPs. The "
        f"no-skip ablation keeps {b['init_channels']} channels.",
        "",
        *_progress_lines(payload),
        "## Recipe length (calibration)",
        "",
        f"{b['calibration_cells']} random Kim cells, 2 training seeds each, validation top-1:",
        "",
        "| epochs | cells | Kendall tau (seed 0 vs 1) | seed std | spread of cells | passes |",
        "|---|---|---|---|---|---|",
    ]
    for c in cal["candidates"]:
        lines.append(
            f"| {c['epochs']} | {c.get('cells', b['calibration_cells'])} | "
            f"{c['kendall_tau']:.2f} | {_pct(c['seed_std'])} | {_pct(c['cell_spread'])} | "
            f"{'yes' if c['passes'] else 'no'} |"
        )
    lines += [
        "",
        "Passes: tau >= 0.6 and the seed std below a third of the spread. "
        + (
            f"Chosen: {cal['epochs']} epoch(s)."
            if cal["passed"]
            else f"No candidate passed; the last ({cal['epochs']} epoch(s)) is used: longer "
            "recipes do not fit the study's 12 CPU-hours (an epoch of every arm's trainings "
            "costs about 9 CPU-hours at this size), so the intervals below carry the seed noise "
            "measured here."
        ),
        "",
        "## Verdict",
        "",
        "Differences of mean test top-1 (points), 95 % interval of a hierarchical bootstrap "
        "(search seeds or random cells, then training seeds; 10,000 replicates):",
        "",
        "| comparison | difference | 95 % interval | units |",
        "|---|---|---|---|",
    ]
    for v in payload["verdict"]:
        lines.append(
            f"| {v['label']} | {100 * v['difference']:+.2f} | "
            f"[{100 * v['low']:+.2f}, {100 * v['high']:+.2f}] | {v['units_a']} vs {v['units_b']} |"
        )
    lines += [
        "",
        "## Arms",
        "",
        "| arm | units | trainings | top-1 % | OPs (M) | max OPs gap | memory KiB | channels |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in arm_rows(payload):
        lines.append(
            f"| {r['arm']} | {r['units']} | {r['trainings']} | {_pct(r['mean'])} ± "
            f"{_pct(r['std'])} | {r['ops_m']:.3f} | {100 * r['ops_ratio_max']:.1f} % | "
            f"{r['memory_kib']:.1f} | {', '.join(map(str, r['channels']))} |"
        )
    lines += ["", *window_lines(payload), *ablation_lines(payload), *budget_lines(payload)]
    lines += [f"![accuracy against OPs and memory]({image})", "", "## Search cost", ""]
    lines += [
        "| search | wall min | CPU h | peak GB | genotype |",
        "|---|---|---|---|---|",
    ]
    for name, s in payload["searches"].items():
        lines.append(
            f"| {name} | {s['wall_s'] / 60:.1f} | {s['cpu_s'] / 3600:.2f} | "
            f"{s['peak_rss_gb']:.2f} | `{s['genotype_str']}` |"
        )
    lines += [
        "",
        f"Study cost: {payload['cost']['wall_h']:.1f} h wall, {payload['cost']['cpu_h']:.1f} "
        "CPU-hours (every unit's own time, summed; the calibration's included)"
        + "".join(
            f"; issue {k}'s arms {v['cpu_h']:.1f} CPU-h"
            for k, v in payload["cost"].get("issues", {}).items()
        )
        + ". The study's cap, 12 CPU-hours, is issue 23's; issues 25 and 26 add their rows.",
        "",
    ]
    machines = payload["cost"].get("machines", {})
    if machines:
        lines += [
            "The units ran over several sessions, on machines of one kind whose CPUs differ "
            "(oneDNN picks its kernels by the vector extensions), so CPU-hours add up times "
            "from these machines: "
            + "; ".join(
                f"{name}: {m['units']} units, {m['cpu_h']:.1f} CPU-h"
                for name, m in machines.items()
            )
            + '. Units cached before units recorded their machine (2026-12-06) say "not recorded".',
            "",
        ]
    return "\n".join(lines)


def cost_issue(unit: str) -> str:
    """Which issue's arms a unit (file stem) belongs to: 25 (CP-NAS, BMES), 26 (the budgeted
    searches and the random cells at their budgets) or 23 (the rest, calibration included).

    Example:
        >>> [cost_issue(u) for u in ("kim_s0", "bmes_s0_e1_s1", "random_darts_2_0.5x_e1_s0")]
        ['23', '25', '26']
    """
    if unit.startswith(("cp_nas", "bmes")):
        return "25"
    if unit.startswith("budget_") or re.search(r"_[0-9.]+x(_|$)", unit):
        return "26"
    return "23"


def machine_label(unit: dict) -> str:
    """The machine a cached unit ran on, as the page names it ("not recorded" for the units
    cached before units recorded it).

    Example:
        >>> machine_label({"machine": {"cpu": "AMD EPYC", "isa": ["avx2", "avx512f"], "cores": 2}})
        'AMD EPYC, 2 cores, avx2 avx512f'
        >>> machine_label({})
        'not recorded'
    """
    m = unit.get("machine")
    if not m:
        return "not recorded"
    return f"{m['cpu']}, {m['cores']} cores, {' '.join(m['isa']) or 'no AVX2'}"


def study_cost(budget: EvidenceBudget) -> dict:
    """Wall and CPU time of every cached unit of the study, summed, per issue and per machine."""
    wall = cpu = 0.0
    issues: dict[str, dict[str, float]] = {}
    machines: dict[str, dict[str, float]] = {}
    for path in (_root(budget) / budget.name).glob("*/*.json"):
        unit = json.loads(path.read_text())
        w = unit.get("train_wall_s") or unit.get("process_wall_s") or 0.0
        c = unit.get("train_cpu_s") or unit.get("cpu_s") or 0.0
        wall, cpu = wall + w, cpu + c
        part = issues.setdefault(cost_issue(path.stem.rsplit("-", 1)[0]), {"wall_h": 0, "cpu_h": 0})
        part["wall_h"] += w / 3600
        part["cpu_h"] += c / 3600
        where = machines.setdefault(machine_label(unit), {"units": 0, "cpu_h": 0})
        where["units"] += 1
        where["cpu_h"] += c / 3600
    return {
        "wall_h": wall / 3600,
        "cpu_h": cpu / 3600,
        "issues": dict(sorted(issues.items())),
        "machines": dict(sorted(machines.items())),
    }


def write_page(payload: dict, budget_key: str) -> None:
    payload = {**payload, "budget_key": budget_key}
    folder = C.ROOT / "docs" if budget_key == "evidence" else C.CACHE / "smoke"
    image = folder / "img" / f"evidence_{budget_key}.png"
    plot(payload, image)
    page = folder / DOC.name
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown(payload, f"img/{image.name}"))
    C.log(f"wrote {page}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="evidence")
    parser.add_argument(
        "--phase",
        choices=("data", "ops", "calibrate", "search", "all", "progress", "report"),
        default="all",
        help="progress: the page from the units cached so far (computes none), while the "
        "study runs elsewhere",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore cached units")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    budget = BUDGETS[args.budget]
    folder = C.CACHE / "smoke" if args.budget == "smoke" else C.RESULTS
    path = Path(args.output) if args.output else folder / f"{STUDY}_{args.budget}.json"
    if args.phase == "report":
        write_page(json.loads(path.read_text()), args.budget)
        return 0
    payload = run_study(budget, args.phase, args.fresh)
    if payload is not None:
        C.write_results(path, payload)
        write_page(payload, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
