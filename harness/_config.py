"""Typed, validated harness configuration, loadable from YAML.

A config has four sections, each a frozen dataclass whose fields carry help text in
their metadata (``field.metadata["help"]``)::

    pool:     PoolSettings     which sandbox backend, how many sandboxes
    limits:   LimitsSettings   per-program hard limits (maps onto ``vmpool.Limits``)
    reward:   RewardSettings   reward shaping (maps onto ``rewards.RewardConfig``)
    grading:  GradingSettings  offline grading: chunk size, pass@k, error excerpts

Every value is checked when the object is built; :func:`load_config` also rejects unknown
keys and wrong types, and every message names the file and the dotted key path, e.g.
``configs/x.yaml: pool.size: must be >= 1, got 0``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rewards import RewardConfig
from vmpool import BACKENDS as VMPOOL_BACKENDS
from vmpool import Limits, PoolConfig

from ._errors import ConfigError

__all__ = [
    "GradingSettings",
    "HarnessConfig",
    "LimitsSettings",
    "PoolSettings",
    "RewardSettings",
    "config_from_dict",
    "describe_config",
    "load_config",
]

logger = logging.getLogger(__name__)

BACKENDS = VMPOOL_BACKENDS  # what vmpool.Pool accepts: namespace, microvm, auto
REWARD_KINDS = ("binary", "fraction", "weighted")
DEFAULT_KS = (1, 5, 10, 100)


def _help(text: str, **kwargs: Any) -> Any:
    """A dataclass field carrying ``text`` as its help (shown by ``describe_config``)."""
    return field(metadata={"help": text}, **kwargs)


def _require(ok: bool, key: str, message: str) -> None:
    """Raise a :class:`ConfigError` for ``key`` unless ``ok``."""
    if not ok:
        raise ConfigError(message, key=key)


def _positive(obj: Any, name: str, minimum: float = 1) -> None:
    value = getattr(obj, name)
    _require(value >= minimum, name, f"must be >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class PoolSettings:
    """Sandbox pool settings (mapped onto ``vmpool.PoolConfig``)."""

    backend: Literal["namespace", "microvm", "auto"] = _help(
        "sandbox backend: 'namespace' (bubblewrap), 'microvm' (QEMU microvm snapshot clones; "
        "KVM where it works, else TCG) or 'auto' (microvm where KVM really works, else namespace; "
        "the pool logs its choice)",
        default="namespace",
    )
    size: int | None = _help(
        "number of warm sandboxes, i.e. programs run in parallel; null = one per CPU",
        default=None,
    )
    max_programs_per_sandbox: int | None = _help(
        "recycle a sandbox after this many programs; null = the pool's default",
        default=None,
    )

    image_config: str | None = _help(
        "microvm: guest image YAML (e.g. configs/image.yaml); null = the default image",
        default=None,
    )
    accel: Literal["auto", "kvm", "tcg"] = _help(
        "microvm: 'auto' (KVM if a probe boot works, else TCG), 'kvm' or 'tcg'",
        default="auto",
    )
    pin_cpus: bool = _help(
        "namespace: pin each sandbox to one CPU, spread over the host by a machine-wide lease "
        "(faster hand-overs between a program and its tester); false where other heavy work shares the CPUs",
        default=True,
    )

    def __post_init__(self) -> None:
        _require(isinstance(self.pin_cpus, bool), "pin_cpus", f"must be true or false, got {self.pin_cpus!r}")
        _require(self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        _require(self.accel in ("auto", "kvm", "tcg"), "accel", f"must be auto, kvm or tcg, got {self.accel!r}")
        if self.size is not None:
            _positive(self, "size")
        if self.max_programs_per_sandbox is not None:
            _positive(self, "max_programs_per_sandbox")

    def resolved_size(self) -> int:
        """The pool size to use: ``size``, or the machine's CPU count when unset."""
        return self.size if self.size is not None else max(1, os.cpu_count() or 1)

    def to_pool_config(self, size: int | None = None) -> PoolConfig:
        """The ``vmpool.PoolConfig`` these settings describe.

        Args:
            size: pool size override (e.g. per Ray actor); default :meth:`resolved_size`.
        """
        kwargs: dict[str, Any] = {"backend": self.backend, "size": size or self.resolved_size(),
                                  "image_config": self.image_config, "accel": self.accel,
                                  "pin_cpus": self.pin_cpus}
        if self.max_programs_per_sandbox is not None:
            kwargs["max_programs_per_sandbox"] = self.max_programs_per_sandbox
        return PoolConfig(**kwargs)


@dataclass(frozen=True)
class LimitsSettings:
    """Per-program hard limits (mapped onto ``vmpool.Limits``)."""

    wall_s: float = _help(
        "time limit per program, seconds, when cpu_s is null; graders judge it on CPU time and set the "
        "wall-clock backstop from grading.wall_factor / wall_slack_s", default=10.0)
    cpu_s: float | None = _help("CPU-time limit per program, seconds; null = wall_s", default=None)
    memory_mb: int = _help("address-space limit per program, MiB (>= 32)", default=512)
    max_processes: int = _help("processes a program may have at once", default=32)
    max_open_files: int = _help("open file descriptors per program (>= 16)", default=64)
    output_bytes: int = _help("cap on each of stdout, stderr and the report channel, bytes", default=1 << 20)
    file_size_bytes: int = _help("largest file a program may write, bytes", default=16 << 20)

    def __post_init__(self) -> None:
        _require(self.wall_s > 0, "wall_s", f"must be > 0, got {self.wall_s!r}")
        if self.cpu_s is not None:
            _require(self.cpu_s > 0, "cpu_s", f"must be > 0 or null, got {self.cpu_s!r}")
        _positive(self, "memory_mb", 32)
        _positive(self, "max_processes")
        _positive(self, "max_open_files", 16)
        _positive(self, "output_bytes")
        _positive(self, "file_size_bytes")

    def to_limits(self) -> Limits:
        """Build the equivalent ``vmpool.Limits``.

        Returns:
            A ``vmpool.Limits`` with the same values.
        """
        return Limits(**dataclasses.asdict(self))


@dataclass(frozen=True)
class RewardSettings:
    """Reward shaping (mapped onto ``rewards.RewardConfig``; same defaults and rules)."""

    kind: Literal["binary", "fraction", "weighted"] = _help(
        "'binary': pass_bonus on a full pass, else 0; 'fraction': share of tests passed; "
        "'weighted': pass_bonus on a full pass + fraction_weight * share of tests passed, "
        "with the penalties below replacing it when there is no code or it does not compile",
        default=RewardConfig.kind,
    )
    pass_bonus: float = _help("reward of a full pass ('binary', 'weighted'); > 0", default=RewardConfig.pass_bonus)
    fraction_weight: float = _help(
        "weight of the share of tests passed ('weighted'); >= 0", default=RewardConfig.fraction_weight
    )
    no_code_penalty: float = _help(
        "reward when the completion holds no code ('weighted'); <= 0", default=RewardConfig.no_code_penalty
    )
    syntax_error_penalty: float = _help(
        "reward when the code does not compile ('weighted'); <= 0", default=RewardConfig.syntax_error_penalty
    )

    def __post_init__(self) -> None:
        _require(self.kind in REWARD_KINDS, "kind", f"must be one of {', '.join(REWARD_KINDS)}, got {self.kind!r}")
        for name in ("pass_bonus", "fraction_weight", "no_code_penalty", "syntax_error_penalty"):
            value = getattr(self, name)
            _require(math.isfinite(value), name, f"must be a finite number, got {value!r}")
        _require(self.pass_bonus > 0, "pass_bonus", f"must be > 0, got {self.pass_bonus!r}")
        _require(self.fraction_weight >= 0, "fraction_weight", f"must be >= 0, got {self.fraction_weight!r}")
        for name in ("no_code_penalty", "syntax_error_penalty"):
            value = getattr(self, name)
            # A positive value would reward broken output.
            _require(value <= 0, name, f"must be <= 0, got {value!r}")

    def to_reward_config(self) -> RewardConfig:
        """Build the equivalent ``rewards.RewardConfig``.

        Returns:
            The ``rewards.RewardConfig``.

        Raises:
            ConfigError: when the rewards package rejects a value (key ``reward``).
        """
        try:
            return RewardConfig(**dataclasses.asdict(self))
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc), key="reward") from exc


@dataclass(frozen=True)
class GradingSettings:
    """Offline grading settings."""

    batch_size: int = _help(
        "programs graded per chunk; results are flushed after each chunk, so an interruption loses at most one chunk",
        default=256,
    )
    ks: tuple[int, ...] = _help(
        "pass@k values to report (each only when every task has at least k graded samples)",
        default=DEFAULT_KS,
    )
    error_chars: int = _help("longest error excerpt kept per result row, characters", default=300)
    wall_factor: float = _help(
        "the wall-clock backstop of a run is wall_factor x time limit + wall_slack_s (the time limit itself "
        "is judged on CPU time, so a loaded host does not turn correct programs into timeouts); >= 1",
        default=3.0,
    )
    wall_slack_s: float = _help("seconds added to the wall-clock backstop; >= 0", default=2.0)

    def __post_init__(self) -> None:
        _positive(self, "batch_size")
        _positive(self, "error_chars", 0)
        _require(self.wall_factor >= 1, "wall_factor", f"must be >= 1, got {self.wall_factor!r}")
        _require(self.wall_slack_s >= 0, "wall_slack_s", f"must be >= 0, got {self.wall_slack_s!r}")
        _require(len(self.ks) > 0, "ks", "must list at least one k")
        for k in self.ks:
            _require(
                isinstance(k, int) and not isinstance(k, bool) and k >= 1,
                "ks",
                f"every k must be an integer >= 1, got {k!r}",
            )
        _require(len(set(self.ks)) == len(self.ks), "ks", f"must not repeat a k, got {list(self.ks)}")


@dataclass(frozen=True)
class HarnessConfig:
    """The whole harness configuration."""

    pool: PoolSettings = field(default_factory=PoolSettings, metadata={"help": "sandbox pool"})
    limits: LimitsSettings = field(default_factory=LimitsSettings, metadata={"help": "per-program limits"})
    reward: RewardSettings = field(default_factory=RewardSettings, metadata={"help": "reward shaping"})
    grading: GradingSettings = field(default_factory=GradingSettings, metadata={"help": "offline grading"})

    def with_overrides(self, *, workers: int | None = None, backend: str | None = None) -> HarnessConfig:
        """Return a copy with the pool size and/or backend replaced (CLI flags win over the file).

        Args:
            workers: new pool size, or None to keep.
            backend: new backend, or None to keep.

        Returns:
            The new config.

        Raises:
            ConfigError: if an override is invalid.
        """
        pool = self.pool
        try:
            if workers is not None:
                pool = dataclasses.replace(pool, size=workers)
            if backend is not None:
                pool = dataclasses.replace(pool, backend=backend)  # type: ignore[arg-type]  # validated in PoolSettings
        except ConfigError as exc:
            raise exc.located("pool", "command line") from None
        return dataclasses.replace(self, pool=pool)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert it (int -> float, list -> tuple).

    Raises:
        ConfigError: naming ``key`` when the value has the wrong type.
    """
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", key=key)
    if origin is Literal:
        # The dataclass's own check gives the better message (lists the choices).
        if not isinstance(value, str):
            raise ConfigError(f"expected one of {_type_name(tp)}, got {value!r}", key=key)
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", key=key)
        (elem,) = typing.get_args(tp)[:1]
        return tuple(_convert(v, elem, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", key=key)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", key=key)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {value!r}", key=key)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", key=key)
        return value
    raise ConfigError(f"unsupported field type {tp!r}", key=key)  # a bug in this module, not in the file


def _build(cls: type, data: Any, key: str) -> Any:
    """Build dataclass ``cls`` from mapping ``data`` found at dotted path ``key``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping of settings, got {data!r}", key=key)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        bad = unknown[0]
        raise ConfigError(
            f"unknown key (known keys: {', '.join(names)})", key=".".join(p for p in (key, str(bad)) if p)
        )
    kwargs = {
        name: _convert(data[name], hints[name], ".".join(p for p in (key, name) if p)) for name in names if name in data
    }
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.located(key) from None


def config_from_dict(data: Mapping[str, Any] | None, source: str = "") -> HarnessConfig:
    """Build a :class:`HarnessConfig` from a plain mapping (e.g. parsed YAML).

    Args:
        data: the settings; missing sections and keys take their defaults.
        source: where the mapping came from, used in error messages.

    Returns:
        The validated config.

    Raises:
        ConfigError: on an unknown key, a wrong type or a bad value; the message names
            ``source`` and the dotted key path.
    """
    try:
        return _build(HarnessConfig, data, "")
    except ConfigError as exc:
        raise exc.located("", source) from None


def load_config(path: str | os.PathLike[str]) -> HarnessConfig:
    """Load and validate a YAML config file.

    Args:
        path: the YAML file.

    Returns:
        The validated :class:`HarnessConfig`.

    Raises:
        ConfigError: when the file is missing, is not valid YAML, or holds an unknown
            key or a bad value (message names the file and the key path).
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror or exc}", source=source) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", source=where) from exc
    config = config_from_dict(data, source)
    logger.debug("loaded config %s: %s", source, config)
    return config


def describe_config(cls: type = HarnessConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """List every setting with its default and help text.

    Args:
        cls: the config dataclass to describe (the whole config by default).
        prefix: dotted path of ``cls`` inside the whole config.

    Returns:
        ``(key path, default, help)`` triples, sections first-to-last as declared.
    """
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = ".".join(p for p in (prefix, f.name) if p)
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe_config(hints[f.name], key))
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows
