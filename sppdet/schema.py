"""Declarative checks of the JSON files sppdet reads: a model's ``config.json`` and
``finetune.json``, a feature cache's ``manifest.json``.

A schema maps each key to a :class:`Key` (its check, and whether it must be there); checks
are small functions built by ``integer``, ``number``, ``text``, ``boolean``, ``list_of``,
``mapping`` and ``nullable``. :func:`validate` raises :class:`~sppdet.errors.InvalidValueError`
naming the file and the key (``test.nms_iou``, ``scales[2]``) with the reason, so a damaged
or hand-edited file is one clear line, never a traceback deep in the pipeline. Keys a schema
does not list are left alone (informational records, newer additions).

Shapes of arrays against the values (e.g. ``svm_W`` against ``classes``) are checked where
the arrays are read, with :func:`invalid` for the same message form.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from sppdet.errors import InvalidValueError


class Invalid(Exception):
    """Raised by a check: ``reason``, and the key path below the checked value."""

    def __init__(self, reason: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason, self.path = reason, path


Check = Callable[[Any], None]


@dataclass(frozen=True)
class Key:
    """One key of a schema: its check, and whether the key must be present."""

    check: Check
    required: bool = True


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _range(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    """An int (not a bool, not a float) in [lo, hi]."""

    def check(v: Any) -> None:
        if not isinstance(v, int) or isinstance(v, bool):
            raise Invalid(f"must be an integer{_range(lo, hi)}, got {_show(v)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise Invalid(f"must be an integer{_range(lo, hi)}, got {v}")

    return check


def number(lo: float | None = None, hi: float | None = None, positive: bool = False) -> Check:
    """A finite int or float (not a bool) in [lo, hi]; ``positive``: > 0."""

    def check(v: Any) -> None:
        what = "a positive number" if positive else f"a finite number{_range(lo, hi)}"
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise Invalid(f"must be {what}, got {_show(v)}")
        if (positive and v <= 0) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise Invalid(f"must be {what}, got {v}")

    return check


def text(choices: Sequence[str] | None = None, pattern: str | None = None,
         describe: str | None = None) -> Check:
    """A non-empty string, one of ``choices`` or matching ``pattern`` (``describe`` says
    what the pattern allows) if given."""

    def check(v: Any) -> None:
        if not isinstance(v, str) or not v:
            raise Invalid(f"must be a non-empty string, got {_show(v)}")
        if choices is not None and v not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}; got {_show(v)}")
        if pattern is not None and not re.fullmatch(pattern, v):
            raise Invalid(f"must be {describe or 'of the form ' + pattern}; got {_show(v)}")

    return check


def boolean() -> Check:
    def check(v: Any) -> None:
        if not isinstance(v, bool):
            raise Invalid(f"must be true or false, got {_show(v)}")

    return check


def nullable(inner: Check) -> Check:
    """``inner``, or null."""

    def check(v: Any) -> None:
        if v is not None:
            inner(v)

    return check


def list_of(item: Check, min_len: int = 0, unique: bool = False) -> Check:
    """A list whose items pass ``item``; at least ``min_len`` of them; ``unique``: no repeats."""

    def check(v: Any) -> None:
        if not isinstance(v, (list, tuple)):  # JSON gives lists; Python callers may pass tuples
            raise Invalid(f"must be a list, got {_show(v)}")
        if len(v) < min_len:
            raise Invalid(f"must list at least {min_len} item{'s' if min_len > 1 else ''}, got {len(v)}")
        for i, x in enumerate(v):
            try:
                item(x)
            except Invalid as e:
                raise Invalid(e.reason, (f"[{i}]", *e.path)) from None
        if unique:
            seen: set[Any] = set()
            for i, x in enumerate(v):
                if x in seen:
                    raise Invalid(f"repeats {_show(x)}", (f"[{i}]",))
                seen.add(x)

    return check


def mapping(fields: Mapping[str, Key] | None = None, values: Check | None = None) -> Check:
    """A JSON object: its keys checked by ``fields`` (others allowed), or every value by
    ``values``."""

    def check(v: Any) -> None:
        if not isinstance(v, dict):
            raise Invalid(f"must be an object ({{...}}), got {_show(v)}")
        if fields is not None:
            check_fields(v, fields)
        if values is not None:
            for k, x in v.items():
                try:
                    values(x)
                except Invalid as e:
                    raise Invalid(e.reason, (str(k), *e.path)) from None

    return check


def scalar() -> Check:
    """A plain JSON value: string, number, true/false or null, or a list of them (no
    nested objects)."""
    plain = (str, int, float, bool, type(None))

    def check(v: Any) -> None:
        if not isinstance(v, plain) and not (isinstance(v, list) and all(isinstance(x, plain) for x in v)):
            raise Invalid(f"must be a string, number, true/false, null or a list of them, got {_show(v)}")

    return check


def check_fields(obj: Mapping[str, Any], fields: Mapping[str, Key], require: bool = True) -> None:
    """Check ``obj``'s keys against ``fields`` (raises :class:`Invalid` with the key path);
    ``require=False`` checks only the keys present at the top level."""
    for name, key in fields.items():
        if name not in obj:
            if key.required and require:
                raise Invalid("missing", (name,))
            continue
        try:
            key.check(obj[name])
        except Invalid as e:
            raise Invalid(e.reason, (name, *e.path)) from None


def key_name(path: Sequence[str]) -> str:
    """``("test", "nms_iou")`` -> ``test.nms_iou``; ``("scales", "[2]")`` -> ``scales[2]``."""
    out = ""
    for part in path:
        out += part if part.startswith("[") or not out else f".{part}"
    return out


def invalid(file: str | os.PathLike, key: str, reason: str) -> InvalidValueError:
    """The error for ``key`` of ``file``: ``"FILE: key 'KEY': REASON"``."""
    return InvalidValueError(f"{file}: key {key!r}: {reason}")


def validate(obj: Any, fields: Mapping[str, Key], file: str | os.PathLike,
             prefix: Sequence[str] = (), require: bool = True) -> None:
    """Check the JSON object ``obj`` read from ``file`` against the schema ``fields``
    (``require=False``: only the top-level keys present, whatever ``Key.required`` says).

    Raises:
        InvalidValueError: ``"FILE: key 'KEY': REASON"`` for the first bad key.
    """
    try:
        if not isinstance(obj, dict):
            raise Invalid(f"must be an object ({{...}}), got {_show(obj)}")
        check_fields(obj, fields, require)
    except Invalid as e:
        raise invalid(file, key_name((*prefix, *e.path)) or "(top level)", e.reason) from None
