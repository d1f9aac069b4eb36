"""The staged search of operation space reduction (Chen et al., BNAS, AAAI 2020).

Each stage trains the supernet of the current op space, then lets
[`OperationSpaceReduction`][bnas_tf.search.reduction.OperationSpaceReduction] sample, score and drop
one op per edge; the next stage's smaller supernet inherits the weights
([`transfer_weights`][bnas_tf.search.transfer.transfer_weights]). The algorithm and the gaps in the
paper this reading fills: [`bnas_tf.search.reduction`][bnas_tf.search.reduction].

The same stages drive CP-NAS ([`bnas_tf.search.child_parent`][bnas_tf.search.child_parent]):
with ``config.method == "cp_nas"`` each stage trains a binary child and a full-precision parent
supernet on the same batches, and the samples are scored by both.

Usage:

```python
from bnas_tf.search.driver import SearchConfig
from bnas_tf.search.reduction import ReductionConfig
from bnas_tf.search.reduction_search import run_reduction_search
config = SearchConfig(method="reduction", search_space="bnas_darts", partial_channels=4,
                      entropy_lambda=0.0, reduction=ReductionConfig(stage_epochs=5))
result = run_reduction_search(config, "runs/chen")
```

Resuming: after each stage the trained supernet (and CP-NAS's parent) is written to
``checkpoints/stage-<k>`` and then the state (``OperationSpaceReduction.state_dict``,
stage records) to ``reduction_state.json``; ``run_reduction_search(..., resume=True)``
continues after the last saved stage and replays exactly the batches it lost.
"""

from __future__ import annotations

from bnas_tf import data as data_lib
from bnas_tf import faults
from bnas_tf import genotype as genotype_lib
from bnas_tf import ops as ops_lib
from bnas_tf.genotype import Genotype
from bnas_tf.quantizers import FULL_PRECISION
from bnas_tf.runs import read_json, write_json
from bnas_tf.search import driver as driver_lib
from bnas_tf.search.budget import final_report, save_fit
from bnas_tf.search.cell import num_edges
from bnas_tf.search.child_parent import ChildArchitect, ChildParentReduction
from bnas_tf.search.reduction import OperationSpaceReduction
from bnas_tf.search.supernet import CELL_TYPES, Supernet
from bnas_tf.search.transfer import transfer_weights

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

__all__ = ["ReductionResult", "build_stage_supernet", "run_reduction_search", "STATE_FILE"]

STATE_FILE = "reduction_state.json"


@dataclasses.dataclass
class ReductionResult:
    genotype: Genotype
    removals: list[dict]
    stages: list[dict]
    wall_time: float
    budget: dict | None = None  #: the genotype's exact cost against each bound (``budget.check``)
    #: with ``fit_width``: the width found and its genotype (``budget.final_report``)
    budget_fit: dict | None = None


def build_stage_supernet(
    config: driver_lib.SearchConfig,
    num_classes: int,
    input_shape,
    total_steps: int,
    active_ops: Mapping[str, Sequence[Sequence[str]]],
    role: str = "model",
) -> Supernet:
    """A compiled, built supernet of ``config`` restricted to ``active_ops``.

    ``total_steps``: length of the cosine learning-rate schedule. ``role``: ``model`` (the
    reduction's supernet, or CP-NAS's binary child, which adds the kernel reconstruction loss) or
    ``parent`` (CP-NAS's full-precision parent).
    """
    architect = config.architect()
    binarization = None
    if config.method == "cp_nas" and role == "model":
        architect = ChildArchitect(
            **dataclasses.asdict(architect), recon_weight=config.cp_nas.recon_weight
        )
    elif role == "parent":
        binarization = FULL_PRECISION
    return driver_lib.build_supernet(
        config,
        num_classes,
        input_shape,
        total_steps,
        active_ops=active_ops,
        architect=architect,
        binarization=binarization,
    )


def _epoch_pairs(config, first_epoch: int, epochs: int, steps: int) -> tf.data.Dataset:
    """Epochs ``first_epoch ..`` of one endless, seeded stream over fixed search halves.

    ``search_splits`` ties the split to its seed, so the halves are made once
    (``seed=config.seed``) and each repetition reshuffles them (seeded, so a resumed
    search sees exactly the batches it would have seen). The epochs before
    ``first_epoch`` are produced and skipped (data work only).
    """
    ds = data_lib.search_splits(config.dataset, seed=config.seed, **config.split_args()).repeat()
    return ds.skip(first_epoch * steps).take(epochs * steps)


def _jsonable_ops(o_smaller) -> dict:
    return {cell: [list(ops) for ops in o_smaller[cell]] for cell in CELL_TYPES}


def _roles(config) -> tuple[str, ...]:
    return ("model", "parent") if config.method == "cp_nas" else ("model",)


def run_reduction_search(
    config: driver_lib.SearchConfig,
    output_dir: str | Path = ".",
    *,
    active_ops: Mapping[str, Sequence[Sequence[str]]] | None = None,
    resume: bool = False,
    log: Callable[[str], Any] = print,
) -> ReductionResult:
    """Search with operation space reduction (``config.reduction``; CP-NAS when
    ``config.method == "cp_nas"``); write genotype.json, genotype.png, metrics.json.

    Each stage: build the supernet of the current op space, inherit the previous
    stage's weights, train ``stage_epochs`` epochs, pick ``O_smaller``, sample and
    evaluate, update the scores, drop one op per edge (each removal is logged).
    After each stage the trained supernet is checkpointed with the reduction state
    (``reduction_state.json``); ``resume=True`` continues from the last one.
    ``config.epochs`` is not used: the search lasts ``(n - 1) * stage_epochs`` epochs
    for ``n`` starting ops per edge. ``active_ops``: the starting op space.
    """
    config.validate()
    reduction = config.reduction
    roles = _roles(config)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()  # as run_search: --seed repeats a CPU run
    info = data_lib.info(config.dataset)
    sizes = data_lib.search_split_sizes(config.dataset, **config.split_args())
    op_names = ops_lib.search_space(config.search_space)
    state_kwargs = dict(seed=config.seed, active_ops=active_ops, search_space=config.search_space)
    if config.method == "cp_nas":
        state = ChildParentReduction(
            op_names, num_edges(), reduction, beta_p=config.cp_nas.beta_p, **state_kwargs
        )
    else:
        state = OperationSpaceReduction(op_names, num_edges(), reduction, **state_kwargs)
    budget = config.budget(info.num_classes, info.input_shape)
    if budget is not None:
        model = budget.cost_model
        for metric, bound in budget.bounds.items():
            tables = {cell: model.tables[cell][metric] for cell in CELL_TYPES}
            state.constrain(
                tables, model.floor(metric), bound, allow_none=config.allow_none, metric=metric
            )
    checkpoint_dir = output_dir / "checkpoints"
    prev: dict[str, Supernet] | None = None
    stages: list[dict] = []
    if resume and (output_dir / STATE_FILE).exists():
        saved = read_json(output_dir / STATE_FILE)
        state.load_state_dict(saved["reduction"])
        stages = list(saved["stages"])
        total_stages = int(saved["total_stages"])
        if saved.get("trained_ops") is not None:
            prev = {
                role: build_stage_supernet(
                    config, info.num_classes, info.input_shape, 1, saved["trained_ops"], role
                )
                for role in roles
            }
            tf.train.Checkpoint(**prev).read(
                str(checkpoint_dir / f"stage-{state.stage}")
            ).assert_existing_objects_matched()
        log(f"Resuming the reduction search after stage {state.stage}.")
    else:
        total_stages = state.stages_left
    total_steps = max(1, sizes.steps_per_epoch * reduction.stage_epochs * total_stages)

    steps = sizes.steps_per_epoch
    # One split for the whole search: the weights never train on the architecture half.
    eval_take = min(reduction.eval_batches, steps)
    eval_pairs = data_lib.search_splits(config.dataset, seed=config.seed, **config.split_args())
    eval_batches = [(x_a, y_a) for _, (x_a, y_a) in eval_pairs.take(eval_take)]

    # A signal abandons the stage under way (stages are the unit of resumption); a
    # non-finite loss stops the search before the stage is saved.
    guard = faults.RunGuard(None, output_dir, steps_per_epoch=steps, program="bnas-search")
    started = time.time()
    with guard:
        while not state.done:
            stage_started = time.time()
            stage = state.stage
            before = state.active_ops
            nets = {
                role: build_stage_supernet(
                    config, info.num_classes, info.input_shape, total_steps, before, role
                )
                for role in roles
            }
            copied = (
                sum(transfer_weights(prev[role], nets[role]) for role in roles)
                if prev is not None
                else 0
            )
            first_epoch = stage * reduction.stage_epochs
            histories = {}
            for role, member in nets.items():
                member.optimizer.iterations.assign(first_epoch * steps)  # continue the schedule
                pairs, guards = guard.epoch(
                    first_epoch, _epoch_pairs(config, first_epoch, reduction.stage_epochs, steps)
                )
                histories[role] = member.fit(
                    pairs,
                    steps_per_epoch=steps,
                    initial_epoch=first_epoch,
                    epochs=first_epoch + reduction.stage_epochs,
                    verbose=config.verbose,
                    callbacks=guards,
                )
                # NaN loss or signal: nothing saved
                guard.check(first_epoch + reduction.stage_epochs - 1)
            net = nets["model"]
            history = histories["model"]
            train_time = time.time() - stage_started
            smaller = state.o_smaller(net)
            samples: list[dict] = []
            accuracies: list[float] = []
            parent_accuracies: list[float] = []
            if max(len(ops) for cell in CELL_TYPES for ops in smaller[cell]) > 1:
                samples = state.sample_architectures(smaller)
                accuracies = state.evaluate_samples(net, samples, eval_batches)
                if "parent" in nets:
                    parent_accuracies = state.evaluate_samples(
                        nets["parent"], samples, eval_batches
                    )
            credits = (
                [float(z) for z in state.indicator(accuracies, parent_accuracies)]
                if "parent" in nets
                else accuracies
            )
            likelihoods = state.update_scores(smaller, samples, credits)
            removed = state.remove_worst(net)
            for r in removed:
                log(
                    f"stage {r['stage']}: {r['cell']} edge {r['edge']}: removed {r['op']} "
                    f"(score {r['score']:.6f})"
                )
            stages.append(
                {
                    "stage": stage,
                    "epochs": [first_epoch, first_epoch + reduction.stage_epochs],
                    "active_ops": before,
                    "weights_transferred": copied,
                    "train": {k: [float(x) for x in v] for k, v in history.history.items()},
                    **(
                        {
                            "parent_train": {
                                k: [float(x) for x in v]
                                for k, v in histories["parent"].history.items()
                            },
                            "parent_accuracies": parent_accuracies,
                            "indicators": credits,
                        }
                        if "parent" in nets
                        else {}
                    ),
                    "o_smaller": _jsonable_ops(smaller),
                    "samples": samples,
                    "accuracies": accuracies,
                    "likelihoods": likelihoods,
                    "removals": removed,
                    "train_time_s": train_time,
                    "wall_time_s": time.time() - stage_started,
                }
            )
            # Checkpoint first, then the state that points at it.
            tf.train.Checkpoint(**nets).write(str(checkpoint_dir / f"stage-{state.stage}"))
            write_json(
                output_dir / STATE_FILE,
                {
                    "reduction": state.state_dict(),
                    "stages": stages,
                    "total_stages": total_stages,
                    "trained_ops": before,
                },
            )
            for stale in checkpoint_dir.glob(f"stage-{state.stage - 1}.*"):
                stale.unlink()  # only the last stage's supernet is needed to resume
            # a signal after fit stops here
            guard.committed(first_epoch + reduction.stage_epochs - 1)
            prev = nets
            log(f"stage {stage}: {len(removed)} ops removed in {stages[-1]['wall_time_s']:.1f} s")
    wall_time = time.time() - started

    genotype = state.genotype(prev["model"] if prev else None, allow_none=config.allow_none)
    report = fitted = None
    if budget is not None:
        report, fitted = final_report(genotype, budget, fit=config.fit_width, log=log)
    genotype.save(output_dir / "genotype.json")
    save_fit(fitted, output_dir)
    genotype_lib.plot(genotype, output_dir / "genotype.png")
    write_json(
        output_dir / "metrics.json",
        {
            "config": dataclasses.asdict(config),
            "reduction": dataclasses.asdict(reduction),
            "method": config.method,
            "genotype": genotype.to_dict(),
            "removals": state.removals,
            "stages": stages,
            "stage_wall_time_s": [s["wall_time_s"] for s in stages],
            "wall_time_s": wall_time,
            "steps_per_epoch": sizes.steps_per_epoch,
            "final_ops": state.active_ops,
            "scores": state.state_dict()["scores"],
            "op_names": list(op_names),
            "budget": report,
            "budget_fit": fitted,
        },
    )
    log(str(genotype))
    return ReductionResult(genotype, state.removals, stages, wall_time, report, fitted)
