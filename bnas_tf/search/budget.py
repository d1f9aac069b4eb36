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

The expectation relaxes what the genotype decides (top-2 edges, argmax op), so the derived
genotype is then *measured* at the final size (``check``) and the program says by how much it
lands under or over.

    >>> penalty = hinge(tf.constant(110.0), 100.0)
    >>> round(float(penalty), 6)
    0.1
"""

from __future__ import annotations

from bnas_tf.search.architect import Architect
from bnas_tf.search.cost import CostModel
from bnas_tf.settings import non_negative, setting

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import tensorflow as tf

if TYPE_CHECKING:
    from bnas_tf.genotype import Genotype
    from bnas_tf.search.supernet import Supernet

__all__ = ["hinge", "BudgetedArchitect", "check", "Budget"]


def hinge(expected: tf.Tensor, budget: float) -> tf.Tensor:
    """``max(0, expected / budget - 1)``: the relative overshoot."""
    return tf.nn.relu(expected / budget - 1.0)


@dataclasses.dataclass(frozen=True)
class Budget:
    """Bounds on the final network's cost: ``{"ops": N, "memory_kib": M}`` (either may be
    absent)."""

    bounds: Mapping[str, float]
    cost_model: CostModel

    def penalty(self, net: Supernet) -> tf.Tensor:
        """Sum over the bounded metrics of the hinge of the supernet's expected cost."""
        terms = [
            hinge(self.cost_model.supernet_expected(net, metric), bound)
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


def check(genotype: Genotype, budget: Budget) -> dict[str, Any]:
    """The derived genotype's exact cost at the final size against each bound:
    ``{metric: {"cost", "budget", "ratio", "within"}}``."""
    exact = budget.cost_model.exact(genotype)
    return {
        metric: {
            "cost": exact[metric],
            "budget": bound,
            "ratio": exact[metric] / bound,
            "within": exact[metric] <= bound,
        }
        for metric, bound in budget.bounds.items()
    }


def describe(report: Mapping[str, Mapping[str, Any]]) -> str:
    """``"ops: 412,000 of 450,000 (8.4 % under)"``, one clause per metric."""
    parts = []
    for metric, r in report.items():
        off = 100 * abs(r["ratio"] - 1)
        side = "under" if r["ratio"] <= 1 else "over"
        parts.append(f"{metric}: {r['cost']:,.1f} of {r['budget']:,.1f} ({off:.1f} % {side})")
    return "; ".join(parts)
