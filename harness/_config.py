"""Typed, validated harness configuration, loadable from YAML.

A config has four sections. Three are the packages' own config classes, so a value is
described and validated in exactly one place; the fourth is the harness's own::

    pool:     vmpool.PoolConfig    which sandbox backend, how many sandboxes, their start-up
    limits:   vmpool.Limits        per-program hard limits
    reward:   rewards.RewardConfig reward shaping
    grading:  GradingSettings      offline grading: chunk size, pass@k, error excerpts, backstop

Each is a frozen dataclass whose fields carry help text in their metadata
(``field.metadata["help"]``). One loader (:func:`vmpool.settings_from_dict`) reads them all;
it reports every unknown key, wrong type and bad value at once, each with the file and the
dotted key path, e.g. ``configs/x.yaml: pool.size: must be an integer >= 1 or null, got 0``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewards import RewardConfig
from vmpool import BACKENDS as VMPOOL_BACKENDS
from vmpool import Limits, PoolConfig, SettingsError, describe_settings, load_settings, settings_from_dict

from ._errors import ConfigError

__all__ = ["GradingSettings", "HarnessConfig", "config_from_dict", "describe_config", "load_config"]

logger = logging.getLogger(__name__)

BACKENDS = VMPOOL_BACKENDS  # what vmpool.Pool accepts: namespace, microvm, auto
# pass@k reported when grading.ks is null: every k up to 10, then these, as far as the samples allow.
AUTO_KS_ABOVE_10 = (20, 50, 100, 200, 500, 1000)


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
class GradingSettings:
    """Offline grading settings."""

    batch_size: int = _help(
        "programs graded per chunk; results are flushed after each chunk, so an interruption loses at most one chunk",
        default=256,
    )
    ks: tuple[int, ...] | None = _help(
        "pass@k values to report, each only when every task has at least k graded samples; null = every k "
        "from 1 to the smallest per-task sample count (up to 10; beyond it 20, 50, 100, 200, 500, 1000)",
        default=None,
    )
    error_chars: int = _help("longest error excerpt kept per result row, characters", default=300)
    wall_factor: float = _help(
        "the wall-clock backstop of a run is wall_factor x time limit + wall_slack_s (the time limit itself "
        "is judged on CPU time, so a loaded host does not turn correct programs into timeouts); >= 1",
        default=3.0,
    )
    wall_slack_s: float = _help("seconds added to the wall-clock backstop; >= 0", default=2.0)
    stop_at_first_failure: bool | None = _help(
        "stdio problems (one run per test case): stop a sample at its first failed case, the rest counting as "
        "failed; null = when reward.kind is binary (which cannot use the rest)",
        default=None,
    )
    details: bool = _help(
        "result rows also carry the extracted program (code) and per-test details (details: JSON list of "
        "index, passed, status, input, expected, actual, error, each cut short)",
        default=False,
    )
    failing_time_budget: float | None = _help(
        "stdio problems: stop a sample once its failing cases used this many time limits in total (a timeout "
        "costs one), the rest counting as failed, so a looping completion costs about this much, not one time "
        "limit per case; correct programs never spend it; null = no budget",
        default=2.0,
    )

    def __post_init__(self) -> None:
        if self.failing_time_budget is not None:
            _require(self.failing_time_budget > 0, "failing_time_budget",
                     f"must be > 0 or null, got {self.failing_time_budget!r}")
        _positive(self, "batch_size")
        _positive(self, "error_chars", 0)
        _require(self.wall_factor >= 1, "wall_factor", f"must be >= 1, got {self.wall_factor!r}")
        _require(self.wall_slack_s >= 0, "wall_slack_s", f"must be >= 0, got {self.wall_slack_s!r}")
        if self.ks is None:
            return
        _require(len(self.ks) > 0, "ks", "must list at least one k (or be null: every k the samples allow)")
        for k in self.ks:
            _require(
                isinstance(k, int) and not isinstance(k, bool) and k >= 1,
                "ks",
                f"every k must be an integer >= 1, got {k!r}",
            )
        _require(len(set(self.ks)) == len(self.ks), "ks", f"must not repeat a k, got {list(self.ks)}")


@dataclass(frozen=True)
class HarnessConfig:
    """The whole harness configuration: the packages' own config classes, one section each."""

    pool: PoolConfig = field(default_factory=PoolConfig, metadata={"help": "sandbox pool (vmpool.PoolConfig)"})
    limits: Limits = field(default_factory=Limits, metadata={"help": "per-program limits (vmpool.Limits)"})
    reward: RewardConfig = field(default_factory=RewardConfig,
                                 metadata={"help": "reward shaping (rewards.RewardConfig)"})
    grading: GradingSettings = field(default_factory=GradingSettings, metadata={"help": "offline grading"})

    def with_overrides(self, *, workers: int | None = None, backend: str | None = None,
                       timeout_s: float | None = None, memory_mb: int | None = None,
                       reward_kind: str | None = None, ks: Sequence[int] | None = None,
                       details: bool | None = None) -> HarnessConfig:
        """Return a copy with common keys replaced (CLI flags win over the file); None keeps a key.

        Args:
            workers: ``pool.size``.
            backend: ``pool.backend``.
            timeout_s: the time limit per program: ``limits.cpu_s`` (and ``limits.wall_s``).
            memory_mb: ``limits.memory_mb``.
            reward_kind: ``reward.kind``.
            ks: ``grading.ks``.
            details: ``grading.details``.

        Returns:
            The new config.

        Raises:
            ConfigError: if an override is invalid (key ``pool.size``... , source "command line").
        """
        sections: dict[str, tuple[Any, dict[str, Any]]] = {
            "pool": (self.pool, {"size": workers, "backend": backend}),
            "limits": (self.limits, {"cpu_s": timeout_s, "wall_s": timeout_s, "memory_mb": memory_mb}),
            "reward": (self.reward, {"kind": reward_kind}),
            "grading": (self.grading, {"ks": None if ks is None else tuple(ks), "details": details}),
        }
        replaced: dict[str, Any] = {}
        for name, (section, changes) in sections.items():
            changes = {k: v for k, v in changes.items() if v is not None}
            if not changes:
                continue
            try:
                replaced[name] = dataclasses.replace(section, **changes)
            except SettingsError as exc:
                raise _config_error(exc, name, "command line") from None
            except ConfigError as exc:
                raise exc.located(name, "command line") from None
        return dataclasses.replace(self, **replaced)

    def grader_options(self) -> dict[str, Any]:
        """Keyword arguments of ``rewards.Grader`` these settings ask for (backstop and stop rule)."""
        grading = self.grading
        first = grading.stop_at_first_failure
        return {
            "wall_factor": grading.wall_factor,
            "wall_slack_s": grading.wall_slack_s,
            "stop_at_first_failure": self.reward.kind == "binary" if first is None else first,
            "failing_time_budget": grading.failing_time_budget,
            "details": grading.details,
        }


def _config_error(exc: SettingsError, prefix: str = "", source: str = "") -> ConfigError:
    """The harness's error for a loader's: the same problems, keys under ``prefix``."""
    return ConfigError(exc.message, exc.key, exc.source, list(exc.problems)).located(prefix, source)


def config_from_dict(data: Mapping[str, Any] | None, source: str = "") -> HarnessConfig:
    """Build a :class:`HarnessConfig` from a plain mapping (e.g. parsed YAML).

    Args:
        data: the settings; missing sections and keys (and ``null`` for a key that is not
            optional) take their defaults.
        source: where the mapping came from, used in error messages.

    Returns:
        The validated config.

    Raises:
        ConfigError: every unknown key, wrong type and bad value at once (``problems``),
            each line naming ``source`` and the dotted key path.
    """
    try:
        return settings_from_dict(HarnessConfig, data, source)
    except SettingsError as exc:
        raise _config_error(exc) from None


def load_config(path: str | os.PathLike[str]) -> HarnessConfig:
    """Load and validate a YAML config file.

    Args:
        path: the YAML file.

    Returns:
        The validated :class:`HarnessConfig`.

    Raises:
        ConfigError: when the file is missing, is not valid YAML (with the line), or holds
            unknown keys or bad values (all of them, each with the file and key path).
    """
    try:
        config = load_settings(HarnessConfig, path)
    except SettingsError as exc:
        raise _config_error(exc) from None
    logger.debug("loaded config %s: %s", path, config)
    return config


def describe_config(cls: type = HarnessConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """List every setting with its default and help text.

    Args:
        cls: the config dataclass to describe (the whole config by default).
        prefix: dotted path of ``cls`` inside the whole config.

    Returns:
        ``(key path, default, help)`` triples, sections first-to-last as declared.
    """
    return describe_settings(cls, prefix)


def config_to_yaml(config: HarnessConfig | None = None, *, comments: bool = True) -> str:
    """A YAML config file holding ``config`` (every key, help text as comments), ready to edit.

    ``load_config`` reads it back to an equal config.

    Args:
        config: the config to write (default: the built-in defaults).
        comments: put each key's help text above it.

    Returns:
        The YAML text.
    """
    import textwrap

    import yaml

    config = config or HarnessConfig()
    helps = {key: text for key, _, text in describe_config()}
    lines = ["# harness config: every key, with its help (python -m harness config --yaml)."]
    for section in dataclasses.fields(HarnessConfig):
        lines.append("")
        lines.append(f"{section.name}:")
        value = getattr(config, section.name)
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            item = list(item) if isinstance(item, tuple) else item
            text = yaml.safe_dump(item, default_flow_style=True, width=10_000).strip()
            text = text[:-4].rstrip() if text.endswith("\n...") else text.removesuffix("...").strip()
            if comments:
                help_text = helps.get(f"{section.name}.{f.name}", "")
                lines += ["  # " + part for part in textwrap.wrap(help_text, 96)]
            lines.append(f"  {f.name}: {text}")
    return "\n".join(lines) + "\n"
