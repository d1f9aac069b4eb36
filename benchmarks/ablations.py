"""Ablations on Fashion-MNIST: Kim et al.'s components and Chen et al.'s claims.

Kim et al. (ECCV 2020, CIFAR-10 table: Full / No Skip / No Zeroise / No Div):

* ``full``: the ``kim`` search of ``search_cost.py`` (shared cache), trained in Kim's template;
* ``no_skip``: the same genotype trained without inter-cell skips (``inter_cell_skip=False``;
  only the final network changes, the search is the full one's);
* ``no_zeroise``: searched with ``allow_none=False`` (Zeroise cannot be chosen);
* ``no_diversity``: searched with ``entropy_lambda=0`` (no entropy regularizer).

Chen et al. (AAAI 2020), a 2 x 2 over channel sampling (K=4 with edge normalization, or
K=1) and operation space reduction, all in the binarized DARTS space at equal epochs:
``chen`` (both), ``chen_no_sampling`` (K=1 + reduction), ``chen_no_reduction`` (K=4,
plain), ``darts`` (neither; plain binary DARTS). Reported: search wall time, peak memory
and the accuracy of the genotype after the same training.

    python benchmarks/ablations.py --budget=cpu-small
    # later, only what an earlier run left out, kept beside its rows:
    python benchmarks/ablations.py --budget=cpu-small --merge \
        --variants=chen_no_sampling,chen_no_reduction
"""

from __future__ import annotations

import argparse
import json
import sys

import _common as C

KIM = ("full", "no_skip", "no_zeroise", "no_diversity")
KIM_SEARCH = {
    "full": "kim",
    "no_skip": "kim",
    "no_zeroise": "kim_no_zeroise",
    "no_diversity": "kim_no_diversity",
}
CHEN = ("chen", "chen_no_sampling", "chen_no_reduction", "darts")
#: Kim et al.'s CIFAR-10 ablation (Table; Full / No Skip / No Zeroise / No Div), for the direction.
KIM_PAPER = {
    "BNAS-A": (92.70, 61.23, 89.47, 90.95),
    "BNAS-B": (93.76, 67.15, 91.69, 91.55),
    "BNAS-C": (94.43, 70.58, 88.74, 92.66),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_budget_args(parser)
    parser.add_argument("--part", choices=("kim", "chen", "both"), default="both")
    parser.add_argument(
        "--only_cached_searches",
        action="store_true",
        help="run no search: variants whose search is not in the cache are listed as not run",
    )
    parser.add_argument(
        "--only_cached",
        action="store_true",
        help="run nothing: collect the cached searches and trainings only",
    )
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated variants to run (default: all of --part), e.g. chen_no_sampling",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of the existing results file for the variants not run now",
    )
    args = parser.parse_args(argv)
    budget = C.BUDGETS[args.budget]
    out = C.results_path("ablations", budget, args.output)
    not_run: list[str] = []
    args.only_cached_searches = args.only_cached_searches or args.only_cached
    selected = set(KIM + CHEN) if args.variants is None else set(args.variants.split(","))
    unknown = selected - set(KIM + CHEN)
    if unknown:
        parser.error(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(KIM + CHEN)}")
    searches = {KIM_SEARCH[v] for v in KIM if v in selected} | {n for n in CHEN if n in selected}

    def search_unit(name: str) -> dict | None:
        if args.only_cached_searches and not C.is_cached_search(budget, name):
            not_run.append(name)
            return None
        return C.run_search_unit(budget, name, args.fresh)

    payload = {
        "study": "ablations",
        "budget": C.budget_dict(budget),
        "machine": C.machine_info(),
        "command": " ".join(["benchmarks/ablations.py", *(argv or sys.argv[1:])]),
        "kim": {},
        "chen": {},
        "kim_paper_cifar10": KIM_PAPER,
    }
    if args.merge and out.exists():
        # Rows of the variants not selected now come from the earlier run, with its machine line.
        earlier = json.loads(out.read_text())
        for part in ("kim", "chen"):
            payload[part] = {n: e for n, e in earlier.get(part, {}).items() if n not in selected}
        payload["earlier_rows"] = {
            "machine": earlier.get("machine"),
            "command": earlier.get("command"),
            "variants": sorted(n for p in ("kim", "chen") for n in payload[p]),
        }

    # The searches no other study runs first (search_cost.py runs kim, chen and darts), so
    # that this script can run beside search_cost.py without searching anything twice.
    own = {
        "kim": ("kim_no_zeroise", "kim_no_diversity"),
        "chen": ("chen_no_reduction", "chen_no_sampling"),
    }
    for part in ("kim", "chen"):
        if args.part in (part, "both"):
            for name in own[part]:
                if name in searches:
                    search_unit(name)
    if args.part in ("kim", "both"):
        for variant in (v for v in KIM if v in selected):
            search = search_unit(KIM_SEARCH[variant])
            if search is None:
                continue
            spec = C.family_spec(
                budget,
                "kim",
                search["genotype"],
                **({"inter_cell_skip": False} if variant == "no_skip" else {}),
            )
            # "full" is search_cost.py's searched_kim training (same name: the cache is shared).
            name = "searched_kim" if variant == "full" else f"kim_{variant}"
            if args.only_cached and not C.is_cached_training(budget, name, spec):
                not_run.append(f"{variant} (training)")
                continue
            trained = C.train_and_measure(budget, name, spec, args.fresh)
            payload["kim"][variant] = {
                "search": _search_row(search),
                "trained": C.row(trained, "ablation"),
                "genotype": search["genotype"],
            }
            C.write_results(out, payload)
        if "full" in payload["kim"]:
            full = payload["kim"]["full"]["trained"]["accuracy_mean"]
            payload["kim_direction"] = {
                v: {
                    "drop_points": 100 * (full - payload["kim"][v]["trained"]["accuracy_mean"]),
                    "same_direction_as_paper": full > payload["kim"][v]["trained"]["accuracy_mean"],
                }
                for v in KIM[1:]
                if v in payload["kim"]
            }
    if args.part in ("chen", "both"):
        for name in (n for n in CHEN if n in selected):
            search = search_unit(name)
            if search is None:
                continue
            spec = C.family_spec(budget, name, search["genotype"])
            if args.only_cached and not C.is_cached_training(budget, f"searched_{name}", spec):
                not_run.append(f"{name} (training)")
                continue
            trained = C.train_and_measure(budget, f"searched_{name}", spec, args.fresh)
            payload["chen"][name] = {
                "search": _search_row(search),
                "trained": C.row(trained, "ablation"),
                "genotype": search["genotype"],
            }
            C.write_results(out, payload)
        if "darts" in payload["chen"]:
            base = payload["chen"]["darts"]["search"]["wall_s"]
            payload["chen_wall_over_darts"] = {
                n: e["search"]["wall_s"] / base for n, e in payload["chen"].items()
            }
    payload["not_run"] = [
        {"search": n, "why": "not run at this budget in this session (time)"}
        for n in dict.fromkeys(not_run)
    ]
    payload["machine"]["load_average_end"] = C.machine_info()["load_average"]
    C.write_results(out, payload)
    plot(payload, out.with_suffix(".png"))
    for part in ("kim", "chen"):
        for name, entry in payload[part].items():
            s, t = entry["search"], entry["trained"]
            print(
                f"{part:4s} {name:18s} acc {100 * t['accuracy_mean']:6.2f} %  search "
                f"{s['wall_s']:7.1f} s peak {s['peak_rss_gb']:.2f} GB  memory "
                f"{t['memory_kib']:7.1f} KiB"
            )
    return payload


def _search_row(search: dict) -> dict:
    keep = (
        "name",
        "wall_s",
        "cpu_s",
        "peak_rss_gb",
        "rss_before_search_gb",
        "others_cpu_share",
        "epochs_run",
        "stages",
        "genotype_str",
        "cached",
    )
    return {k: search.get(k) for k in keep}


def plot(payload: dict, path) -> None:
    """Two panels: Kim et al.'s ablation accuracies; Chen et al.'s 2 x 2 (accuracy, wall time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    kim = payload["kim"]
    if kim:
        names = list(kim)
        bars = axes[0].bar(
            names, [100 * kim[n]["trained"]["accuracy_mean"] for n in names], color="tab:blue"
        )
        axes[0].bar_label(bars, fmt="%.2f")
        axes[0].set_title("Kim et al. ablation: test top-1 (%)", fontsize=10)
        low = min(100 * kim[n]["trained"]["accuracy_mean"] for n in names)
        axes[0].set_ylim(max(0, low - 10), None)
    chen = payload["chen"]
    if chen:
        names = list(chen)
        labels = [n.replace("chen_", "").replace("_", "\n") for n in names]
        bars = axes[1].bar(
            labels, [100 * chen[n]["trained"]["accuracy_mean"] for n in names], color="tab:orange"
        )
        axes[1].bar_label(bars, fmt="%.2f")
        axes[1].set_title("Chen et al. 2x2: test top-1 (%)", fontsize=10)
        low = min(100 * chen[n]["trained"]["accuracy_mean"] for n in names)
        axes[1].set_ylim(max(0, low - 10), None)
        bars = axes[2].bar(labels, [chen[n]["search"]["wall_s"] for n in names], color="tab:gray")
        axes[2].bar_label(bars, fmt="%.0f")
        axes[2].set_title("Chen et al. 2x2: search wall time (s)", fontsize=10)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"Ablations, budget {payload['budget']['name']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
