"""Child-parent search: CP-NAS (Zhuo et al., IJCAI 2020; the survey chapter's section on CP-NAS).

A binary *child* supernet and a full-precision *parent* supernet of the same op space learn side by
side. After each stage's training, architectures are sampled (one op per edge, every active op of
an edge used in turn, drawn without replacement as in the operation space reduction), each is
evaluated with both supernets' shared weights, and every op it used is credited with the indicator

```python
z = beta_P * (A_P - A_C) + A_C
```

(``A_C``, ``A_P``: the child's and the parent's validation accuracy). Per edge the likelihood of
op ``k`` is ``softmax_k(mean z_k / temperature)``, and the op with the lowest likelihood leaves
the edge; stages repeat until one op per edge is left. ``beta_P = 0`` scores by the child alone;
a larger ``beta_P`` favours the ops whose binary version lags their full-precision one least
(the chapter's ablation: best near 2).

The child's weights also learn to be binarized well: its loss adds the kernel reconstruction term
of the chapter's ``L_H``,

```python
L_H = recon_weight * sum_l mean((W_l - stop_gradient(Q(W_l)))^2)
```

the mean squared distance between each full-precision kernel and its scaled binary version
``Q(W)`` (the layer's own kernel quantizer, e.g. ``sign(W) * mean|W|``), which pulls each latent
kernel toward the binary value it is used as.

Where this reading fills gaps: the chapter also gives a centre-loss part of ``L_H`` (intra-class
compactness of the features) but not where the features are taken or how the centres move; it is
left out. Stage lengths, sampling rounds, evaluation batches, batch-norm mode and tie-breaks are
the operation space reduction's ([`bnas_tf.search.reduction`][bnas_tf.search.reduction]); the
likelihood replaces the score each stage (no ``s / 2`` history: the chapter drops the worst op of
the current likelihood).

    >>> state = ChildParentReduction(["a", "b"], 2, beta_p=2.0)
    >>> float(state.indicator(0.5, 0.75))  # 2 * (0.75 - 0.5) + 0.5
    1.0
"""

from __future__ import annotations

from bnas_tf.search.architect import Architect
from bnas_tf.search.reduction import OperationSpaceReduction, ReductionConfig, _alpha_table
from bnas_tf.search.supernet import CELL_TYPES, Supernet
from bnas_tf.settings import non_negative, setting, validate

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import larq as lq
import numpy as np
import tensorflow as tf

__all__ = [
    "CPNASConfig",
    "ChildParentReduction",
    "ChildArchitect",
    "kernel_reconstruction_loss",
]


@dataclasses.dataclass
class CPNASConfig:
    """Settings of the child-parent search (its stages are ``SearchConfig.reduction``'s)."""

    beta_p: float = setting(
        2.0,
        "beta_P of the indicator z = beta_P (A_P - A_C) + A_C (0: the child's accuracy alone; "
        "the chapter's ablation: best near 2).",
        check=non_negative,
        flag="cp_beta",
    )
    recon_weight: float = setting(
        1e-3,
        "Weight of the child's kernel reconstruction loss: mean (W - Q(W))^2 over its binary "
        "kernels (0 disables it).",
        check=non_negative,
        flag="cp_recon_weight",
    )

    def __post_init__(self):
        validate(self)


def kernel_reconstruction_loss(model: tf.keras.Model) -> tf.Tensor:
    """``sum_l mean((W_l - stop_gradient(Q(W_l)))^2)`` over the layers of ``model`` that
    quantize their kernel (``Q``: the layer's kernel quantizer); 0 when none does.

        >>> layer = lq.layers.QuantConv2D(
        ...     2, 1, kernel_quantizer="ste_sign", kernel_constraint="weight_clip"
        ... )
        >>> model = tf.keras.Sequential([layer]); model.build((1, 1, 1, 1))
        >>> _ = layer.kernel.assign([[[[0.5, -0.25]]]])
        >>> float(kernel_reconstruction_loss(model))  # ((0.5 - 1)^2 + (-0.25 + 1)^2) / 2
        0.40625
    """
    terms = []
    for layer in model.submodules:
        quantizer = getattr(layer, "kernel_quantizer", None)
        if quantizer is None or not isinstance(layer, lq.layers.QuantConv2D | lq.layers.QuantDense):
            continue
        kernel = tf.convert_to_tensor(getattr(layer.kernel, "latent_variable", layer.kernel))
        target = tf.stop_gradient(quantizer(kernel))
        terms.append(tf.reduce_mean(tf.square(kernel - tf.cast(target, kernel.dtype))))
    return tf.add_n(terms) if terms else tf.constant(0.0)


@dataclasses.dataclass
class ChildArchitect(Architect):
    """The update rule of the CP-NAS child: ``Architect``'s, with the kernel reconstruction loss
    added to the weights' objective."""

    recon_weight: float = setting(
        1e-3, "Weight of the kernel reconstruction loss.", check=non_negative
    )

    def extra_weight_loss(self, net: Supernet) -> tf.Tensor:
        if not self.recon_weight:
            return tf.constant(0.0)
        return self.recon_weight * kernel_reconstruction_loss(net)


class ChildParentReduction(OperationSpaceReduction):
    """The state of a CP-NAS search: active ops, this stage's likelihoods, removal log.

    Differs from [`OperationSpaceReduction`][bnas_tf.search.reduction.OperationSpaceReduction] in
    three points: every active op of an edge is sampled (not only ``O_smaller``); an op's credit is
    the indicator ``z`` of the child's and the parent's accuracies (``indicator``); and the score
    of an op is this stage's likelihood (no running history).
    """

    def __init__(
        self,
        op_names: Sequence[str],
        edges: int,
        config: ReductionConfig | None = None,
        seed: int = 0,
        *,
        beta_p: float = 2.0,
        active_ops: Mapping[str, Sequence[Sequence[str]]] | None = None,
        search_space: str | None = None,
    ):
        super().__init__(
            op_names, edges, config, seed, active_ops=active_ops, search_space=search_space
        )
        if beta_p < 0:
            raise ValueError(f"beta_p must be >= 0, got {beta_p}.")
        self.beta_p = float(beta_p)

    def indicator(self, child_accuracy, parent_accuracy) -> np.ndarray:
        """``z = beta_P * (A_P - A_C) + A_C``, elementwise."""
        a_c = np.asarray(child_accuracy, dtype=np.float64)
        a_p = np.asarray(parent_accuracy, dtype=np.float64)
        return self.beta_p * (a_p - a_c) + a_c

    def o_smaller(self, source) -> dict[str, list[list[str]]]:
        """Every active op of every edge (all are sampled); ``source``'s alphas are kept for the
        tie-break of ``remove_worst``."""
        self._alphas = {cell: _alpha_table(source, cell) for cell in CELL_TYPES}
        return self.active_ops

    def update_scores(
        self,
        o_smaller: Mapping[str, Sequence[Sequence[str]]],
        samples: Sequence[Mapping[str, Sequence[str]]],
        accuracies: Sequence[float],
    ) -> dict[str, list[dict[str, float]]]:
        """Score of each op := its likelihood ``softmax(mean z / temperature)`` on its edge
        (``accuracies``: the samples' indicators ``z``)."""
        likelihoods = self.likelihoods(o_smaller, samples, accuracies)
        for cell in CELL_TYPES:
            for e, lik in enumerate(likelihoods[cell]):
                for op, value in lik.items():
                    self.scores[cell][e][op] = value
        return likelihoods

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "beta_p": self.beta_p}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.beta_p = float(state.get("beta_p", self.beta_p))
