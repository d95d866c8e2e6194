"""Streaming grading with Ray Data, for sample files larger than memory.

Pipeline::

    samples.jsonl --(driver: one streaming pass)--> staging Parquet shards
        (task_id, completion as JSON, sample_index: the local grader's numbering; bad lines -> issues)
    ray.data.read_parquet(staging)
        .map_batches(_GradeBatch, concurrency=N)   # an actor pool; each actor owns a vmpool.Pool
        .write_parquet(out_dir)                    # the local grader's row schema

The driver keeps only a counter per task while staging, and Ray Data streams blocks through the
actor pool, so neither the driver nor any actor holds the whole dataset. The summary is computed
from the written rows (small: no completions). Output is a directory of Parquet files; this path
does not resume (a non-empty output directory is refused unless ``resume=False``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rewards import Problem
from vmpool import PoolConfig

from .._config import HarnessConfig
from .._errors import InputError
from .._grading import verdict_row
from .._inputs import check_output_is_not_an_input, load_problem_index, task_matcher
from .._io import InputIssue, ResultRow, Sample, _arrow_schema, _parse_record, _row_from_mapping
from .._resume import problem_digest, settings_digest
from .._summary import GradeSummary, summarize
from ._actor import GraderActorImpl, default_runtime_env, ensure_ray

__all__ = ["grade_ray_data", "is_directory_output"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

_STAGING_ROWS = 2048


def is_directory_output(out: PathLike) -> bool:
    """Whether ``out`` names a directory output (Ray Data path): an existing dir, or a trailing ``/``."""
    text = os.fspath(out)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def _quiet_ray_data() -> None:
    """Ray Data's progress lines, execution plans and per-operator stats only at INFO (``-v``):
    the summary says what a user needs."""
    import ray.data

    if logger.getEffectiveLevel() <= logging.INFO:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.verbose_stats_logs = False
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.ERROR)


def stage_samples(samples: PathLike, index: Mapping[str, Problem], staging: Path) -> tuple[int, list[InputIssue]]:
    """Stream the samples file into Parquet shards with the local grader's ``sample_index``.

    Returns:
        ``(rows staged, issues)``; issues name ``file:line`` like :func:`harness.read_samples`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = os.fspath(samples)
    match = task_matcher(index)
    counters: dict[str, int] = defaultdict(int)
    issues: list[InputIssue] = []
    staging.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("task_id", pa.string()), ("problem_id", pa.string()), ("completion", pa.string()),
                        ("sample_index", pa.int64()), ("line", pa.int64())])
    buf: dict[str, list[Any]] = {"task_id": [], "problem_id": [], "completion": [], "sample_index": [], "line": []}
    shards = staged = 0

    def flush() -> None:
        nonlocal shards
        if buf["task_id"]:
            pq.write_table(pa.Table.from_pydict(buf, schema=schema), staging / f"part-{shards:06d}.parquet")
            shards += 1
            for column in buf.values():
                column.clear()

    try:
        fh = open(name, "rb")
    except OSError as exc:
        raise InputError(f"cannot read samples: {exc.strerror or exc}", name) from exc
    with fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                issues.append(InputIssue(name, number, f"invalid JSON: {exc}"))
                continue
            parsed = _parse_record(record)
            if isinstance(parsed, str):
                issues.append(InputIssue(name, number, parsed))
                continue
            raw_id, completion = parsed
            problem_id = match(raw_id)
            if problem_id is None:
                issues.append(InputIssue(name, number, f"task_id: unknown task {raw_id!r}"))
                continue
            buf["task_id"].append(raw_id)
            buf["problem_id"].append(problem_id)
            buf["completion"].append(json.dumps(completion, ensure_ascii=False))
            buf["sample_index"].append(counters[problem_id])
            buf["line"].append(number)
            counters[problem_id] += 1
            staged += 1
            if len(buf["task_id"]) >= _STAGING_ROWS:
                flush()
        flush()
    return staged, issues


class _GradeBatch:
    """Ray Data UDF (run in an actor pool): staged sample rows -> result rows."""

    def __init__(self, problems: dict[str, Problem], config: HarnessConfig, pool_config: PoolConfig) -> None:
        self.impl = GraderActorImpl(pool_config, config.limits, config.grader_options())
        self.reward_config = config.reward
        self.error_chars = config.grading.error_chars
        self.problems = problems
        self.problem_shas: dict[str, str] = {}
        self.settings_sha = settings_digest(config)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        records = batch.to_pylist()
        samples = [Sample(r["task_id"], json.loads(r["completion"]), int(r["sample_index"]), int(r["line"]),
                          r["problem_id"]) for r in records]
        verdicts = self.impl.grade_chunk([(self.problems[s.problem_id], s.completion) for s in samples])
        for s in samples:
            if s.problem_id not in self.problem_shas:
                self.problem_shas[s.problem_id] = problem_digest(self.problems[s.problem_id])
        rows = [asdict(verdict_row(s, v, self.reward_config, self.error_chars,
                                   problem_sha=self.problem_shas[s.problem_id], settings_sha=self.settings_sha))
                for s, v in zip(samples, verdicts, strict=True)]
        return pa.Table.from_pylist(rows, schema=_arrow_schema())

    def __del__(self) -> None:
        try:
            self.impl.close()
        except Exception:  # pragma: no cover
            pass


def read_rows_dir(out_dir: PathLike) -> list[ResultRow]:
    """Read every result row of a Parquet output directory."""
    import pyarrow.parquet as pq

    files = sorted(Path(out_dir).glob("*.parquet"))
    rows: list[ResultRow] = []
    for path in files:
        for record in pq.read_table(path, schema=_arrow_schema()).to_pylist():
            row = _row_from_mapping(record)
            if not isinstance(row, str):
                rows.append(row)
    return rows


def grade_ray_data(
    problems: PathLike | Iterable[Problem],
    samples: PathLike,
    out_dir: PathLike,
    config: HarnessConfig | None = None,
    workers: int | None = None,
    backend: str | None = None,
    *,
    resume: bool = True,
    problem_format: str = "auto",
    address: str | None = None,
    concurrency: int | None = None,
    batch_size: int | None = None,
    runtime_env: Mapping[str, Any] | None = None,
) -> GradeSummary:
    """Grade a samples file with Ray Data, streaming, into a directory of Parquet files.

    Args:
        problems: problems file or iterable of ``rewards.Problem`` (loaded on the driver).
        samples: samples JSONL file (read on the driver in one streaming pass).
        out_dir: output directory (Parquet files with the local grader's row schema).
        config: harness config; ``pool`` gives each actor's pool, ``grading.batch_size``
            the rows per actor call, ``grading.ks`` the pass@k values.
        workers: sandboxes per actor (overrides ``pool.size``; default: the config's, else 2).
        backend: sandbox backend override.
        resume: not supported on this path: True refuses a non-empty ``out_dir``; False clears it.
        problem_format: format for ``rewards.load_problems``.
        address: Ray address (see :class:`harness.RayGrader`).
        concurrency: actors in the pool (default: cluster CPUs - 1, at least 1).
        batch_size: rows per actor call (default ``config.grading.batch_size``).
        runtime_env: runtime env of the actors (default: this checkout on ``PYTHONPATH``).

    Returns:
        The :class:`GradeSummary` over the written rows.

    Raises:
        InputError: unusable inputs, or a non-empty ``out_dir`` with ``resume=True``.
    """
    import ray

    config = (config or HarnessConfig()).with_overrides(workers=workers, backend=backend)
    out = Path(out_dir)
    check_output_is_not_an_input(out, directory=True, problems=problems, samples=samples)
    if out.exists() and any(out.iterdir()):
        if resume:
            raise InputError("output directory is not empty and the Ray Data path does not resume; "
                             "pass --no-resume (resume=False) to replace it", str(out))
        shutil.rmtree(out)
    index, issues = load_problem_index(problems, problem_format)
    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()
    owns_ray = ensure_ray(address)
    try:
        staged, sample_issues = stage_samples(samples, index, staging)
        issues.extend(sample_issues)
        issues.sort(key=lambda i: (i.path, i.line))
        if staged:
            pool_config = dataclasses.replace(config.pool, size=config.pool.size or 2)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            n_actors = concurrency or max(1, cpus - 1)
            _quiet_ray_data()
            ds = ray.data.read_parquet(str(staging))
            graded = ds.map_batches(
                _GradeBatch,
                fn_constructor_kwargs={"problems": index, "config": config, "pool_config": pool_config},
                batch_size=batch_size or config.grading.batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=n_actors),
                num_cpus=1,
                runtime_env=dict(runtime_env) if runtime_env is not None else default_runtime_env(),
            )
            graded.write_parquet(str(out))
        else:
            out.mkdir(parents=True, exist_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if owns_ray:
            ray.shutdown()
    rows = read_rows_dir(out)
    return summarize(rows, config.grading.ks, n_graded=len(rows), n_resumed=0,
                     wall_s=time.perf_counter() - started, input_issues=issues, out=str(out))
