"""Weight transfer between the supernets of two stages of operation space reduction.

Each stage of Chen et al.'s reduction search
([`bnas_tf.search.reduction`][bnas_tf.search.reduction]) builds a smaller supernet, without the ops
just removed; it inherits every weight of the previous one, the widened binary convolutions (one
kernel for an op on several edges, [`bnas_tf.search.mixed_op`][bnas_tf.search.mixed_op]) slice by
slice.

Example (an outline, not run: it needs a run's objects):

```python
copied = transfer_weights(previous_stage_net, next_stage_net)
```
"""

from __future__ import annotations

from bnas_tf.search.mixed_op import MixedOp
from bnas_tf.search.supernet import Supernet

__all__ = ["transfer_weights"]


def _copy_weights(old_layer, new_layer, what: str) -> int:
    old_w, new_w = old_layer.weights, new_layer.weights
    if len(old_w) != len(new_w):
        raise ValueError(
            f"{what}: {len(old_w)} variables in the old supernet, {len(new_w)} in the new one."
        )
    for ov, nv in zip(old_w, new_w):
        if ov.shape != nv.shape:
            raise ValueError(f"{what}: shape {ov.shape} (old) != {nv.shape} (new) for {nv.name}.")
        nv.assign(ov)
    return len(new_w)


def _transfer_mixed(old: MixedOp, new: MixedOp, what: str) -> int:
    if len(old.edge_ops) != len(new.edge_ops) or old.sampled_channels != new.sampled_channels:
        raise ValueError(f"{what}: the two supernets differ in structure.")
    for e, (old_ops, new_ops) in enumerate(zip(old.edge_ops, new.edge_ops)):
        extra = set(new_ops) - set(old_ops)
        if extra:
            raise ValueError(f"{what} edge {e}: {sorted(extra)} are not in the old supernet.")
    copied = 0
    if getattr(new, "shared_binary_input", False):
        copied += _copy_weights(old.input_bn, new.input_bn, f"{what}/input_bn")
    c = new.sampled_channels
    for key, layer in new.op_layers.items():
        if key not in old.op_layers:
            raise ValueError(f"{what}: layer {key!r} missing from the old supernet.")
        old_layer = old.op_layers[key]
        # (old slice, new slice) of each edge this layer computes.
        parts = [
            (old._branch[branch][1], part)
            for branch, (k, part) in new._branch.items()
            if k == key and part is not None
        ]
        if not parts:
            copied += _copy_weights(old_layer, layer, f"{what}/{key}")
            continue
        n_new = len(parts)
        n_old = sum(1 for k, part in old._branch.values() if k == key and part is not None)
        if len(old_layer.weights) != len(layer.weights):
            raise ValueError(f"{what}/{key}: different variables in the two supernets.")
        for ov, nv in zip(old_layer.weights, layer.weights):
            o_shape, n_shape = tuple(ov.shape), tuple(nv.shape)
            widened = (
                len(n_shape) >= 1
                and len(o_shape) == len(n_shape)
                and o_shape[:-1] == n_shape[:-1]
                and n_shape[-1] == c * n_new
                and o_shape[-1] == c * n_old
            )
            if widened:
                old_value, value = ov.numpy(), nv.numpy().copy()
                for old_part, new_part in parts:
                    value[..., new_part * c : (new_part + 1) * c] = old_value[
                        ..., old_part * c : (old_part + 1) * c
                    ]
                nv.assign(value)
            elif o_shape == n_shape:
                nv.assign(ov)
            else:
                raise ValueError(
                    f"{what}/{key}: cannot map {o_shape} onto {n_shape} for {nv.name}."
                )
            copied += 1
    return copied


def transfer_weights(old: Supernet, new: Supernet) -> int:
    """Copy ``old``'s weights into ``new`` (same configuration, a subset of the ops).

    Stem, cell preprocessing, inter-cell skips, classifier, alphas, betas, the
    epoch counter, every BN's statistics, and the layers of every op still present;
    a widened binary convolution (one kernel for the op on several edges, see
    [`bnas_tf.search.mixed_op`][bnas_tf.search.mixed_op]) gets, for each of its edges, the ``C / K``
    output channels that edge had in the old kernel. Both supernets must be built.
    Returns the number of variables written: all of ``new.weights`` but the
    accumulators of its metrics.
    """
    if not (old.built and new.built):
        raise ValueError("Build both supernets (call them once) before transferring weights.")
    if tuple(old.op_names) != tuple(new.op_names) or len(old.cells) != len(new.cells):
        raise ValueError("The two supernets have different op spaces or cell counts.")
    copied = 0
    for ov, nv in zip(old.arch_variables, new.arch_variables):
        nv.assign(ov)
        copied += 1
    if len(old.arch_variables) != len(new.arch_variables):
        raise ValueError("One supernet has edge normalization, the other has not.")
    new.epoch.assign(old.epoch)
    copied += 1
    copied += _copy_weights(old.stem, new.stem, "stem")
    copied += _copy_weights(old.classifier, new.classifier, "classifier")
    for index, (oc, nc) in enumerate(zip(old.cells, new.cells)):
        what = f"cell_{index}"
        if oc.reduction != nc.reduction or len(oc.mixed_ops) != len(nc.mixed_ops):
            raise ValueError(f"{what}: the two supernets differ in structure.")
        copied += _copy_weights(oc.preprocess0, nc.preprocess0, f"{what}/preprocess0")
        copied += _copy_weights(oc.preprocess1, nc.preprocess1, f"{what}/preprocess1")
        if hasattr(nc, "skip"):
            copied += _copy_weights(oc.skip, nc.skip, f"{what}/skip")
        for j, (om, nm) in enumerate(zip(oc.mixed_ops, nc.mixed_ops)):
            copied += _transfer_mixed(om, nm, f"{what}/from_node_{j}")
    return copied
