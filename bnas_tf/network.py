"""Final networks built from a genotype with Kim et al.'s binary cell template.

``build_network`` returns a flat functional ``tf.keras.Model``: every binary
convolution is a ``larq.layers.QuantConv2D`` at the top level, so
``larq.models.summary`` counts its 1-bit weights and the Larq Compute Engine
converter sees plain larq layers.

Cell template (Kim, Singh, Choi, ECCV 2020; reference code gistvision/bnas):

* inputs ``c_{k-2}, c_{k-1}`` are preprocessed by binary convolutions: 1x1, or
  3x3 with stride 2 for ``c_{k-2}`` when the previous cell reduced;
* node ``i`` = ``op_a(h_a) + op_b(h_b)`` for its two genotype edges;
* output = ``concat(nodes)`` plus the inter-cell skip from ``c_{k-1}`` (cell index
  > 0): the identity in a normal cell, full-precision BN + 2x2 stride-2 conv in a
  reduction cell (their ablation: 61-70 % CIFAR-10 accuracy without it);
* the stem and the classifier stay full precision.

Example:
    >>> from bnas_tf import genotype, network
    >>> model = network.build_network(genotype.BNAS_A, layers=20, init_channels=36,
    ...                               num_classes=10, input_shape=(32, 32, 3))
"""

from __future__ import annotations

from bnas_tf import ops as ops_lib
from bnas_tf.genotype import Genotype
from bnas_tf.layers import binary_conv2d
from bnas_tf.precision import check_dtype_policy, policy_scope
from bnas_tf.quantizers import Binarization, get_binarization

from collections.abc import Sequence

import tensorflow as tf
from larq_zoo.core import utils as zoo_utils

__all__ = [
    "build_network",
    "finish_model",
    "DropPath",
    "set_drop_path_progress",
    "seed_drop_path",
    "STEMS",
    "min_input_size",
]

STEMS = ("cifar", "imagenet")


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class DropPath(tf.keras.layers.Layer):
    """Drop a whole path per example during training (FractalNet, DARTS).

    ``y = x * Bernoulli(1 - p) / (1 - p)`` per example, with ``p = rate * progress``;
    ``progress`` in [0, 1] is ramped linearly over training by
    ``set_drop_path_progress`` (DARTS' linear schedule). It is held outside the
    layer's weights, so models with and without drop-path share weight files.
    After ``seed_drop_path`` the masks are a function of (seed, layer, step), so
    a run resumed from a checkpoint draws the masks an unbroken run draws.
    """

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        object.__setattr__(self, "_progress", tf.Variable(0.0, trainable=False, dtype=tf.float32))
        object.__setattr__(self, "_step", None)  # untracked: not a weight of the layer
        self._seed = 0

    def set_progress(self, progress: float) -> None:
        self._progress.assign(min(max(float(progress), 0.0), 1.0))

    def call(self, inputs, training=None):
        if not training or self.rate <= 0:
            return inputs
        keep = 1.0 - self.rate * self._progress
        shape = tf.stack([tf.shape(inputs)[0], 1, 1, 1])
        if self._step is None:
            noise = tf.random.uniform(shape, dtype=tf.float32)
        else:
            seed = tf.stack([tf.constant(self._seed, tf.int64), tf.cast(self._step, tf.int64)])
            noise = tf.random.stateless_uniform(shape, seed, dtype=tf.float32)
        mask = tf.floor(keep + noise)  # float32 under every dtype policy
        if inputs.dtype == tf.float32:
            return inputs * mask / keep
        return inputs * tf.cast(mask / keep, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


def seed_drop_path(model: tf.keras.Model, seed: int, step: tf.Variable) -> None:
    """Draw every ``DropPath`` mask from ``(seed, layer index, step)`` (stateless).

    ``step`` is a counter a checkpoint restores, e.g. ``model.optimizer.iterations``.
    Call before the first ``fit`` (the masks are fixed when the step is traced).
    """
    for index, layer in enumerate(x for x in model.layers if isinstance(x, DropPath)):
        layer._seed = int(seed) * 1_000_003 + index
        object.__setattr__(layer, "_step", step)


def set_drop_path_progress(model: tf.keras.Model, progress: float) -> None:
    """Set the drop-path schedule of every ``DropPath`` layer of ``model``."""
    for layer in model.layers:
        if isinstance(layer, DropPath):
            layer.set_progress(progress)


def _reductions(stem: str) -> int:
    return 2 + (3 if stem == "imagenet" else 0)


def min_input_size(stem: str) -> int:
    """Smallest height/width the network takes: one pixel per stride-2 stage."""
    return 2 ** _reductions(stem)


def check_dataset_size(dataset: str, input_shape: Sequence[int], stem: str, network: str) -> None:
    """Refuse a dataset whose images are smaller than ``stem``'s stride-2 stages allow.

    ``network`` names the network in the message (``"the supernet"``, ``"the cifar network"``).

    Raises:
        ValueError: naming ``--dataset`` and the smallest size.
    """
    smallest = min_input_size(stem)
    if min(input_shape[:2]) < smallest:
        raise ValueError(
            f"--dataset={dataset}: its images are {input_shape[0]}x{input_shape[1]}, too small "
            f"for {network}'s stride-2 stages (at least {smallest}x{smallest})."
        )


def _binary_conv(x, channels, kernel, stride, binarization, name):
    x = tf.keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return binary_conv2d(
        binarization,
        channels,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        name=f"{name}_conv",
    )(x)


def _cell(
    s0,
    s1,
    edges,
    concat,
    channels,
    reduction,
    reduction_prev,
    skip,
    binarization,
    drop_path_rate,
    grid,
    name,
):
    if reduction_prev:
        p0 = _binary_conv(s0, channels, 3, 2, binarization, f"{name}_pre0")
    else:
        p0 = _binary_conv(s0, channels, 1, 1, binarization, f"{name}_pre0")
    p1 = _binary_conv(s1, channels, 1, 1, binarization, f"{name}_pre1")
    states = [p0, p1]
    for node in range(len(edges) // 2):
        terms, zero_source = [], None
        for slot, (op, j) in enumerate(edges[2 * node : 2 * node + 2]):
            stride = 2 if reduction and j < 2 else 1
            if op == "none":
                zero_source = (states[j], stride)
                continue
            prefix = f"{name}_n{node}_{slot}_{op}"
            y = ops_lib.apply_op(
                states[j], op, channels, stride, binarization=binarization, grid=grid, name=prefix
            )
            if drop_path_rate > 0 and not (op == "skip_connect" and stride == 1):
                y = DropPath(drop_path_rate, name=f"{prefix}_droppath")(y)
            terms.append(y)
        if not terms:  # both edges are Zeroise: the node is zero
            source, stride = zero_source
            terms.append(ops_lib.Zeroise(stride, name=f"{name}_n{node}_zeroise")(source))
        states.append(
            terms[0] if len(terms) == 1 else tf.keras.layers.Add(name=f"{name}_n{node}")(terms)
        )
    out = tf.keras.layers.Concatenate(name=f"{name}_concat")([states[i] for i in concat])
    if skip:
        if reduction:
            shortcut = tf.keras.layers.BatchNormalization(name=f"{name}_skip_bn")(s1)
            shortcut = tf.keras.layers.Conv2D(
                out.shape[-1], 2, strides=2, padding="same", name=f"{name}_skip_conv"
            )(shortcut)
        else:
            shortcut = s1
        out = tf.keras.layers.Add(name=f"{name}_skip")([out, shortcut])
    return out


def _auxiliary_head(x, num_classes):
    """DARTS' auxiliary classifier, with global pooling so it fits small inputs."""
    x = tf.keras.layers.ReLU(name="aux_relu")(x)
    x = tf.keras.layers.AveragePooling2D(5, strides=3, padding="same", name="aux_pool")(x)
    x = tf.keras.layers.Conv2D(128, 1, use_bias=False, name="aux_conv1")(x)
    x = tf.keras.layers.BatchNormalization(name="aux_bn1")(x)
    x = tf.keras.layers.ReLU(name="aux_relu1")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="aux_gap")(x)
    return tf.keras.layers.Dense(num_classes, name="aux_logits", dtype="float32")(x)


def _stem(x, channels, stem):
    if stem == "cifar":
        # Kim et al.: BN -> conv3x3 (3 -> 3C) -> ReLU, full precision.
        x = tf.keras.layers.BatchNormalization(name="stem_bn")(x)
        x = tf.keras.layers.Conv2D(
            3 * channels, 3, padding="same", use_bias=False, name="stem_conv"
        )(x)
        x = tf.keras.layers.ReLU(name="stem_relu")(x)
        return x, x, False
    # ImageNet: three full-precision stride-2 convolutions (DARTS NetworkImageNet).
    x = tf.keras.layers.Conv2D(
        channels // 2, 3, strides=2, padding="same", use_bias=False, name="stem0_conv1"
    )(x)
    x = tf.keras.layers.BatchNormalization(name="stem0_bn1")(x)
    x = tf.keras.layers.ReLU(name="stem0_relu")(x)
    x = tf.keras.layers.Conv2D(
        channels, 3, strides=2, padding="same", use_bias=False, name="stem0_conv2"
    )(x)
    s0 = tf.keras.layers.BatchNormalization(name="stem0_bn2")(x)
    x = tf.keras.layers.ReLU(name="stem1_relu")(s0)
    x = tf.keras.layers.Conv2D(
        channels, 3, strides=2, padding="same", use_bias=False, name="stem1_conv"
    )(x)
    s1 = tf.keras.layers.BatchNormalization(name="stem1_bn")(x)
    return s0, s1, True


def build_network(
    genotype: Genotype,
    *,
    layers: int = 20,
    init_channels: int = 36,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] | None = (32, 32, 3),
    input_tensor: tf.Tensor | None = None,
    stem: str = "cifar",
    binarization: str | Binarization = "sign_scale",
    auxiliary: bool = False,
    drop_path_rate: float = 0.0,
    inter_cell_skip: bool = True,
    include_top: bool = True,
    stride2_grid: str = "same",
    dtype_policy: str = "float32",
    name: str | None = None,
) -> tf.keras.Model:
    """A binary network of ``layers`` cells from ``genotype``.

    Reduction cells sit at ``layers // 3`` and ``2 * layers // 3`` and double the channels. With
    ``auxiliary`` (and ``include_top``) the model has two outputs, ``[logits, aux_logits]``, the
    auxiliary classifier reading the second reduction cell (DARTS). With ``include_top=False`` the
    output is the last cell's feature map after BN + ReLU. ``stride2_grid`` is the sampling grid of
    the stride-2 ops ([`bnas_tf.ops.STRIDE2_GRIDS`][bnas_tf.ops.STRIDE2_GRIDS]: ``same`` for every
    new network; ``legacy`` rebuilds one trained before bnas-tf 0.2). ``dtype_policy``
    (``mixed_bfloat16``: [`bnas_tf.precision`][bnas_tf.precision]) sets the compute dtype of the
    stem and cells; variables, BN statistics, the logits and the features returned without the
    top stay float32, so the same weights load under either policy.

    Raises:
        ValueError: bad genotype, ``num_classes < 2``, unknown stem, or an input
            too small for the network's stride-2 stages.
    """
    genotype.validate()
    if stem not in STEMS:
        raise ValueError(f"Unknown stem {stem!r}; choose one of {STEMS}.")
    if include_top and num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
    if layers < 1 or init_channels < 1:
        raise ValueError(
            f"layers and init_channels must be positive, got {layers} and {init_channels}."
        )
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}.")
    check_dtype_policy(dtype_policy)
    binarization = get_binarization(binarization)
    inputs = zoo_utils.get_input_layer(input_shape, input_tensor)
    spatial = inputs.shape[1:3]
    smallest = min_input_size(stem)
    if any(size is not None and size < smallest for size in spatial):
        raise ValueError(
            f"input_shape {tuple(inputs.shape[1:])} is too small: the {stem} network halves the "
            f"spatial size {_reductions(stem)} times and needs at least {smallest}x{smallest}."
        )

    with policy_scope(dtype_policy):
        s0, s1, reduction_prev = _stem(inputs, init_channels, stem)
        channels = init_channels
        aux_input = None
        for index in range(layers):
            reduction = index in (layers // 3, 2 * layers // 3)
            if reduction:
                channels *= 2
            edges, concat = (
                (genotype.reduce, genotype.reduce_concat)
                if reduction
                else (genotype.normal, genotype.normal_concat)
            )
            out = _cell(
                s0,
                s1,
                edges,
                concat,
                channels,
                reduction,
                reduction_prev,
                inter_cell_skip and index > 0,
                binarization,
                drop_path_rate,
                stride2_grid,
                f"cell{index}",
            )
            s0, s1, reduction_prev = s1, out, reduction
            if index == 2 * layers // 3:
                aux_input = out
        x = tf.keras.layers.BatchNormalization(name="final_bn")(s1)
        x = tf.keras.layers.ReLU(name="final_relu")(x)
    return finish_model(
        inputs,
        x,
        input_tensor=input_tensor,
        include_top=include_top,
        num_classes=num_classes,
        name=name or ("bnas_network" if include_top else "bnas_features"),
        auxiliary=(lambda: _auxiliary_head(aux_input, num_classes)) if auxiliary else None,
    )


def finish_model(
    inputs,
    features: tf.Tensor,
    *,
    input_tensor: tf.Tensor | None,
    include_top: bool,
    num_classes: int,
    name: str,
    auxiliary=None,
) -> tf.keras.Model:
    """The model from ``inputs`` to ``features`` (float32) without the top, or to float32 logits
    (global pool + dense) with it, and ``auxiliary()``'s logits as a second output when given:
    the head every final network of the package shares."""
    source = tf.keras.utils.get_source_inputs(inputs) if input_tensor is not None else inputs
    if not include_top:
        if features.dtype != tf.float32:
            features = tf.keras.layers.Activation(
                "linear", dtype="float32", name="features_float32"
            )(features)
        return tf.keras.Model(source, features, name=name)
    x = zoo_utils.global_pool(features, name="global_pool")
    logits = tf.keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
    outputs = [logits, auxiliary()] if auxiliary is not None else logits
    return tf.keras.Model(source, outputs, name=name)
