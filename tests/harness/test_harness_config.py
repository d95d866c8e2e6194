"""Config loading and validation: unknown keys, bad types and values name file and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import ConfigError, HarnessConfig, config_from_dict, describe_config, load_config
from rewards import RewardConfig
from vmpool import Limits, PoolConfig, SettingsError

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["default.yaml", "fast.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(REPO / "configs" / name)
    assert isinstance(config, HarnessConfig)


def test_values_are_loaded_and_converted(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "pool: {size: 3, backend: auto}\nlimits: {wall_s: 2, memory_mb: 64}\ngrading: {ks: [1, 3]}\n"
    )
    config = load_config(path)
    assert config.pool.size == 3 and config.pool.backend == "auto"
    assert config.limits.wall_s == 2.0 and isinstance(config.limits.wall_s, float)
    assert config.grading.ks == (1, 3)
    assert config.reward.kind == "binary"  # untouched sections keep defaults


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")) == HarnessConfig()


def test_bad_value_names_file_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "pool:\n  size: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: pool.size: must be an integer >= 1 or null, got 0"
    assert info.value.key == "pool.size"


def test_unknown_key_names_key_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "limits:\n  wall_seconds: 3\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: limits\.wall_seconds: unknown key") as info:
        load_config(path)
    assert "wall_s" in str(info.value)  # lists the keys that do exist


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": ray: unknown key"):
        load_config(_write(tmp_path, "ray: {}\n"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("pool: {size: two}", "pool.size: expected an integer or null, got 'two'"),
        ("pool: {size: 1.5}", "pool.size: expected an integer or null"),
        ("pool: {tmpfs_mb: 2}", "pool.tmpfs_mb: must be an integer >= 4, got 2"),
        ("pool: {start_timeout_s: 0}", "pool.start_timeout_s: must be > 0"),
        ("grading: {ks: [1, x]}", "grading.ks: item 1: expected an integer, got 'x'"),
        ("pool: {backend: docker}", "pool.backend: must be one of namespace, microvm, auto, got 'docker'"),
        ("limits: {wall_s: 0}", "limits.wall_s: must be > 0"),
        ("limits: {wall_s: true}", "limits.wall_s: expected a number"),
        ("limits: {memory_mb: 16}", "limits.memory_mb: must be an integer >= 32, got 16"),
        ("limits: {cpu_s: -1}", "limits.cpu_s: must be > 0"),
        ("reward: {kind: partial}", "reward.kind: is 'partial': set it to one of binary, fraction, weighted"),
        ("grading: {batch_size: 0}", "grading.batch_size: must be >= 1"),
        ("grading: {ks: [1, 0]}", "grading.ks: every k must be an integer >= 1, got 0"),
        ("grading: {ks: 5}", "grading.ks: expected a list"),
        ("pool: [1, 2]", "pool: expected a mapping"),
    ],
)
def test_bad_values(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert fragment in str(info.value)


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "pool:\n  size: [1\n")
    with pytest.raises(ConfigError, match=r"x\.yaml:\d+: invalid YAML"):
        load_config(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_config("/nonexistent/config.yaml")


def test_dataclasses_validate_directly() -> None:
    """Each section is the package's own class, validated once, in that class."""
    with pytest.raises(SettingsError, match=r"^PoolConfig\.size: must be an integer >= 1 or null, got 0$") as info:
        PoolConfig(size=0)
    assert info.value.key == "size"
    with pytest.raises(SettingsError, match=r"^Limits\.wall_s: must be > 0"):
        Limits(wall_s=0)
    with pytest.raises(SettingsError, match=r"^RewardConfig\.pass_bonus: is 0: set it to a number > 0"):
        RewardConfig(pass_bonus=0)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "pool: {colour: red, size: 0}\nlimits: {wall_seconds: 3}\nray: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [key for key, _ in info.value.problems] == ["pool.colour", "pool.size", "limits.wall_seconds", "ray"]
    lines = str(info.value).splitlines()
    assert len(lines) == 4 and all(line.startswith(f"{path}: ") for line in lines)


def test_every_pool_field_is_settable(tmp_path: Path) -> None:
    text = ("pool: {python: /usr/bin/python3, tmpfs_mb: 32, start_timeout_s: 9, transport_slack_s: 2,\n"
            "       max_programs_per_sandbox: 50, pin_cpus: false, accel: tcg}\n")
    pool = load_config(_write(tmp_path, text)).pool
    assert isinstance(pool, PoolConfig)
    assert (pool.tmpfs_mb, pool.start_timeout_s, pool.transport_slack_s, pool.max_programs_per_sandbox) == (32, 9.0, 2.0, 50)
    assert pool.pin_cpus is False and pool.accel == "tcg"


def test_null_means_the_default(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "pool: {max_programs_per_sandbox: null, size: null}\nlimits: {cpu_s: null}\n"))
    assert config.pool == PoolConfig() and config.limits == Limits()


def test_overrides_validate_and_apply() -> None:
    config = HarnessConfig().with_overrides(workers=4, backend="auto")
    assert config.pool.size == 4 and config.pool.backend == "auto"
    with pytest.raises(ConfigError, match="pool.size"):
        HarnessConfig().with_overrides(workers=0)


def test_every_field_has_help() -> None:
    rows = describe_config()
    assert {key for key, _, _ in rows} >= {"pool.size", "limits.wall_s", "reward.kind", "grading.batch_size"}
    assert all(help_text for _, _, help_text in rows)


def test_sections_are_the_packages_own_classes() -> None:
    config = config_from_dict({"limits": {"wall_s": 3, "memory_mb": 128}})
    assert config.limits == Limits(wall_s=3.0, memory_mb=128)
    assert HarnessConfig().reward == RewardConfig() and HarnessConfig().pool == PoolConfig()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("reward: {pass_bonus: 0}", "reward.pass_bonus: is 0.0: set it to a number > 0"),
        ("reward: {no_code_penalty: 0.5}", "reward.no_code_penalty: is 0.5: set it to 0 or a negative number"),
        ("reward: {syntax_error_penalty: .nan}", "reward.syntax_error_penalty: is nan: set it to a finite number"),
        ("reward: {fraction_weight: -1}", "reward.fraction_weight: is -1.0: set it to a number >= 0"),
    ],
)
def test_bad_reward_values(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text + "\n"))
    assert fragment in str(info.value)
