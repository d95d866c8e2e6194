"""What makes a stored result row still valid: digests of the sample, its problem and the settings.

A resumed run keeps a row only when the completion, the problem (statement, tests, limits)
and the grading settings (limits, reward shaping, wall-clock backstop) are the ones the row
was graded with; each row stores the three digests. A row whose digests differ is graded
again (and the run says how many). A row for a sample the run does not have at all means
the output belongs to another run: that is refused, with the flag that starts over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewards import Problem, problem_to_dict

from ._config import HarnessConfig
from ._errors import InputError
from ._io import Sample
from ._store import ResultStore

logger = logging.getLogger(__name__)

_DIGEST_CHARS = 16  # 64 bits: a collision between two versions of one sample is not a concern


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]


def completion_digest(completion: Any) -> str:
    """Digest of a completion (text, chat message or list of messages)."""
    return _digest(completion)


def problem_digest(problem: Problem) -> str:
    """Digest of everything about a problem that decides its verdicts (its native record)."""
    return _digest(problem_to_dict(problem))


def settings_digest(config: HarnessConfig) -> str:
    """Digest of the settings that decide a verdict and its reward: limits, reward shaping, the
    wall-clock backstop and the stop rule."""
    return _digest([dataclasses.asdict(config.limits), dataclasses.asdict(config.reward), config.grader_options()])


@dataclass
class ResumePlan:
    """Which samples a run grades, given what its output already holds.

    Attributes:
        todo: samples to grade (new ones and stale ones).
        kept: rows kept as they are.
        stale: stale rows by reason (``completion``, ``problem``, ``settings``), graded again.
    """

    todo: list[Sample]
    kept: int
    stale: Counter[str]

    @property
    def n_stale(self) -> int:
        return sum(self.stale.values())

    def describe(self) -> str:
        """``"12 rows graded again (completion changed: 10, problem changed: 2)"``, or ``""``."""
        if not self.stale:
            return ""
        parts = ", ".join(f"{why} changed: {n}" for why, n in sorted(self.stale.items()))
        return f"{self.n_stale} stored rows graded again ({parts})"


def plan_resume(store: ResultStore, samples: Sequence[Sample], problem_shas: Mapping[str, str],
                settings_sha: str) -> ResumePlan:
    """Decide, sample by sample, whether the stored row still holds; drop the stale rows from ``store``.

    Args:
        store: the run's output, as loaded.
        samples: the run's samples, matched to problems (``problem_id`` set).
        problem_shas: :func:`problem_digest` by problem id.
        settings_sha: :func:`settings_digest` of the run's config.

    Returns:
        The :class:`ResumePlan`.

    Raises:
        InputError: the output holds rows for samples this run does not have (another
            dataset or samples file was graded into it); names the flag that starts over.
    """
    stored = {row.key: row for row in store.rows}
    wanted = {(s.problem_id or s.task_id, s.sample_index) for s in samples}
    foreign = [key for key in stored if key not in wanted]
    if foreign:
        task, index = foreign[0]
        raise InputError(
            f"holds {len(foreign)} result row(s) for samples this run does not have (e.g. task {task!r} sample "
            f"{index}): it is the output of another problems or samples file. Pass --no-resume (resume=False) "
            "to replace it, or pick another --out", str(store.path))
    todo: list[Sample] = []
    stale: Counter[str] = Counter()
    drop: list[tuple[str, int]] = []
    for sample in samples:
        key = (sample.problem_id or sample.task_id, sample.sample_index)
        row = stored.get(key)
        if row is None:
            todo.append(sample)
            continue
        why = ("completion" if row.completion_sha != completion_digest(sample.completion)
               else "problem" if row.problem_sha != problem_shas.get(key[0], "")
               else "settings" if row.settings_sha != settings_sha else "")
        if why:
            stale[why] += 1
            drop.append(key)
            todo.append(sample)
    if drop:
        store.discard(drop)
    plan = ResumePlan(todo=todo, kept=len(stored) - len(drop), stale=stale)
    if plan.stale:
        logger.warning("%s: %s", store.path, plan.describe())
    return plan
