"""Write ``docs/results.md`` from the results files in ``benchmarks/results/``.

Every number in the document is read here from a JSON file written by a study script,
so the document and the results cannot disagree; a study whose file is missing is
reported as not run. ``--budget`` picks the files (``<study>_<budget>.json``).

    python benchmarks/report.py --budget=cpu-small     # -> docs/results.md
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
from pathlib import Path

import _common as C

DOC = C.ROOT / "docs" / "results.md"


def _trained_acc(entry: dict) -> str:
    """``mean ± std`` of an entry's trained top-1 over its seeds."""
    t = entry["trained"]
    return C.fmt_acc(t["accuracy_mean"], t["accuracy_std"], t["seeds"])


def _load(study: str, budget: str) -> tuple[dict | None, Path]:
    path = C.results_path(study, C.BUDGETS[budget])
    return (json.loads(path.read_text()) if path.exists() else None), path


def _rel(path: Path) -> str:
    return str(path.relative_to(C.ROOT)) if path.is_relative_to(C.ROOT) else str(path)


def _plot(path: Path, alt: str) -> str:
    """The study's plot as an image of the documentation site: ``img/<name>.png`` beside
    ``docs/results.md`` (``main`` copies the PNG files there)."""
    return f"![{alt}](img/{path.with_suffix('.png').name})"


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _compact(genotype: dict) -> str:
    """``normal: op<in op<in / ... ; reduce: ...`` (``bin_`` dropped; nodes separated by ``/``)."""
    cells = []
    for cell in ("normal", "reduce"):
        edges = [f"{op.replace('bin_', '')}<{j}" for op, j in genotype[cell]]
        nodes = [" ".join(edges[i : i + 2]) for i in range(0, len(edges), 2)]
        cells.append(f"{cell}: " + " / ".join(nodes))
    return "; ".join(cells)


def _budget_line(b: dict) -> str:
    train = "all 60,000" if b["train_limit"] is None else f"{b['train_limit']:,}"
    test = "all 10,000" if b["test_limit"] is None else f"{b['test_limit']:,}"
    return (
        f"budget `{b['name']}`: networks of {b['layers']} cells x {b['init_channels']} channels "
        f"trained on {train} training images for {b['epochs']} epoch(s), batch {b['batch_size']}, "
        f"{len(b['seeds'])} seed(s), tested on {test} test images; searches of "
        f"{b['search_layers']} cells x {b['search_channels']} channels on {b['search_limit']:,} "
        f"images (half weights, half alphas), batch {b['search_batch']}, {b['search_epochs']} "
        "epochs"
    )


def _machine_line(m: dict) -> str:
    end = m.get("load_average_end")
    load = f"load average {m['load_average'][0]:.1f} at start" + (
        f", {end[0]:.1f} at end" if end else ""
    )
    commit = (m.get("git_commit") or "?")[:8]
    return f"{m['cpu']}, {m['cores']} cores, {m['date']}, commit `{commit}`, {load}"


def accuracy_section(data: dict, path: Path) -> list[str]:
    lines = [
        f"Source: `{_rel(path)}`, plot `{_rel(path.with_suffix('.png'))}`.  ",
        _budget_line(data["budget"]) + ".  ",
        "Machine: " + _machine_line(data["machine"]) + ".",
        "",
        _plot(path, "accuracy vs memory"),
        "",
        "| group | network | top-1 % | params | 1-bit params | memory KiB | MMACs | binarized "
        "MACs | train s | others' CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        share = r.get("others_cpu_share")
        lines.append(
            f"| {r['group']} | {r['name']} | "
            f"{C.fmt_acc(r['accuracy_mean'], r['accuracy_std'], r['seeds'])} | "
            f"{r['params_total']:,} | {r['params_1bit']:,} | {r['memory_kib']:.1f} | "
            f"{r['macs_total_m']:.1f} | {100 * r['binarized_mac_ratio']:.1f} % | "
            f"{r['train_wall_s']:.0f} | {'–' if share is None else f'{100 * share:.0f} %'} |"
        )
    lines.append("")
    lines.append(
        "'others' CPU' is the share of the machine's CPU used by other processes while the network "
        "trained (training times are comparable only where it is similar)."
    )
    if data.get("left_out"):
        lines += ["", "Left out:", ""]
        lines += [f"- {x['name']}: {x['why']}" for x in data["left_out"]]
    s = data.get("summary")
    if s:
        lines += [
            "",
            f"Random cells: mean {_pct(s['random_mean'])} %, best {_pct(s['random_best'])} %. "
            f"Pareto front (memory, accuracy): {', '.join(s['pareto_front'])}.",
            "",
        ]
        for name, t in s["searched"].items():
            zoo = t["zoo_with_equal_or_smaller_memory"]
            margins = ", ".join(
                f"{z} {m:+.2f}" for z, m in t["margin_over_each_zoo_points"].items()
            )
            lines.append(
                f"- **{name}** ({_pct(t['accuracy'])} %): "
                f"{t['margin_over_random_mean_points']:+.2f} points over the random mean (target "
                f"+1: {'met' if t['beats_random_mean_by_1_point'] else 'missed'}); "
                + (
                    f"zoo baselines of equal or smaller memory: {', '.join(zoo)} (target +1 over "
                    f"each: {'met' if t['beats_those_zoo_by_1_point'] else 'missed'})"
                    if zoo
                    else "no zoo baseline has equal or smaller memory (that target is vacuous here)"
                )
                + (f"; margin over each zoo model (points): {margins}" if margins else "")
                + "."
            )
    return lines


def search_cost_section(data: dict, path: Path) -> list[str]:
    lines = [
        f"Source: `{_rel(path)}`, plot `{_rel(path.with_suffix('.png'))}`.  ",
        _budget_line(data["budget"]) + ".  ",
        "Machine: " + _machine_line(data["machine"]) + ".",
        "",
        _plot(path, "search cost"),
        "",
        "| search | epochs | wall s | CPU s | peak memory GB | of which before the search (TF "
        "imported) GB | others' CPU | top-1 % after training | genotype |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, e in data["searches"].items():
        s, t = e["search"], e["trained"]
        share = s.get("others_cpu_share")
        lines.append(
            f"| {name} | {s['epochs_run']} | {s['wall_s']:.0f} | {s['cpu_s']:.0f} | "
            f"{s['peak_rss_gb']:.2f} | {s['rss_before_search_gb']:.2f} | "
            f"{'–' if share is None else f'{100 * share:.0f} %'} | "
            f"{C.fmt_acc(t['accuracy_mean'], t['accuracy_std'], t['seeds'])} | "
            f"`{_compact(s['genotype'])}` |"
        )
    for name, e in data["searches"].items():
        genotype = e["search"]["genotype"]
        nones = sum(op == "none" for cell in ("normal", "reduce") for op, _ in genotype[cell])
        if nones and not e["search"].get("spec", {}).get("config", {}).get("allow_none", True):
            lines += [
                "",
                f"Note: the `{name}` search ran with `allow_none=False`, yet its genotype has "
                f"{nones} `none` edge(s): the operation space reduction can leave `none` as an "
                "edge's last op, and a node whose candidate edges are too few must then take it "
                "(`bnas_tf/search/reduction.py`).",
            ]
    if "chen_wall_over_darts" in data:
        s = data["searches"]
        cpu = s["chen"]["search"]["cpu_s"] / s["darts"]["search"]["cpu_s"]
        ratio = data["chen_wall_over_darts"]
        lines += [
            "",
            f"Chen / plain binary DARTS: wall time {ratio:.2f}x, CPU time {cpu:.2f}x. Target (at "
            "least 40 % less wall time, ratio <= 0.60): "
            f"**{'met' if ratio <= 0.60 else 'missed'}**.",
            "",
            "This ratio compares two different searches (DARTS space without and Chen et al.'s "
            "with channel sampling and operation space reduction) at a size where each reduction "
            "stage is a few steps long, so every stage's tracing of its new supernet dominates. "
            "The reduction measured against the same search without it, in larger configurations "
            "(README, Benchmarks):",
            "",
        ]
        lines += ["| measurement | <= 0.60x | reduction / without |", "|---|---|---|"]
        lines += reduction_rows() or ["| – | not run | |"]
        bounds = reduction_bound_rows()
        if bounds:
            lines += [
                "",
                "What any removal order could reach at the reference size "
                "(`benchmarks/reduction_bounds.py`: each op's step cost from leave-one-out "
                "spaces, an additive model of the stages; equal stages, ratio to the plain "
                "search; measured, and the model in brackets):",
                "",
                "| configuration | plain step s | fixed part | costliest first | random order | "
                "cheapest first | the searches' own orders, measured (model) |",
                "|---|---:|---:|---:|---:|---:|---|",
                *bounds,
            ]
    return lines


# The operation space reduction's own benchmarks (search_speed.py, reduction_stages.py):
# (label, results files, ratio of one file); several files (seeds) give their median.
_REDUCTION_RESULTS = (
    (
        "step times summed over equal stages, reference size, Kim et al.'s space (K=1)",
        (
            "reduction_stages_6400_reference.json",
            "reduction_stages_6400_reference_seed1.json",
            "reduction_stages_6400_reference_seed2.json",
            "reduction_stages_6400_reference_seed3.json",
            "reduction_stages_6400_reference_seed4.json",
        ),
        lambda d: d["ratio_steps_only"],
    ),
    (
        "step times summed over equal stages, reference size, Chen et al.'s configuration (DARTS "
        "space, XNOR, K=4)",
        ("reduction_stages_chen_6400_reference.json",),
        lambda d: d["ratio_steps_only"],
    ),
    (
        "timed complete small search (3 cells x 8 channels, 6,400 images), median of interleaved "
        "rounds",
        ("search_speed_reduction_6400.json",),
        lambda d: d["reduction"]["ratio_reduction_over_plain"],
    ),
)


def reduction_rows(prefix: str = "") -> list[str]:
    """Table rows ``| prefix label | met/missed | ratio (files) |`` of operation space reduction
    against the same search without it, for each measurement with results files present."""
    rows = []
    for label, names, ratio_of in _REDUCTION_RESULTS:
        paths = [C.RESULTS / name for name in names if (C.RESULTS / name).exists()]
        if not paths:
            continue
        ratios = [ratio_of(json.loads(path.read_text())) for path in paths]
        ratio = statistics.median(ratios)
        each = f" of {', '.join(f'{r:.2f}' for r in ratios)}" if len(ratios) > 1 else ""
        files = ", ".join(f"`{_rel(path)}`" for path in paths)
        median = (
            f", median over {len(ratios)} searches' removal sequences" if len(ratios) > 1 else ""
        )
        rows.append(
            f"| {prefix}{label}{median} | {'met' if ratio <= 0.60 else '**missed**'} | "
            f"{ratio:.2f}x{each} ({files}) |"
        )
    return rows


# reduction_bounds.py results: (label, file).
_BOUND_RESULTS = (
    ("Kim et al.'s space (K=1)", "reduction_bounds_kim.json"),
    ("Chen et al.'s configuration (DARTS space, XNOR, K=4)", "reduction_bounds_chen.json"),
)


def reduction_bound_rows() -> list[str]:
    """Table rows of the removal-order bounds, one per ``reduction_bounds.py`` result present."""
    rows = []
    for label, name in _BOUND_RESULTS:
        path = C.RESULTS / name
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        b, timed = d["bounds"], d.get("bounds_timed", {})

        # timed where the order's stage spaces were run, the model in brackets
        def extreme(order: str, timed=timed, b=b) -> str:
            return f"{timed[order]:.2f} ({b[order]:.2f})" if order in timed else f"({b[order]:.2f})"

        own = (
            ", ".join(
                f"{s['measured_ratio']:.2f} ({s['predicted_ratio']:.2f})" for s in d["sequences"]
            )
            or "–"
        )
        rows.append(
            f"| {label} (`{_rel(path)}`) | {d['full_step_s']:.2f} | "
            f"{d['fixed_s'] / d['full_step_s']:.2f} | {extreme('costliest_first')} | "
            f"({b['random_order']:.2f}) | {extreme('cheapest_first')} | {own} |"
        )
    return rows


def ablation_section(data: dict, path: Path) -> list[str]:
    machine = ["Machine: " + _machine_line(data["machine"]) + "."]
    if data.get("earlier_rows"):  # ablations.py --merge: rows of two runs
        earlier = data["earlier_rows"]
        latest = [n for part in ("kim", "chen") for n in data[part] if n not in earlier["variants"]]
        machine = [
            f"Machine (rows {', '.join(latest)}, run last): "
            + _machine_line(data["machine"])
            + ".  ",
            f"Machine (rows {', '.join(earlier['variants'])}, kept from an earlier run): "
            + _machine_line(earlier["machine"])
            + ".",
        ]
    lines = [
        f"Source: `{_rel(path)}`, plot `{_rel(path.with_suffix('.png'))}`.  ",
        _budget_line(data["budget"]) + ".  ",
        *machine,
        "",
        _plot(path, "ablations"),
        "",
    ]
    if data.get("kim"):
        paper = data["kim_paper_cifar10"]
        lines += [
            "Kim et al. (their CIFAR-10 numbers: "
            + "; ".join(f"{k} {' / '.join(f'{v:.2f}' for v in vals)}" for k, vals in paper.items())
            + " for Full / No Skip / No Zeroise / No Div):",
            "",
            "| variant | top-1 % | drop vs full (points) | same direction as the paper | memory "
            "KiB | search wall s |",
            "|---|---:|---:|---|---:|---:|",
        ]
        for name, e in data["kim"].items():
            d = data.get("kim_direction", {}).get(name)
            drop = "–" if d is None else f"{d['drop_points']:+.2f}"
            same = "–" if d is None else ("yes" if d["same_direction_as_paper"] else "**no**")
            lines.append(
                f"| {name} | "
                f"{_trained_acc(e)} "
                f"| {drop} | {same} | {e['trained']['memory_kib']:.1f} | "
                f"{e['search']['wall_s']:.0f} |"
            )
        if "full" in data["kim"] and "no_skip" in data["kim"]:
            lines += [
                "",
                "Without inter-cell skips the network's memory falls from "
                f"{data['kim']['full']['trained']['memory_kib']:.1f} to "
                f"{data['kim']['no_skip']['trained']['memory_kib']:.1f} KiB: most of the Kim "
                "template's memory is its full-precision 2x2 skip convolutions in the reduction "
                "cells.",
            ]
        lines.append("")
    if data.get("chen"):
        lines += [
            "Chen et al., 2 x 2 (channel sampling K=4 / K=1, operation space reduction on / "
            "off), equal epochs:",
            "",
            "| search | K | reduction | wall s | wall / plain DARTS | CPU s | peak GB | top-1 % |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        settings = {
            "chen": (4, "yes"),
            "chen_no_sampling": (1, "yes"),
            "chen_no_reduction": (4, "no"),
            "darts": (1, "no"),
        }
        for name, e in data["chen"].items():
            k, red = settings[name]
            ratio = data.get("chen_wall_over_darts", {}).get(name)
            lines.append(
                f"| {name} | {k} | {red} | {e['search']['wall_s']:.0f} | "
                f"{'–' if ratio is None else f'{ratio:.2f}'} | {e['search']['cpu_s']:.0f} | "
                f"{e['search']['peak_rss_gb']:.2f} | "
                f"{_trained_acc(e)} "
                "|"
            )
        lines += chen_effects(data["chen"])
    if data.get("not_run"):
        lines += [
            "",
            "Not run: " + "; ".join(f"{x['search']} ({x['why']})" for x in data["not_run"]) + ".",
        ]
    return lines


def chen_effects(chen: dict) -> list[str]:
    """Each factor of the 2 x 2 at the other's two levels: wall-time ratio and top-1 change."""

    def effect(on: str, off: str) -> str | None:
        if on not in chen or off not in chen:
            return None
        a, b = chen[on], chen[off]
        ratio = a["search"]["wall_s"] / b["search"]["wall_s"]
        points = 100 * (a["trained"]["accuracy_mean"] - b["trained"]["accuracy_mean"])
        return f"{on} / {off}: wall {ratio:.2f}x, top-1 {points:+.2f} points"

    pairs = {
        "Channel sampling (K=4 against K=1)": [
            ("chen_no_reduction", "darts"),
            ("chen", "chen_no_sampling"),
        ],
        "Operation space reduction (on against off)": [
            ("chen_no_sampling", "darts"),
            ("chen", "chen_no_reduction"),
        ],
    }
    lines = []
    for label, comparisons in pairs.items():
        found = [x for x in (effect(on, off) for on, off in comparisons) if x]
        if found:
            lines.append(f"- {label}: " + "; ".join(found) + ".")
    return ([""] + lines) if lines else []


def inference_section(data: dict, path: Path) -> list[str]:
    lines = [
        f"Source: `{_rel(path)}`, plot `{_rel(path.with_suffix('.png'))}`.  ",
        "Machine: " + _machine_line(data["machine"]) + f"; {data['method']['runtime']}, "
        f"{data['method']['rounds']} rounds x {data['method']['runs_per_round']} calls after "
        f"{data['method']['warmup']} warm-up calls.",
        "",
        _plot(path, "latency"),
        "",
        "| network | median ms | p90 ms | LceBconv2d ops | flatbuffer KiB | memory KiB (larq) | "
        "MMACs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in sorted(data["models"].items(), key=lambda kv: kv[1]["latency"]["median_ms"]):
        lines.append(
            f"| {name} | {e['latency']['median_ms']:.3f} | {e['latency']['p90_ms']:.3f} | "
            f"{e['lce_bconv2d']} | {e['flatbuffer_bytes'] / 1024:.1f} | "
            f"{e['profile']['memory_kib']:.1f} | {e['profile']['macs_total'] / 1e6:.1f} |"
        )
    if data.get("left_out"):
        lines += [
            "",
            "Left out: " + "; ".join(f"{x['name']} ({x['why']})" for x in data["left_out"]) + ".",
        ]
    return lines


def targets_section(budget: str) -> list[str]:
    """The issue's three targets, each met / missed with its numbers."""
    lines = ["| target | result | numbers |", "|---|---|---|"]
    acc, _ = _load("accuracy_vs_memory", budget)
    if acc and acc.get("summary"):
        for name, t in acc["summary"]["searched"].items():
            space = acc.get("genotypes", {}).get(name, {}).get("search_space", "bnas_kim")
            note = (
                "" if space == "bnas_kim" else " (other space and template than the random cells)"
            )
            if t["margin_over_random_mean_points"] is not None:
                lines.append(
                    f"| {name} >= random-cell mean + 1 point{note} | "
                    f"{'met' if t['beats_random_mean_by_1_point'] else '**missed**'} | "
                    f"{_pct(t['accuracy'])} % vs mean {_pct(acc['summary']['random_mean'])} % "
                    f"({t['margin_over_random_mean_points']:+.2f}) |"
                )
            zoo = t["zoo_with_equal_or_smaller_memory"]
            if zoo:
                margins = ", ".join(f"{z} {t['margin_over_each_zoo_points'][z]:+.2f}" for z in zoo)
                lines.append(
                    f"| {name} >= each zoo model of <= memory + 1 point | "
                    f"{'met' if t['beats_those_zoo_by_1_point'] else '**missed**'} | {margins} |"
                )
            else:
                margins = ", ".join(
                    f"{z} {m:+.2f}" for z, m in t["margin_over_each_zoo_points"].items()
                )
                lines.append(
                    f"| {name} >= each zoo model of <= memory + 1 point | vacuous: every zoo "
                    "model trained here has more memory | margins over all of them (points): "
                    f"{margins or '–'} |"
                )
    else:
        lines.append("| accuracy targets | not run | |")
    cost, _ = _load("search_cost", budget)
    if cost and "chen_wall_over_darts" in cost:
        s = cost["searches"]
        ratio = cost["chen_wall_over_darts"]
        lines.append(
            "| Chen search wall time <= 0.60 x plain binary DARTS (equal epochs) | "
            f"{'met' if ratio <= 0.60 else '**missed**'} | {s['chen']['search']['wall_s']:.0f} s "
            f"vs {s['darts']['search']['wall_s']:.0f} s = {ratio:.2f}x (CPU time "
            f"{s['chen']['search']['cpu_s'] / s['darts']['search']['cpu_s']:.2f}x) |"
        )
    else:
        lines.append("| search cost target | not run | |")
    lines += reduction_rows(
        "Operation space reduction <= 0.60 x the search without it (equal epochs): "
    )
    abl, _ = _load("ablations", budget)
    if abl and abl.get("kim_direction"):
        for name, d in abl["kim_direction"].items():
            lines.append(
                f"| Kim ablation: {name} below full (paper's direction) | "
                f"{'met' if d['same_direction_as_paper'] else '**missed**'} | "
                f"{d['drop_points']:+.2f} points |"
            )
    else:
        lines.append("| ablation directions | not run | |")
    return lines


PREAMBLE = """# Results: searched binary networks, larq-zoo binaries, random cells (Fashion-MNIST)

!!! warning "A smoke run"
    The `cpu-small` budget trains each network for one epoch on 6,000 images with one seed:
    its differences are below what it can resolve (the full-precision twin scores below its
    binary version). The evidence study (`benchmarks/evidence.py`, `make bench
    BUDGET=evidence`: held-out validation, a calibrated recipe, seeds, matched OPs and
    bootstrap intervals) replaces it: [its page](evidence.md), written from the units done so far
    while the study runs.

Does the search find binary networks that beat hand-designed binary networks and random
cells at equal training cost? This page answers with measurements on this project's
2-core CPU machine. It is written by `benchmarks/report.py` from the results files in
`benchmarks/results/`: every number below is read from a JSON file there, next to its plot.

Reproduce (each study writes `benchmarks/results/<study>_<budget>.{{json,png}}`):

```sh
# or BUDGET=full on a bigger machine, BUDGET=smoke for a quick check
make bench BUDGET=cpu-small
# = python benchmarks/search_cost.py --budget=cpu-small (first: the others reuse its searches)
#   python benchmarks/accuracy_vs_memory.py --budget=cpu-small
#   python benchmarks/ablations.py --budget=cpu-small
#   python benchmarks/inference_vs_baselines.py --budget=cpu-small
#   python benchmarks/report.py --budget=cpu-small              (this page)
```

Budgets are constants in `benchmarks/_common.py` (`BUDGETS`); each section states the one it
used. `cpu-small` is sized for 2 shared cores ({cpu_small}). At that budget
the networks are far from converged and single-seed differences of about a point are within
run-to-run noise (not measured at this budget; `full` trains 3 seeds and reports the spread):
read the tables as a cheap, reproducible first look, not as the papers' experiments.

How the comparison is kept fair:

- **One training program** for every network (`_common.train_and_measure`): the `bnas_tf.data`
  pipeline (first N training images, per-epoch seeded shuffle, no augmentation), Adam with
  `bnas_tf.training.make_optimizer`'s one-cycle schedule (max lr 2e-3, no weight decay, the
  demo's `flags/demo_train.cfg`), softmax cross-entropy on logits, same batch size and epochs,
  the same test images. It is `bnas_tf.training.train_network`'s loop without the run-directory
  machinery (checkpoints, TensorBoard; drop-path is 0), so larq-zoo models can go through it.
- **Searched networks** keep their method's template: Kim et al.'s (sign+scale, inter-cell
  skips) for the Kim-style search, Chen et al.'s (XNOR, DARTS template without inter-cell
  skips, as `bnas_tf.zoo`'s BNASXNOR) for the Chen-style and plain binary DARTS searches.
- **Random cells**: `bnas_tf.sampling.random_genotype(seed, "bnas_kim")`, seeds 0..N-1 (the
  sampler's default, the keras-tuner baseline mode: no Zeroise, so random cells carry more
  binary convolutions than a Zeroise-heavy searched cell), trained exactly like the
  Kim-searched network (same space, template and size). They are the baseline of the Kim-style
  searches; the Chen-style network is listed against them for reference only.
- **larq-zoo baselines** (`weights=None`, `num_classes=10`, softmax removed to train on logits)
  are built at the smallest of 28, 32, 64, ... 224 pixels they accept, the 28x28 images
  upsampled by a bilinear `Resizing` layer in front; a model is left out when it builds at no
  size or when it costs more MACs per image than the budget allows (`zoo_max_mmacs`; the
  searched network costs a fraction of that). Reasons are listed.
- **Full-precision twin**: the Kim-searched network with every quantizer off (no kernel or
  input quantizer, no weight clipping), same layers and parameter count.
- **Memory, parameters, MACs** come from `larq.models.summary` (`bnas_tf.export.model_summary`):
  1-bit weights counted at 1 bit, the rest at 32. For a zoo model it profiles the zoo network
  itself (the upsampling layer has no weights or MACs).
- Timings are wall-clock on a machine shared with other work; each row records the CPU share
  other processes used meanwhile, and search rows also give CPU time, which load affects less.
"""


SECTIONS = (
    ("accuracy_vs_memory", "1. Accuracy vs memory", accuracy_section),
    ("search_cost", "2. Search cost", search_cost_section),
    ("ablations", "3. Ablations", ablation_section),
    ("inference_vs_baselines", "4. Inference latency (LCE)", inference_section),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(C.BUDGETS), default="cpu-small")
    parser.add_argument(
        "--output",
        default=None,
        help="default: docs/results.md (smoke: runs/bench/smoke/results.md)",
    )
    args = parser.parse_args(argv)
    lines = [PREAMBLE.format(cpu_small=_budget_line(C.budget_dict(C.BUDGETS["cpu-small"]))), ""]
    lines += [
        f"<!-- Generated by benchmarks/report.py --budget={args.budget} from "
        "benchmarks/results/*.json; do not edit the sections below by hand. -->",
        "",
    ]
    lines += [f"## Targets (budget `{args.budget}`)", ""] + targets_section(args.budget) + [""]
    for study, title, render in SECTIONS:
        data, path = _load(study, args.budget)
        lines += [f"## {title}", ""]
        lines += (
            render(data, path)
            if data
            else [f"Not run at budget `{args.budget}` (`{_rel(path)}` missing)."]
        )
        lines.append("")
    output = Path(
        args.output or (C.CACHE / "smoke" / "results.md" if args.budget == "smoke" else DOC)
    )
    text = "\n".join(lines).rstrip() + "\n"
    output.write_text(text)
    # the plots the page shows, next to it (the site serves docs/ only)
    images = output.parent / "img"
    for name in re.findall(r"\]\(img/([^)]+\.png)\)", text):
        if (C.RESULTS / name).is_file():
            images.mkdir(exist_ok=True)
            shutil.copyfile(C.RESULTS / name, images / name)
    C.log(f"wrote {output}")


if __name__ == "__main__":
    main()
