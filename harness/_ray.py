"""Grading on Ray: pool actors per node (:class:`RayGrader`), the offline grader on top of them
(:class:`RayHarness`, :func:`grade_ray`), and the streaming Ray Data path (:func:`grade_ray_data`).

``ray`` is imported only when one of these is used. Code split:
``_ray_actor`` (the actor, Ray start-up), ``_ray_client`` (RayGrader; its chunk scheduling in ``_ray_chunks``, slots and metrics in
``_ray_support``), ``_ray_data`` (Ray Data).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from rewards import Problem

from ._config import HarnessConfig
from ._grading import Harness
from ._io import SampleSet
from ._ray_client import RayGrader
from ._ray_data import grade_ray_data, is_directory_output
from ._summary import GradeSummary

__all__ = ["RayGrader", "RayHarness", "grade_ray", "grade_ray_data"]

PathLike = str | os.PathLike[str]


class RayHarness(Harness):
    """:class:`Harness` whose programs run on Ray pool actors instead of a local pool.

    Same ``grade``/``verdicts``/``to_row`` as :class:`Harness` (same output rows, same summary,
    resumable). ``pool.size`` (or ``workers``) is the number of sandboxes *per actor*; unset, each
    actor gets one sandbox per CPU it reserves.

    Args:
        config: harness config.
        workers: sandboxes per actor.
        backend: sandbox backend of every actor's pool.
        address: Ray address (``None``: embedded local Ray, or the job's cluster inside a Ray job).
        grader: an open :class:`RayGrader` to use (the caller keeps ownership).
        **ray_options: further :class:`RayGrader` arguments (``actors_per_node``, ``resources``...).
    """

    def __init__(
        self,
        config: HarnessConfig | None = None,
        *,
        workers: int | None = None,
        backend: str | None = None,
        address: str | None = None,
        grader: RayGrader | None = None,
        **ray_options: Any,
    ) -> None:
        super().__init__(config, workers=workers, backend=backend)
        self.address = address
        self.ray_options = ray_options
        self._ray_grader = grader
        self._owns_ray_grader = grader is None

    @property
    def pool(self) -> Any:
        raise AttributeError("RayHarness runs programs on Ray actors; it has no local pool")

    @property
    def grader(self) -> Any:
        """The :class:`RayGrader` (actors started on first use)."""
        if self._ray_grader is None:
            settings = self.config.pool
            options = {"pool_size": settings.size, **self.ray_options}
            self._ray_grader = RayGrader(
                self.address,
                pool_config=settings.to_pool_config(size=1),
                reward_config=self.reward_config,
                limits=self.config.limits.to_limits(),
                **options,
            )
        return self._ray_grader

    def close(self) -> None:
        """Kill the actors (and shut Ray down) if this harness started them. Safe to call twice."""
        grader, self._ray_grader = self._ray_grader, None
        if grader is not None and self._owns_ray_grader:
            grader.close()


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

    A file output (``.parquet``/``.jsonl``) goes through :class:`RayHarness` (same output file,
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
    with RayHarness(config, workers=workers, backend=backend, address=address, **ray_options) as harness:
        return harness.grade(problems, samples, out, progress=progress, resume=resume, problem_format=problem_format)
