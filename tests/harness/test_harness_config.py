"""Config loading and validation: unknown keys, bad types and values name file and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import ConfigError, HarnessConfig, PoolSettings, config_from_dict, describe_config, load_config

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
    assert str(info.value) == f"{path}: pool.size: must be >= 1, got 0"
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
        ("pool: {size: two}", "pool.size: expected"),
        ("pool: {size: 1.5}", "pool.size: expected"),
        ("pool: {backend: docker}", "pool.backend: must be one of namespace, microvm, auto, got 'docker'"),
        ("limits: {wall_s: 0}", "limits.wall_s: must be > 0"),
        ("limits: {wall_s: true}", "limits.wall_s: expected a number"),
        ("limits: {memory_mb: 16}", "limits.memory_mb: must be >= 32, got 16"),
        ("limits: {cpu_s: -1}", "limits.cpu_s: must be > 0"),
        ("reward: {kind: partial}", "reward.kind: must be one of binary, fraction, weighted"),
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
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config("/nonexistent/config.yaml")


def test_dataclasses_validate_directly() -> None:
    with pytest.raises(ConfigError, match="^size: must be >= 1, got 0$"):
        PoolSettings(size=0)


def test_overrides_validate_and_apply() -> None:
    config = HarnessConfig().with_overrides(workers=4, backend="auto")
    assert config.pool.size == 4 and config.pool.backend == "auto"
    with pytest.raises(ConfigError, match="pool.size"):
        HarnessConfig().with_overrides(workers=0)


def test_every_field_has_help() -> None:
    rows = describe_config()
    assert {key for key, _, _ in rows} >= {"pool.size", "limits.wall_s", "reward.kind", "grading.batch_size"}
    assert all(help_text for _, _, help_text in rows)


def test_limits_map_onto_vmpool() -> None:
    limits = config_from_dict({"limits": {"wall_s": 3, "memory_mb": 128}}).limits.to_limits()
    assert limits.wall_s == 3.0 and limits.memory_mb == 128


def test_reward_defaults_follow_rewards_package() -> None:
    from rewards import RewardConfig

    assert HarnessConfig().reward.to_reward_config() == RewardConfig()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("reward: {pass_bonus: 0}", "reward.pass_bonus: must be > 0"),
        ("reward: {no_code_penalty: 0.5}", "reward.no_code_penalty: must be <= 0, got 0.5"),
        ("reward: {syntax_error_penalty: .nan}", "reward.syntax_error_penalty: must be a finite number"),
        ("reward: {fraction_weight: -1}", "reward.fraction_weight: must be >= 0"),
    ],
)
def test_bad_reward_values(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text + "\n"))
    assert fragment in str(info.value)
