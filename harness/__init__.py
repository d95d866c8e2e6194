"""harness: orchestration of sandboxed grading: config, offline grading, Ray, TRL rewards, CLI.

Public surface::

    from harness import (
        HarnessConfig, GradingSettings,  # + vmpool.PoolConfig, vmpool.Limits, rewards.RewardConfig
        load_config, config_from_dict, describe_config,          # typed YAML config
        Harness, grade,                                          # offline grading
        GraderLike, verdict_row,                                 # the grading seam
        RayGrader, ray_grader, grade_ray, grade_ray_data,        # the same on Ray (ray imported lazily)
        RaySessions, RaySession, RaySessionCheckpoint, SessionLostError,  # sessions over Ray
        GradeSummary, pass_at_k, summarize, format_summary,      # pass@k and reports
        Sample, SampleSet, InputIssue, ResultRow, ResultStore,   # samples in, rows out
        read_samples, read_results,
        run_demo, DemoReport, bundled_dataset,                   # the demo and the bundled data
        CodeReward, AsyncCodeReward, RewardBatch,                # TRL reward functions
        CodeEnvironment, CodeEnvironmentGrader, EnvironmentConfig,  # TRL environments (multi-turn)
        EpisodeResult, close_environments, environment_stats,
        HarnessError, ConfigError, InputError, NoTestsError,     # exceptions
    )

Exception tree::

    HarnessError
    ├── ConfigError       invalid config file or value ("file: key.path: why")
    ├── InputError        an input or output file unusable as a whole ("file[:line]: why")
    └── SessionLostError  a session over Ray whose actor or node is gone (also a vmpool.SessionError)

Single bad records are not exceptions: they are ``InputIssue`` entries in the summary.
Command line: ``python -m harness {grade,demo,bench,config} --help`` (``bench`` runs the suites
of the source tree's ``bench`` package).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._config import (
    GradingSettings,
    HarnessConfig,
    config_from_dict,
    describe_config,
    load_config,
)
from ._demo import DemoReport, bundled_dataset, run_demo
from ._errors import ConfigError, HarnessError, InputError, NoTestsError
from ._grading import GraderLike, Harness, grade, verdict_row
from ._io import InputIssue, ResultRow, Sample, SampleSet, read_samples
from ._store import ResultStore, read_results
from ._summary import GradeSummary, format_summary, pass_at_k, summarize

if TYPE_CHECKING:  # the real types for checkers; at run time they load on first use
    from ._environment import (
        CodeEnvironment,
        CodeEnvironmentGrader,
        EnvironmentConfig,
        EpisodeResult,
        close_environments,
        environment_stats,
    )
    from ._trl import AsyncCodeReward, CodeReward, RewardBatch
    from .ray import (
        RayGrader,
        RaySession,
        RaySessionCheckpoint,
        RaySessions,
        SessionLostError,
        grade_ray,
        grade_ray_data,
        ray_grader,
    )

# Loaded on first use, so `import harness` (grading a file) loads no benchmark, Ray or TRL
# code: the module that holds each of these names.
_LAZY = {
    "RayGrader": ".ray", "ray_grader": ".ray", "grade_ray": ".ray", "grade_ray_data": ".ray",
    "RaySession": ".ray", "RaySessionCheckpoint": ".ray", "RaySessions": ".ray", "SessionLostError": ".ray",
    "AsyncCodeReward": "._trl", "CodeReward": "._trl", "RewardBatch": "._trl",
    **{name: "._environment" for name in ("CodeEnvironment", "CodeEnvironmentGrader", "EnvironmentConfig",
                                          "EpisodeResult", "close_environments", "environment_stats")},
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(import_module(where, __name__), name)
    globals()[name] = value  # found once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AsyncCodeReward",
    "CodeEnvironment",
    "CodeEnvironmentGrader",
    "EnvironmentConfig",
    "EpisodeResult",
    "close_environments",
    "environment_stats",
    "CodeReward",
    "ConfigError",
    "DemoReport",
    "GradeSummary",
    "GraderLike",
    "GradingSettings",
    "Harness",
    "HarnessConfig",
    "HarnessError",
    "InputError",
    "InputIssue",
    "NoTestsError",
    "RayGrader",
    "RaySession",
    "RaySessionCheckpoint",
    "RaySessions",
    "SessionLostError",
    "ResultRow",
    "ResultStore",
    "RewardBatch",
    "Sample",
    "SampleSet",
    "config_from_dict",
    "bundled_dataset",
    "describe_config",
    "format_summary",
    "grade",
    "grade_ray",
    "grade_ray_data",
    "ray_grader",
    "load_config",
    "pass_at_k",
    "read_results",
    "read_samples",
    "run_demo",
    "summarize",
    "verdict_row",
]
