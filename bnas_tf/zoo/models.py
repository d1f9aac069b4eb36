"""The zoo's model functions, larq-zoo style: keyword-only, one per model.

Every function has the signature of ``larq_zoo.literature.BiRealNet``:

```python
BNASB(*, input_shape=None, input_tensor=None, weights="fashion_mnist",
      include_top=True, num_classes=10, binarization=None) -> tf.keras.Model
```

and returns a flat functional ``tf.keras.Model`` built from code by
[`bnas_tf.network.build_network`][bnas_tf.network.build_network]; weights files only fill in arrays.
The model outputs logits (no softmax), as ``bnas-train`` trains it.

Which architecture is built (see ``bnas_tf.zoo.specs.WEIGHTS_DECISION``):

* ``weights=None``: the model's reference configuration ([`bnas_tf.zoo.specs`][bnas_tf.zoo.specs]);
* ``weights="<name>"``: the trained instance ``<name>`` of the registry, at exactly the
  architecture it was trained at, its weights fetched and hash-checked;
* ``weights="path/to/file.h5"``: the reference configuration, loaded from the file;
* ``weights="path/to/run_dir"`` (a ``bnas-train`` output): the run's own architecture
  (``network.json``) with its ``weights.h5``.

Example:
    >>> import bnas_tf
    >>> from bnas_tf.zoo import BNASB
    >>> model = BNASB(weights="fashion_mnist", include_top=False, input_shape=(28, 28, 1))
"""

from __future__ import annotations

from bnas_tf import genotype as genotype_lib
from bnas_tf.network import STEMS, min_input_size
from bnas_tf.quantizers import BINARIZATIONS
from bnas_tf.runs import read_json
from bnas_tf.training import NETWORK_FILE, WEIGHTS_FILE, build_from_spec
from bnas_tf.zoo import registry as registry_lib
from bnas_tf.zoo import specs
from bnas_tf.zoo.weights_file import layer_names, load_weights

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import tensorflow as tf

__all__ = [
    "build",
    "get",
    "list_models",
    "resolve",
    "BNASA",
    "BNASB",
    "BNASC",
    "BNASD",
    "BNASE",
    "BNASF",
    "BNASG",
    "BNASH",
    "BNASXNOR",
    "BNASFM",
]

_UNSET = object()


def _known_model(name: str, registry: dict) -> str:
    canonical = registry_lib.canonical_name(name, registry, tuple(specs.MODELS))
    if canonical is None:
        available = ", ".join(list_models(registry))
        raise ValueError(f"Unknown zoo model {name!r}; available: {available}.")
    return canonical


def _reference(name: str, registry: dict) -> dict:
    """The spec ``weights=None`` builds."""
    info = specs.MODELS.get(name)
    entries = registry_lib.model_entry(name, registry).get("weights", {})
    if info is None:  # a user-published model: its first published instance is the reference
        reference = registry_lib.model_entry(name, registry).get("reference_weights")
        return entries[reference or sorted(entries)[0]]["network"]
    if info.reference_weights and info.reference_weights in entries:
        return entries[info.reference_weights]["network"]
    return specs.reference_spec(info)


def resolve(name: str, weights, registry: dict | None = None) -> tuple[dict, str | None, str]:
    """``(spec, weights_path_or_None, kind)`` for ``weights``; kind is none/name/file/run.

    The weights file of a published name is fetched lazily by ``build`` (full or
    notop), so the path is None for kind ``"name"``.
    """
    registry = registry_lib.load() if registry is None else registry
    name = _known_model(name, registry)
    if weights is None:
        return _reference(name, registry), None, "none"
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "weights must be None, a published weights name or a path, got "
            f"{type(weights).__name__}."
        )
    published = registry_lib.model_entry(name, registry).get("weights", {})
    if isinstance(weights, str) and weights in published:
        return published[weights]["network"], None, "name"
    path = Path(weights).expanduser()
    if path.is_dir():
        if not (path / NETWORK_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise ValueError(
                f"weights={os.fspath(weights)!r} is a directory without {NETWORK_FILE} and "
                f"{WEIGHTS_FILE}; pass a bnas-train run directory or a weights .h5 file."
            )
        return read_json(path / NETWORK_FILE), str(path / WEIGHTS_FILE), "run"
    if path.is_file():
        return _reference(name, registry), str(path), "file"
    available = ", ".join(repr(n) for n in sorted(published)) or "none published yet"
    raise ValueError(
        f"weights={os.fspath(weights)!r} is neither a published weights name of {name} "
        f"(available: {available}) nor an existing file or run directory; use weights=None "
        f"for random initialization. Registry: {registry_lib.registry_path()} "
        f"(${registry_lib.ZOO_DIR_ENV})."
    )


def _check_input_shape(name: str, spec: dict, input_shape, pretrained: bool) -> tuple:
    if (
        not isinstance(input_shape, Sequence)
        or isinstance(input_shape, str)
        or len(input_shape) != 3
    ):
        raise ValueError(
            f"{name}: input_shape must be (height, width, channels), got {input_shape!r}."
        )
    height, width, channels = input_shape
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(
            f"{name}: input_shape {tuple(input_shape)} needs a positive channel count."
        )
    if pretrained and channels != spec["input_shape"][2]:
        raise ValueError(
            f"{name}: the weights were trained on {spec['input_shape'][2]}-channel images "
            f"{tuple(spec['input_shape'])}, so they cannot take input_shape {tuple(input_shape)} "
            f"with {channels} channels (the stem's kernels have {spec['input_shape'][2]} input "
            "channels). Convert the images, or use weights=None."
        )
    smallest = min_input_size(spec["stem"])
    for size in (height, width):
        if size is not None and (not isinstance(size, int) or size < smallest):
            raise ValueError(
                f"{name}: input_shape {tuple(input_shape)} is too small: the {spec['stem']} "
                f"network halves the spatial size {smallest.bit_length() - 1} times (its stride-2 "
                f"stages), so it needs at least {smallest}x{smallest} pixels."
            )
    return tuple(input_shape)


def build(
    name: str,
    *,
    input_shape: Sequence[int | None] | None = None,
    input_tensor: tf.Tensor | None = None,
    weights: str | os.PathLike | None = _UNSET,  # type: ignore[assignment]
    include_top: bool = True,
    num_classes: int | None = None,
    binarization: str | None = None,
    dtype_policy: str = "float32",
) -> tf.keras.Model:
    """Build zoo model ``name`` (built-in or published with ``bnas-publish``).

    Raises:
        ValueError: an unknown model or weights name (the message lists the available
            ones); pretrained weights with ``include_top=True`` and another number of
            classes; an input shape the weights or the network cannot take (wrong channel
            count, smaller than the network's stride-2 stages allow); a binarization other
            than the weights were trained with; a weights file that does not fit.
        registry.WeightsHashError: a fetched file does not match its registered SHA-256.
    """
    registry = registry_lib.load()
    name = _known_model(name, registry)
    if weights is _UNSET:
        weights = _default_weights(name, registry)
    spec, path, kind = resolve(name, weights, registry)
    if path is not None:
        layer_names(path)  # refuse a file that is not a weights file before the (slow) build
    pretrained = kind != "none"
    described = f"weights {os.fspath(weights)!r}" if pretrained else "the reference configuration"

    if num_classes is None:
        num_classes = spec["num_classes"]
    if include_top:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"{name}: num_classes must be an integer >= 2, got {num_classes!r}.")
        if kind in ("name", "run") and num_classes != spec["num_classes"]:
            raise ValueError(
                f"{name}: {described} classify {spec['num_classes']} classes, so with "
                f"include_top=True num_classes must be {spec['num_classes']} (got {num_classes}). "
                "For another task use include_top=False and add your own classifier."
            )

    if binarization is None:
        binarization = spec["binarization"]
    if binarization not in BINARIZATIONS:
        raise ValueError(
            f"{name}: unknown binarization {binarization!r}; choose one of {sorted(BINARIZATIONS)}."
        )
    if pretrained and binarization != spec["binarization"]:
        raise ValueError(
            f"{name}: {described} were trained with binarization {spec['binarization']!r}; "
            f"binarization={binarization!r} would make them compute something else. Use "
            "weights=None to train another binarization."
        )

    if input_tensor is not None:
        tensor_shape = tuple(getattr(input_tensor, "shape", ()))[1:]
        if input_shape is not None and tuple(input_shape) != tensor_shape:
            raise ValueError(
                f"{name}: input_shape {tuple(input_shape)} disagrees with input_tensor's shape "
                f"{tensor_shape}; pass only one."
            )
        input_shape = tensor_shape
    elif input_shape is None:
        input_shape = tuple(spec["input_shape"])
    input_shape = _check_input_shape(name, spec, input_shape, pretrained)
    if spec["stem"] not in STEMS:
        raise ValueError(f"{name}: unknown stem {spec['stem']!r} in its spec.")

    if binarization != spec["binarization"]:  # weights=None only (checked above)
        spec = {**spec, "binarization": binarization, "xnor_activation_scale": False}
    model = build_from_spec(
        spec,
        input_shape=input_shape,
        input_tensor=input_tensor,
        num_classes=num_classes,
        include_top=include_top,
        dtype_policy=dtype_policy,
        name=name.lower() if include_top else f"{name.lower()}_notop",
    )
    if kind == "name":
        path = registry_lib.fetch(name, weights, notop=not include_top, registry=registry)
    if path is not None:
        load_weights(model, path)
    return model


def _default_weights(name: str, registry: dict) -> str | None:
    info = specs.MODELS.get(name)
    if info is not None:
        return info.default_weights
    return registry_lib.model_entry(name, registry).get("reference_weights")


def list_models(registry: dict | None = None) -> list[str]:
    """Built-in models, then models published under new names with ``bnas-publish``."""
    registry = registry_lib.load() if registry is None else registry
    extra = sorted(n for n in registry["models"] if n not in specs.MODELS)
    return list(specs.MODELS) + extra


def _model_function(name: str, default_weights: str | None) -> Callable[..., tf.keras.Model]:
    def model_fn(
        *,
        input_shape: Sequence[int | None] | None = None,
        input_tensor: tf.Tensor | None = None,
        weights: str | os.PathLike | None = default_weights,
        include_top: bool = True,
        num_classes: int | None = None,
        binarization: str | None = None,
        dtype_policy: str = "float32",
    ) -> tf.keras.Model:
        return build(
            name,
            input_shape=input_shape,
            input_tensor=input_tensor,
            weights=weights,
            include_top=include_top,
            num_classes=num_classes,
            binarization=binarization,
            dtype_policy=dtype_policy,
        )

    model_fn.__name__ = model_fn.__qualname__ = name
    model_fn.__module__ = __name__
    return model_fn


def get(name: str) -> Callable[..., tf.keras.Model]:
    """The model function of ``name`` (case-insensitive), also for ``bnas-publish``-ed models.

    Example:
        >>> model = get("BNASB")(weights="fashion_mnist")
    """
    registry = registry_lib.load()
    name = _known_model(name, registry)
    if name in globals() and name in specs.MODELS:
        return globals()[name]
    fn = _model_function(name, _default_weights(name, registry))
    entry = registry_lib.model_entry(name, registry)
    fn.__doc__ = (
        f"{name}: published with bnas-publish. {entry.get('description', '')}\n\n"
        f"Weights: {', '.join(registry_lib.weights_names(name, registry))}."
    )
    return fn


# ----------------------------------------------------------------------------- model functions
_ARGS = """
    Args:
        input_shape: ``(height, width, channels)``; default: the shape the weights were
            trained at (or the reference dataset's). Any height/width from
            ``network.min_input_size(stem)`` up is accepted (the network is convolutional
            with global pooling); pretrained weights fix the channel count.
        input_tensor: optional Keras tensor (``tf.keras.Input(...)``) to use as input.
        weights: ``None`` (random initialization, reference configuration), a published
            weights name (``bnas_tf.zoo.registry.weights_names("{name}")``), a weights
            ``.h5`` file (loaded into the reference configuration) or a ``bnas-train`` run
            directory (its own architecture).
        include_top: whether to include the global pooling and classifier; without it the
            model outputs the last cell's feature map (rank 4) after BN + ReLU.
        num_classes: classes of the classifier; default the weights' (or reference
            dataset's). Pretrained weights with ``include_top=True`` require theirs.
        binarization: ``sign_scale``, ``xnor`` or ``pcnn``; default the weights' (or
            reference configuration's). Pretrained weights require theirs.
        dtype_policy: ``float32`` or ``mixed_bfloat16`` (bfloat16 compute in the stem and
            cells; weights, BN statistics, logits and features stay float32): faster
            fine-tuning where the CPU has AVX512-BF16 or AMX.

    Returns:
        A ``tf.keras.Model`` that outputs logits (``include_top=True``).

    Raises:
        ValueError: invalid weights name (lists the available ones), shape, number of
            classes or binarization, or a weights file that does not fit.
"""


def _docstring(info: specs.ModelInfo) -> str:
    genotype = (
        f"``{info.genotype}`` = {genotype_lib.get(info.genotype)}"
        if info.genotype
        else "the cell of the published ``fashion_mnist`` instance"
    )
    config = (
        f"{info.layers} cells x {info.init_channels} channels, {info.stem} stem, "
        f"{info.binarization}, {info.dataset} input"
        if info.layers
        else "that of its published instance"
    )
    return (
        f"Instantiates {info.name}. {info.description}\n\n"
        f"    Reference configuration (``weights=None``): {config}.\n"
        f"    Published results: {info.paper or 'see the model card'}\n"
        f"    Cell: {genotype}\n"
        f"    Citation: {info.citation}\n"
        f"{_ARGS.format(name=info.name)}\n"
        "    Trained instances (metrics table: dataset, top-1, parameters, memory, binarized\n"
        '    MAC ratio): ``bnas_tf.zoo.model_card("' + info.name + '")`` and below.\n'
    )


def _published_table(name: str) -> str:
    """The registry's metrics of ``name``'s trained instances, for the docstring."""
    from bnas_tf.zoo.cards import metrics_table

    try:
        entries = registry_lib.model_entry(name, registry_lib.load()).get("weights", {})
    except ValueError:  # a broken registry must not break ``import bnas_tf.zoo``
        return ""
    if not entries:
        return ""
    table = metrics_table([(w, e["metrics"]) for w, e in sorted(entries.items())])
    return (
        "\n    Published weights:\n\n"
        + "\n".join("    " + line for line in table.splitlines())
        + "\n"
    )


def _make(name: str) -> Callable[..., tf.keras.Model]:
    info = specs.MODELS[name]
    fn = _model_function(name, info.default_weights)
    fn.__doc__ = _docstring(info) + _published_table(name)
    return fn


BNASA = _make("BNASA")
BNASB = _make("BNASB")
BNASC = _make("BNASC")
BNASD = _make("BNASD")
BNASE = _make("BNASE")
BNASF = _make("BNASF")
BNASG = _make("BNASG")
BNASH = _make("BNASH")
BNASXNOR = _make("BNASXNOR")
BNASFM = _make("BNASFM")
