"""Random genotypes: the random-architecture baseline every NAS result must beat.

A cell has 4 intermediate nodes; node ``i`` (DARTS index ``i + 2``) takes 2 distinct
inputs among the ``i + 2`` states before it, each through one op of the search space.
The sampler makes exactly those choices, uniformly, one per *decision*: the input pair
of each node and the op of each of its 2 edges, in both cells (Li & Talwalkar 2019,
"Random Search and Reproducibility for NAS", sample the DARTS space the same way).
``none`` (Zeroise) is left out unless asked for, as in DARTS' derived cells.

Each decision has a name and a list of options (``genotype_space``), so the same
code draws from NumPy (``random_genotype``) or from keras-tuner, one
``hp.Choice`` per decision (``sample_genotype``):

```python
from bnas_tf.sampling import random_genotype, sample_genotype
genotypes = [random_genotype(seed) for seed in range(10)]                  # a baseline
genotype = sample_genotype(lambda name, options: hp.Choice(name, options))  # a trial
```
"""

from __future__ import annotations

from bnas_tf import ops as ops_lib
from bnas_tf.genotype import CELL_TYPES, EDGES_PER_NODE, STEPS, Genotype

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["genotype_space", "sample_genotype", "random_genotype", "Chooser"]

#: ``chooser(name, options) -> option``: one decision of the sampler.
Chooser = Callable[[str, Sequence[Any]], Any]


def _pairs(node: int) -> list[str]:
    """Input pairs of intermediate node ``node``, as strings ``"a,b"`` (``a < b``)."""
    return [f"{a},{b}" for a, b in itertools.combinations(range(node + 2), EDGES_PER_NODE)]


def _ops(search_space: str, allow_none: bool) -> list[str]:
    return [op for op in ops_lib.search_space(search_space) if allow_none or op != "none"]


def genotype_space(search_space: str = "bnas_kim", *, allow_none: bool = False) -> dict[str, list]:
    """Every decision of a random cell pair: ``{name: options}``, in sampling order.

    Names: ``<cell>_node<i>_inputs`` (options ``"a,b"``) and ``<cell>_node<i>_op<k>``
    (op names), ``cell`` in ``normal``/``reduce``, ``i`` in 0..3, ``k`` in 0..1.
    """
    ops = _ops(search_space, allow_none)
    space: dict[str, list] = {}
    for cell in CELL_TYPES:
        for node in range(STEPS):
            space[f"{cell}_node{node}_inputs"] = _pairs(node)
            for k in range(EDGES_PER_NODE):
                space[f"{cell}_node{node}_op{k}"] = list(ops)
    return space


def sample_genotype(
    choose: Chooser, search_space: str = "bnas_kim", *, allow_none: bool = False
) -> Genotype:
    """The genotype made of ``choose(name, options)`` for every decision of
    ``genotype_space`` (e.g. ``hp.Choice``, or a random pick)."""
    space = genotype_space(search_space, allow_none=allow_none)
    cells = {}
    for cell in CELL_TYPES:
        edges = []
        for node in range(STEPS):
            name = f"{cell}_node{node}_inputs"
            pair = choose(name, space[name])
            if pair not in space[name]:
                raise ValueError(f"{name}: chose {pair!r}, not one of {space[name]}.")
            inputs = [int(i) for i in str(pair).split(",")]
            for k, source in enumerate(inputs):
                op = choose(f"{cell}_node{node}_op{k}", space[f"{cell}_node{node}_op{k}"])
                edges.append((op, source))
        cells[cell] = tuple(edges)
    concat = tuple(range(2, 2 + STEPS))
    return Genotype(
        normal=cells["normal"],
        normal_concat=concat,
        reduce=cells["reduce"],
        reduce_concat=concat,
        search_space=search_space,
    )


def random_genotype(
    seed: int | np.random.Generator | None = None,
    search_space: str = "bnas_kim",
    *,
    allow_none: bool = False,
) -> Genotype:
    """A uniformly random genotype of ``search_space``; the same ``seed`` gives the same cell."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return sample_genotype(
        lambda name, options: options[int(rng.integers(len(options)))],
        search_space,
        allow_none=allow_none,
    )
