r"""DARTS' second-order architecture gradient (finite-difference approximation).

Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, Eq. 7-8.
With a virtual weight step $w' = w - \xi\,(\nabla_w \mathcal{L}_{train}(w, \alpha) + wd\cdot w)$
(no decay on the quantizers' parameters, as in the real step):

$$
\nabla_\alpha \mathcal{L}_{val}(w', \alpha)
- \xi\, \frac{\nabla_\alpha \mathcal{L}_{train}(w^+, \alpha)
- \nabla_\alpha \mathcal{L}_{train}(w^-, \alpha)}{2\epsilon},
$$

$$
w^\pm = w \pm \epsilon\, \nabla_{w'} \mathcal{L}_{val}(w', \alpha), \qquad
\epsilon = \frac{0.01}{\lVert \nabla_{w'} \mathcal{L}_{val}(w', \alpha) \rVert}.
$$

$\xi$ is the weight optimizer's current learning rate (as in DARTS). The
virtual step leaves out momentum; every weight and BN statistic touched by the
extra passes is restored afterwards, so only alpha changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:  # (supernet.py imports this module)
    from bnas_tf.search.supernet import Supernet

__all__ = ["unrolled_arch_gradients", "current_learning_rate"]


def current_learning_rate(optimizer: tf.keras.optimizers.Optimizer) -> tf.Tensor:
    """The learning rate an optimizer applies at its current step."""
    lr = optimizer.learning_rate
    if isinstance(lr, tf.keras.optimizers.schedules.LearningRateSchedule):
        lr = lr(optimizer.iterations)
    return tf.cast(lr, tf.float32)


def _loss(net, x, y) -> tf.Tensor:
    return net.loss_fn(y, net(x, training=True))


def unrolled_arch_gradients(
    net: Supernet,
    train_batch: tuple[tf.Tensor, tf.Tensor],
    val_batch: tuple[tf.Tensor, tf.Tensor],
    extra_objective: Callable[[], tf.Tensor] | None = None,
    *,
    weight_decay: float | None = None,
    r: float = 0.01,
) -> tuple[list[tf.Tensor | None], tf.Tensor, tf.Tensor]:
    """Second-order gradients of the validation loss w.r.t. ``net.arch_variables``.

    Args:
        net: a [`Supernet`][bnas_tf.search.supernet.Supernet] with a compiled weight optimizer.
        train_batch: ``(x, y)``, a batch of the weight half.
        val_batch: ``(x, y)``, a batch of the alpha half.
        extra_objective: a term of the architecture objective that does not depend
            on the weights (Kim et al.'s entropy term); its gradient is added as is.
        weight_decay: the L2 decay of the virtual weight step (default: that of the
            supernet's [`Architect`][bnas_tf.search.architect.Architect]).
        r: the finite-difference step of the Hessian-vector product,
            ``eps = r / ||grad_w' L_val||`` (DARTS: 0.01). Measured on a 4-channel test
            supernet (tests/search/test_update_rule.py), 0.01 leaves the product 35 %
            off the exact one (batch-4 batch norm is far from linear at that scale)
            and 1e-4 0.1 %; the search keeps DARTS' value.

    Returns:
        ``(gradients, validation loss at w', validation logits at w')``.
    """
    weights = net.weight_variables
    arch = net.arch_variables
    stats = [v for v in net.non_trainable_variables if v is not net.epoch]
    saved_weights = [tf.identity(v) for v in weights]
    saved_stats = [tf.identity(v) for v in stats]
    xi = current_learning_rate(net.optimizer)
    if weight_decay is None:
        weight_decay = net.architect.weight_decay

    # Virtual step w' = w - xi * (grad L_train + wd * w).
    with tf.GradientTape() as tape:
        train_loss = _loss(net, *train_batch)
    grads = tape.gradient(train_loss, weights)
    decayed = net.decayed_variables()
    for v, g in zip(weights, grads):
        if g is not None:
            v.assign_sub(xi * (g + weight_decay * v if v.ref() in decayed else g))

    # Gradients of L_val at w' w.r.t. alpha and w'.
    with tf.GradientTape() as tape:
        val_logits = net(val_batch[0], training=True)
        val_loss = net.loss_fn(val_batch[1], val_logits)
        objective = val_loss + (extra_objective() if extra_objective is not None else 0.0)
    grads = tape.gradient(objective, arch + weights)
    d_alpha, d_weights = grads[: len(arch)], grads[len(arch) :]
    d_weights = [tf.zeros_like(w) if g is None else g for g, w in zip(d_weights, weights)]
    eps = r / (tf.linalg.global_norm(d_weights) + 1e-12)

    def arch_grad_at(sign: float) -> list[tf.Tensor | None]:
        for v, w0, d in zip(weights, saved_weights, d_weights):
            v.assign(w0 + sign * eps * d)
        with tf.GradientTape() as tape:
            loss = _loss(net, *train_batch)
        return tape.gradient(loss, arch)

    plus = arch_grad_at(1.0)
    minus = arch_grad_at(-1.0)

    for v, w0 in zip(weights + stats, saved_weights + saved_stats):
        v.assign(w0)

    result = []
    for g, gp, gm in zip(d_alpha, plus, minus):
        if g is None:
            result.append(None)
            continue
        hessian_term = (gp - gm) / (2.0 * eps) if gp is not None and gm is not None else 0.0
        result.append(g - xi * hessian_term)
    return result, val_loss, val_logits
