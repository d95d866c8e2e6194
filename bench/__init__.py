"""bench: the benchmark and reliability suites (not part of the installed product).

``python -m harness bench [--suite NAME]`` runs one of them from a source checkout. Each
suite is a function ``Options -> Report``; a report says whether its checks held
(``ok``), prints itself (``format()``) and serialises itself (``to_dict()``, the
``--json-out`` file). Suites, one module each:

* ``throughput`` (default, :mod:`bench.throughput`): graded throughput in sandboxes
  against the fork-per-program floor and ``python3 -c``, side by side in one run;
* ``microvm`` (:mod:`bench.microvm`): cold boot vs snapshot clone, sustained clones,
  the same verdicts on both backends;
* ``ray`` (:mod:`bench.ray_suite`): the Ray path against the local one, GRPO-sized
  reward latency, scaling over simulated nodes;
* ``reliability`` (:mod:`bench.reliability`): soak, faults, hostile programs (the cases
  live in :mod:`bench.reliability_cases`, which the tests share);
* ``sessions`` (:mod:`bench.sessions`): warm lease vs cold start, start rate, idle memory,
  a 10-turn episode against ``Pool.run`` per call;
* ``serve`` (:mod:`bench.serve`): ``harness serve`` through the E2B SDK and verl's client,
  against the direct vmpool path;
* ``languages`` (:mod:`bench.languages`): HumanEval-X per language with and without the build
  cache, and build once vs build per test case.

They reach the product only through its public names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from harness import HarnessConfig

__all__ = ["SUITES", "Options", "Report", "run_suite"]


class Report(Protocol):
    """What a suite returns."""

    @property
    def ok(self) -> bool:
        """True when the suite's checks held (the numbers mean something)."""

    def format(self) -> str:
        """The human-readable report."""

    def to_dict(self) -> dict[str, Any]:
        """Everything measured, as JSON-ready data."""


@dataclass(frozen=True)
class Options:
    """What the command line passes to a suite (each takes what applies to it).

    Args:
        config: the harness config (pool, limits) or None for the defaults.
        repeat: copies of the workload (throughput, ray).
        workers: sandboxes and baseline workers, or None for the config's pool size.
        backend: ``namespace`` / ``microvm`` / ``auto``, or None for the config's.
        latency_samples: programs timed one at a time (throughput; 0 skips).
        naive: run the ``python3 -c`` baseline (throughput).
        soak_n: programs of the reliability soak.
    """

    config: HarnessConfig | None = None
    repeat: int = 10
    workers: int | None = None
    backend: str | None = None
    latency_samples: int = 164
    naive: bool = True
    soak_n: int = 2000


@dataclass
class _Formatted:
    """A suite's result dataclass with the function that prints it."""

    result: Any
    printer: Callable[[Any], str]

    @property
    def ok(self) -> bool:
        ok: bool = self.result.ok
        return ok

    def format(self) -> str:
        return self.printer(self.result)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = self.result.to_dict()
        return data


def _throughput(options: Options) -> Report:
    from .throughput import format_bench, run_bench

    result = run_bench(options.config, repeat=options.repeat, workers=options.workers, backend=options.backend,
                       latency_samples=options.latency_samples, naive=options.naive)
    return _Formatted(result, format_bench)


def _microvm(options: Options) -> Report:
    from .microvm import format_microvm_bench, run_microvm_bench

    result = run_microvm_bench(workers=options.workers or 2)
    return _Formatted(result, format_microvm_bench)


def _ray(options: Options) -> Report:
    from .ray_suite import format_ray_bench, run_ray_bench

    result = run_ray_bench(options.config, repeat=options.repeat, workers=options.workers, backend=options.backend)
    return _Formatted(result, format_ray_bench)


def _sessions(options: Options) -> Report:
    from .sessions import format_session_bench, run_session_bench

    return _Formatted(run_session_bench(), format_session_bench)


def _serve(options: Options) -> Report:
    from .serve import format_serve_bench, run_serve_bench

    return _Formatted(run_serve_bench(live=int(os.environ.get("SERVE_BENCH_LIVE", "1000"))), format_serve_bench)


def _languages(options: Options) -> Report:
    from .languages import format_languages_bench, run_languages_bench

    # 164 programs per language (--repeat is the throughput suite's: ten copies would be 8,200 builds)
    return _Formatted(run_languages_bench(workers=options.workers or 2), format_languages_bench)


def _reliability(options: Options) -> Report:
    from .reliability import format_reliability, run_reliability_bench

    result = run_reliability_bench(soak_n=options.soak_n, workers=options.workers or 2)
    return _Formatted(result, format_reliability)


SUITES: dict[str, Callable[[Options], Report]] = {
    "throughput": _throughput,
    "microvm": _microvm,
    "ray": _ray,
    "reliability": _reliability,
    "sessions": _sessions,
    "serve": _serve,
    "languages": _languages,
}
"""Every suite by its ``--suite`` name; each imports its module when it runs."""


def run_suite(name: str, options: Options) -> Report:
    """Run the suite ``name`` (a key of :data:`SUITES`).

    Raises:
        KeyError: no such suite.
    """
    return SUITES[name](options)
