"""The update rule of the differentiable searches, apart from the supernet (DARTS' ``Architect``).

A [`Supernet`][bnas_tf.search.supernet.Supernet] holds the topology, the architecture parameters
and the genotype; the ``Architect`` it is compiled with decides how one training step changes them.
Each step takes a pair of batches, one from each half of the training set:

```python
alpha <- alpha - Adam(grad_alpha [L_val(w, alpha) - lambda H(alpha) e^{-t/tau}] + wd_a alpha)
w     <- w     - SGD (grad_w     L_train(w, alpha) + wd w)
```

the first-order DARTS step of both BNAS papers with Kim et al.'s decaying entropy term
(``unrolled=True``: DARTS' second-order alpha gradient,
[`bnas_tf.search.unrolled`][bnas_tf.search.unrolled]).
``wd w`` leaves out the quantizers' own parameters (PCNN's binary level).

    >>> from bnas_tf.search.supernet import Supernet, default_optimizers
    >>> net = Supernet(2, layers=3, init_channels=4, seed=0)
    >>> net.compile(**default_optimizers(total_steps=2), architect=Architect(entropy_lambda=0.5))
    >>> net.architect.entropy_lambda
    0.5

Under a ``tf.distribute`` strategy each replica's losses are scaled by the global batch size and the
gradients of both steps are summed across replicas before clipping and weight decay, so every
replica applies the gradient of the whole global batch and holds the same alpha.
"""

from __future__ import annotations

from bnas_tf.search.regularizers import entropy_coefficient
from bnas_tf.search.unrolled import unrolled_arch_gradients
from bnas_tf.settings import SettingError, non_negative, optional, positive, setting, validate

import dataclasses
from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:  # (supernet.py imports this module)
    from bnas_tf.search.supernet import Supernet

__all__ = ["Architect"]


@dataclasses.dataclass
class Architect:
    """The alternating alpha / weight update of a differentiable search (Liu et al. 2019; Kim et
    al. 2020: the entropy term). Defaults: Kim et al.'s reference (gistvision/bnas) and DARTS."""

    entropy_lambda: float = setting(
        1.0, "lambda of the entropy regularizer (0 disables it).", check=non_negative
    )
    entropy_tau: float = setting(
        7.7, "tau of the entropy regularizer's decay exp(-t / tau), in epochs.", check=positive
    )
    weight_decay: float = setting(3e-4, "L2 weight decay of the weights.", check=non_negative)
    arch_weight_decay: float = setting(1e-3, "L2 weight decay of alpha.", check=non_negative)
    grad_clip: float | None = setting(
        5.0, "Global-norm clip of the weight gradients.", check=optional(positive)
    )
    arch_warmup_epochs: int = setting(
        0, "Epochs of weight-only updates before alpha is trained.", check=non_negative
    )
    unrolled: bool = setting(
        False, "DARTS' second-order alpha gradient instead of the first-order one."
    )

    def __post_init__(self):
        validate(self)

    # ------------------------------------------------------------------ the step
    def entropy_objective(self, net: Supernet) -> tf.Tensor:
        """``-lambda * exp(-t / tau) * H_bar``: the entropy term of the architecture loss."""
        if not self.entropy_lambda:
            return tf.constant(0.0)
        coef = entropy_coefficient(self.entropy_lambda, self.entropy_tau, net.epoch)
        return -coef * net.mean_entropy()

    def train_step(self, net: Supernet, data) -> None:
        """One search step on ``((x_w, y_w), (x_a, y_a))``: alpha on the second half (after
        the warm-up), then the weights on the first."""
        (x_w, y_w), (x_a, y_a) = data
        if self.arch_warmup_epochs > 0 and net._distribution_strategy is not None:
            # A cross-replica sum may not sit inside tf.cond: fit() retraces at the switch.
            if net._arch_active:
                self.arch_step(net, x_a, y_a, (x_w, y_w))
        elif self.arch_warmup_epochs > 0:
            tf.cond(
                net.epoch >= self.arch_warmup_epochs,
                lambda: self.arch_step(net, x_a, y_a, (x_w, y_w)),
                lambda: tf.constant(False),
            )
        else:
            self.arch_step(net, x_a, y_a, (x_w, y_w))
        self.weight_step(net, x_w, y_w)

    def arch_step(self, net: Supernet, x, y, train_batch=None) -> tf.Tensor:
        """The alpha update on ``(x, y)``; ``train_batch`` feeds the unrolled weight step."""
        if self.unrolled:
            if tf.distribute.has_strategy():
                raise SettingError(
                    "unrolled",
                    "(second-order alpha gradient) runs on one device only; use the first-order "
                    "step under a tf.distribute strategy.",
                )
            grads, loss, logits = unrolled_arch_gradients(
                net,
                train_batch,
                (x, y),
                lambda: self.entropy_objective(net) + self.extra_arch_loss(net),
                weight_decay=self.weight_decay,
            )
        else:
            with tf.GradientTape() as tape:
                logits = net(x, training=True)
                scaled, loss = net.replica_loss(y, logits)
                # Identical on every replica: its share, so that the sum over replicas is one term.
                objective = (
                    scaled
                    + (self.entropy_objective(net) + self.extra_arch_loss(net)) / _num_replicas()
                )
            grads = _sum_over_replicas(tape.gradient(objective, net.arch_variables))
        pairs = _with_gradients(grads, net.arch_variables)
        net.arch_optimizer.apply_gradients(
            [(g + self.arch_weight_decay * v, v) for g, v in pairs], skip_gradients_aggregation=True
        )
        net.track("arch", loss, y, logits)
        return tf.constant(True)

    def weight_step(self, net: Supernet, x, y) -> None:
        """The weight update on ``(x, y)``: clipped, then L2-decayed, SGD."""
        variables = net.weight_variables
        with tf.GradientTape() as tape:
            logits = net(x, training=True)
            objective, loss = net.replica_loss(y, logits)
            objective += self.extra_weight_loss(net)
            if net.losses:
                objective += tf.nn.scale_regularization_loss(tf.add_n(net.losses))
        pairs = _with_gradients(_sum_over_replicas(tape.gradient(objective, variables)), variables)
        grads = [g for g, _ in pairs]
        if self.grad_clip:
            grads, _ = tf.clip_by_global_norm(grads, self.grad_clip)
        decayed = net.decayed_variables()
        grads = [
            g + self.weight_decay * v if v.ref() in decayed else g
            for g, (_, v) in zip(grads, pairs)
        ]
        net.optimizer.apply_gradients(
            zip(grads, [v for _, v in pairs]), skip_gradients_aggregation=True
        )
        net.track("weight", loss, y, logits)

    def extra_arch_loss(self, net: Supernet) -> tf.Tensor:
        """A term added to the architecture's loss by a method's architect (none here; a budgeted
        search adds its cost penalty)."""
        return tf.constant(0.0)

    def extra_weight_loss(self, net: Supernet) -> tf.Tensor:
        """A term added to the weights' loss by a method's architect (none here; CP-NAS adds its
        kernel reconstruction loss)."""
        return tf.constant(0.0)


def _num_replicas() -> int:
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def _sum_over_replicas(grads: list) -> list:
    """Sum gradients over the replicas of the current strategy (identity on one replica).

    Done here rather than in ``apply_gradients`` so that clipping and weight decay act on
    the global-batch gradient, as on one device.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads
    present = [i for i, g in enumerate(grads) if g is not None]
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
    grads = list(grads)
    for i, g in zip(present, summed):
        grads[i] = g
    return grads


def _with_gradients(grads, variables) -> list[tuple[tf.Tensor, tf.Variable]]:
    """Pairs of (gradient, variable), leaving out variables the loss does not reach
    (e.g. the normal-cell alphas of a supernet made of reduction cells only)."""
    return [(g, v) for g, v in zip(grads, variables) if g is not None]
