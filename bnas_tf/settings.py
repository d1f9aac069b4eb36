"""Settings declared once: a dataclass field carries its default, help text and check.

Every configurable object of the package (the [`Architect`][bnas_tf.search.architect.Architect],
[`SupernetOptions`][bnas_tf.search.supernet.SupernetOptions], the search methods' configs,
[`SearchConfig`][bnas_tf.search.driver.SearchConfig]) declares each of its settings with
``setting(...)``; the programs' flags, their help text and the validation are read from these
fields, so nothing is written twice:

    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class Stage:
    ...     epochs: int = setting(1, "Training epochs per stage.", check=positive)
    >>> validate(Stage(epochs=0))
    Traceback (most recent call last):
    ...
    bnas_tf.settings.SettingError: epochs must be positive, got 0.

Library errors name the field (``epochs``); the programs add the ``--`` of the flag
([`SettingError.as_flag`][bnas_tf.settings.SettingError.as_flag]).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "SettingError",
    "setting",
    "same_as",
    "validate",
    "help_text",
    "flag_name",
    "flat_fields",
    "positive",
    "non_negative",
    "one_of",
    "in_range",
]

#: A check returns ``None`` when the value is fine, else what is wrong ("must be positive").
Check = Callable[[Any], "str | None"]


class SettingError(ValueError):
    """A bad setting: ``field`` names it, ``problem`` says what is wrong.

    ``str(error)`` is ``"<field> <problem>"``; a program shows ``as_flag()``:
    ``"--<field> <problem>"``, with the other settings the problem ``mentions`` flagged too.
    """

    def __init__(self, field: str, problem: str, *, mentions: Iterable[str] = ()):
        self.field, self.problem, self.mentions = field, problem, tuple(mentions)
        super().__init__(f"{field} {problem}")

    def as_flag(self) -> str:
        problem = self.problem
        for name in self.mentions:
            problem = re.sub(rf"(?<![\w-]){re.escape(name)}\b", f"--{name}", problem)
        return f"--{self.field} {problem}"


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",  # noqa: A002  (the word absl and argparse use)
    *,
    check: Check | None = None,
    flag: str | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with its help text, its check and (optionally) a flag name of its own."""
    metadata = {"help": help, "check": check, "flag": flag}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def same_as(owner: type, name: str) -> Any:
    """A copy of ``owner``'s field ``name`` (default, help, check) for a config that nests
    or flattens it: the setting stays declared in one place."""
    source = {f.name: f for f in dataclasses.fields(owner)}[name]
    if source.default_factory is not dataclasses.MISSING:
        return dataclasses.field(
            default_factory=source.default_factory, metadata=dict(source.metadata)
        )
    return dataclasses.field(default=source.default, metadata=dict(source.metadata))


def help_text(field: dataclasses.Field) -> str:
    return field.metadata.get("help") or field.name.replace("_", " ")


def flag_name(field: dataclasses.Field) -> str:
    """The flag of a field: its own ``flag`` name, else the field name."""
    return field.metadata.get("flag") or field.name


def is_nested(field: dataclasses.Field) -> bool:
    """Whether a field holds a nested settings dataclass (e.g. ``SearchConfig.reduction``)."""
    return field.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(
        field.default_factory
    )


def flat_fields(cls: type, prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    """``(path, field)`` for every leaf setting of ``cls``, nested dataclasses included."""
    for field in dataclasses.fields(cls):
        if is_nested(field):
            yield from flat_fields(field.default_factory, (*prefix, field.name))
        else:
            yield (*prefix, field.name), field


def validate(obj: Any) -> Any:
    """Run every field's check (nested dataclasses too); raise ``SettingError`` for the first bad
    one, named by its flag. Returns ``obj``."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value)
            continue
        check = field.metadata.get("check")
        problem = check(value) if check is not None else None
        if problem:
            raise SettingError(flag_name(field), problem)
    return obj


# ---------------------------------------------------------------------- checks
def positive(value) -> str | None:
    return None if value is not None and value > 0 else f"must be positive, got {value}."


def non_negative(value) -> str | None:
    return None if value is not None and value >= 0 else f"must be >= 0, got {value}."


def optional(check: Check) -> Check:
    """``check``, or fine when the value is ``None``."""
    return lambda value: None if value is None else check(value)


def one_of(choices: Iterable[str]) -> Check:
    choices = tuple(choices)

    def check(value):
        if value in choices:
            return None
        return f"must be one of {', '.join(choices)}, got {value!r}."

    return check


def in_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    def check(value):
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if value is not None and above and below:
            return None
        return (
            f"must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, "
            f"got {value}."
        )

    return check
