r"""Searching under a budget: binary networks that fit a target cost by construction.

A differentiable search (``--method=darts``) given ``--ops_budget`` (and/or ``--memory_budget``)
adds to the architecture's loss, for each bounded metric,

$$
\mu \max\left(0, \frac{\mathbb{E}[\text{cost}]}{B} - 1\right)
$$

(``--cost_weight`` = mu), ``E[cost]`` the supernet's expected cost of the *final* network
([`CostModel`][bnas_tf.search.cost.CostModel]; ``--final_layers`` and ``--final_init_channels``
give its size). A hinge rather than a log-barrier: inside the budget it adds nothing, so the
search optimizes accuracy alone wherever the budget holds (a barrier pushes away from the budget
even when it is met, and is undefined once the expectation is over it, which a uniform alpha
at the start often is); outside, its gradient is that of the relative overshoot, pointing toward
cheaper ops, the latency-aware losses of FBNet (Wu et al., CVPR 2019) and ProxylessNAS (Cai et
al., ICLR 2019) in hinge form.

A hinge makes the budget a ceiling: the search may land anywhere under it. Where the budget is a
target, ``--budget_penalty=two_sided`` uses ``mu |E[cost] / B - 1|`` instead, the bi-sided
constraint of TF-NAS (Hu et al., ECCV 2020), which pulls a cheap expectation up as it pushes an
expensive one down; or ``--target_fill`` with the hinge makes only the derivation aim at it
(an expectation under the budget, as a nearly uniform alpha's is, does not pull alpha toward
dearer ops then).

The expectation relaxes what the genotype decides (top-2 edges, argmax op): alphas that are
still nearly uniform after a short search can meet the budget in expectation while their argmax
genotype is far over it. So the derivation itself keeps the budget (``derive_within``, the
default ``--derive_within_budget``): each epoch's genotype re-chooses ops on its edges, giving up
as little probability as it can, until its exact cost at the final size holds. The genotype is
then *measured* at the final size (``check``) and the program says by how much it lands under
or over. With ``--fit_width`` it also finds a final width for it (TF-NAS's width freedom): under
a ceiling, the widest the genotype fits in (``fit_width``); under a target, the width nearest the
budget's own at which the genotype, derived again within the budget at that width, lands within
``TARGET_WINDOW`` under it (``land_target``), since at one width the ops' costs are too coarse
to land every budget.

    >>> penalty = hinge(tf.constant(110.0), 100.0)
    >>> round(float(penalty), 6)
    0.1
"""

from __future__ import annotations

from bnas_tf.genotype import Genotype
from bnas_tf.search.architect import Architect
from bnas_tf.search.cell import edge_inputs
from bnas_tf.search.cost import CELL_TYPES, CostModel
from bnas_tf.settings import non_negative, setting

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from bnas_tf.search.supernet import Supernet

__all__ = [
    "hinge",
    "two_sided",
    "PENALTIES",
    "TARGET_FILL",
    "TARGET_WINDOW",
    "BudgetedArchitect",
    "derive_within",
    "check",
    "fit_width",
    "land_target",
    "final_report",
    "save_fit",
    "describe",
    "Budget",
]


def hinge(expected: tf.Tensor, budget: float) -> tf.Tensor:
    """``max(0, expected / budget - 1)``: the relative overshoot."""
    return tf.nn.relu(expected / budget - 1.0)


def two_sided(expected: tf.Tensor, budget: float) -> tf.Tensor:
    """``|expected / budget - 1|``: the relative miss either way (TF-NAS's bi-sided loss).

    >>> round(float(two_sided(tf.constant(90.0), 100.0)), 6)
    0.1
    """
    return tf.abs(expected / budget - 1.0)


#: ``--budget_penalty``: the budget's penalty on the expected cost, by name.
PENALTIES = {"hinge": hinge, "two_sided": two_sided}

#: A budget that is a target (``two_sided``, unless ``--target_fill`` says otherwise):
#: ``derive_within`` fills the genotype up to this share of it, where its ops allow.
TARGET_FILL = 0.95

#: A budget that is a target is met when every bounded cost lands in ``[1 - TARGET_WINDOW, 1]``
#: of its bound (``Budget.lands``; ``--fit_width`` looks for a width where it does).
TARGET_WINDOW = 0.10


@dataclasses.dataclass(frozen=True)
class Budget:
    """Bounds on the final network's cost: ``{"ops": N, "memory_kib": M}`` (either may be
    absent)."""

    bounds: Mapping[str, float]
    cost_model: CostModel
    form: str = "hinge"  #: the penalty's name in ``PENALTIES``
    #: the share ``derive_within`` fills up to: ``None``, ``TARGET_FILL`` with the two-sided
    #: penalty and no fill with the hinge; 0, no fill
    target_fill: float | None = None

    def __post_init__(self):
        if self.form not in PENALTIES:
            raise ValueError(
                f"budget_penalty must be one of {', '.join(PENALTIES)}, got {self.form!r}."
            )
        if self.target_fill is not None and not 0.0 <= self.target_fill <= 1.0:
            raise ValueError(f"target_fill must be in [0, 1], got {self.target_fill!r}.")

    @property
    def fill(self) -> float | None:
        """How far up a genotype derived within the budget is filled (``None``: not at all):
        ``target_fill`` of it where given (with either penalty), else ``TARGET_FILL`` under the
        two-sided penalty (the budget a target) and not at all under the hinge (a ceiling); a
        ``target_fill`` of 0, not at all."""
        if self.target_fill is None:
            return TARGET_FILL if self.form == "two_sided" else None
        return self.target_fill if self.target_fill > 0 else None

    def at_width(self, init_channels: int) -> Budget:
        """The same bounds on the final network at another width (its cost model's
        ``at_width``)."""
        return dataclasses.replace(self, cost_model=self.cost_model.at_width(init_channels))

    def lands(self, report: Mapping[str, Mapping[str, Any]]) -> bool:
        """Whether ``check``'s ``report`` is within ``TARGET_WINDOW`` under every bound."""
        return all(1.0 - TARGET_WINDOW <= r["ratio"] <= 1.0 for r in report.values())

    def penalty(self, net: Supernet) -> tf.Tensor:
        """Sum over the bounded metrics of the penalty (``form``) of the supernet's expected
        cost."""
        terms = [
            PENALTIES[self.form](self.cost_model.supernet_expected(net, metric), bound)
            for metric, bound in self.bounds.items()
        ]
        return tf.add_n(terms) if terms else tf.constant(0.0)


@dataclasses.dataclass
class BudgetedArchitect(Architect):
    """``Architect`` whose architecture loss adds ``cost_weight * budget.penalty(net)``."""

    cost_weight: float = setting(
        2.0,
        "mu of the budget penalty mu * max(0, E[cost] / budget - 1) in the architecture's loss.",
        check=non_negative,
    )
    budget: Budget | None = dataclasses.field(default=None, repr=False, compare=False)

    def extra_arch_loss(self, net: Supernet) -> tf.Tensor:
        if self.budget is None or not self.cost_weight:
            return tf.constant(0.0)
        return self.cost_weight * self.budget.penalty(net)


def derive_within(
    genotype: Genotype,
    probabilities: Mapping[str, np.ndarray],
    budget: Budget,
    allowed: Mapping[str, np.ndarray] | None = None,
) -> Genotype:
    r"""``genotype`` with the ops of its edges re-chosen so that its exact cost at the final size
    holds every bound, giving up as little of the architecture's probability as it can.

    Each chosen edge keeps its input; only its op changes, to one ``allowed`` on that edge
    (``[edges, ops]`` per cell type, default all). A multiple-choice knapsack, solved greedily
    as such: while a bound is exceeded, make the change that gives up the least log-probability
    per unit of (bound-relative) cost saved,

    $$
    \arg\min_{e,\; o \to o'} \frac{\log p_{e,o} - \log p_{e,o'}}
        {\sum_m \left(T_m[e,o] - T_m[e,o']\right) / B_m},
    $$

    then, while one fits, the change back toward a likelier op that regains the most
    log-probability per unit of cost added. A budget that is a target (``budget.fill``: the
    two-sided penalty, or a ``target_fill``) is then filled: while every bounded cost is under
    ``fill`` times its bound, the change to a dearer op that gives up the least log-probability
    per unit of cost added, as long as it fits. A ceiling leaves a genotype already within
    every bound as it is. One the cheapest allowed ops cannot bring within comes back as cheap
    as they make it (``check`` says by how much it is over).

    ``probabilities``: per cell type, ``[edges, ops]`` op probabilities
    ([`Supernet.op_probabilities`][bnas_tf.search.supernet.Supernet.op_probabilities]).
    """
    model = budget.cost_model
    names, inputs = list(model.op_names), edge_inputs(model.steps)
    chosen = {cell: list(getattr(genotype, cell)) for cell in CELL_TYPES}
    slots = [  # (cell, position in the cell's edge list, edge index of the cost tables)
        (cell, i, inputs.index((i // 2, j)))
        for cell in CELL_TYPES
        for i, (_, j) in enumerate(chosen[cell])
    ]
    logp = {
        cell: np.log(np.maximum(np.asarray(probabilities[cell], np.float64), 1e-30))
        for cell in CELL_TYPES
    }
    ok = {
        cell: np.ones((model.edges, len(names)), bool)
        if allowed is None
        else np.asarray(allowed[cell]) > 0
        for cell in CELL_TYPES
    }

    def relative(cell: str, e: int, k: int) -> float:  # the op's cost, each metric / its bound
        return sum(model.tables[cell][m][e, k] / bound for m, bound in budget.bounds.items())

    def as_genotype(edges) -> Genotype:
        return dataclasses.replace(genotype, **{c: tuple(edges[c]) for c in CELL_TYPES})

    def cost(edges) -> dict[str, float]:
        return model.exact(as_genotype(edges))

    def fits(edges) -> bool:
        return all(cost(edges)[m] <= bound for m, bound in budget.bounds.items())

    def short(edges) -> bool:  # every bounded cost under `fill` of its bound
        return all(cost(edges)[m] < budget.fill * bound for m, bound in budget.bounds.items())

    def changes():
        for cell, i, e in slots:
            op, j = chosen[cell][i]
            k = names.index(op)
            for k2 in np.flatnonzero(ok[cell][e]):
                if k2 != k:
                    gain = logp[cell][e, k2] - logp[cell][e, k]
                    added = relative(cell, e, k2) - relative(cell, e, k)
                    yield gain, added, cell, i, (names[k2], j)

    while not fits(chosen):
        # log-probability given up per (relative) cost saved
        cheaper = [((-g) / (-a), cell, i, edge) for g, a, cell, i, edge in changes() if a < 0]
        if not cheaper:
            break
        _, cell, i, edge = min(cheaper, key=lambda c: c[0])
        chosen[cell][i] = edge

    def fitting(keep: Callable[[float, float], bool]):  # the kept changes that still fit
        for g, a, cell, i, edge in list(changes()):
            if keep(g, a):
                old, chosen[cell][i] = chosen[cell][i], edge
                holds = fits(chosen)
                chosen[cell][i] = old
                if holds:
                    yield g, a, cell, i, edge

    if fits(chosen):
        while True:  # back toward likelier ops: the most log-probability per cost added
            better = [
                (g / a if a > 0 else np.inf, g, cell, i, edge)
                for g, a, cell, i, edge in fitting(lambda g, a: g > 0)
            ]
            if not better:
                break
            _, _, cell, i, edge = max(better, key=lambda c: (c[0], c[1]))
            chosen[cell][i] = edge
        while budget.fill is not None and short(chosen):  # a target: the least given up per cost
            dearer = [
                ((-g) / a, cell, i, edge) for g, a, cell, i, edge in fitting(lambda g, a: a > 0)
            ]
            if not dearer:
                break
            _, cell, i, edge = min(dearer, key=lambda c: c[0])
            chosen[cell][i] = edge
    return as_genotype(chosen)


def _against(exact: Mapping[str, float], bounds: Mapping[str, float]) -> dict[str, Any]:
    """Plain Python numbers (JSON as they are), whatever type the costs came in."""
    return {
        metric: {
            "cost": float(exact[metric]),
            "budget": float(bound),
            "ratio": float(exact[metric]) / float(bound),
            "within": bool(exact[metric] <= bound),
        }
        for metric, bound in bounds.items()
    }


def check(genotype: Genotype, budget: Budget) -> dict[str, Any]:
    """The derived genotype's exact cost at the final size against each bound:
    ``{metric: {"cost", "budget", "ratio", "within"}}``."""
    return _against(budget.cost_model.exact(genotype), budget.bounds)


def fit_width(genotype: Genotype, budget: Budget, widest: int = 1024) -> dict[str, Any] | None:
    """The widest final network (``init_channels`` at most ``widest``) whose exact cost is
    within every bound, with ``check``'s report at that width:
    ``{"init_channels": C, "report": {metric: {...}}}``; ``None`` when not even 2 channels fit.

    Costs grow with the width, so it doubles from the budget's width while the genotype fits
    (halves while it does not), then bisects: about ``2 log2`` network builds.
    """
    model = budget.cost_model
    reports: dict[int, dict] = {}

    def fits(channels: int) -> bool:
        reports[channels] = _against(model.exact_at(genotype, channels), budget.bounds)
        return all(r["within"] for r in reports[channels].values())

    low = model.init_channels  # a width that fits ...
    if fits(low):
        while True:
            wider = min(2 * low, widest)
            if wider == low:
                return {"init_channels": low, "report": reports[low]}
            if not fits(wider):
                high = wider  # ... and one that does not
                break
            low = wider
    else:
        high = low
        while True:
            if high <= 2:
                return None
            low = max(high // 2, 2)
            if fits(low):
                break
            high = low
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return {"init_channels": low, "report": reports[low]}


def land_target(
    argmax: Genotype,
    probabilities: Mapping[str, np.ndarray],
    budget: Budget,
    allowed: Mapping[str, np.ndarray] | None = None,
    *,
    span: float = 2.0,
) -> dict[str, Any] | None:
    """A final width for a budget that is a target, and the genotype derived within it there:
    ``{"init_channels": C, "report": {metric: {...}}, "genotype": Genotype}``.

    At each width ``C`` from the budget's own ``W`` outward (``W, W + 1, W - 1, W + 2, ...``
    within ``[W / span, W span]``), the argmax genotype is derived within the budget at ``C``
    (``derive_within``, filled to ``budget.fill``); the first that lands within
    ``TARGET_WINDOW`` under every bound (``Budget.lands``) is kept: the network nearest the
    size asked for, the wider on a tie. Where none lands, the width whose genotype comes
    closest under the budget (the one whose lowest cost-to-bound ratio is highest); ``None``
    when no width's genotype is within it. A width costs a cost model at that width (3-4 s on 2
    cores the first time; cost models of one network share their counts).
    """
    base = budget.cost_model.init_channels
    widths = sorted(
        range(max(2, int(base / span)), int(base * span) + 1), key=lambda c: (abs(c - base), -c)
    )
    closest, closest_ratio = None, -np.inf
    for channels in widths:
        at = budget.at_width(channels)
        genotype = derive_within(argmax, probabilities, at, allowed)
        report = check(genotype, at)
        found = {"init_channels": channels, "report": report, "genotype": genotype}
        if budget.lands(report):
            return found
        ratio = min(r["ratio"] for r in report.values())
        if all(r["within"] for r in report.values()) and ratio > closest_ratio:
            closest, closest_ratio = found, ratio
    return closest


def final_report(
    genotype: Genotype,
    budget: Budget,
    *,
    fit: bool,
    log: Callable[[str], Any],
    derivation: tuple[Genotype, Mapping[str, np.ndarray], Mapping[str, np.ndarray] | None]
    | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What a budgeted search says at its end: ``check`` at the final size (logged), and with
    ``fit`` a final width (logged; ``None`` without ``fit``): ``{"init_channels", "report",
    "genotype"}`` (a ``Genotype.to_dict()``), the genotype to train at that width.

    Under a target (``budget.fill``) with the ``derivation`` it was derived from (the argmax
    genotype, the op probabilities and allowed ops: ``Supernet.derivation``), ``land_target``:
    the genotype is derived again at the width where it lands. Otherwise ``fit_width``: the
    widest width ``genotype`` itself fits in."""
    report = check(genotype, budget)
    log(f"The genotype at the final size: {describe(report)}")
    if not fit:
        return report, None
    if budget.fill is not None and derivation is not None:
        argmax, probabilities, allowed = derivation
        fitted = land_target(argmax, probabilities, budget, allowed)
        what = "The final network nearest the budget's width that lands within it"
    else:
        fitted = fit_width(genotype, budget)
        what = "The widest final network within the budget"
        if fitted is not None:
            fitted["genotype"] = genotype
    if fitted is None:
        log("No final width from 2 channels fits the budget.")
        return report, {"init_channels": None, "report": None, "genotype": None}
    log(
        f"{what}: {fitted['init_channels']} channels, {describe(fitted['report'])}; its "
        f"genotype: {fitted['genotype']}"
    )
    return report, {**fitted, "genotype": fitted["genotype"].to_dict()}


def save_fit(fitted: Mapping[str, Any] | None, output_dir) -> None:
    """Write ``final_report``'s fitted genotype, where one was found, to
    ``output_dir/genotype_fit.json``: the network to train at ``fitted["init_channels"]``."""
    if fitted and fitted.get("genotype"):
        Genotype.from_dict(fitted["genotype"]).save(Path(output_dir) / "genotype_fit.json")


def describe(report: Mapping[str, Mapping[str, Any]]) -> str:
    """``"ops: 412,000 of 450,000 (8.4 % under)"``, one clause per metric."""
    parts = []
    for metric, r in report.items():
        off = 100 * abs(r["ratio"] - 1)
        side = "under" if r["ratio"] <= 1 else "over"
        parts.append(f"{metric}: {r['cost']:,.1f} of {r['budget']:,.1f} ({off:.1f} % {side})")
    return "; ".join(parts)
