"""Grading on Ray: pool actors per node (:class:`RayGrader`, :func:`ray_grader` from a harness
config), the offline grader on top of them (``Harness(config, grader=...)``, :func:`grade_ray`),
and the streaming Ray Data path (:func:`grade_ray_data`); sessions over Ray (:class:`RaySessions`
leases :class:`RaySession` handles on per-node session actors; :class:`SessionLostError`).

``ray`` is imported only when one of these is used. Code split:
``_actor`` (the actor, Ray start-up), ``_client`` (RayGrader; its chunk scheduling in ``_chunks``, slots and metrics in
``_support``), ``_data`` (Ray Data), ``_sessions`` (the session actor, the session handle) and
``_sessions_client`` (RaySessions).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

from rewards import Problem

from .._config import HarnessConfig
from .._grading import Harness
from .._io import SampleSet
from .._summary import GradeSummary
from ._client import RayGrader
from ._data import grade_ray_data, is_directory_output
from ._sessions import RaySession, RaySessionCheckpoint, SessionLostError
from ._sessions_client import RaySessions

__all__ = ["RayGrader", "RaySession", "RaySessionCheckpoint", "RaySessions", "SessionLostError", "grade_ray", "grade_ray_data", "ray_grader"]

PathLike = str | os.PathLike[str]


def ray_grader(config: HarnessConfig | None = None, *, workers: int | None = None, backend: str | None = None,
               address: str | None = None, **ray_options: Any) -> RayGrader:
    """A :class:`RayGrader` set up from a harness config: ``pool.size`` (or ``workers``)
    sandboxes per actor (unset: one per CPU the actor reserves), the config's backend
    (or ``backend``), limits and reward shaping. Use it as ``Harness(config, grader=...)``.

    Args:
        config: harness config (defaults when None).
        workers: sandboxes per actor.
        backend: sandbox backend of every actor's pool.
        address: Ray address (``None``: embedded local Ray, or the job's cluster inside a Ray job).
        **ray_options: further :class:`RayGrader` arguments (``actors_per_node``, ``resources``...).
    """
    config = (config or HarnessConfig()).with_overrides(workers=workers, backend=backend)
    return RayGrader(address, pool_config=dataclasses.replace(config.pool, size=1), limits=config.limits,
                     grader_options=config.grader_options(),
                     **{"pool_size": config.pool.size, **ray_options})


def grade_ray(
    problems: PathLike | Iterable[Problem],
    samples: PathLike | SampleSet | Iterable[Mapping[str, Any]],
    out: PathLike,
    config: HarnessConfig | None = None,
    workers: int | None = None,
    backend: str | None = None,
    progress: bool = True,
    *,
    resume: bool = True,
    problem_format: str = "auto",
    address: str | None = None,
    **ray_options: Any,
) -> GradeSummary:
    """:func:`harness.grade` on Ray.

    A file output (``.parquet``/``.jsonl``) goes through a :class:`Harness` grading with
    :func:`ray_grader` (same output file,
    summary and resume as the local grader). A directory output (an existing directory, or a
    path ending in ``/``) goes through :func:`grade_ray_data`, which streams a samples file of
    any size with Ray Data and writes a directory of Parquet files with the same row schema.

    Args:
        problems, samples, out, config, workers, backend, progress, resume, problem_format:
            as for :func:`harness.grade` (``workers`` = sandboxes per actor).
        address: Ray address (``None``: embedded, or the job's cluster; ``"auto"``; ``ray://...``).
        **ray_options: :class:`RayGrader` arguments (file outputs only).

    Returns:
        The :class:`GradeSummary`.
    """
    if is_directory_output(out):
        if not isinstance(samples, (str, os.PathLike)):
            raise TypeError("the Ray Data path (directory output) reads a samples file")
        return grade_ray_data(problems, samples, out, config, workers, backend, resume=resume,
                              problem_format=problem_format, address=address)
    config = (config or HarnessConfig()).with_overrides(workers=workers, backend=backend)
    with ray_grader(config, address=address, **ray_options) as grader, Harness(config, grader=grader) as harness:
        return harness.grade(problems, samples, out, progress=progress, resume=resume, problem_format=problem_format)
