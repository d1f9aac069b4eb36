r"""Kim et al.'s decaying maximum-entropy (diversity) regularizer on the architecture.

The architecture loss of Kim, Singh, Choi (ECCV 2020, Eq. 3) is

$$
\mathcal{L} = \mathcal{L}_S(\text{val}) - \lambda\, \bar H(p)\, e^{-t/\tau},
$$

with $p = \operatorname{softmax}(\alpha_e)$ on every edge $e$ of both the normal and the
reduction cell, $H(p) = -\sum_k p_k \log p_k$ and $\bar H$ its mean over the
edges, $t$ the epoch. Early in the search it rewards exploring many op types
(binary convolutions are slow to train and would otherwise lose to parameter-free
ops); the reward fades with $\tau$. Defaults: $\lambda = 1.0$, $\tau = 7.7$
(gistvision/bnas). Unlike the reference code, the reduction-cell edges are indexed
correctly.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

__all__ = ["masked_softmax", "edge_entropy", "mean_edge_entropy", "entropy_coefficient"]


def masked_softmax(logits: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
    """Row-wise softmax that gives exactly 0 to columns where ``mask`` is 0."""
    if mask is None:
        return tf.nn.softmax(logits, axis=-1)
    mask = tf.cast(mask, logits.dtype)
    logits = tf.where(mask > 0, logits, tf.fill(tf.shape(logits), tf.constant(-1e9, logits.dtype)))
    return tf.nn.softmax(logits, axis=-1) * mask


def edge_entropy(probs: tf.Tensor) -> tf.Tensor:
    """``-sum_k p_k log p_k`` per row, with ``0 log 0 = 0``."""
    safe = tf.where(probs > 0, probs, tf.ones_like(probs))
    return -tf.reduce_sum(probs * tf.math.log(safe), axis=-1)


def mean_edge_entropy(
    alphas: Sequence[tf.Tensor], masks: Sequence[tf.Tensor | None] | None = None
) -> tf.Tensor:
    """Mean entropy of ``softmax(alpha)`` over all edges of all given cells."""
    masks = masks if masks is not None else [None] * len(alphas)
    entropies = [edge_entropy(masked_softmax(a, m)) for a, m in zip(alphas, masks)]
    return tf.reduce_mean(tf.concat(entropies, axis=0))


def entropy_coefficient(entropy_lambda: float, entropy_tau: float, epoch) -> tf.Tensor:
    """``lambda * exp(-t / tau)``, the weight of the entropy reward at epoch ``t``."""
    epoch = tf.cast(epoch, tf.float32)
    return entropy_lambda * tf.exp(-epoch / entropy_tau)
