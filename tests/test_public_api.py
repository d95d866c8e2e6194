"""The public surface of each package is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import pytest

import harness
import harness.serve
import harness.verl
import rewards
import vmpool
import vmpool.image

PUBLIC = {
    vmpool: [
        "BACKENDS", "BackendUnavailableError", "Checkpoint", "CodeError", "CodeResult", "CommandResult", "FileInfo",
        "Session", "SessionCheckpoint", "SessionConfig", "SessionError", "SessionPool", "Companion", "CompanionResult", "ExecRequest",
        "ExecResult", "ImageConfig", "ImageConfigError", "ImagePaths", "Limits", "MicroVMSandbox", "MicroVMTemplate",
        "NamespaceSandbox", "PRELOADED_MODULES", "PROTOCOL_VERSION", "Pool", "PoolClosedError", "PoolConfig",
        "Sandbox", "SandboxError", "SandboxSetupError", "SandboxStartError", "SettingsError", "Status", "VmpoolError", "boot_probe",
        "build_image", "choose_accel", "describe_settings", "find_image", "load_image_config", "load_settings",
        "resolve_backend", "settings_from_dict",
    ],
    harness.verl: ["compute_score", "problem_from_ground_truth"],
    harness.serve: ["BadRequest", "Conflict", "Gone", "LimitExceeded", "NotFound", "ServeConfig", "ServeError", "TooLarge",
                    "Unauthorized", "Unprocessable", "create_app", "run", "running"],
    vmpool.image: [
        "AGENT_PORT", "ImageConfig", "ImageConfigError", "ImageError", "ImagePaths", "build_image",
        "describe_image_config", "find_image", "image_config_from_dict", "image_key", "load_image_config",
        "min_memory_mb", "resolve_packages",
    ],
    rewards: [
        "COMPILE_LIMITS", "LANGUAGES", "Build", "Builder", "Language", "extract_program", "find_language", "language_names",
        "AssertTests", "CallCase", "CallTests", "CaseResult", "Checker", "DATASETS", "FORMATS", "Grader", "Outcome", "Problem", "ProblemFormatError",
        "ProblemSet", "ProgramTests", "RestrictedUnpickler", "RewardConfig", "RewardConfigError", "RewardsError",
        "StdioCase", "StdioTests", "Tests", "Verdict", "compute_reward", "data_path", "excerpt", "extract_code", "load_problems",
        "problem_from_dict", "problem_from_row", "problem_to_dict", "reference_solutions", "restricted_loads", "stdout_matches",
        "values_equal",
    ],
    harness: [
        "AsyncCodeReward", "CodeReward", "ConfigError", "DemoReport", "GradeSummary",
        "CodeEnvironment", "CodeEnvironmentGrader", "EnvironmentConfig", "EpisodeResult", "close_environments",
        "environment_stats",
        "GradingSettings", "Harness", "HarnessConfig", "HarnessError", "InputError", "InputIssue", "NoTestsError",
        "RayGrader", "ResultRow", "ResultStore", "RewardBatch",
        "RaySession", "RaySessionCheckpoint", "RaySessions", "SessionLostError",
        "Sample", "SampleSet", "bundled_dataset", "config_from_dict", "describe_config", "format_summary", "grade", "grade_ray",
        "grade_ray_data", "load_config", "ray_grader", "verdict_row", "GraderLike", "pass_at_k", "read_results", "read_samples", "run_demo",
        "summarize",
    ],
}


@pytest.mark.parametrize("module", list(PUBLIC), ids=lambda m: m.__name__)
def test_public_names_are_pinned(module):
    assert sorted(module.__all__) == sorted(PUBLIC[module])
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_exception_trees():
    assert issubclass(rewards.ProblemFormatError, rewards.RewardsError)
    assert issubclass(rewards.RewardConfigError, rewards.RewardsError)
    assert issubclass(rewards.RewardConfigError, vmpool.SettingsError)
    assert issubclass(vmpool.ImageConfigError, vmpool.SettingsError)
    assert issubclass(vmpool.SettingsError, vmpool.VmpoolError) and issubclass(vmpool.SettingsError, ValueError)
    assert issubclass(harness.ConfigError, harness.HarnessError)
    assert issubclass(harness.SessionLostError, harness.HarnessError)
    assert issubclass(harness.SessionLostError, vmpool.SessionError)
    assert issubclass(harness.InputError, harness.HarnessError)
    assert issubclass(harness.serve.ServeError, harness.HarnessError)
    assert all(issubclass(e, harness.serve.ServeError) for e in (
        harness.serve.BadRequest, harness.serve.Unauthorized, harness.serve.NotFound, harness.serve.Gone,
        harness.serve.Conflict, harness.serve.TooLarge, harness.serve.Unprocessable, harness.serve.LimitExceeded))
