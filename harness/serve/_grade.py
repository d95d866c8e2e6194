"""``POST /grade``: problems and completions in, one verdict row per completion out.

The reward path for trainers that are not Python: the same grading as ``harness grade`` (the
same rows, rewards and statuses), on the service's pool. Body::

    {"problems": [<problem>, ...], "format": "native" | "humaneval" | "mbpp" | ...,
     "samples": [{"task_id": "...", "completion": "..."}, ...]}

A malformed problem or sample is reported in ``issues`` (with its index) and the rest are
graded; a program's failure is a row (``passed: false``), an infrastructure failure a row with
``passed: null`` and ``reward: null``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rewards import FORMATS, Problem, ProblemFormatError, problem_from_dict, problem_from_row

from .._inputs import task_matcher
from .._io import samples_from_records
from ._errors import BadRequest, TooLarge
from ._http import Service, field, guarded

__all__ = ["routes"]


def _problems(records: list[Any], fmt: str) -> tuple[dict[str, Problem], list[dict[str, Any]]]:
    index: dict[str, Problem] = {}
    issues: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        try:
            if not isinstance(record, dict):
                raise ValueError(f"a problem must be an object, got {type(record).__name__}")
            problem = problem_from_dict(record, "problems", i + 1) if fmt == "native" else \
                problem_from_row(record, fmt, "problems", i)
        except (ProblemFormatError, ValueError, TypeError) as exc:
            issues.append({"field": "problems", "index": i, "message": str(exc)})
            continue
        index[problem.task_id] = problem
    return index, issues


def _grade(service: Service, index: dict[str, Problem], samples: list[Any]) -> dict[str, Any]:
    sample_set = samples_from_records(samples, "samples")
    issues = [{"field": "samples", "index": issue.line - 1, "message": issue.message} for issue in sample_set.issues]
    match = task_matcher(index)
    pairs, kept = [], []
    for sample in sample_set.samples:
        pid = match(sample.task_id)
        if pid is None:
            issues.append({"field": "samples", "index": sample.line - 1,
                           "message": f"task_id {sample.task_id!r} is none of the problems'"})
            continue
        pairs.append((index[pid], sample.completion))
        kept.append(dataclasses.replace(sample, problem_id=pid))
    harness = service.runner
    verdicts = harness.verdicts(pairs) if pairs else []
    rows = [dataclasses.asdict(harness.to_row(s, v)) for s, v in zip(kept, verdicts)]
    return {"rows": rows, "issues": issues}


@guarded
async def grade(service: Service, request: Request) -> Response:
    service.api_key(request)
    body = await service.json(request)
    fmt = field(body, "format", str, default="native")
    if fmt not in FORMATS:
        raise BadRequest(f"format {fmt!r} is unknown; formats: {', '.join(FORMATS)}")
    problems = field(body, "problems", list, required=True)
    samples = field(body, "samples", list, required=True)
    if len(samples) > service.config.max_grade_samples:
        raise TooLarge(f"{len(samples)} samples in one request; this service grades at most "
                       f"{service.config.max_grade_samples} (max_grade_samples): split the batch")
    index, issues = _problems(problems, fmt)
    answer = await service.blocking(_grade, service, index, samples)
    answer["issues"] = issues + answer["issues"]
    return JSONResponse(answer)


def routes() -> list[Route]:
    return [Route("/grade", grade, methods=["POST"])]
