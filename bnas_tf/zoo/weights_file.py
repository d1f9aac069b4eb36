"""Loading weights files safely: HDF5 weights only, by layer name, every layer covered.

A zoo model is always built from code; a weights file only fills in arrays. This
module refuses files that are not plain Keras HDF5 *weights* files (a whole saved
model, whose ``model_config`` could name a ``Lambda`` layer carrying code, is
refused, not deserialized), and files that do not hold a weight for every layer of
the model (``load_weights(by_name=True)`` alone would silently leave those layers at
their random initialization).

Example (``model`` a zoo model, ``BNASB.h5`` its weights file):

```python
check_weights_file("BNASB.h5", model)   # raises ValueError naming the problem
load_weights(model, "BNASB.h5")
```
"""

from __future__ import annotations

import os

import h5py
import tensorflow as tf

__all__ = ["layer_names", "check_weights_file", "load_weights"]


def _decode(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def layer_names(path: str | os.PathLike) -> list[str]:
    """Names of the layers with weights stored in a Keras HDF5 weights file.

    Raises:
        ValueError: not an HDF5 file, a whole saved model, or no Keras weights inside.
    """
    path = os.fspath(path)
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path} is not an HDF5 weights file (zoo weights are Keras .h5 weights files "
            "written by model.save_weights)."
        )
    with h5py.File(path, "r") as f:
        if "model_config" in f.attrs or "model_weights" in f:
            raise ValueError(
                f"{path} is a whole saved model (it carries a model_config), not a weights "
                "file; bnas_tf.zoo never deserializes models from files, since a model config "
                "may hold code (Lambda layers). Save the weights with model.save_weights(...h5)."
            )
        if "layer_names" not in f.attrs:
            raise ValueError(f"{path} holds no Keras weights (no 'layer_names' attribute).")
        return [
            name
            for name in _decode(f.attrs["layer_names"])
            if _decode(f[name].attrs["weight_names"])
        ]


def check_weights_file(model: tf.keras.Model, path: str | os.PathLike) -> None:
    """Raise ValueError unless ``path`` holds weights of the right shapes for every layer."""
    stored = set(layer_names(path))
    missing = [layer.name for layer in model.layers if layer.weights and layer.name not in stored]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise ValueError(
            f"{os.fspath(path)} does not fit {model.name}: it has no weights for {len(missing)} "
            f"of its layers ({shown}). The file was saved from a different architecture."
        )


def load_weights(model: tf.keras.Model, path: str | os.PathLike) -> tf.keras.Model:
    """Check ``path`` and load it into ``model`` by layer name; shapes must match exactly."""
    check_weights_file(model, path)
    try:
        model.load_weights(os.fspath(path), by_name=True, skip_mismatch=False)
    except ValueError as error:
        raise ValueError(
            f"{os.fspath(path)} does not fit {model.name}: {error}. The file was saved from a "
            "network of another size (cells, channels or classes)."
        ) from None
    return model
