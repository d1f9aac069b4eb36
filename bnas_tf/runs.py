"""Run directories: created safely, written atomically, never overwritten by surprise.

Every program writes into its own ``--output_dir``. A directory that is not empty
is refused unless ``overwrite=True``, and even then only a directory that a bnas-tf
program made (it holds ``MARKER``) is cleared: a user's own folder is never
deleted. Results are written to a temporary file and renamed, so a killed run
never leaves a half-written ``genotype.json`` or ``metrics.json``.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> out = prepare_output_dir(root / "search", overwrite=True, program="bnas-search")
    >>> path = write_json(out / "metrics.json", {"accuracy": 0.9})
    >>> read_json(out / "metrics.json")
    {'accuracy': 0.9}
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "MARKER",
    "prepare_output_dir",
    "write_json",
    "read_json",
    "atomic_write_text",
    "atomic_path",
]

MARKER = "bnas_run.json"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same directory and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` (same suffix) that replaces ``path`` on success.

    For files written by other libraries (``model.save_weights``): a failure or a kill
    while writing leaves ``path`` as it was, never half-written:

    ```python
    with atomic_path("run/weights.h5") as tmp:
        model.save_weights(str(tmp))
    ```
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    os.unlink(tmp)  # writers such as h5py create the file themselves
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(
        path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n"
    )


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; errors name the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: malformed JSON ({error}).") from None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def prepare_output_dir(
    path: str | os.PathLike, *, overwrite: bool = False, resume: bool = False, program: str = "bnas"
) -> Path:
    """Create ``path`` for a new run (or reuse it with ``resume``) and check it is writable.

    Raises:
        FileExistsError: ``path`` is not empty and neither ``overwrite`` nor ``resume``
            is set, or ``overwrite`` is set on a directory no bnas-tf program made.
        PermissionError: ``path`` cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--output_dir {path} exists and is not a directory.")
    if path.is_dir() and any(path.iterdir()) and not resume:
        if not overwrite:
            raise FileExistsError(
                f"--output_dir {path} is not empty; pass --overwrite to replace that run, "
                "or choose another directory."
            )
        if not (path / MARKER).exists():
            raise FileExistsError(
                f"--output_dir {path} is not empty and was not made by bnas-tf (no {MARKER}); "
                "refusing to delete it even with --overwrite."
            )
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise PermissionError(
            f"--output_dir {path} is not writable: {error.strerror or error}."
        ) from None
    if not (path / MARKER).exists():
        write_json(
            path / MARKER, {"program": program, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        )
    return path
