"""Accuracy vs memory on Fashion-MNIST: searched binary networks against larq-zoo binary
networks, random cells of the same space and the full-precision twin.

Every network goes through the same training program (``_common.train_and_measure``; the budget sets
images, epochs and seeds) and is profiled by ``larq.models.summary``
([`bnas_tf.export.model_summary`][bnas_tf.export.model_summary]: parameters, memory with 1-bit
weights at 1 bit, MACs by precision). Groups:

* ``searched``: the genotypes of the Kim-style and Chen-style searches of
  ``search_cost.py`` (same budget, shared cache), and the demo search's genotype
  (``runs/demo/search/genotype.json``, from ``make demo``) when present;
* ``zoo``: larq-zoo binary networks at the smallest input size they accept (28x28
  images upsampled inside the model), left out when they build at no size or cost more
  MACs than the budget allows (both reported);
* ``random``: [`bnas_tf.sampling.random_genotype`][bnas_tf.sampling.random_genotype] cells of Kim's
space
  (seeds 0..N-1, the sampler's default: no Zeroise), Kim's template, like ``kim``;
* ``full_precision``: the Kim-searched network with its quantizers off.

    python benchmarks/accuracy_vs_memory.py --budget=cpu-small
"""

from __future__ import annotations

import argparse
import json
import sys

import _common as C

DEMO_GENOTYPE = C.ROOT / "runs" / "demo" / "search" / "genotype.json"
GROUP_STYLE = {
    "searched": ("tab:red", "*"),
    "zoo": ("tab:blue", "s"),
    "random": ("tab:gray", "o"),
    "full_precision": ("tab:green", "D"),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_budget_args(parser)
    parser.add_argument("--skip_zoo", action="store_true", help="leave the larq-zoo baselines out")
    parser.add_argument(
        "--only_cached",
        action="store_true",
        help="train nothing: collect cached trainings, list the others as not run",
    )
    args = parser.parse_args(argv)
    budget = C.BUDGETS[args.budget]
    out = C.results_path("accuracy_vs_memory", budget, args.output)
    payload = {
        "study": "accuracy_vs_memory",
        "budget": C.budget_dict(budget),
        "machine": C.machine_info(),
        "command": " ".join(["benchmarks/accuracy_vs_memory.py", *(argv or sys.argv[1:])]),
        "rows": [],
        "left_out": [],
        "genotypes": {},
    }

    def train(name: str, spec: dict) -> dict | None:
        if args.only_cached and not C.is_cached_training(budget, name, spec):
            payload["left_out"].append(
                {"name": name, "why": "not trained at this budget in this session (time)"}
            )
            return None
        return C.train_and_measure(budget, name, spec, args.fresh)

    def add(entry: dict | None, group: str) -> None:
        if entry is None:
            return
        payload["rows"].append({**C.row(entry, group), "runs": entry["runs"]})
        # kept current: an interrupted run is reported
        payload["summary"] = summarize(payload["rows"])
        C.write_results(out, payload)
        plot(payload, out.with_suffix(".png"))

    # Baselines first: they need no search, so this study can start while search_cost.py
    # still searches (the searches come from its cache when it is done).
    from bnas_tf.sampling import random_genotype

    for seed in range(budget.random_genotypes):
        genotype = random_genotype(seed, "bnas_kim").to_dict()
        payload["genotypes"][f"random_{seed}"] = genotype
        add(
            train(f"random_{seed}", C.genotype_spec(budget, genotype, source=f"random:{seed}")),
            "random",
        )

    if not args.skip_zoo:
        for module, model in C.ZOO_MODELS:
            spec = C.zoo_spec(budget, module, model)
            if spec["status"] != "ok":
                payload["left_out"].append(
                    {
                        "name": model,
                        "why": spec["why"],
                        "status": spec["status"],
                        "input_size": spec.get("input_size"),
                    }
                )
                C.write_results(out, payload)
                continue
            entry = train(model, spec)
            add(entry and {**entry, "name": f"{model}@{spec['input_size']}"}, "zoo")

    searches = {name: C.run_search_unit(budget, name, args.fresh) for name in ("kim", "chen")}
    for name, search in searches.items():
        payload["genotypes"][f"searched_{name}"] = search["genotype"]
        add(train(f"searched_{name}", C.family_spec(budget, name, search["genotype"])), "searched")
    add(
        train(
            "full_precision_kim",
            C.family_spec(budget, "kim", searches["kim"]["genotype"], full_precision=True),
        ),
        "full_precision",
    )

    if DEMO_GENOTYPE.exists():
        demo = json.loads(DEMO_GENOTYPE.read_text())
        payload["genotypes"]["searched_demo"] = demo
        add(
            train("searched_demo", C.genotype_spec(budget, demo, source=str(DEMO_GENOTYPE))),
            "searched",
        )
    else:
        payload["left_out"].append(
            {"name": "searched_demo", "why": f"{DEMO_GENOTYPE} missing (run make demo)"}
        )

    payload["summary"] = summarize(payload["rows"])
    payload["machine"]["load_average_end"] = C.machine_info()["load_average"]
    C.write_results(out, payload)
    plot(payload, out.with_suffix(".png"))
    for r in payload["rows"]:
        print(
            f"{r['group']:14s} {r['name']:22s} "
            f"{C.fmt_acc(r['accuracy_mean'], r['accuracy_std'], r['seeds']):>14s} %  "
            f"{r['memory_kib']:8.1f} KiB  {r['params_total']:9d} params  {r['macs_total_m']:7.1f} "
            f"MMAC  bin {r['binarized_mac_ratio']:.3f}  {r['train_wall_s']:6.1f} s"
        )
    print(json.dumps(payload["summary"], indent=1))
    return payload


def pareto(rows: list[dict]) -> list[str]:
    """Names on the accuracy-vs-memory Pareto front (no other row has less or equal memory
    and higher accuracy)."""
    front = []
    for r in rows:
        dominated = any(
            o is not r
            and o["memory_kib"] <= r["memory_kib"]
            and o["accuracy_mean"] > r["accuracy_mean"]
            for o in rows
        )
        if not dominated:
            front.append(r["name"])
    return front


def summarize(rows: list[dict]) -> dict:
    """The issue's targets for each searched network: +1 point over the random mean, and
    over every zoo baseline of equal or smaller memory."""
    random = [r["accuracy_mean"] for r in rows if r["group"] == "random"]
    zoo = [r for r in rows if r["group"] == "zoo"]
    random_mean = sum(random) / len(random) if random else None
    summary = {
        "random_mean": random_mean,
        "random_best": max(random) if random else None,
        "pareto_front": pareto(rows),
        "searched": {},
    }
    for r in rows:
        if r["group"] != "searched":
            continue
        smaller_zoo = [z for z in zoo if z["memory_kib"] <= r["memory_kib"]]
        summary["searched"][r["name"]] = {
            "accuracy": r["accuracy_mean"],
            "margin_over_random_mean_points": None
            if random_mean is None
            else 100 * (r["accuracy_mean"] - random_mean),
            "beats_random_mean_by_1_point": None
            if random_mean is None
            else r["accuracy_mean"] - random_mean >= 0.01,
            "zoo_with_equal_or_smaller_memory": [z["name"] for z in smaller_zoo],
            "beats_those_zoo_by_1_point": all(
                r["accuracy_mean"] - z["accuracy_mean"] >= 0.01 for z in smaller_zoo
            ),
            "margin_over_each_zoo_points": {
                z["name"]: 100 * (r["accuracy_mean"] - z["accuracy_mean"]) for z in zoo
            },
        }
    return summary


def plot(payload: dict, path) -> None:
    """Accuracy against memory (log scale), groups by colour, Pareto front as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for group, (color, marker) in GROUP_STYLE.items():
        pts = [r for r in rows if r["group"] == group]
        if not pts:
            continue
        ax.errorbar(
            [r["memory_kib"] for r in pts],
            [100 * r["accuracy_mean"] for r in pts],
            yerr=[100 * r["accuracy_std"] for r in pts],
            fmt=marker,
            color=color,
            label=group,
            markersize=9 if marker == "*" else 6,
            capsize=3,
        )
        for r in pts:
            if group != "random":
                ax.annotate(
                    r["name"],
                    (r["memory_kib"], 100 * r["accuracy_mean"]),
                    fontsize=7,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
    front = sorted(
        (r for r in rows if r["name"] in payload["summary"]["pareto_front"]),
        key=lambda r: r["memory_kib"],
    )
    if front:
        ax.step(
            [r["memory_kib"] for r in front],
            [100 * r["accuracy_mean"] for r in front],
            where="post",
            color="k",
            alpha=0.4,
            linewidth=1,
            label="Pareto front",
        )
    ax.set_xscale("log")
    ax.set_xlabel("model memory, KiB (larq.models.summary: 1-bit weights at 1 bit)")
    ax.set_ylabel("Fashion-MNIST test top-1 (%)")
    b = payload["budget"]
    train = "all" if b["train_limit"] is None else f"{b['train_limit']:,}"
    ax.set_title(
        f"budget {b['name']}: {train} training images, {b['epochs']} epoch(s), "
        f"{len(b['seeds'])} seed(s)",
        fontsize=10,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
