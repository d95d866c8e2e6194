"""Samples in, the result row's shape out (storing rows is :mod:`harness._store`'s job).

Samples are JSONL, one ``{"task_id": ..., "completion": ...}`` object per line; a
completion is a string, a chat message (``{"role": ..., "content": ...}``) or a list of
them; the rewards Grader extracts the code.
A malformed line is reported as an :class:`InputIssue` naming ``file:line`` and
skipped; the rest of the file is kept. Results are one :class:`ResultRow` per sample
(:data:`RESULT_COLUMNS`, the Parquet schema in :func:`_arrow_schema`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import InputError

__all__ = [
    "RESULT_COLUMNS",
    "InputIssue",
    "ResultRow",
    "Sample",
    "SampleSet",
    "output_format",
    "read_samples",
    "samples_from_records",
]

logger = logging.getLogger(__name__)

Completion = str | dict[str, Any] | list[dict[str, Any]]


@dataclass(frozen=True)
class InputIssue:
    """One input record that was skipped, and why.

    Attributes:
        path: the file it came from.
        line: its 1-based line number.
        message: what is wrong with it (names the field where one is to blame).
    """

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Sample:
    """One completion to grade.

    Attributes:
        task_id: the problem it answers, as the sample spells it (always a string;
            integer ids are converted).
        completion: the model's output: text, a chat message or a list of them.
        sample_index: 0-based position among this task's samples, in input order (once
            matched to problems: among the problem's samples).
        line: 1-based line of the samples file it came from (0 when not from a file).
        problem_id: the id of the problem it was matched to (``MBPP/2`` for a sample
            that says ``2``); empty until matched.
    """

    task_id: str
    completion: Completion
    sample_index: int
    line: int = 0
    problem_id: str = ""


@dataclass
class SampleSet:
    """Samples read from a file, plus the lines that had to be skipped.

    Attributes:
        samples: the well-formed samples, in input order.
        issues: one :class:`InputIssue` per skipped line.
        path: the file read (empty when built from records).
    """

    samples: list[Sample]
    issues: list[InputIssue]
    path: str = ""

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)


def _check_completion(value: Any) -> str | None:
    """Return why ``value`` is not a usable completion, or None when it is."""
    if isinstance(value, str):
        return None
    if isinstance(value, list):
        if not value:
            return "completion: empty list of messages"
        for i, msg in enumerate(value):
            if not isinstance(msg, Mapping):
                return f"completion[{i}]: expected a chat message object, got {type(msg).__name__}"
            if not isinstance(msg.get("content"), str):
                return f"completion[{i}].content: expected a string"
        return None
    if isinstance(value, Mapping):  # a single chat message
        return None if isinstance(value.get("content"), str) else "completion.content: expected a string"
    return f"completion: expected a string, a chat message or a list of them, got {type(value).__name__}"


def _parse_record(record: Any) -> tuple[str, Completion] | str:
    """Validate one decoded samples record: ``(task_id, completion)`` or an error message."""
    if not isinstance(record, Mapping):
        return f"expected a JSON object, got {type(record).__name__}"
    keys = ", ".join(sorted(map(str, record))) or "none"
    if "task_id" not in record:
        return f"task_id: missing (the record's keys: {keys})"
    task_id = record["task_id"]
    if isinstance(task_id, bool) or not isinstance(task_id, (str, int)):
        return f"task_id: expected a string or integer, got {type(task_id).__name__}"
    # evalplus writes "solution" (the whole program) where others write "completion".
    name = "completion" if "completion" in record else "solution" if "solution" in record else None
    if name is None:
        return f"completion: missing (expected \"completion\" or \"solution\"; the record's keys: {keys})"
    problem = _check_completion(record[name])
    if problem:
        return problem.replace("completion:", f"{name}:", 1)
    return str(task_id), record[name]


def samples_from_records(records: Iterable[Mapping[str, Any]], path: str = "<records>") -> SampleSet:
    """Validate in-memory sample records the same way :func:`read_samples` validates lines.

    Args:
        records: mappings with ``task_id`` and ``completion``.
        path: name used for issues (record numbers stand in for line numbers).

    Returns:
        The :class:`SampleSet`.
    """
    issues: list[InputIssue] = []
    samples = _samples(enumerate(records, start=1), path, issues)
    return SampleSet(samples, issues, path)


def _samples(numbered: Iterable[tuple[int, Any]], name: str, issues: list[InputIssue]) -> list[Sample]:
    """Validate numbered records into samples (``sample_index`` counted per task, in
    order); a malformed record becomes an issue in ``issues``."""
    counters: dict[str, int] = defaultdict(int)
    samples: list[Sample] = []
    for number, record in numbered:
        parsed = _parse_record(record)
        if isinstance(parsed, str):
            issues.append(InputIssue(name, number, parsed))
            continue
        task_id, completion = parsed
        samples.append(Sample(task_id, completion, counters[task_id], number))
        counters[task_id] += 1
    return samples


def read_samples(path: str | os.PathLike[str]) -> SampleSet:
    """Read a samples JSONL file.

    ``sample_index`` counts the well-formed samples of each task in file order, so it is
    stable across re-runs on the same file.

    Args:
        path: the JSONL file; ``"-"`` reads standard input.

    Returns:
        The :class:`SampleSet`; malformed lines are in ``.issues`` (``file:line: why``).

    Raises:
        InputError: when the file cannot be read at all.
    """
    name = str(path)
    try:
        if name == "-":
            name, data = "<stdin>", sys.stdin.buffer.read()
        else:
            data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read samples: {exc.strerror or exc}", name) from exc
    records: list[tuple[int, Any]] = []
    issues: list[InputIssue] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue  # blank lines (e.g. a trailing one) are not records
        try:
            records.append((number, json.loads(raw)))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            issues.append(InputIssue(name, number, f"invalid JSON: {exc}"))
    samples = _samples(records, name, issues)
    issues.sort(key=lambda issue: issue.line)
    for issue in issues:
        logger.warning("skipping sample %s", issue)
    return SampleSet(samples, issues, name)


@dataclass(frozen=True)
class ResultRow:
    """One graded sample, as written to the output.

    Attributes:
        task_id: the sample's own task id, as given in the samples.
        sample_index: 0-based position among the problem's samples.
        passed: True/False, or None when infrastructure failed (excluded from pass@k).
        reward: the shaped reward, None on infrastructure failure.
        status: the verdict outcome (``passed``, ``failed``, ``timeout``, ``sandbox_error``...).
        tests_passed: tests that passed, when known.
        tests_total: tests run, when known.
        wall_s: wall-clock seconds the program ran.
        error: short excerpt of what went wrong (empty on a pass).
        problem_id: the problem's id, where the sample's differs (``MBPP/2`` for ``2``);
            pass@k groups rows by it.
        completion_sha / problem_sha / settings_sha: digests of the completion, of the
            problem and of the grading settings the row was graded with; a resumed run
            keeps the row only while all three still match.
        code / details: with ``grading.details`` (``--details``): the program extracted from
            the completion, and the per-test details as JSON text (``rewards.CaseResult`` fields).
    """

    task_id: str
    sample_index: int
    passed: bool | None
    reward: float | None
    status: str
    tests_passed: int | None
    tests_total: int | None
    wall_s: float
    error: str
    problem_id: str = ""
    completion_sha: str = ""
    problem_sha: str = ""
    settings_sha: str = ""
    code: str = ""
    details: str = ""

    @property
    def problem(self) -> str:
        """The problem this row grades (``problem_id``, else ``task_id``)."""
        return self.problem_id or self.task_id

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem, self.sample_index)


RESULT_COLUMNS: tuple[str, ...] = tuple(ResultRow.__dataclass_fields__)


def _arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("task_id", pa.string()),
            ("sample_index", pa.int64()),
            ("passed", pa.bool_()),
            ("reward", pa.float64()),
            ("status", pa.string()),
            ("tests_passed", pa.int64()),
            ("tests_total", pa.int64()),
            ("wall_s", pa.float64()),
            ("error", pa.string()),
            ("problem_id", pa.string()),
            ("completion_sha", pa.string()),
            ("problem_sha", pa.string()),
            ("settings_sha", pa.string()),
            ("code", pa.string()),
            ("details", pa.string()),
        ]
    )


def output_format(path: str | os.PathLike[str]) -> str:
    """Pick the output format from the file name.

    Args:
        path: the output file.

    Returns:
        ``"parquet"`` for ``.parquet``/``.pq``, ``"jsonl"`` for ``.jsonl``/``.ndjson``.

    Raises:
        InputError: for any other extension.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InputError(
        f"output must end in .parquet, .pq, .jsonl or .ndjson, got {suffix or 'no extension'!r}", str(path)
    )


def _row_from_mapping(record: Any) -> ResultRow | str:
    """Rebuild a result row read back from disk, or say why it cannot be."""
    if not isinstance(record, Mapping):
        return "expected a JSON object"
    if not isinstance(record.get("task_id"), str):
        return "task_id: missing or not a string"
    index = record.get("sample_index")
    if isinstance(index, bool) or not isinstance(index, int):
        return "sample_index: missing or not an integer"
    values: dict[str, Any] = {name: record.get(name) for name in RESULT_COLUMNS}
    for name in ("status", "error", "problem_id", "completion_sha", "problem_sha", "settings_sha", "code", "details"):
        values[name] = str(values[name] or "")  # absent in outputs of older versions
    values["wall_s"] = float(values["wall_s"] or 0.0)
    return ResultRow(**values)
