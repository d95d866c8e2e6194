"""One loader for every settings dataclass: from a mapping or a YAML file, checked by type hints.

Every config of the three packages (``vmpool.PoolConfig``, ``vmpool.Limits``,
``vmpool.ImageConfig``, ``rewards.RewardConfig``, ``harness.HarnessConfig``) is a frozen
dataclass whose fields carry their help text in ``field.metadata["help"]`` and whose
``__post_init__`` validates the values, raising :class:`SettingsError` with the field's name.
This module builds any of them from plain data:

* nested dataclass fields are sections (``pool: {size: 2}``);
* each value is checked against the field's annotation (``int``, ``float``, ``bool``,
  ``str``, ``X | None``, ``tuple[X, ...]`` from a list, nested dataclasses); an int is
  accepted for a float, a bool never for a number;
* ``null`` for a field that is not optional means "the default";
* a constructor's :class:`SettingsError` (any ``ValueError`` with a ``problems`` list of
  ``(field, message)`` pairs) is reported under the section's path;
* every problem is collected before anything is raised, so a file with three unknown keys
  and a bad type reports all four at once, each with its dotted path.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from ._errors import VmpoolError

__all__ = ["SettingsError", "describe_settings", "load_settings", "settings_from_dict"]

T = TypeVar("T")


class SettingsError(VmpoolError, ValueError):
    """One or more invalid settings; each problem names its key (and file, when loaded from one).

    Args:
        message: what is wrong with the first (often only) problem, e.g. ``"must be >= 1, got 0"``.
        key: its field or dotted key path, e.g. ``"size"`` or ``"pool.size"``.
        source: the file the settings came from (may be empty).
        owner: the class whose field ``key`` is, when raised by a constructor
            (``"PoolConfig"``): shown as ``PoolConfig.size`` until a loader places the key.
        problems: every ``(key, message)`` found; default ``[(key, message)]``.

    Attributes:
        problems: the ``(key path, message)`` pairs, in file order.
    """

    def __init__(self, message: str, key: str = "", source: str = "", *, owner: str = "",
                 problems: list[tuple[str, str]] | None = None) -> None:
        self.message = message
        self.key = key
        self.source = source
        self.owner = owner
        self.problems = problems if problems is not None else [(key, message)]
        super().__init__(message)

    def __str__(self) -> str:
        lines = []
        for key, message in self.problems:
            where = f"{self.owner}.{key}" if self.owner and key else key
            lines.append(": ".join(p for p in (self.source, where, message) if p))
        return "\n".join(lines)


_WHAT = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list, each {_type_name(typing.get_args(tp)[0])}"
    return str(_WHAT.get(tp) or getattr(tp, "__name__", tp))


class _Invalid(Exception):
    """A value that does not fit its annotation (internal: collected as a problem)."""


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _convert(value: Any, tp: Any, key: str, problems: list[tuple[str, str]]) -> Any:
    """``value`` checked against annotation ``tp`` and converted (int -> float, list -> tuple).

    Raises:
        _Invalid: the value has the wrong type (the message says what was expected).
    """
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key, problems)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and typing.get_origin(others[0]) is tuple:
            return _convert(value, others[0], key, problems)  # its own message says which item is wrong
        for arg in args:
            if arg is not type(None):
                try:
                    return _convert(value, arg, key, problems)
                except _Invalid:
                    continue
        raise _Invalid(f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _Invalid(f"must be {_type_name(tp)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(f"expected a list, got {value!r}")
        elem = typing.get_args(tp)[0]
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_convert(item, elem, f"{key}[{i}]", problems))
            except _Invalid as exc:
                raise _Invalid(f"item {i}: {exc}") from None
        return tuple(out)
    if tp not in (bool, int, float, str):
        raise TypeError(f"settings field {key} has an annotation the loader does not handle: {tp!r}")
    kinds = (int, float) if tp is float else (tp,)
    if not isinstance(value, kinds) or (tp is not bool and isinstance(value, bool)):
        raise _Invalid(f"expected {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def _build(cls: type, data: Any, key: str, problems: list[tuple[str, str]]) -> Any:
    """Dataclass ``cls`` built from ``data`` found at ``key``; ``None`` when anything in it is wrong."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.append((key, f"expected a mapping of settings, got {data!r}"))
        return None
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    # Keys are checked in file order. An unknown key does not stop the known ones from
    # being checked (every problem at once); a value of the wrong type stops this
    # section's constructor, which cannot take it.
    kwargs: dict[str, Any] = {}
    wrong_type = False
    for name, value in data.items():
        path = _join(key, str(name))
        if name not in fields:
            problems.append((path, f"unknown key (known keys here: {', '.join(fields)})"))
            continue
        tp = hints[name]
        optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
        if value is None and not optional:
            continue  # null: the field's default
        before = len(problems)
        try:
            kwargs[name] = _convert(value, tp, path, problems)
        except _Invalid as exc:
            problems.append((path, str(exc)))
        wrong_type = wrong_type or len(problems) > before
    if wrong_type:
        return None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        # A constructor's SettingsError (or any ValueError with the same ``problems``
        # attribute, e.g. harness.ConfigError) names its field: place it under this section.
        found = getattr(exc, "problems", None)
        if isinstance(found, list) and found:
            problems.extend((_join(key, k), m) for k, m in found)
        else:
            problems.append((key, str(exc)))
    return None


def settings_from_dict(cls: type[T], data: Mapping[str, Any] | None, source: str = "") -> T:
    """Build settings dataclass ``cls`` from a plain mapping (parsed YAML, JSON, keyword arguments).

    Args:
        cls: the dataclass (``PoolConfig``, ``ImageConfig``, ``HarnessConfig``...).
        data: its settings; a missing key (or ``null`` for a non-optional one) takes the default.
        source: where ``data`` came from, put in front of every message.

    Returns:
        The validated instance.

    Raises:
        SettingsError: every unknown key, wrong type and rejected value at once, each with
            its dotted key path (``problems``).
    """
    problems: list[tuple[str, str]] = []
    built = _build(cls, data, "", problems)
    if problems:
        key, message = problems[0]
        raise SettingsError(message, key, source, problems=problems)
    return typing.cast(T, built)


def load_settings(cls: type[T], path: str | os.PathLike[str]) -> T:
    """Load settings dataclass ``cls`` from a YAML file (see :func:`settings_from_dict`).

    Raises:
        SettingsError: the file is unreadable or not YAML (with the line), or its settings
            are wrong; every message names the file.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read settings file: {exc.strerror or exc}", source=source) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise SettingsError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", source=where) from exc
    return settings_from_dict(cls, data, source)


def describe_settings(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """Every setting of ``cls`` (sections flattened) with its default and help text.

    Args:
        cls: a settings dataclass.
        prefix: dotted path of ``cls`` inside an enclosing config.

    Returns:
        ``(key path, default as repr, help)`` triples in declaration order.
    """
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = _join(prefix, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe_settings(hints[f.name], key))
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows
