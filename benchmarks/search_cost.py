"""Search cost: complete tiny searches on Fashion-MNIST, and what each one finds.

Three complete searches at equal epochs (``_common.Budget.search_epochs``, the 7
stages of an operation space reduction over the 8 ops of ``bnas_darts``):

* ``kim``: Kim et al. -- their space with Zeroise, K=1, entropy regularizer, sign+scale;
* ``chen``: Chen et al. -- binarized DARTS space, XNOR, K=4 channel sampling with edge
  normalization, performance-based operation space reduction;
* ``darts``: plain binary DARTS -- Chen's setup without channel sampling (K=1), without
  reduction, no entropy term.

Each runs in its own process; reported: wall time of the search function, CPU time,
peak resident memory (``VmHWM``, including TensorFlow's own ~0.5-1 GB, shown separately as
the memory before the search), and the test accuracy of its genotype after the same
training (``_common.train_and_measure``, the family's network template).

    # writes benchmarks/results/search_cost_cpu_small.{json,png}
    python benchmarks/search_cost.py --budget=cpu-small
    python benchmarks/search_cost.py --budget=full
"""

from __future__ import annotations

import argparse
import sys

import _common as C

SEARCHES = ("kim", "chen", "darts")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_budget_args(parser)
    args = parser.parse_args(argv)
    budget = C.BUDGETS[args.budget]
    out = C.results_path("search_cost", budget, args.output)
    payload = {
        "study": "search_cost",
        "budget": C.budget_dict(budget),
        "machine": C.machine_info(),
        "searches": {},
        "command": " ".join(["benchmarks/search_cost.py", *(argv or sys.argv[1:])]),
    }
    for name in SEARCHES:
        search = C.run_search_unit(budget, name, args.fresh)
        trained = C.train_and_measure(
            budget, f"searched_{name}", C.family_spec(budget, name, search["genotype"]), args.fresh
        )
        payload["searches"][name] = {
            "search": search,
            "trained": C.row(trained, "searched"),
            "train_runs": trained["runs"],
        }
        C.write_results(out, payload)  # after every unit: an interrupted study keeps its numbers
    s = payload["searches"]
    payload["chen_wall_over_darts"] = s["chen"]["search"]["wall_s"] / s["darts"]["search"]["wall_s"]
    payload["kim_wall_over_darts"] = s["kim"]["search"]["wall_s"] / s["darts"]["search"]["wall_s"]
    payload["machine"]["load_average_end"] = C.machine_info()["load_average"]
    C.write_results(out, payload)
    plot(payload, out.with_suffix(".png"))
    for name, entry in s.items():
        r, t = entry["search"], entry["trained"]
        print(
            f"{name:6s} wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s  peak "
            f"{r['peak_rss_gb']:.2f} GB  acc {100 * t['accuracy_mean']:.2f} %"
        )
    print(f"chen / darts wall time: {payload['chen_wall_over_darts']:.2f}")
    return payload


def plot(payload: dict, path) -> None:
    """Bars: wall time, peak memory and accuracy of each search."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(payload["searches"])
    s = payload["searches"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    panels = (
        ("search wall time (s)", [s[n]["search"]["wall_s"] for n in names]),
        ("peak memory (GB)", [s[n]["search"]["peak_rss_gb"] for n in names]),
        ("test top-1 after training (%)", [100 * s[n]["trained"]["accuracy_mean"] for n in names]),
    )
    for ax, (title, values) in zip(axes, panels):
        bars = ax.bar(names, values, color=["tab:blue", "tab:orange", "tab:gray"][: len(names)])
        ax.bar_label(bars, fmt="%.1f" if max(values) < 100 else "%.0f")
        ax.set_title(title, fontsize=10)
    b = payload["budget"]
    fig.suptitle(
        f"Complete searches, {b['search_epochs']} epochs each, budget {b['name']}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
