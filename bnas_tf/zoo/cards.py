"""Model cards: markdown pages describing a zoo model and its trained instances.

A model's card (``model_card``) is its description, reference configuration,
cell, citation and published results, followed by one section per trained instance
(written by ``bnas-publish`` into ``zoo/cards/<MODEL>-<weights>.md``): the metrics
table, the training flags, the genotype and the ``larq.models.summary`` table.

Example:
    >>> from bnas_tf.zoo import model_card
    >>> model_card("BNASB").splitlines()[0].startswith("# BNASB")
    True
"""

from __future__ import annotations

from bnas_tf import genotype as genotype_lib
from bnas_tf.zoo import registry as registry_lib
from bnas_tf.zoo import specs

from pathlib import Path

__all__ = ["metrics_table", "instance_card", "model_card"]


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def metrics_table(rows: list[tuple[str, dict]]) -> str:
    """Markdown table of ``(weights name, metrics)`` rows (larq-zoo's columns and more)."""
    lines = [
        "| weights | dataset | top-1 | test images | parameters (1-bit / 32-bit) | memory | "
        "binarized MACs | epochs | train time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in rows:
        lines.append(
            f"| `{name}` | {m['dataset']} | {_pct(m['top1'])} | {m['test_examples']} | "
            f"{m['params_total']:,} ({m['params_1bit']:,} / {m['params_32bit']:,}) | "
            f"{m['memory_kib']:.1f} KiB | {100 * m['binarized_mac_ratio']:.1f} % | {m['epochs']} | "
            f"{m['train_time_s'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def instance_card(model: str, weights: str, entry: dict, *, summary: str, flags: str) -> str:
    """The card section of one trained instance (written by ``bnas-publish``)."""
    net = entry["network"]
    genotype = genotype_lib.from_dict(net["genotype"])
    skips = (
        f", inter-cell skips {'on' if net.get('inter_cell_skip', True) else 'off'}"
        if isinstance(genotype, genotype_lib.Genotype)
        else ""
    )
    config = entry.get("config", {})
    return "\n".join(
        [
            f'## `{model}(weights="{weights}")`',
            "",
            f"Architecture: {registry_lib.describe(entry)}{skips}; trained on {net['dataset']} "
            f"by `bnas-train` for {entry['metrics']['epochs']} epochs "
            f"({entry['metrics']['train_time_s'] / 60:.1f} min wall; published on "
            f"{entry.get('machine', 'an unrecorded machine')}).",
            "",
            metrics_table([(weights, entry["metrics"])]),
            "",
            f"Top-1 is measured on {entry['metrics']['test_examples']} {net['dataset']} test "
            "images (`bnas-evaluate` of the run). Memory and MACs: `larq.models.summary` (1-bit "
            "weights counted at 1 bit).",
            "",
            "Files (SHA-256):",
            "",
            f"- `{entry['file']}` ({entry['size']:,} bytes) `{entry['sha256']}`",
            f"- `{entry['notop_file']}` ({entry['notop_size']:,} bytes) `{entry['notop_sha256']}`",
            "",
            "Genotype:",
            "",
            "```",
            str(genotype),
            "```",
            "",
            f"Training flags (`{entry.get('flagfile', '')}`; optimizer {config.get('optimizer')}, "
            f"lr {config.get('learning_rate')} {config.get('lr_schedule')}, batch "
            f"{config.get('batch_size')}):",
            "",
            "```",
            flags.strip(),
            "```",
            "",
            "`larq.models.summary`:",
            "",
            "```",
            summary.strip(),
            "```",
            "",
        ]
    )


def _header(name: str, registry: dict) -> list[str]:
    info = specs.MODELS.get(name)
    if info is None:
        entry = registry_lib.model_entry(name, registry)
        base = entry.get("base_model")
        return [
            f"# {name}",
            "",
            entry.get("description")
            or "Published with `bnas-publish`" + (f" (derived from {base})." if base else "."),
            "",
            f"Citation: {entry.get('citation') or specs.PROJECT}",
            "",
            "Reference configuration (`weights=None`): that of its "
            f"`{entry.get('reference_weights')}` instance.",
            "",
            specs.WEIGHTS_DECISION,
            "",
        ]
    if info.genotype:
        cell = f"`{info.genotype}` = `{genotype_lib.get(info.genotype)}`"
        config = (
            f"{info.layers} cells x {info.init_channels} channels, {info.stem} stem, "
            f"{info.binarization} binarization, inter-cell skips "
            f"{'on' if info.inter_cell_skip else 'off'}, {info.dataset} input "
            f"({info.num_classes} classes)"
        )
    else:
        cell = "that of its published `fashion_mnist` instance (searched here)"
        config = "that of its published `fashion_mnist` instance"
    if info.reference_weights and info.genotype:
        config += (
            f"; once `{info.reference_weights}` weights are published, their architecture is the "
            "reference"
        )
    return [
        f"# {name}",
        "",
        info.description,
        "",
        f"- Reference configuration (`weights=None`): {config}.",
        f"- Cell: {cell}.",
        f"- Published results: {info.paper or 'none (new model)'}",
        f"- Citation: {info.citation}",
        "",
        specs.WEIGHTS_DECISION,
        "",
    ]


def model_card(name: str, registry: dict | None = None, directory: str | Path | None = None) -> str:
    """The markdown card of zoo model ``name``: description, then its trained instances."""
    registry = registry_lib.load(directory) if registry is None else registry
    canonical = registry_lib.canonical_name(name, registry, tuple(specs.MODELS))
    if canonical is None:
        known = list(specs.MODELS) + sorted(set(registry["models"]) - set(specs.MODELS))
        raise ValueError(f"Unknown zoo model {name!r}; available: {', '.join(known)}.")
    lines = _header(canonical, registry)
    weights = registry_lib.model_entry(canonical, registry).get("weights", {})
    if not weights:
        lines += ["## Trained instances", "", "None published yet.", ""]
        return "\n".join(lines)
    rows = [(w, e["metrics"]) for w, e in sorted(weights.items())]
    lines += ["## Trained instances", "", metrics_table(rows), ""]
    base = Path(directory).resolve() if directory else registry_lib.zoo_dir()
    for weights_name, entry in sorted(weights.items()):
        card = base / entry.get("card", "")
        if entry.get("card") and card.is_file():
            lines += [card.read_text()]
        else:
            title = f'## `{canonical}(weights="{weights_name}")`'
            lines += [title, "", f"({registry_lib.describe(entry)})", ""]
    return "\n".join(lines)
