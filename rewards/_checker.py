"""Special judges: a checker program decides each stdio case (several right answers, floats,
any order), testlib's way.

The checker (any supported language, built once like a solution) runs in a sandbox run of its
own, after the solution's run and outside its process: it gets the case's files ``input``,
``output`` (what the solution printed) and ``answer`` (the expected output), as
``checker input output answer``, and says by its exit code, testlib's meanings:

* 0 ok, 1 wrong answer, 2 presentation error (the case fails);
* 7 points: partial credit, the first number of its message (stderr, else stdout) is the
  case's credit in [0, 1] (testlib's ``quitp``);
* 3 fail, any other code, a crash, a limit, or a message that makes no sense: the *checker*
  failed: infrastructure, the sample's verdict is ``None`` (never a pass, never the program's
  0).

Only a case whose run ended cleanly with all of its output is checked; the others fail as
they would without a checker.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from vmpool import ExecRequest, ExecResult, Limits, Status

from ._build import Build

__all__ = ["CHECKER_LIMITS", "CheckerVerdict", "checker_request", "judge_checker"]

CHECKER_LIMITS = Limits(wall_s=30.0, cpu_s=10.0, memory_mb=1024, output_bytes=1 << 20)
"""What one checker run may use (the case's output and answer are its input)."""

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class CheckerVerdict:
    """What the checker said of one case.

    Attributes:
        kind: ``ok``, ``wrong_answer``, ``presentation_error``, ``points`` or ``fail``.
        credit: the case's credit: 1.0 for ok, the points for points, else 0.0.
        message: the checker's message (its stderr, else stdout), cut short.
    """

    kind: str
    credit: float = 0.0
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.kind == "ok"

    @property
    def failed_checker(self) -> bool:
        return self.kind == "fail"


def checker_request(checker: Build, stdin: str, output: str, answer: str, limits: Limits | None = None) -> ExecRequest:
    """The run of ``checker`` on one case: ``checker input output answer`` in its work dir."""
    files = {"input": stdin, "output": output, "answer": answer}
    if checker.language.is_python:  # Python runs as code in the warm interpreter, argv as testlib's
        source = b"".join(checker.files.values()).decode("utf-8", "surrogateescape")
        return ExecRequest(code=source, argv=["input", "output", "answer"], files=files,
                           limits=limits or CHECKER_LIMITS)
    run = checker.run_request("", limits or CHECKER_LIMITS)
    return dataclasses.replace(run, command=[*run.command, "input", "output", "answer"], files={**run.files, **files})


def judge_checker(res: ExecResult) -> CheckerVerdict:
    """The checker's verdict from its run (see the module docstring)."""
    message = (res.stderr.strip() or res.stdout.strip())[:500]
    if res.status is Status.SANDBOX_ERROR:
        return CheckerVerdict("fail", message=f"the checker could not run: {res.error}")
    if res.status is not Status.OK and res.status is not Status.RUNTIME_ERROR:
        return CheckerVerdict("fail", message=f"the checker ended with {res.status.value}: {message}")
    code = res.exit_code
    if code == 0:
        return CheckerVerdict("ok", 1.0, message)
    if code == 1:
        return CheckerVerdict("wrong_answer", 0.0, message)
    if code == 2:
        return CheckerVerdict("presentation_error", 0.0, message)
    if code == 7:
        number = _NUMBER.search(message.removeprefix("points").strip())
        credit = float(number.group(0)) if number else -1.0
        if not 0.0 <= credit <= 1.0:
            return CheckerVerdict("fail", message=f"the checker gave points without a credit in [0, 1]: {message}")
        return CheckerVerdict("points", credit, message)
    return CheckerVerdict("fail", message=f"the checker failed (exit {code}): {message}")
