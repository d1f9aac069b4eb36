"""Shared plumbing of the absl programs: flags from config dataclasses, run start-up.

A program's flags mirror the fields of its config dataclass
([`SearchConfig`][bnas_tf.search.driver.SearchConfig],
[`TrainConfig`][bnas_tf.training.TrainConfig]), so a flagfile line ``--init_channels=16`` sets
``config.init_channels``:

```sh
bnas-search --flagfile=flags/demo_search.cfg --output_dir=runs/s
```
"""

from __future__ import annotations

from bnas_tf import quantizers, settings, sources
from bnas_tf.runs import prepare_output_dir

from collections.abc import Mapping
from typing import Any

from absl import app, flags, logging

__all__ = [
    "define_config_flags",
    "config_from_flags",
    "define_run_flags",
    "start_run",
    "check_data",
    "usage_error",
    "BINARIZATION_HELP",
    "DATA_HELP",
]

_NONE = "none"

#: Help of the binarization flags, shared by ``bnas-search`` and ``bnas-train``.
BINARIZATION_HELP = quantizers.BINARIZATION_HELP

#: Help of the data flags, shared by ``bnas-search``, ``bnas-train`` and ``bnas-tune``.
DATA_HELP = sources.DATA_HELP


def _kind(annotation: str) -> tuple[str, bool]:
    """``"int | None"`` -> ``("int", True)``."""
    parts = [p.strip() for p in str(annotation).split("|")]
    optional = "None" in parts
    base = [p for p in parts if p != "None"][0]
    return base, optional


def _parse_optional(parser, value):
    return None if value is None or str(value).lower() in (_NONE, "") else parser(value)


def define_config_flags(
    config_cls, help_texts: Mapping[str, str] | None = None, flag_values=flags.FLAGS
) -> None:
    """One flag per setting of ``config_cls`` (nested settings dataclasses flattened), defaulting
    to the field's default, with the field's help text (``bnas_tf.settings``; else
    ``help_texts[name]``).

    Optional fields accept ``none``; booleans accept ``--name`` / ``--noname``.
    """
    seen: dict[str, tuple[str, ...]] = {}
    for path, field in settings.flat_fields(config_cls):
        name = settings.flag_name(field)
        if name in seen:
            raise ValueError(f"flag --{name} is declared twice: {seen[name]} and {path}.")
        seen[name] = path
        base, optional = _kind(field.type)
        default = field.default
        text = (
            field.metadata.get("help") or (help_texts or {}).get(name) or settings.help_text(field)
        )
        if base == "bool" and not optional:
            flags.DEFINE_bool(name, default, text, flag_values=flag_values)
        elif optional:
            flags.DEFINE_string(
                name,
                _NONE if default is None else str(default),
                f"{text} ('{_NONE}' for unset)",
                flag_values=flag_values,
            )
        elif base == "int":
            flags.DEFINE_integer(name, default, text, flag_values=flag_values)
        elif base == "float":
            flags.DEFINE_float(name, default, text, flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, text, flag_values=flag_values)


def config_from_flags(config_cls, flag_values=flags.FLAGS):
    """Build ``config_cls`` from parsed flags (optional fields parsed from strings; nested
    settings through ``config_cls.from_flat`` where it has one)."""
    values: dict[str, Any] = {}
    for _, field in settings.flat_fields(config_cls):
        name = settings.flag_name(field)
        base, optional = _kind(field.type)
        value = flag_values[name].value
        if optional:
            parser = {"int": int, "float": float, "bool": _parse_bool, "str": str}[base]
            try:
                value = _parse_optional(parser, value)
            except ValueError:
                raise app.UsageError(
                    f"--{name}: cannot parse {value!r} as {base} or '{_NONE}'."
                ) from None
        values[name] = value
    try:
        if hasattr(config_cls, "from_flat"):
            return config_cls.from_flat(values)
        return config_cls(**values)
    except settings.SettingError as error:
        raise app.UsageError(error.as_flag()) from None


def usage_error(error: Exception) -> app.UsageError:
    """The ``UsageError`` a program shows for a bad setting: a library ``SettingError`` names
    the field, the program adds the ``--`` of its flag."""
    if isinstance(error, settings.SettingError):
        return app.UsageError(error.as_flag())
    return app.UsageError(str(error))


def _parse_bool(value: str) -> bool:
    lowered = str(value).lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise ValueError(value)


def define_run_flags(flag_values=flags.FLAGS, *, output_required: bool = True) -> None:
    """``--output_dir``, ``--overwrite`` and ``--resume``."""
    flags.DEFINE_string(
        "output_dir", None, "Directory of this run's outputs.", flag_values=flag_values
    )
    flags.DEFINE_bool(
        "overwrite", False, "Replace an existing run in --output_dir.", flag_values=flag_values
    )
    flags.DEFINE_bool(
        "resume",
        False,
        "Continue the run in --output_dir from its last checkpoint.",
        flag_values=flag_values,
    )
    if output_required:
        flags.mark_flag_as_required("output_dir", flag_values=flag_values)


def start_run(program: str, flag_values=flags.FLAGS):
    """Validate the run flags and prepare ``--output_dir``; write the run's flagfile into it."""
    if flag_values.overwrite and flag_values.resume:
        raise app.UsageError("--overwrite and --resume exclude each other.")
    try:
        output_dir = prepare_output_dir(
            flag_values.output_dir,
            overwrite=flag_values.overwrite,
            resume=flag_values.resume,
            program=program,
        )
    except (FileExistsError, PermissionError) as error:
        raise app.UsageError(str(error)) from None
    if not flag_values.resume:
        (output_dir / "flags.cfg").write_text(flag_values.flags_into_string())
    logging.info("%s: writing to %s", program, output_dir)
    return output_dir


def check_data(dataset: str, data_dir: str | None) -> None:
    """Fail before the run starts if the training split cannot be found."""
    from bnas_tf import data

    data.num_examples(dataset, "train", data_dir=data_dir)
