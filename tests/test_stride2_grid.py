"""Every stride-2 op samples one grid (issue 20, defect 1).

The probe: the gradient of one output pixel with respect to the input, summed over a
batch of random images (so that every pixel of a max pool's window is the argmax of
some image, and every pixel of a binary convolution's window passes the
straight-through estimator for some image), marks the input window the pixel reads;
its bounding box's centre is where the op centres that output pixel. A node of a
reduction cell sums such outputs, so all ops must agree on it.
"""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf import genotype as genotype_lib
from bnas_tf import ops
from bnas_tf.network import build_network
from bnas_tf.search.cell import _relu_conv_bn
from bnas_tf.search.mixed_op import MixedOp
from bnas_tf.training import build_from_spec

import numpy as np
import pytest
import tensorflow as tf

C = 4
OUT = 4  # the probed output pixel (OUT, OUT)
# Every stride-2 op of both spaces but Zeroise (no window) and skip_connect's
# factorized reduce (its two halves sample both grids by design).
STRIDED_OPS = sorted(
    {op for space in ops.SEARCH_SPACES.values() for op in space} - {"none", "skip_connect"}
)


def _window_centre(fn, size: int, channels: int = C, seed: int = 0) -> tuple[float, float]:
    x = tf.constant(
        np.random.default_rng(seed).standard_normal((64, size, size, channels)), tf.float32
    )
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        probe = tf.reduce_sum(y[:, OUT, OUT, :])
    grad = tape.gradient(probe, x)
    support = np.abs(grad.numpy()).sum(axis=(0, 3)) > 0
    rows, cols = np.nonzero(support)
    assert rows.size, "the probed output pixel reads no input pixel"
    return (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2


def _op_fn(op, grid="same"):
    layers = ops.op_layers(op, C, 2, grid=grid, affine=False)

    def fn(x):
        for layer in layers:
            x = layer(x, training=False)
        return x

    return fn


def _mixed_op_fn(op):
    mixed = MixedOp(C, 2, [[op]], binarization="sign_scale")
    return lambda x: mixed(x, [tf.constant([1.0])], training=False)[0]


@pytest.mark.parametrize("size", [16, 15, 28])
def test_every_stride2_op_centres_on_one_grid(size):
    expected = 2 * OUT + (1 if size % 2 == 0 else 0)  # TensorFlow's `same` grid
    centres = {op: _window_centre(_op_fn(op), size) for op in STRIDED_OPS}
    # The supernet's node-shared form (shared BN + sign, widened convolutions) and the
    # preprocessing of a cell after a reduction read the same windows.
    centres.update({f"MixedOp/{op}": _window_centre(_mixed_op_fn(op), size) for op in STRIDED_OPS})
    centres["search preprocess 3x3/2"] = _window_centre(
        lambda x: _relu_conv_bn(C, 3, 2, "p")(x), size
    )
    off = {name: c for name, c in centres.items() if c != (expected, expected)}
    assert not off, (
        f"{size}x{size} input, output ({OUT}, {OUT}) should centre on ({expected}, {expected}): "
        f"{off}"
    )


def test_legacy_grid_keeps_the_old_dilated_subsampling():
    """Networks trained before the fix rebuild with the offset-0 subsampling they learned."""
    assert _window_centre(_op_fn("bin_dil_conv_3x3", grid="legacy"), 16) == (8, 8)
    assert _window_centre(_op_fn("bin_conv_3x3", grid="legacy"), 16) == (9, 9)


@pytest.mark.parametrize("size", [4, 5])
def test_subsample_matches_a_same_padded_strided_dilated_convolution(size):
    """``conv_same(x, k, stride 2, dilation 2) == conv_same(x[o::2, o::2], k)`` exactly."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((2, size, size, 3)), tf.float32)
    k = tf.constant(rng.standard_normal((3, 3, 3, 2)), tf.float32)
    # The strided dilated conv: the stride-1 dilated conv on TF's `same` grid, subsampled there.
    full = tf.nn.conv2d(x, k, 1, "SAME", dilations=2)
    o = 1 - size % 2
    reference = full[:, o::2, o::2]
    subsampled = tf.nn.conv2d(ops.Subsample(2)(x), k, 1, "SAME")
    np.testing.assert_allclose(subsampled.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)
    # and the `same` strided conv of a dense kernel centres where the subsampling does
    dense = tf.nn.conv2d(x, k, 2, "SAME")
    np.testing.assert_allclose(
        dense.numpy(), tf.nn.conv2d(x, k, 1, "SAME")[:, o::2, o::2].numpy(), atol=1e-5
    )


def test_network_specs_record_their_grid():
    """New specs build on the `same` grid; a spec without the field (trained before the
    fix, e.g. the published zoo weights) keeps the legacy one."""
    cell = genotype_lib.BNAS_A
    cell = genotype_lib.Genotype(  # a strided dilated conv in the reduction cell
        cell.normal,
        cell.normal_concat,
        (("bin_dil_conv_3x3", 0), *cell.reduce[1:]),
        cell.reduce_concat,
        search_space="bnas_kim",
    )
    spec = {
        "genotype": cell.to_dict(),
        "layers": 3,
        "init_channels": 8,
        "num_classes": 10,
        "input_shape": [16, 16, 1],
        "stem": "cifar",
        "binarization": "sign_scale",
    }

    def grids(model):
        return {layer.grid for layer in model.layers if isinstance(layer, ops.Subsample)}

    assert grids(build_from_spec(spec)) == {"legacy"}
    assert grids(build_from_spec({**spec, "stride2_grid": "same"})) == {"same"}
    assert grids(build_network(cell, layers=3, init_channels=8, input_shape=(16, 16, 1))) == {
        "same"
    }
    with pytest.raises(ValueError, match="stride-2 grid 'centre'"):
        build_from_spec({**spec, "stride2_grid": "centre"})
