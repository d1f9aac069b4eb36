"""Turn a finished ``bnas-train`` run into a zoo entry (what ``bnas-publish`` runs).

For run ``RUN`` published as model ``NAME`` with weights name ``W``, into zoo directory
``ZOO`` (default [`bnas_tf.zoo.registry.zoo_dir`][bnas_tf.zoo.registry.zoo_dir]):

```python
ZOO/weights/NAME-W-<sha8>.h5        full weights (model.save_weights, HDF5)
ZOO/weights/NAME-W-notop-<sha8>.h5  the same without global pooling + classifier
ZOO/flags/NAME-W.cfg                the training flags (a usable --flagfile)
ZOO/genotypes/NAME-W.json           the cell (or a BMES run's group genotype)
ZOO/cards/NAME-W.md                 metrics table, flags, genotype, larq summary
ZOO/cards/NAME.md                   the whole model card (all instances)
ZOO/registry.json                   + models[NAME].weights[W] (written last, atomically)
```

An existing entry is refused unless ``overwrite=True``. ``NAME`` is a built-in model
(``BNASB``, case-insensitive; the run must have its cell and stem) or a new name, which
becomes a model of its own: ``bnas_tf.zoo.get(NAME)`` returns its function. A BMES run (a
group genotype) can only be published under a new name.

Example (an outline, not run: it needs a run's objects):

```python
from bnas_tf.zoo.publish import publish
entry = publish("runs/zoo/bnasb/train", "BNASB", weights_name="fashion_mnist")
from bnas_tf.zoo import get
model = get("BNASB")(weights="fashion_mnist")
```
"""

from __future__ import annotations

import bnas_tf
from bnas_tf import export
from bnas_tf import genotype as genotype_lib
from bnas_tf.runs import atomic_write_text, read_json
from bnas_tf.training import (
    NETWORK_FILE,
    WEIGHTS_FILE,
    TrainConfig,
    build_from_spec,
    load_trained,
    summary_text,
)
from bnas_tf.zoo import cards, specs
from bnas_tf.zoo import registry as registry_lib
from bnas_tf.zoo.weights_file import load_weights

import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import tensorflow as tf

__all__ = ["publish", "check_run", "genotype_reference", "MAX_ZOO_BYTES"]

#: Budget for all published weight files of the repository's zoo (issue 5: under 60 MB).
MAX_ZOO_BYTES = 60 * 1000 * 1000


def check_run(run_dir: str | os.PathLike) -> tuple[dict, dict]:
    """``(network spec, metrics)`` of a finished ``bnas-train`` run; ValueError names what lacks."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"--run_dir {run_dir} is not a directory.")
    missing = [
        f for f in (NETWORK_FILE, WEIGHTS_FILE, "metrics.json") if not (run_dir / f).is_file()
    ]
    if missing:
        raise ValueError(
            f"--run_dir {run_dir} is not a finished bnas-train run: {', '.join(missing)} missing "
            "(metrics.json is written when training and evaluation end)."
        )
    spec, metrics = read_json(run_dir / NETWORK_FILE), read_json(run_dir / "metrics.json")
    if "test" not in metrics or "accuracy" not in metrics["test"]:
        raise ValueError(f"{run_dir / 'metrics.json'} has no test accuracy; did bnas-train finish?")
    return spec, metrics


def _check_builtin(name: str, spec: dict) -> list[str]:
    """Refuse a run that is not ``name``'s architecture family; return notes for the card."""
    info = specs.MODELS[name]
    notes = []
    run = genotype_lib.from_dict(spec["genotype"])
    if not isinstance(run, genotype_lib.Genotype):
        raise ValueError(
            f"The run is a BMES group network ({run}), not {name}'s cell network. Publish it "
            "under a new --name instead."
        )
    if info.genotype is not None:
        published = genotype_lib.get(info.genotype)
        same = (run.normal, run.normal_concat, run.reduce, run.reduce_concat) == (
            published.normal,
            published.normal_concat,
            published.reduce,
            published.reduce_concat,
        )
        if not same:
            raise ValueError(
                f"The run's cell is not {name}'s ({info.genotype}): run {run}. Publish it under a "
                "new --name instead."
            )
    for key, expected in (
        ("stem", info.stem),
        ("binarization", info.binarization),
        ("inter_cell_skip", info.inter_cell_skip),
    ):
        if spec.get(key, True if key == "inter_cell_skip" else None) != expected:
            raise ValueError(
                f"The run's {key} is {spec.get(key)!r} but {name} uses {expected!r}; publish it "
                "under a new --name instead."
            )
    if (
        info.reference_weights
        and info.layers
        and (spec["layers"], spec["init_channels"]) != (info.layers, info.init_channels)
    ):
        notes.append(
            f"{name}'s coded reference size is {info.layers} x {info.init_channels}; this instance "
            f"is {spec['layers']} x {spec['init_channels']} and, as the published reference "
            "instance, now defines weights=None."
        )
    return notes


def genotype_reference(directory: Path, genotype_file: str) -> str:
    """How a published flagfile names its genotype file ``directory / genotype_file``.

    Relative to the repository root when ``directory`` lies in the source checkout (the
    flagfiles are run from there: ``--genotype=zoo/genotypes/bnasb.json``), else absolute.

    Example:
        >>> from bnas_tf.zoo import registry
        >>> root = registry.checkout_zoo_dir().parent
        >>> genotype_reference(root / "myzoo", "genotypes/net.json")
        'myzoo/genotypes/net.json'
        >>> genotype_reference(Path("/elsewhere/zoo"), "genotypes/net.json")
        '/elsewhere/zoo/genotypes/net.json'
    """
    path = Path(directory).resolve() / genotype_file
    try:
        return path.relative_to(registry_lib.checkout_zoo_dir().parent).as_posix()
    except ValueError:
        return os.fspath(path)


def _flags_text(run_dir: Path, config: dict, genotype_path: str) -> str:
    """The run's training flags, without absl's own: a usable ``--flagfile``.

    A ``--genotype`` that is a file of the training machine is replaced by the
    published copy ``genotype_path``; published names (``bnas_a``) are kept.
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    source = run_dir / "flags.cfg"
    lines = []
    if source.is_file():
        for line in source.read_text().splitlines():
            flag = line.strip().lstrip("-").split("=", 1)[0]
            if flag in fields or (flag.startswith("no") and flag[2:] in fields):
                lines.append(line.strip())
    else:
        for key in sorted(fields & set(config)):
            value = config[key]
            if isinstance(value, bool):
                lines.append(f"--{'' if value else 'no'}{key}")
            else:
                lines.append(f"--{key}={'none' if value is None else value}")
    for i, line in enumerate(lines):
        if line.startswith("--genotype="):
            value = line.split("=", 1)[1]
            if value.lower().replace("-", "_") not in genotype_lib.PUBLISHED:
                lines[i] = f"--genotype={genotype_path}"
    return "\n".join(lines) + "\n"


def _metrics(spec: dict, run_metrics: dict, profile: dict) -> dict:
    config = run_metrics.get("config", {})
    return {
        "dataset": spec["dataset"],
        "top1": float(run_metrics["test"]["accuracy"]),
        "test_loss": run_metrics["test"].get("loss"),
        "test_examples": int(run_metrics["test"].get("examples", 0)),
        "epochs": int(config.get("epochs", len(run_metrics.get("history", [])))),
        "train_time_s": float(run_metrics.get("train_time_s", 0.0)),
        "params_total": profile["params_total"],
        "params_1bit": profile["params_1bit"],
        "params_32bit": profile["params_32bit"],
        "memory_kib": profile["memory_kib"],
        "fp32_equivalent_kib": profile["fp32_equivalent_kib"],
        "macs_total": profile["macs_total"],
        "binarized_mac_ratio": profile["binarized_mac_ratio"],
    }


def _save_weights(model: tf.keras.Model, directory: Path, stem: str) -> tuple[str, str, int]:
    """Save ``model``'s weights as ``weights/<stem>-<sha8>.h5``; ``(relative path, sha, size)``."""
    (directory / "weights").mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory / "weights", prefix=f".{stem}.", suffix=".h5")
    os.close(fd)
    try:
        model.save_weights(tmp)
        digest = registry_lib.sha256(tmp)
        relative = f"weights/{stem}-{digest[:8]}.h5"
        os.replace(tmp, directory / relative)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return relative, digest, (directory / relative).stat().st_size


def publish(
    run_dir: str | os.PathLike,
    name: str,
    *,
    weights_name: str = "fashion_mnist",
    base_model: str | None = None,
    zoo_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    description: str | None = None,
    print_fn=None,
) -> dict:
    """Publish run ``run_dir`` as weights ``weights_name`` of zoo model ``name``; return the entry.

    Raises:
        ValueError: an unfinished run, a bad name, a run that is not the built-in
            model's cell/stem/binarization, or a weights budget overrun.
        FileExistsError: the entry exists and ``overwrite`` is False.
    """
    run_dir = Path(run_dir)
    directory = Path(zoo_dir).resolve() if zoo_dir else registry_lib.zoo_dir()
    if registry_lib.is_packaged(directory):
        raise ValueError(
            f"The zoo directory {directory} is the installed package's own copy of the zoo; "
            f"publish into a zoo of your own with --zoo_dir DIR (or ${registry_lib.ZOO_DIR_ENV}), "
            f"after copying {directory} there to keep the models published with bnas_tf."
        )
    spec, run_metrics = check_run(run_dir)
    registry_lib.check_name(weights_name, "--weights_name")
    registry = registry_lib.load(directory)
    builtin = registry_lib.canonical_name(name, None, tuple(specs.MODELS))
    model_name = (
        builtin
        or registry_lib.canonical_name(name, registry)
        or registry_lib.check_name(name, "--name")
    )
    if base_model is not None:
        base = registry_lib.canonical_name(base_model, None, tuple(specs.MODELS))
        if base is None:
            raise ValueError(
                f"--model {base_model!r} is not a built-in zoo model ({', '.join(specs.MODELS)})."
            )
        if builtin and base != builtin:
            raise ValueError(f"--model {base} contradicts --name {builtin}; give one of them.")
        base_model = base
    notes = _check_builtin(model_name, spec) if builtin else []
    if base_model and not builtin:
        notes += [f"Derived from {base_model}."]
    existing = registry_lib.model_entry(model_name, registry).get("weights", {}).get(weights_name)
    if existing and not overwrite:
        raise FileExistsError(
            f"{directory / registry_lib.REGISTRY_FILE} already has {model_name} weights "
            f"{weights_name!r}; pass --overwrite to replace them."
        )

    model, _ = load_trained(run_dir)
    notop = build_from_spec(spec, include_top=False)
    stem = f"{model_name}-{weights_name}"
    file, digest, size = _save_weights(model, directory, stem)
    load_weights(notop, directory / file)
    notop_file, notop_digest, notop_size = _save_weights(notop, directory, f"{stem}-notop")

    profile = export.model_summary(model)
    entry = {
        "file": file,
        "sha256": digest,
        "size": size,
        "notop_file": notop_file,
        "notop_sha256": notop_digest,
        "notop_size": notop_size,
        "network": spec,
        "config": run_metrics.get("config", {}),
        "metrics": _metrics(spec, run_metrics, profile),
        "flagfile": f"flags/{stem}.cfg",
        "genotype_file": f"genotypes/{stem}.json",
        "card": f"cards/{stem}.md",
        "source_run": os.fspath(run_dir),
        "published": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "bnas_tf_version": bnas_tf.__version__,
        "machine": f"{platform.machine()} CPU x {os.cpu_count()}, TF {tf.__version__}",
        "notes": notes,
    }
    flags = _flags_text(
        run_dir, entry["config"], genotype_reference(directory, entry["genotype_file"])
    )
    for relative, text in (
        (entry["flagfile"], flags),
        (entry["genotype_file"], genotype_lib.from_dict(spec["genotype"]).to_json()),
        (
            entry["card"],
            cards.instance_card(
                model_name, weights_name, entry, summary=summary_text(model), flags=flags
            )
            + "".join(f"\nNote: {n}\n" for n in notes),
        ),
    ):
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / relative, text)

    registry = registry_lib.load(directory)  # re-read: keep entries published meanwhile
    model_entry = registry["models"].setdefault(model_name, {})
    model_entry.setdefault("weights", {})
    if not builtin:
        model_entry.setdefault("reference_weights", weights_name)
        if base_model:
            model_entry["base_model"] = base_model
        if description:
            model_entry["description"] = description
    old = model_entry["weights"].get(weights_name)
    model_entry["weights"][weights_name] = entry
    total = sum(
        e["size"] + e["notop_size"]
        for m in registry["models"].values()
        for e in m.get("weights", {}).values()
    )
    if total > MAX_ZOO_BYTES and directory == registry_lib.zoo_dir():
        for relative in (file, notop_file):
            (directory / relative).unlink(missing_ok=True)
        raise ValueError(
            f"Publishing would bring the zoo's weight files to {total / 1e6:.1f} MB, over the "
            f"{MAX_ZOO_BYTES / 1e6:.0f} MB budget; publish a smaller model."
        )
    registry_lib.save(registry, directory)
    if old:  # replaced files that are no longer referenced
        for key in ("file", "notop_file"):
            if old[key] not in (entry["file"], entry["notop_file"]):
                (directory / old[key]).unlink(missing_ok=True)
    card = cards.model_card(model_name, registry, directory)
    atomic_write_text(directory / "cards" / f"{model_name}.md", card)
    if print_fn is not None:
        print_fn(
            f"Published {model_name}(weights={weights_name!r}): top-1 "
            f"{entry['metrics']['top1']:.4f}, {size + notop_size:,} bytes of weights in "
            f"{directory}."
        )
    return entry
