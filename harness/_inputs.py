"""What grading reads and where it writes, checked before any work: problems indexed by
task id, samples matched to them, and an output that is writable and is not an input."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rewards import Problem, ProblemSet, load_problems

from ._errors import InputError
from ._io import InputIssue, Sample

__all__ = ["check_output_is_not_an_input", "check_output_writable", "load_problem_file", "load_problem_index",
           "resolve_task_ids", "task_matcher"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def load_problem_file(path: PathLike, fmt: str = "auto") -> ProblemSet:
    """``rewards.load_problems`` with its failures as :class:`InputError` naming the file.

    Raises:
        InputError: the file is missing or unreadable, or its format unknown or undetectable.
    """
    if not Path(path).exists():
        raise InputError("problems file does not exist", str(path))
    try:
        return load_problems(path, fmt=fmt)
    except (OSError, ValueError) as exc:  # ProblemFormatError is a ValueError
        raise InputError(f"cannot load problems: {exc}", str(path)) from exc


def load_problem_index(
    problems: PathLike | Iterable[Problem], fmt: str = "auto"
) -> tuple[dict[str, Problem], list[InputIssue]]:
    """Load problems and index them by task id.

    Args:
        problems: a problems file (any format ``rewards.load_problems`` reads) or an
            iterable of ``rewards.Problem``.
        fmt: format passed to ``rewards.load_problems`` for files (``auto``, ``humaneval``...).

    Returns:
        ``({task_id: Problem}, issues)``; issues are the problem records the loader
        skipped (``file:line: field: why``) and duplicate task ids (first one kept).

    Raises:
        InputError: the file is missing or unreadable, the format is unknown or cannot
            be detected, or no problem could be loaded.
    """
    issues: list[InputIssue] = []
    if isinstance(problems, (str, os.PathLike)):
        path = str(problems)
        loaded = load_problem_file(path, fmt)
        issues.extend(_problem_issue(err, path) for err in loaded.errors)
        items: list[Problem] = list(loaded)
    else:
        path = "<problems>"
        items = list(problems)
    index: dict[str, Problem] = {}
    for number, problem in enumerate(items, start=1):
        task_id = str(problem.task_id)
        if task_id in index:
            issues.append(InputIssue(path, number, f"task_id: duplicate {task_id!r}, first one kept"))
            continue
        index[task_id] = problem
    if not index:
        raise InputError("no usable problems", path)
    return index, issues


def _problem_issue(err: Any, default_path: str) -> InputIssue:
    """Turn a ``rewards.ProblemFormatError`` (file, line, field, message) into an :class:`InputIssue`."""
    path = str(getattr(err, "file", "") or default_path)
    line = int(getattr(err, "line", 0) or 0)
    field_name = getattr(err, "field", "")
    message = str(getattr(err, "message", "") or err)
    return InputIssue(path, line, f"{field_name}: {message}" if field_name else message)


def task_matcher(index: Mapping[str, Problem]) -> Callable[[str], str | None]:
    """A function from a sample's task id to the id of its problem in ``index`` (or None).

    A sample's ``task_id`` matches a problem's exactly, or else by the part after the
    last ``/`` when that is unambiguous (MBPP samples usually say ``2`` where the loaded
    problem is ``MBPP/2``).
    """
    short: dict[str, str | None] = {}
    for task_id in index:
        tail = task_id.rsplit("/", 1)[-1]
        short[tail] = None if tail in short and short[tail] != task_id else task_id

    def match(task_id: str) -> str | None:
        return task_id if task_id in index else short.get(task_id)

    return match


def resolve_task_ids(
    samples: Sequence[Sample], index: Mapping[str, Problem], path: str
) -> tuple[list[Sample], list[InputIssue]]:
    """Match samples to problems (:func:`task_matcher`), and renumber ``sample_index`` per problem.

    A matched sample keeps its own ``task_id`` (rows carry it as given) and gets the
    problem's id as ``problem_id``; ``sample_index`` counts the problem's samples in input
    order, so ``2`` and ``MBPP/2`` samples of one problem never share an index.

    Args:
        samples: the samples, in input order.
        index: problems by task id.
        path: samples file name, for issues.

    Returns:
        ``(matched samples, issues)``: one issue per sample whose task is unknown.
    """
    match = task_matcher(index)
    counters: dict[str, int] = defaultdict(int)
    matched: list[Sample] = []
    issues: list[InputIssue] = []
    for sample in samples:
        found = match(sample.task_id)
        if found is None:
            issue = InputIssue(path, sample.line, f"task_id: unknown task {sample.task_id!r}")
            logger.warning("skipping sample %s", issue)
            issues.append(issue)
            continue
        matched.append(Sample(sample.task_id, sample.completion, counters[found], sample.line, found))
        counters[found] += 1
    return matched, issues


def check_output_writable(out: PathLike) -> None:
    """Refuse an output this process cannot write, before any grading starts.

    Raises:
        InputError: naming the output and why (read-only mount, no permission, not a directory...).
    """
    target = Path(out)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not os.access(target, os.W_OK):
            raise PermissionError(13, "permission denied")
        probe = target.with_name(f".{target.name}.write-test-{os.getpid()}")
        probe.open("wb").close()
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the output here ({exc.strerror or exc}); pick another --out",
                         str(out)) from exc


def check_output_is_not_an_input(out: PathLike, *, directory: bool = False, **inputs: Any) -> None:
    """Refuse an output that is (or whose journal is) one of the input files, or, for a
    directory output (which ``--no-resume`` clears), one that holds an input.

    Args:
        out: the results path.
        directory: ``out`` is an output directory (the Ray Data path).
        **inputs: the run's inputs by name (``problems=...``); non-paths are ignored.

    Raises:
        InputError: naming the input flag, before anything is read or written.
    """
    target = Path(out).resolve()
    outputs = {target, target.with_name(target.name + ".partial.jsonl")}
    for name, value in inputs.items():
        path = getattr(value, "path", value)  # a SampleSet remembers its file
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            continue
        given = Path(path).resolve()
        if given in outputs:
            raise InputError(f"--out is the --{name} file: results would be written into the input; "
                             "pick another --out", str(out))
        if directory and target in given.parents:
            raise InputError(f"--out is a directory holding the --{name} file ({path}); the output directory "
                             "is replaced as a whole, so pick another --out", str(out))
