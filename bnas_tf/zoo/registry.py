"""The weights registry of the model zoo: where published files are, and their hashes.

The registry is one JSON file, ``registry.json``, in the *zoo directory*:
``$BNAS_TF_ZOO_DIR`` if set, else the repository's top-level ``zoo/`` in a source
checkout, else the copy of that ``zoo/`` which an installed wheel carries as package
data (``bnas_tf/zoo/published/``: registry, cards, flags, genotypes and weight files).
It maps a model name and a weights name to one trained instance:

```python
{"format_version": 1,
 "models": {"BNASB": {"weights": {"fashion_mnist": {
     "file": "weights/BNASB-fashion_mnist-1a2b3c4d.h5", "sha256": "...", "size": 1234,
     "notop_file": "weights/BNASB-fashion_mnist-notop-5e6f7a8b.h5", "notop_sha256": "...",
     "notop_size": 1200,
     "network": {"genotype": {...}, "layers": 8, "init_channels": 24, "stem": "cifar",
                 "binarization": "sign_scale", "num_classes": 10,
                 "input_shape": [28, 28, 1], "dataset": "fashion_mnist", ...},
     "flagfile": "flags/BNASB-fashion_mnist.cfg", "card": "cards/BNASB-fashion_mnist.md",
     "config": {...}, "metrics": {"top1": 0.91, ...}}}}}}
```

``network`` is a ``bnas-train`` ``network.json``: the weights name selects a trained
instance, and the instance fixes the architecture it was trained at.

Weight files are fetched like larq-zoo's (``larq_zoo.core.utils.download_pretrained_model``):
``tf.keras.utils.get_file(fname, origin, file_hash=sha256, cache_subdir="bnas_tf")``,
from ``$BNAS_TF_ZOO_URL`` (a mirror), by default the zoo directory itself as a
``file://`` URL (copied into the cache without a progress bar), or, for a file the zoo
directory lacks, the registry's optional top-level ``base_url`` (``origin_url``;
none is recorded while the weights ship with the package). A file whose SHA-256
differs from the registry's is deleted from the cache and refused
(``WeightsHashError``); it is never loaded.

Example:
    >>> from bnas_tf.zoo import registry
    >>> registry.weights_names("BNASB")
    ['fashion_mnist']
    >>> path = registry.fetch("BNASB", "fashion_mnist", notop=True)
"""

from __future__ import annotations

from bnas_tf.mobilenet import is_group_genotype
from bnas_tf.runs import read_json, write_json

import contextlib
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import tensorflow as tf
from larq_zoo.core import utils as zoo_utils

__all__ = [
    "ZOO_DIR_ENV",
    "ZOO_URL_ENV",
    "CACHE_DIR_ENV",
    "REGISTRY_FILE",
    "FORMAT_VERSION",
    "WeightsHashError",
    "zoo_dir",
    "checkout_zoo_dir",
    "packaged_zoo_dir",
    "is_packaged",
    "base_url",
    "origin_url",
    "registry_path",
    "load",
    "save",
    "canonical_name",
    "model_entry",
    "weights_names",
    "weights_entry",
    "fetch",
    "sha256",
    "check_name",
]

#: Environment variable: the zoo directory (registry, cards, weight files).
ZOO_DIR_ENV = "BNAS_TF_ZOO_DIR"
#: Environment variable: base URL the weight files are fetched from (a mirror).
ZOO_URL_ENV = "BNAS_TF_ZOO_URL"
#: Environment variable: Keras cache directory for fetched files (default ``~/.keras``).
CACHE_DIR_ENV = "BNAS_TF_CACHE_DIR"
REGISTRY_FILE = "registry.json"
#: Where a wheel carries the repository's ``zoo/`` (setup.cfg maps it as package data).
PACKAGED_SUBDIR = "published"
FORMAT_VERSION = 1
CACHE_SUBDIR = "bnas_tf"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class WeightsHashError(ValueError):
    """A fetched weights file does not have the SHA-256 the registry records."""


def check_name(name: str, what: str) -> str:
    """``name`` if it is a safe model/weights name (letters, digits, ``_.-``), else ValueError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{what} {name!r} is not a valid name: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter."
        )
    return name


def checkout_zoo_dir() -> Path:
    """The top-level ``zoo/`` of the source checkout this module runs from (it may not exist)."""
    return Path(__file__).resolve().parents[2] / "zoo"


def packaged_zoo_dir() -> Path:
    """The copy of the repository's ``zoo/`` that an installed wheel carries as package data
    (``bnas_tf/zoo/published/``; absent in a source checkout)."""
    return Path(__file__).resolve().parent / PACKAGED_SUBDIR


def zoo_dir() -> Path:
    """The zoo directory, the first of: ``$BNAS_TF_ZOO_DIR``; the source checkout's
    top-level ``zoo/`` (when it holds a registry); the installed package's copy of it
    (``packaged_zoo_dir``)."""
    override = os.environ.get(ZOO_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    checkout, packaged = checkout_zoo_dir(), packaged_zoo_dir()
    if (checkout / REGISTRY_FILE).is_file() or not (packaged / REGISTRY_FILE).is_file():
        return checkout
    return packaged


def is_packaged(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is the installed package's own copy of the zoo (read-only)."""
    return Path(directory).resolve() == packaged_zoo_dir()


def registry_path(directory: str | os.PathLike | None = None) -> Path:
    return Path(directory).resolve() / REGISTRY_FILE if directory else zoo_dir() / REGISTRY_FILE


def base_url(directory: str | os.PathLike | None = None) -> str:
    """``$BNAS_TF_ZOO_URL`` if set, else the zoo directory as a ``file://`` URL (ends in ``/``)."""
    url = os.environ.get(ZOO_URL_ENV)
    if not url:
        url = (Path(directory).resolve() if directory else zoo_dir()).as_uri()
    return url if url.endswith("/") else url + "/"


def origin_url(relative: str, registry: dict | None = None) -> str:
    """Where the weights file ``relative`` (a registry ``file``) is fetched from:
    ``$BNAS_TF_ZOO_URL/relative`` if set; else the zoo directory's own copy (``file://``)
    when it holds the file or the registry names no ``base_url``; else the registry's
    ``base_url`` (a mirror of the zoo directory, e.g. a release's download address)."""
    if not os.environ.get(ZOO_URL_ENV):
        remote = (load() if registry is None else registry).get("base_url")
        if remote and not (zoo_dir() / relative).is_file():
            return zoo_utils.slash_join(remote, relative)
    return zoo_utils.slash_join(base_url(), relative)


def load(directory: str | os.PathLike | None = None) -> dict:
    """The registry of ``directory`` (default ``zoo_dir``); an empty one if it has none."""
    path = registry_path(directory)
    if not path.exists():
        return {"format_version": FORMAT_VERSION, "models": {}}
    registry = read_json(path)
    version = registry.get("format_version") if isinstance(registry, dict) else None
    if version != FORMAT_VERSION or not isinstance(registry.get("models"), dict):
        raise ValueError(
            f"{path}: not a bnas_tf zoo registry of format_version {FORMAT_VERSION} "
            f"(format_version={version!r})."
        )
    return registry


def save(registry: dict, directory: str | os.PathLike | None = None) -> Path:
    """Write ``registry`` atomically (temporary file + rename)."""
    path = registry_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, registry)


def canonical_name(
    name: str, registry: dict | None = None, builtin: tuple[str, ...] = ()
) -> str | None:
    """The spelling under which ``name`` is known (case-insensitive), or None."""
    if not isinstance(name, str):
        return None
    known = list(builtin) + list((registry or {}).get("models", {}))
    for candidate in known:
        if candidate.lower() == name.lower():
            return candidate
    return None


def model_entry(model: str, registry: dict | None = None) -> dict:
    """The registry entry of ``model`` (``{}`` when it has none)."""
    registry = load() if registry is None else registry
    return registry["models"].get(model, {})


def weights_names(model: str, registry: dict | None = None) -> list[str]:
    """The published weights names of ``model``."""
    return sorted(model_entry(model, registry).get("weights", {}))


def weights_entry(model: str, name: str, registry: dict | None = None) -> dict:
    """The entry of weights ``name`` of ``model``.

    Raises:
        ValueError: unknown weights name; the message lists the available ones.
    """
    registry = load() if registry is None else registry
    entries = model_entry(model, registry).get("weights", {})
    if name not in entries:
        available = ", ".join(repr(n) for n in sorted(entries)) or "none published yet"
        raise ValueError(
            f"{model} has no published weights {name!r}; available: {available} "
            f"(registry {registry_path()}). Pass weights=None for random initialization or "
            "the path of a weights file."
        )
    return entries[name]


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(model: str, name: str, *, notop: bool = False, registry: dict | None = None) -> str:
    """Download (or find in the Keras cache) a published weights file, checked by SHA-256.

    Returns:
        The local path of the file, whose SHA-256 equals the registry's.

    Raises:
        ValueError: unknown model or weights name.
        WeightsHashError: the file at the origin does not have the registered hash; the
            bad copy is removed from the cache.
        OSError: the file cannot be fetched (the message names the URL).
    """
    registry = load() if registry is None else registry
    entry = weights_entry(model, name, registry)
    key = "notop_" if notop else ""
    relative, expected = entry[f"{key}file"], entry[f"{key}sha256"]
    origin = origin_url(relative, registry)
    cache_dir = os.environ.get(CACHE_DIR_ENV) or None
    if cache_dir:  # get_file falls back to /tmp/.keras for a directory that does not exist yet
        Path(cache_dir).expanduser().mkdir(parents=True, exist_ok=True)
    fname = Path(relative).name
    # A copy from a local zoo (file://) is instant: no "Downloading" line and progress bar.
    quiet = (
        contextlib.redirect_stdout(io.StringIO())
        if origin.startswith("file:")
        else contextlib.nullcontext()
    )
    try:
        with quiet:
            path = tf.keras.utils.get_file(
                fname,
                origin,
                file_hash=expected,
                hash_algorithm="sha256",
                cache_dir=cache_dir,
                cache_subdir=CACHE_SUBDIR,
            )
    except ValueError as error:  # get_file: "Incomplete or corrupted file detected"
        _remove_cached(fname, cache_dir)
        raise WeightsHashError(
            f"Refusing {model} weights {name!r}{' (notop)' if notop else ''} from {origin}: its "
            f"SHA-256 does not match the registry's {expected} ({error}). The downloaded copy "
            f"was deleted; check {ZOO_URL_ENV} or the mirror's file."
        ) from None
    except Exception as error:  # get_file wraps URL errors in a bare Exception
        raise OSError(f"Cannot fetch {model} weights {name!r} from {origin}: {error}") from None
    actual = sha256(path)
    if actual != expected:  # defence in depth: never hand out an unchecked file
        os.remove(path)
        raise WeightsHashError(
            f"Refusing {path}: SHA-256 {actual} differs from the registry's {expected}; deleted."
        )
    return path


def _remove_cached(fname: str, cache_dir: str | None) -> None:
    base = Path(cache_dir).expanduser() if cache_dir else Path.home() / ".keras"
    for candidate in (base / CACHE_SUBDIR / fname, Path("/tmp/.keras") / CACHE_SUBDIR / fname):
        if candidate.is_file():
            candidate.unlink()


def describe(entry: dict[str, Any]) -> str:
    """One line: architecture of a weights entry (for error messages)."""
    net = entry["network"]
    if is_group_genotype(net.get("genotype")):  # the genotype fixes the backbone
        architecture = (
            f"binary MobileNet of {len(net['genotype']['groups'])} blocks x width "
            f"{net['genotype']['width']}, groups {net['genotype']['groups']}"
        )
    else:
        architecture = (
            f"{net['layers']} cells x {net['init_channels']} channels, {net['stem']} stem"
        )
    return (
        f"{architecture}, "
        f"{net['binarization']}, input {tuple(net['input_shape'])}, {net['num_classes']} classes"
    )
