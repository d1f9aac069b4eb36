"""The binary MobileNet of BMES (Phan et al., "Binarizing MobileNet via Evolution-Based Searching",
CVPR 2020) and its genotype: one group count per 3x3 convolution.

MobileNet's depthwise 3x3 convolution has too little capacity once binarized; BMES replaces it by
a *group* convolution and searches the number of groups of each. The backbone here, sized for
28x28 and 32x32 inputs:

```python
stem   full-precision conv3x3 (C_in -> width), BN
block  binary group conv3x3 (C -> C, stride s, g groups), BN, + shortcut
       binary conv1x1 (C -> C_out), BN, + shortcut     (x len(blocks))
head   ReLU, global average pool, full-precision dense
```

Each shortcut adds the block's input when the shapes allow it, and an average-pooled copy of it
(stride 2) otherwise: the real-valued shortcuts that keep a binary network trainable (Liu et al.,
Bi-Real Net, ECCV 2018). ``blocks`` gives ``(channel multiple of width, stride)`` per block; the
genotype gives ``groups[i]`` for block ``i``, a divisor of its input channels
(``groups = C`` is MobileNet's depthwise convolution; ``groups = 1`` a full binary convolution).

A group convolution is built as ``g`` binary convolutions over the channel slices, concatenated,
so that [`larq.models.summary`][larq.models.summary] and the LCE converter see its real cost.

    >>> genotype = GroupGenotype(groups=(1, 2, 4, 2, 8, 4), width=16)
    >>> model = build_group_network(genotype, num_classes=10, input_shape=(28, 28, 1))
    >>> model.output_shape
    (None, 10)
    >>> round(group_network_ops(genotype, (28, 28, 1), 10)["ops"])
    182136
"""

from __future__ import annotations

from bnas_tf.layers import binary_conv2d
from bnas_tf.network import finish_model
from bnas_tf.precision import check_dtype_policy, policy_scope
from bnas_tf.quantizers import Binarization, get_binarization

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
from larq_zoo.core import utils as zoo_utils

__all__ = [
    "GroupGenotype",
    "DEFAULT_BLOCKS",
    "block_channels",
    "group_choices",
    "build_group_network",
    "group_network_ops",
    "KIND",
]

KIND = "bmes"
"""The ``kind`` of a group genotype's dict, which tells it from a cell genotype's."""

DEFAULT_BLOCKS: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (2, 1), (4, 2), (4, 1), (4, 1))
"""``(channel multiple of width, stride)`` of each block: two stride-2 stages, as a 28x28 or
32x32 input allows (MobileNet V1's 13 blocks at ImageNet sizes, cut to this input)."""


def block_channels(width: int, blocks: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """``(input channels, output channels, stride)`` of each block."""
    channels, result = width, []
    for multiple, stride in blocks:
        result.append((channels, width * int(multiple), int(stride)))
        channels = width * int(multiple)
    return result


def group_choices(
    width: int, blocks: Sequence[Sequence[int]], group_set: Sequence[int]
) -> list[list[int]]:
    """Per block, the members of ``group_set`` that divide its input channels."""
    return [[g for g in group_set if c_in % g == 0] for c_in, _, _ in block_channels(width, blocks)]


@dataclasses.dataclass(frozen=True)
class GroupGenotype:
    """A BMES architecture: the group count of each block's 3x3 convolution, with the backbone it
    belongs to (``width``, ``blocks``). JSON: ``{"kind": "bmes", "groups": [...], ...}``."""

    groups: tuple[int, ...]
    width: int = 16
    blocks: tuple[tuple[int, int], ...] = DEFAULT_BLOCKS

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(int(g) for g in self.groups))
        object.__setattr__(self, "blocks", tuple((int(m), int(s)) for m, s in self.blocks))
        self.validate()

    def validate(self, search_space: str | None = None) -> GroupGenotype:
        """Raise ``ValueError`` naming the first bad block."""
        if search_space not in (None, KIND):
            raise ValueError(f"a {KIND} group genotype is not of search space {search_space!r}.")
        if self.width < 1:
            raise ValueError(f"width must be positive, got {self.width}.")
        if len(self.groups) != len(self.blocks):
            raise ValueError(
                f"{len(self.groups)} group counts for {len(self.blocks)} blocks: one per block."
            )
        for i, (g, (c_in, _, stride)) in enumerate(
            zip(self.groups, block_channels(self.width, self.blocks))
        ):
            if g < 1 or c_in % g:
                raise ValueError(f"block {i}: {g} groups do not divide its {c_in} input channels.")
            if stride not in (1, 2):
                raise ValueError(f"block {i}: stride must be 1 or 2, got {stride}.")
        return self

    @property
    def search_space(self) -> str:
        return KIND

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "groups": list(self.groups),
            "width": self.width,
            "blocks": [list(b) for b in self.blocks],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupGenotype:
        if d.get("kind") != KIND:
            raise ValueError(f"not a {KIND} group genotype (kind {d.get('kind')!r}).")
        return cls(
            groups=tuple(d["groups"]),
            width=int(d.get("width", 16)),
            blocks=tuple(tuple(b) for b in d.get("blocks", DEFAULT_BLOCKS)),
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | os.PathLike) -> str | os.PathLike:
        from bnas_tf.runs import write_json

        write_json(path, self.to_dict())
        return path

    def ops(self, cell: str = "both") -> dict[str, int]:
        """Blocks per group count (``{"g4": 2, ...}``), as ``Genotype.ops`` counts ops."""
        counts: dict[str, int] = {}
        for g in self.groups:
            counts[f"g{g}"] = counts.get(f"g{g}", 0) + 1
        return counts

    def __str__(self) -> str:
        return f"GroupGenotype(groups={list(self.groups)}, width={self.width})"


def is_group_genotype(d: Any) -> bool:
    """Whether a genotype dict is a group genotype (else a cell genotype)."""
    return isinstance(d, Mapping) and d.get("kind") == KIND


def _out_size(size: int | None, stride: int) -> int | None:
    return None if size is None else math.ceil(size / stride)


def group_network_ops(
    genotype: GroupGenotype, input_shape: Sequence[int], num_classes: int
) -> dict[str, float]:
    """``{"macs_1bit", "macs_32bit", "ops"}`` of the network, counted as ``larq.models.summary``
    does (BN and pooling are free): OPs = binary MACs / 64 + float MACs (Bi-Real Net)."""
    h, w, c = (int(v) for v in input_shape)
    float_macs = h * w * 9 * c * genotype.width
    binary_macs = 0
    for g, (c_in, c_out, stride) in zip(
        genotype.groups, block_channels(genotype.width, genotype.blocks)
    ):
        h, w = _out_size(h, stride), _out_size(w, stride)
        binary_macs += h * w * 9 * c_in * (c_in // g) + h * w * c_in * c_out
    float_macs += block_channels(genotype.width, genotype.blocks)[-1][1] * num_classes
    return {
        "macs_1bit": float(binary_macs),
        "macs_32bit": float(float_macs),
        "ops": binary_macs / 64 + float_macs,
    }


def _group_conv(x, binarization: Binarization, groups: int, stride: int, name: str):
    channels = x.shape[-1]
    conv = dict(strides=stride, padding="same", use_bias=False)
    if groups == 1:
        return binary_conv2d(binarization, channels, 3, name=f"{name}_conv", **conv)(x)
    size = channels // groups
    parts = [
        binary_conv2d(binarization, size, 3, name=f"{name}_conv_g{i}", **conv)(
            x[..., i * size : (i + 1) * size]
        )
        for i in range(groups)
    ]
    return tf.keras.layers.Concatenate(name=f"{name}_concat")(parts)


def _shortcut(x, y, stride: int, name: str):
    """``y + x`` (``x`` average-pooled to ``y``'s size, and tiled or averaged to its channels)."""
    if stride == 2:
        x = tf.keras.layers.AveragePooling2D(2, padding="same", name=f"{name}_pool")(x)
    c_in, c_out = x.shape[-1], y.shape[-1]
    if c_out == 2 * c_in:
        x = tf.keras.layers.Concatenate(name=f"{name}_tile")([x, x])
    elif c_out != c_in:
        return y
    return tf.keras.layers.Add(name=f"{name}_add")([x, y])


def build_group_network(
    genotype: GroupGenotype,
    *,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] | None = (32, 32, 3),
    input_tensor: tf.Tensor | None = None,
    binarization: str | Binarization = "sign_scale",
    include_top: bool = True,
    dtype_policy: str = "float32",
    name: str | None = None,
) -> tf.keras.Model:
    """The binary MobileNet of ``genotype`` (see the module docstring). With
    ``include_top=False`` the output is the last block's features after ReLU."""
    genotype.validate()
    if include_top and num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
    check_dtype_policy(dtype_policy)
    binarization = get_binarization(binarization)
    inputs = zoo_utils.get_input_layer(input_shape, input_tensor)
    with policy_scope(dtype_policy):
        x = tf.keras.layers.Conv2D(
            genotype.width, 3, padding="same", use_bias=False, name="stem_conv"
        )(inputs)
        x = tf.keras.layers.BatchNormalization(name="stem_bn")(x)
        for i, (g, (_, c_out, stride)) in enumerate(
            zip(genotype.groups, block_channels(genotype.width, genotype.blocks))
        ):
            y = _group_conv(x, binarization, g, stride, f"block{i}_group")
            y = tf.keras.layers.BatchNormalization(name=f"block{i}_group_bn")(y)
            x = _shortcut(x, y, stride, f"block{i}_group")
            y = binary_conv2d(binarization, c_out, 1, use_bias=False, name=f"block{i}_point_conv")(
                x
            )
            y = tf.keras.layers.BatchNormalization(name=f"block{i}_point_bn")(y)
            x = _shortcut(x, y, 1, f"block{i}_point")
        x = tf.keras.layers.ReLU(name="final_relu")(x)
    return finish_model(
        inputs,
        x,
        input_tensor=input_tensor,
        include_top=include_top,
        num_classes=num_classes,
        name=name or ("bmes_network" if include_top else "bmes_features"),
    )
