"""Interactive problems: an interactor (a trusted program, testlib-compatible) talks to the
solution over the solution's stdin and stdout, and its exit code is the verdict.

One test is one vmpool request (:func:`interactive_request`): the solution is the program, run
``interactive`` (its stdin and stdout are its end of the companion link); the companion is
harness-authored Python (:mod:`rewards._interactive_side`) that receives the interactor's
artifact and the test's input on its own stdin, so neither ever enters the solution's process
or files, and starts the interactor beside the solution as testlib expects it:
``interactor input output`` with its stdin and stdout on the link, in a directory only the
companion's uid can enter. :func:`judge_interactive` turns the run into an
:class:`InteractiveResult`.

The interactor's exit code is read as testlib writes it: 0 accepted, 1 wrong answer, 2
presentation error, 3 judge failure; any other code, an interactor killed by a signal (its own
limits included), one that could not be started, or a missing report is a judge failure too:
infrastructure (``passed is None``), never a pass and never a 0. The solution's own limits come
first: a solution past its CPU time or the wall backstop (one that stops reading or never
answers waits there: nothing else ends the run), its memory, its stderr cap, or one that broke
its sandbox fails as such whatever the interactor says. A solution that crashes fails as a
runtime error where the interactor accepted; where the interactor failed, that voids the test;
where it said wrong answer or presentation error, that is the verdict (the crash may be the
solution writing to an interactor that had already hung up, which timing alone decides).

Limitation: in the ``resident`` memory mode (JVM, Go and Node solutions) vmpool sums the
resident memory and CPU of the run's processes but the companion's; where the sandbox has one
uid for everything (vmpool's unprivileged fallback) it cannot tell the interactor apart, and the
interactor's use counts against the solution's limits there.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import signal
from dataclasses import dataclass
from importlib import resources
from typing import Any

from vmpool import Companion, ExecRequest, ExecResult, Limits, Status

from ._build import Build

__all__ = ["INTERACTOR_SOURCE", "InteractiveOutcome", "InteractiveResult", "interactive_request",
           "judge_interactive", "default_interactor_limits"]

INTERACTOR_SOURCE: str = resources.files(__package__).joinpath("_interactive_side.py").read_text(encoding="utf-8")
"""The companion's code (harness-authored, compiled once per sandbox)."""

TESTLIB_EXIT = {0: "accepted", 1: "wrong_answer", 2: "presentation_error", 3: "judge_failure"}
"""testlib's exit codes (``_ok``, ``_wa``, ``_pe``, ``_fail``) and what they mean."""

_COMPANION_MIN_MB = 512  # the companion's own interpreter and payload (the interactor gets its own limit)
_STDERR_CAP = 4000
_OUTPUT_CAP = 64 << 10


class InteractiveOutcome(str, enum.Enum):
    """How one interactive test ended."""

    ACCEPTED = "accepted"
    WRONG_ANSWER = "wrong_answer"
    PRESENTATION_ERROR = "presentation_error"
    JUDGE_FAILURE = "judge_failure"
    """The interactor failed (exit 3, another code, killed, not started, no report)."""
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    RUNTIME_ERROR = "runtime_error"
    OUTPUT_LIMIT = "output_limit"
    SANDBOX_KILLED = "sandbox_killed"
    SANDBOX_ERROR = "sandbox_error"
    """No sandbox could run the test."""

    @property
    def is_infrastructure(self) -> bool:
        return self in (InteractiveOutcome.JUDGE_FAILURE, InteractiveOutcome.SANDBOX_ERROR)


@dataclass(frozen=True)
class InteractiveResult:
    """The verdict of one interactive test.

    Attributes:
        outcome: how it ended.
        status: how the solution's run ended, in vmpool's words.
        interactor_exit: the interactor's exit code (``None``: killed, not started, no report).
        interactor_signal: the signal that killed the interactor, if any.
        message: the interactor's stderr (capped), or why the test could not be judged.
        output: the interactor's output file (capped), for a checker that reads it.
        cpu_s / wall_s: the solution's CPU time and the run's wall time.
        timeout_by: for a timeout, ``"cpu"`` or ``"wall"``.
    """

    outcome: InteractiveOutcome
    status: Status
    interactor_exit: int | None = None
    interactor_signal: int | None = None
    message: str = ""
    output: str = ""
    cpu_s: float = 0.0
    wall_s: float = 0.0
    timeout_by: str = ""

    @property
    def passed(self) -> bool | None:
        """True when accepted; ``None`` for infrastructure (never a 0 reward); False otherwise."""
        if self.outcome.is_infrastructure:
            return None
        return self.outcome is InteractiveOutcome.ACCEPTED

    @property
    def infrastructure(self) -> bool:
        return self.outcome.is_infrastructure


def default_interactor_limits(limits: Limits) -> Limits:
    """The interactor's default limits for a solution run under ``limits``: the solution's CPU
    time, 256 MiB, a few processes."""
    return Limits(wall_s=limits.wall_s, cpu_s=limits.effective_cpu_s, memory_mb=256, max_processes=8,
                  max_open_files=64, output_bytes=1 << 20, file_size_bytes=16 << 20)


def _command(build: Build, limits: Limits) -> ExecRequest:
    """How ``build`` runs (the language's run command, its files, its adjusted limits)."""
    if build.language.is_python:  # Python runs as code in vmpool's interpreter; a file here
        name = next(iter(build.files), "main.py")
        return ExecRequest(code="", command=["python3", name], files=dict(build.files), limits=limits)
    return build.run_request("", limits)


def interactive_request(interactor: Build, solution: Build, test_input: str, limits: Limits, *,
                        interactor_limits: Limits | None = None, output_cap: int = _OUTPUT_CAP) -> ExecRequest:
    """The request of one interactive test: ``solution`` as the program (``interactive``), the
    companion that runs ``interactor`` beside it on ``test_input``.

    Args:
        interactor: the built interactor (any language; testlib's argv and exit codes).
        solution: the built solution (Python runs as code, others by their run command).
        test_input: the test's input file, for the interactor alone.
        limits: the solution's limits (adjusted to its runtime as for any run); ``wall_s`` is
            the backstop of the whole exchange.
        interactor_limits: the interactor's (default :func:`default_interactor_limits`).
        output_cap: bytes of the interactor's output file reported back.

    Raises:
        ValueError: a build that did not succeed.
    """
    for what, build in (("interactor", interactor), ("solution", solution)):
        if build.ok is not True:
            raise ValueError(f"the {what} was not built: {build.error or build.ok}")
    if solution.language.is_python:
        source = next(iter(solution.files.values()), b"")
        program = ExecRequest(code=source.decode("utf-8", "surrogateescape"), limits=limits)
    else:
        program = solution.run_request("", limits)
    run = _command(interactor, interactor_limits or default_interactor_limits(limits))
    ilimits = run.limits
    payload = {
        "files": {name: base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()
                  for name, data in run.files.items()},
        "executable": list(run.executable), "command": list(run.command), "env": dict(run.env),
        "input": test_input, "stderr_cap": _STDERR_CAP, "output_cap": output_cap,
        "limits": {"cpu_s": ilimits.effective_cpu_s, "memory_mb": ilimits.memory_mb,
                   "memory_mode": ilimits.memory_mode},
    }
    biggest = max((len(data) for data in run.files.values()), default=0) + len(test_input.encode())
    companion_limits = Limits(
        wall_s=program.limits.wall_s,
        # Never what ends the run: the interactor's RLIMIT_CPU stops it first (a judge failure).
        cpu_s=float(int(ilimits.effective_cpu_s) + 5),
        memory_mb=max(ilimits.memory_mb, _COMPANION_MIN_MB), memory_mode=ilimits.memory_mode,
        max_processes=ilimits.max_processes + 2, max_open_files=max(ilimits.max_open_files, 64),
        # JSON escapes can make a byte six characters.
        output_bytes=6 * (output_cap + _STDERR_CAP) + 4096,
        file_size_bytes=max(ilimits.file_size_bytes, biggest + (1 << 20)))
    companion = Companion(code=INTERACTOR_SOURCE, stdin=json.dumps(payload), limits=companion_limits,
                          entry="interactor_main")
    return dataclasses.replace(program, companion=companion, interactive=True)


def _report(raw: bytes) -> dict[str, Any] | None:
    try:
        report = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return report if isinstance(report, dict) else None


_SOLUTION_LIMITS = {
    Status.TIMEOUT: InteractiveOutcome.TIMEOUT,
    Status.MEMORY_LIMIT: InteractiveOutcome.MEMORY_LIMIT,
    Status.OUTPUT_LIMIT: InteractiveOutcome.OUTPUT_LIMIT,
    Status.SANDBOX_KILLED: InteractiveOutcome.SANDBOX_KILLED,
}


def judge_interactive(result: ExecResult) -> InteractiveResult:
    """The verdict of an :func:`interactive_request`'s run (the rules: see the module docstring)."""
    def done(outcome: InteractiveOutcome, message: str = "") -> InteractiveResult:
        return InteractiveResult(outcome, result.status, exit_code, sig, message or stderr, output, result.cpu_s,
                                 result.wall_s, result.timeout_by)

    report = _report(result.report)
    exit_code = sig = None
    stderr = output = ""
    if report is not None:
        exit_code = report.get("exit_code") if isinstance(report.get("exit_code"), int) else None
        sig = report.get("signal") if isinstance(report.get("signal"), int) else None
        stderr, output = str(report.get("stderr") or ""), str(report.get("output") or "")
    if result.status is Status.SANDBOX_ERROR:
        return done(InteractiveOutcome.SANDBOX_ERROR, result.error or "no sandbox could run the test")
    limit = _SOLUTION_LIMITS.get(result.status)
    if limit is not None:  # the solution's own limits, whatever the interactor said
        return done(limit)
    said = TESTLIB_EXIT.get(exit_code) if exit_code is not None else None
    if report is None or said is None or said == "judge_failure":
        why = ("the interactor sent no report" if report is None
               else f"the interactor could not start: {report.get('error')}" if report.get("error")
               else f"the interactor was killed by signal {sig}" if sig is not None
               else f"the interactor failed (exit code {exit_code})")
        return done(InteractiveOutcome.JUDGE_FAILURE, f"{why}: {stderr}" if stderr else why)
    # A crash after the interactor accepted is the solution's own; after a wrong answer the crash
    # may well be the interactor hanging up (a write to a closed link: SIGPIPE in C, an exception
    # in Python, whichever comes first), so the interactor's verdict stands. Either way it fails.
    if result.status is Status.RUNTIME_ERROR and said == "accepted" and result.signal != signal.SIGPIPE:
        return done(InteractiveOutcome.RUNTIME_ERROR, result.stderr[-_STDERR_CAP:] or stderr)
    return done(InteractiveOutcome(said))
