"""Evolution over a binary MobileNet's group counts: BMES (Phan et al., CVPR 2020).

Two phases over the space of [`bnas_tf.mobilenet`][bnas_tf.mobilenet] (one group count per block):

1. **One-shot training** of a weight-sharing supernet
   ([`GroupSupernet`][bnas_tf.search.bmes.GroupSupernet]): each block holds one full 3x3
   kernel; a choice of ``g`` groups multiplies the *binarized* kernel by the block-diagonal
   mask of ``g`` groups, which computes exactly a ``g``-group convolution with the diagonal
   blocks of the shared kernel. Every training step draws a uniformly random group count per
   block (single-path uniform sampling, Guo et al., SPOS, ECCV 2020), and trains on the weight
   half of the search split.
2. **Evolution**: a population of architectures, each scored on the held-out (architecture) half
   with the shared weights after *re-estimating batch-norm statistics* for it (one training-mode
   pass over ``calibration_batches`` batches of the weight half with momentum 0, as SPOS and
   NAS-BNN recalibrate per candidate); each generation keeps the ``parents`` fittest and breeds
   ``mutations`` children (each gene redrawn with ``mutation_prob``) and ``crossovers`` children
   (uniform crossover of two parents).

Fitness under ``ops_budget`` (OPs = binary MACs / 64 + float MACs): candidates above the budget are
never evaluated (SPOS's hard constraint), and the accuracy of the others is traded against their
OPs with MnasNet's soft term ``fitness = accuracy * (OPs / budget) ** -0.07`` (Tan et al., CVPR
2019, alpha = beta = -0.07). Without a budget the fitness is the accuracy.

BMES's own fitness and population settings are not public in text; the defaults here are SPOS's
(population 50, 10 parents, 25 mutations and 25 crossovers, mutation probability 0.1, 20
generations) scaled down so that a Fashion-MNIST search ends within an hour on two CPU cores
(flags/search_fashion_mnist_bmes.cfg). The chosen architecture is retrained from scratch:
``bnas-train --genotype=RUN/genotype.json``.

Resuming: the supernet is checkpointed after each one-shot epoch and the evolution state (every
score so far, the population, the random generator) after each generation, in ``bmes_state.json``.
"""

from __future__ import annotations

from bnas_tf import data as data_lib
from bnas_tf import faults, mobilenet
from bnas_tf.mobilenet import GroupGenotype, block_channels, group_choices, group_network_ops
from bnas_tf.quantizers import Binarization
from bnas_tf.runs import read_json, write_json
from bnas_tf.settings import (
    SettingError,
    in_range,
    non_negative,
    positive,
    setting,
    validate,
)

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import larq as lq
import numpy as np
import tensorflow as tf

__all__ = [
    "BMESConfig",
    "GroupSupernet",
    "Evolution",
    "BMESResult",
    "run_bmes_search",
    "fitness",
    "STATE_FILE",
]

STATE_FILE = "bmes_state.json"
MNAS_EXPONENT = -0.07  # MnasNet's soft-constraint exponent (Tan et al. 2019)


def _group_set_check(value: str) -> str | None:
    try:
        groups = [int(g) for g in str(value).split(",")]
    except ValueError:
        return f"must be comma-separated positive integers, got {value!r}."
    if not groups or min(groups) < 1:
        return f"must be comma-separated positive integers, got {value!r}."
    return None


@dataclasses.dataclass
class BMESConfig:
    """Settings of the BMES search (the space, the one-shot training, the evolution)."""

    width: int = setting(
        16, "Channels of the first block (BMES space).", check=positive, flag="bmes_width"
    )
    group_set: str = setting(
        "1,2,4,8,16",
        "Group counts a block may take (those dividing its channels).",
        check=_group_set_check,
        flag="bmes_groups",
    )
    supernet_epochs: int = setting(
        4, "Epochs of one-shot supernet training (random groups per step).", check=positive
    )
    learning_rate: float = setting(
        2e-3,
        "Adam learning rate of the one-shot training (cosine to 0), as larq's binary networks "
        "train.",
        check=positive,
        flag="bmes_learning_rate",
    )
    population: int = setting(16, "Architectures per generation.", check=positive)
    generations: int = setting(6, "Generations of the evolution.", check=positive)
    parents: int = setting(6, "Fittest architectures kept as parents.", check=positive)
    mutations: int = setting(6, "Children by mutation per generation.", check=non_negative)
    crossovers: int = setting(6, "Children by crossover per generation.", check=non_negative)
    mutation_prob: float = setting(
        0.1, "Probability that a mutation redraws a block's group count.", check=in_range(0.0, 1.0)
    )
    calibration_batches: int = setting(
        4,
        "Weight-half batches that re-estimate batch-norm statistics per candidate.",
        check=positive,
    )
    candidate_batches: int = setting(
        8, "Architecture-half batches on which each candidate is scored.", check=positive
    )

    def __post_init__(self):
        validate(self)

    def groups(self) -> tuple[int, ...]:
        return tuple(int(g) for g in self.group_set.split(","))


def fitness(accuracy: float, ops: float, ops_budget: float | None) -> float:
    """``accuracy * (ops / budget) ** -0.07`` (MnasNet), or the accuracy without a budget."""
    if ops_budget is None:
        return float(accuracy)
    return float(accuracy) * (float(ops) / float(ops_budget)) ** MNAS_EXPONENT


# ---------------------------------------------------------------------- supernet
def _group_mask(c_in: int, c_out: int, groups: int) -> np.ndarray:
    """``[1, 1, c_in, c_out]``: 1 where input channel and output channel share a group."""
    gi = np.arange(c_in) // (c_in // groups)
    go = np.arange(c_out) // (c_out // groups)
    return (gi[:, None] == go[None, :]).astype(np.float32)[None, None]


class _MaskedGroupConv(tf.keras.layers.Layer):
    """A binary 3x3 convolution whose binarized kernel is multiplied by a group mask chosen per
    call (index into ``choices``). The kernel scale of the binarization is taken over the whole
    kernel, so the one-shot network approximates (not equals) the scale of a final ``g``-group
    convolution."""

    def __init__(self, channels: int, stride: int, choices, binarization: Binarization, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.stride, self.choices = channels, stride, list(choices)
        quant = binarization.layer_kwargs()
        self.kernel_quantizer = lq.quantizers.get(quant["kernel_quantizer"])
        self.input_quantizer = lq.quantizers.get(quant["input_quantizer"])
        self.masks = tf.constant(
            np.stack([_group_mask(channels, channels, g) for g in self.choices])
        )

    def build(self, input_shape):
        self.kernel = self.add_weight(
            "kernel",
            shape=(3, 3, self.channels, self.channels),
            initializer="glorot_uniform",
            constraint=lq.constraints.WeightClip(1.0),
        )

    def call(self, x, choice):
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        kernel = (
            self.kernel if self.kernel_quantizer is None else self.kernel_quantizer(self.kernel)
        )
        kernel = kernel * tf.gather(self.masks, choice)
        return tf.nn.conv2d(x, kernel, self.stride, "SAME")


class GroupSupernet(tf.keras.Model):
    """The weight-sharing binary MobileNet of BMES: ``call(x)`` computes the architecture held in
    ``choice`` (one index into ``choices[i]`` per block); ``train_step`` draws a random one per
    step first."""

    def __init__(
        self,
        num_classes: int,
        *,
        width: int = 16,
        blocks=mobilenet.DEFAULT_BLOCKS,
        group_set: Sequence[int] = (1, 2, 4, 8, 16),
        binarization: str | Binarization = "sign_scale",
        name: str = "group_supernet",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        from bnas_tf.layers import binary_conv2d
        from bnas_tf.quantizers import get_binarization

        binarization = get_binarization(binarization)
        self.width, self.blocks = width, tuple(tuple(b) for b in blocks)
        self.choices = group_choices(width, self.blocks, group_set)
        self.channels = block_channels(width, self.blocks)
        self.choice = tf.Variable(
            tf.zeros(len(self.blocks), tf.int32), trainable=False, name="choice"
        )
        self.stem = tf.keras.Sequential(
            [
                tf.keras.layers.Conv2D(width, 3, padding="same", use_bias=False),
                tf.keras.layers.BatchNormalization(),
            ],
            name="stem",
        )
        self.group_convs, self.group_bns, self.point_convs, self.point_bns = [], [], [], []
        for i, ((c_in, c_out, stride), choices) in enumerate(zip(self.channels, self.choices)):
            self.group_convs.append(
                _MaskedGroupConv(c_in, stride, choices, binarization, name=f"block{i}_group")
            )
            self.group_bns.append(tf.keras.layers.BatchNormalization(name=f"block{i}_group_bn"))
            self.point_convs.append(
                binary_conv2d(binarization, c_out, 1, use_bias=False, name=f"block{i}_point")
            )
            self.point_bns.append(tf.keras.layers.BatchNormalization(name=f"block{i}_point_bn"))
        self.head = tf.keras.layers.Dense(num_classes, name="logits")
        self.loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self._loss = tf.keras.metrics.Mean(name="loss")
        self._accuracy = tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [self._loss, self._accuracy]

    def call(self, x, training=None):
        x = self.stem(x, training=training)
        for i, (_, _, stride) in enumerate(self.channels):
            y = self.group_bns[i](self.group_convs[i](x, self.choice[i]), training=training)
            x = _shortcut(x, y, stride)
            y = self.point_bns[i](self.point_convs[i](x), training=training)
            x = _shortcut(x, y, 1)
        x = tf.reduce_mean(tf.nn.relu(x), axis=(1, 2))
        return self.head(x)

    def sample_choice(self) -> tf.Tensor:
        """A uniformly random choice index per block (tf random ops: seeded by the global seed)."""
        return tf.stack(
            [tf.random.uniform((), 0, len(choices), dtype=tf.int32) for choices in self.choices]
        )

    def set_genotype(self, groups: Sequence[int]) -> None:
        """Compute the architecture with these group counts from now on."""
        index = []
        for i, (g, choices) in enumerate(zip(groups, self.choices)):
            if g not in choices:
                raise ValueError(f"block {i}: {g} groups is not one of its choices {choices}.")
            index.append(choices.index(g))
        self.choice.assign(index)

    def train_step(self, data):
        x, y = data
        self.choice.assign(self.sample_choice())
        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            loss = self.loss_fn(y, logits)
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self._loss.update_state(loss)
        self._accuracy.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}

    def batch_norms(self) -> list[tf.keras.layers.BatchNormalization]:
        return [
            layer
            for layer in self.submodules
            if isinstance(layer, tf.keras.layers.BatchNormalization)
        ]


def _shortcut(x, y, stride):
    if stride == 2:
        x = tf.nn.avg_pool2d(x, 2, 2, "SAME")
    if y.shape[-1] == 2 * x.shape[-1]:
        x = tf.concat([x, x], axis=-1)
    elif y.shape[-1] != x.shape[-1]:
        return y
    return x + y


# ---------------------------------------------------------------------- evolution
class Evolution:
    """Population, parents, mutation and crossover over group genotypes (SPOS-style).

    ``score(groups) -> accuracy`` is called once per distinct architecture (cached in
    ``scores``); ``ops(groups)`` gives its OPs for the budget and the fitness.
    """

    def __init__(
        self,
        choices: Sequence[Sequence[int]],
        config: BMESConfig,
        *,
        ops: Callable[[tuple[int, ...]], float],
        ops_budget: float | None = None,
        seed: int = 0,
    ):
        self.choices = [list(c) for c in choices]
        self.config, self.ops, self.ops_budget = config, ops, ops_budget
        self.rng = np.random.default_rng(seed)
        self.scores: dict[tuple[int, ...], float] = {}
        self.population: list[tuple[int, ...]] = []
        self.generation = 0
        self.history: list[dict[str, Any]] = []
        cheapest = tuple(max(c) for c in self.choices)  # the most groups: the fewest OPs
        if ops_budget is not None and ops(cheapest) > ops_budget:
            raise SettingError(
                "ops_budget",
                f"{ops_budget:.0f} is below the cheapest architecture of the space "
                f"({ops(cheapest):.0f} OPs, groups {list(cheapest)}).",
            )

    def fits(self, groups: tuple[int, ...]) -> bool:
        return self.ops_budget is None or self.ops(groups) <= self.ops_budget

    def fitness(self, groups: tuple[int, ...]) -> float:
        return fitness(self.scores[groups], self.ops(groups), self.ops_budget)

    def _draw(self, make: Callable[[], tuple[int, ...]], taken: set, tries: int = 200):
        for _ in range(tries):
            groups = make()
            if groups not in taken and self.fits(groups):
                return groups
        return None

    def random(self) -> tuple[int, ...]:
        return tuple(int(self.rng.choice(c)) for c in self.choices)

    def mutate(self, parent: tuple[int, ...]) -> tuple[int, ...]:
        p = self.config.mutation_prob
        return tuple(
            int(self.rng.choice(c)) if self.rng.random() < p else g
            for g, c in zip(parent, self.choices)
        )

    def crossover(self, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(x if self.rng.random() < 0.5 else y for x, y in zip(a, b))

    def next_population(self) -> list[tuple[int, ...]]:
        """Generation 0: random architectures under the budget; later: the parents' children
        (mutations, crossovers), topped up with random ones."""
        size = self.config.population
        taken: set = set()
        population: list[tuple[int, ...]] = []

        def add(groups):
            if groups is not None:
                taken.add(groups)
                population.append(groups)

        if self.generation > 0:
            parents = self.parents()
            for _ in range(self.config.mutations):
                add(
                    self._draw(lambda: self.mutate(parents[self.rng.integers(len(parents))]), taken)
                )
            for _ in range(self.config.crossovers):
                add(
                    self._draw(
                        lambda: self.crossover(
                            parents[self.rng.integers(len(parents))],
                            parents[self.rng.integers(len(parents))],
                        ),
                        taken,
                    )
                )
        while len(population) < size:
            groups = self._draw(self.random, taken)
            if groups is None:
                break  # the space (under the budget) is smaller than the population
            add(groups)
        return population[: max(size, len(population))]

    def parents(self) -> list[tuple[int, ...]]:
        ranked = sorted(self.scores, key=lambda g: (-self.fitness(g), g))
        return ranked[: self.config.parents]

    def best(self) -> tuple[int, ...]:
        return self.parents()[0]

    def step(self, score: Callable[[tuple[int, ...]], float]) -> dict[str, Any]:
        """One generation: breed, score the new architectures, record the fittest."""
        self.population = self.next_population()
        for groups in self.population:
            if groups not in self.scores:
                self.scores[groups] = float(score(groups))
        best = self.best()
        record = {
            "generation": self.generation,
            "population": [list(g) for g in self.population],
            "best": list(best),
            "best_accuracy": self.scores[best],
            "best_ops": self.ops(best),
            "best_fitness": self.fitness(best),
            "evaluated": len(self.scores),
        }
        self.history.append(record)
        self.generation += 1
        return record

    def state_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "scores": [[list(g), s] for g, s in self.scores.items()],
            "population": [list(g) for g in self.population],
            "history": self.history,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state) -> None:
        self.generation = int(state["generation"])
        self.scores = {tuple(int(x) for x in g): float(s) for g, s in state["scores"]}
        self.population = [tuple(g) for g in state["population"]]
        self.history = list(state["history"])
        self.rng.bit_generator.state = state["rng"]


# ---------------------------------------------------------------------- the search
@dataclasses.dataclass
class BMESResult:
    genotype: GroupGenotype
    accuracy: float
    ops: float
    history: list[dict]
    wall_time: float


class _Scorer:
    """Accuracy of an architecture with the shared weights, after re-estimating BN statistics."""

    def __init__(self, net: GroupSupernet, calibration: tf.Tensor, batches):
        self.net, self.calibration, self.batches = net, calibration, batches
        self.saved = [v.numpy() for v in net.non_trainable_variables]
        norms = net.batch_norms()
        momenta = [bn.momentum for bn in norms]
        for bn in norms:
            bn.momentum = 0.0  # one training-mode pass sets the statistics to this batch's
        self._recalibrate = tf.function(lambda x: net(x, training=True))
        self._recalibrate.get_concrete_function(tf.TensorSpec(calibration.shape, calibration.dtype))
        for bn, m in zip(norms, momenta):
            bn.momentum = m
        self._predict = tf.function(lambda x: net(x, training=False))

    def __call__(self, groups) -> float:
        self.net.set_genotype(groups)
        self._recalibrate(self.calibration)
        correct = total = 0
        for x, y in self.batches:
            predicted = np.argmax(self._predict(x).numpy(), axis=-1)
            correct += int(np.sum(predicted == np.asarray(y).reshape(-1)))
            total += len(predicted)
        return correct / total

    def restore(self) -> None:
        for v, value in zip(self.net.non_trainable_variables, self.saved):
            v.assign(value)


def run_bmes_search(
    config,
    output_dir: str | Path,
    *,
    resume: bool = False,
    log: Callable[[str], Any] = print,
) -> BMESResult:
    """BMES on ``config`` (a [`SearchConfig`][bnas_tf.search.driver.SearchConfig]: data, batch,
    binarization, seed, ``ops_budget`` and ``config.bmes``); writes ``genotype.json`` (a group
    genotype), ``metrics.json`` and, while running, checkpoints and ``bmes_state.json``."""
    config.validate()
    bmes = config.bmes
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    info = data_lib.info(config.dataset)
    sizes = data_lib.search_split_sizes(config.dataset, **config.split_args())
    steps = sizes.steps_per_epoch
    net = GroupSupernet(
        info.num_classes,
        width=bmes.width,
        group_set=bmes.groups(),
        binarization=config.binarization_method(),
    )
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        bmes.learning_rate, max(1, steps * bmes.supernet_epochs)
    )
    net.compile(optimizer=tf.keras.optimizers.Adam(schedule))
    net(tf.zeros((1, *info.input_shape)))
    net.optimizer.build(net.trainable_variables)

    def ops(groups) -> float:
        genotype = GroupGenotype(groups, width=bmes.width, blocks=net.blocks)
        return group_network_ops(genotype, info.input_shape, info.num_classes)["ops"]

    evolution = Evolution(
        net.choices, bmes, ops=ops, ops_budget=config.ops_budget, seed=config.seed
    )
    checkpoint = tf.train.Checkpoint(model=net, optimizer=net.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, output_dir / "checkpoints", max_to_keep=1)
    state: dict[str, Any] = {"epochs_done": 0, "train": [], "evolution": None}
    if resume and (output_dir / STATE_FILE).exists():
        state = read_json(output_dir / STATE_FILE)
        checkpoint.read(manager.latest_checkpoint).assert_existing_objects_matched()
        if state["evolution"] is not None:
            evolution.load_state_dict(state["evolution"])
        log(
            f"Resuming BMES after {state['epochs_done']} one-shot epochs and "
            f"{evolution.generation} generations."
        )

    def save() -> None:
        manager.save(checkpoint_number=state["epochs_done"])
        write_json(output_dir / STATE_FILE, state)

    guard = faults.RunGuard(None, output_dir, steps_per_epoch=steps, program="bnas-search")
    started = time.time()
    with guard:
        for epoch in range(state["epochs_done"], bmes.supernet_epochs):
            halves = data_lib.search_splits(
                config.dataset,
                seed=config.seed,
                shuffle_seed=config.seed * 1000 + epoch,
                **config.split_args(),
            )
            weight_half = halves.map(lambda w, a: w)
            pairs, guards = guard.epoch(epoch, weight_half)
            history = net.fit(
                pairs,
                initial_epoch=epoch,
                epochs=epoch + 1,
                verbose=config.verbose,
                callbacks=guards,
            )
            guard.check(epoch)
            state["train"].append({k: float(v[-1]) for k, v in history.history.items()})
            state["epochs_done"] = epoch + 1
            save()
            guard.committed(epoch)

        split = data_lib.search_splits(config.dataset, seed=config.seed, **config.split_args())
        calibration = tf.concat([x for (x, _), _ in split.take(bmes.calibration_batches)], axis=0)
        batches = [(x, y) for _, (x, y) in split.take(bmes.candidate_batches)]
        scorer = _Scorer(net, calibration, batches)
        try:
            while evolution.generation < bmes.generations:
                record = evolution.step(scorer)
                log(
                    f"generation {record['generation']}: best {record['best']} "
                    f"accuracy {record['best_accuracy']:.4f}, {record['best_ops']:.0f} OPs "
                    f"({record['evaluated']} evaluated)"
                )
                state["evolution"] = evolution.state_dict()
                write_json(output_dir / STATE_FILE, state)
        finally:
            scorer.restore()
    wall_time = time.time() - started

    best = evolution.best()
    genotype = GroupGenotype(best, width=bmes.width, blocks=net.blocks)
    genotype.save(output_dir / "genotype.json")
    result = BMESResult(genotype, evolution.scores[best], ops(best), evolution.history, wall_time)
    write_json(
        output_dir / "metrics.json",
        {
            "config": dataclasses.asdict(config),
            "method": "bmes",
            "genotype": genotype.to_dict(),
            "accuracy": result.accuracy,
            "ops": result.ops,
            "ops_budget": config.ops_budget,
            "train": state["train"],
            "generations": evolution.history,
            "wall_time_s": wall_time,
            "steps_per_epoch": steps,
        },
    )
    log(str(genotype))
    return result
