"""Value types shared by every sandbox backend: limits, requests, results, statuses.

A program's failure is data (``ExecResult.status``); only infrastructure failures
raise (see :mod:`vmpool._errors`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Status", "Limits", "ExecRequest", "ExecResult"]


class Status(str, enum.Enum):
    """Why a program's run ended. Exactly one per program."""

    OK = "ok"
    """The program ran to completion and exited with status 0."""
    RUNTIME_ERROR = "runtime_error"
    """Non-zero exit, uncaught exception, or death by a signal the harness did not send."""
    TIMEOUT = "timeout"
    """Wall-clock or CPU-time limit reached; the whole process group was killed."""
    MEMORY_LIMIT = "memory_limit"
    """The address-space limit was hit (MemoryError or a failed allocation)."""
    OUTPUT_LIMIT = "output_limit"
    """stdout, stderr or the report channel exceeded ``Limits.output_bytes``; killed."""
    SANDBOX_KILLED = "sandbox_killed"
    """The program brought down its sandbox, then did it again in a fresh one: the
    program's doing, scored as a failure (never as an infrastructure error)."""
    SANDBOX_ERROR = "sandbox_error"
    """Infrastructure failure (sandbox could not start, transport deadline passed).
    Not the program's fault: rewards turn it into ``None``, never 0.0."""

    @property
    def is_infrastructure(self) -> bool:
        return self is Status.SANDBOX_ERROR


@dataclass(frozen=True)
class Limits:
    """Hard limits applied to one program run.

    Args:
        wall_s: wall-clock deadline in seconds; the process group is killed at it.
        cpu_s: CPU-time limit in seconds (RLIMIT_CPU); ``None`` means ``ceil(wall_s) + 1``.
        memory_mb: address-space limit (RLIMIT_AS) in MiB.
        max_processes: processes the program may have at once (RLIMIT_NPROC, per sandbox uid).
        max_open_files: RLIMIT_NOFILE.
        output_bytes: cap on each of stdout, stderr and the report channel.
        file_size_bytes: largest file the program may write (RLIMIT_FSIZE).
    """

    wall_s: float = 10.0
    cpu_s: float | None = None
    memory_mb: int = 512
    max_processes: int = 32
    max_open_files: int = 64
    output_bytes: int = 1 << 20
    file_size_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        if not self.wall_s > 0:
            raise ValueError(f"Limits.wall_s must be > 0, got {self.wall_s!r}")
        if self.cpu_s is not None and not self.cpu_s > 0:
            raise ValueError(f"Limits.cpu_s must be > 0 or None, got {self.cpu_s!r}")
        for name in ("memory_mb", "max_processes", "max_open_files", "output_bytes", "file_size_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")
        if self.memory_mb < 32:
            raise ValueError(f"Limits.memory_mb must be >= 32 (the interpreter needs it), got {self.memory_mb}")
        if self.max_open_files < 16:
            raise ValueError(f"Limits.max_open_files must be >= 16, got {self.max_open_files}")

    @property
    def effective_cpu_s(self) -> int:
        if self.cpu_s is not None:
            return max(1, int(-(-self.cpu_s // 1)))
        return int(-(-self.wall_s // 1)) + 1

    def to_wire(self) -> dict[str, float | int]:
        return {
            "wall_s": self.wall_s,
            "cpu_s": self.effective_cpu_s,
            "memory_mb": self.memory_mb,
            "max_processes": self.max_processes,
            "max_open_files": self.max_open_files,
            "output_bytes": self.output_bytes,
            "file_size_bytes": self.file_size_bytes,
        }


@dataclass(frozen=True)
class ExecRequest:
    """One program to run in a sandbox.

    The code runs as ``__main__`` in a freshly forked child of a warm interpreter,
    in its own temp dir (the working directory) and process group.

    Args:
        code: Python source of the program.
        stdin: text fed to the program's standard input (then EOF).
        files: extra files written into the working directory before the run
            (relative paths only).
        limits: hard limits for this run.
        argv: ``sys.argv[1:]`` seen by the program.
        cache_code: the code is harness-authored and repeated across many requests
            (a test runner, say): compile it once per sandbox, in the zygote, and reuse
            the code object. Never set it for model-written code.
    """

    code: str
    stdin: str = ""
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    argv: Sequence[str] = ()
    cache_code: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.code, str):
            raise TypeError(f"ExecRequest.code must be str, got {type(self.code).__name__}")
        for name in self.files:
            if not name or name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"ExecRequest.files: {name!r} must be a relative path inside the work dir")


@dataclass(frozen=True)
class ExecResult:
    """What happened to one program.

    Attributes:
        status: why the run ended.
        exit_code: the exit status if the program exited, else ``None``.
        signal: the signal that killed it, if any.
        stdout / stderr: decoded output (UTF-8, invalid bytes replaced), each capped.
        stdout_truncated / stderr_truncated: True when the cap cut the output.
        report: bytes the program wrote to file descriptor 3 (a private side channel,
            separate from stdout, used by trusted runners to report test outcomes).
        wall_s: wall-clock seconds from fork to reap, measured inside the sandbox.
        cpu_s: user + system CPU seconds of the program and its reaped children.
        attempts: sandboxes used (2 when the first one died under the program).
        error: for SANDBOX_ERROR / SANDBOX_KILLED, what went wrong.
    """

    status: Status
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    report: bytes = b""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    attempts: int = 1
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is Status.OK
