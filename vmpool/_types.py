"""Value types shared by every sandbox backend: limits, requests, results, statuses.

A program's failure is data (``ExecResult.status``); only infrastructure failures
raise (see :mod:`vmpool._errors`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._settings import SettingsError

__all__ = ["Status", "Limits", "Companion", "CompanionResult", "ExecRequest", "ExecResult"]


class Status(str, enum.Enum):
    """Why a program's run ended. Exactly one per program."""

    OK = "ok"
    """The program ran to completion and exited with status 0."""
    RUNTIME_ERROR = "runtime_error"
    """Non-zero exit, uncaught exception, or death by a signal the harness did not send."""
    TIMEOUT = "timeout"
    """CPU-time limit or the wall-clock backstop reached (``ExecResult.timeout_by`` says
    which); the program's whole session was killed."""
    MEMORY_LIMIT = "memory_limit"
    """The address-space limit was hit (MemoryError or a failed allocation)."""
    OUTPUT_LIMIT = "output_limit"
    """stdout, stderr or the report channel exceeded ``Limits.output_bytes``; killed."""
    SANDBOX_KILLED = "sandbox_killed"
    """The program brought down its sandbox or left it in a state that is not reused
    (an agent that died or stopped answering, a cleanup that failed, a reply that made
    no sense), then did it again in a fresh one: the program's doing, scored as a
    failure (never as an infrastructure error)."""
    SANDBOX_ERROR = "sandbox_error"
    """Infrastructure failure before the program could run: no sandbox could be had
    (it would not start, twice). Not the program's fault: rewards turn it into
    ``None``, never 0.0. Nothing a program does can produce it."""

    @property
    def is_infrastructure(self) -> bool:
        return self is Status.SANDBOX_ERROR


MEMORY_MODES = ("address_space", "resident")


def _setting(help_text: str, default: object) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Limits:
    """Hard limits applied to one program run; every field's help is in its metadata.

    ``cpu_s`` is what graders judge the time limit on; they make ``wall_s`` a backstop
    well above it, so verdicts do not depend on how loaded the host is.

    Raises:
        SettingsError: a value is out of range (``key`` names the field).
    """

    wall_s: float = _setting(
        "wall-clock deadline per program, seconds: everything the run started is killed at it "
        "(graders set it as a backstop from grading.wall_factor / wall_slack_s and judge the time limit "
        "on cpu_s; with cpu_s null the time limit is wall_s)", 10.0)
    cpu_s: float | None = _setting(
        "CPU-time limit per program, seconds (fractions hold: the agent polls it; RLIMIT_CPU is the "
        "backstop); null = ceil(wall_s) + 1 for a bare pool, wall_s when grading", None)
    memory_mb: int = _setting("address-space limit per program (RLIMIT_AS), MiB; >= 32", 512)
    max_processes: int = _setting("processes a program may have at once (RLIMIT_NPROC per sandbox uid)", 32)
    max_open_files: int = _setting("open file descriptors per program (RLIMIT_NOFILE); >= 16", 64)
    output_bytes: int = _setting("cap on each of stdout, stderr and the report channel, bytes", 1 << 20)
    file_size_bytes: int = _setting("largest file a program may write (RLIMIT_FSIZE), bytes", 16 << 20)
    memory_mode: str = _setting(
        "how memory_mb is enforced: 'address_space' (RLIMIT_AS: exact, what Python programs get) or "
        "'resident' (the agent sums the resident memory of every process of the run each poll, 20 ms, "
        "and kills at the limit; RLIMIT_AS is then only a backstop at 4 x memory_mb + 4 GiB; the CPU "
        "limit then counts every process of the run too, a compiler's children included): for "
        "runtimes that reserve far more address space than they use (the JVM, Go)", "address_space")

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> SettingsError:
            return SettingsError(f"{rule}, got {getattr(self, name)!r}", name, owner="Limits")

        if not self.wall_s > 0:
            raise fail("wall_s", "must be > 0")
        if self.cpu_s is not None and not self.cpu_s > 0:
            raise fail("cpu_s", "must be > 0 or null")
        if self.memory_mode not in MEMORY_MODES:
            raise fail("memory_mode", f"must be one of {', '.join(MEMORY_MODES)}")
        minimum = {"memory_mb": 32, "max_open_files": 16}  # the interpreter itself needs these
        for name in ("memory_mb", "max_processes", "max_open_files", "output_bytes", "file_size_bytes"):
            value = getattr(self, name)
            least = minimum.get(name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise fail(name, f"must be an integer >= {least}")

    @property
    def effective_cpu_s(self) -> float:
        if self.cpu_s is not None:
            return float(self.cpu_s)
        return float(int(-(-self.wall_s // 1)) + 1)

    def to_wire(self) -> dict[str, float | int | str]:
        return {
            "wall_s": self.wall_s,
            "cpu_s": self.effective_cpu_s,
            "memory_mb": self.memory_mb,
            "max_processes": self.max_processes,
            "max_open_files": self.max_open_files,
            "output_bytes": self.output_bytes,
            "file_size_bytes": self.file_size_bytes,
            **({"memory_mode": self.memory_mode} if self.memory_mode != "address_space" else {}),
        }


def _check_entry(owner: str, entry: str, cache_code: bool) -> None:
    if entry and not (entry.isidentifier() and cache_code):
        raise ValueError(f"{owner}.entry must be a function name and needs cache_code=True, got {entry!r}")


@dataclass(frozen=True)
class Companion:
    """A trusted process that runs beside the program and judges it (a tester).

    It is forked from the agent (not from the program's zygote), runs as a uid of its
    own that the program cannot signal, ptrace or read, and talks to the program over
    one socket: its fd 4, the program's fd 3. It reads ``stdin``; what it writes to its
    own fd 3 comes back as ``ExecResult.report`` (no program can reach that fd). The
    run ends when the companion exits; the program is then killed.

    Args:
        code: Python source of the companion (harness-authored, never model-written).
        stdin: data for it (test code, expected values...): it never enters the program.
        argv: its ``sys.argv[1:]``.
        limits: its own limits; ``None`` = the request's.
        cache_code: compile ``code`` once per sandbox (see :attr:`ExecRequest.cache_code`).
        entry: see :attr:`ExecRequest.entry`.
    """

    code: str
    stdin: str = ""
    argv: Sequence[str] = ()
    limits: Limits | None = None
    cache_code: bool = True
    entry: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.code, str):
            raise TypeError(f"Companion.code must be str, got {type(self.code).__name__}")
        _check_entry("Companion", self.entry, self.cache_code)


@dataclass(frozen=True)
class CompanionResult:
    """How the companion ended: exit status, its own output (capped) and CPU time."""

    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    cpu_s: float = 0.0


@dataclass(frozen=True)
class ExecRequest:
    """One program to run in a sandbox.

    The code runs as ``__main__`` in a freshly forked child of a warm interpreter,
    in its own temp dir (the working directory) and process group; or, with ``command``,
    that child executes a program of the sandbox's (a compiler, a compiled binary, ``node``)
    under the same uid, limits and isolation.

    Args:
        code: Python source of the program (``""`` with ``command``).
        stdin: text fed to the program's standard input (then EOF).
        files: extra files written into the working directory before the run
            (relative paths only).
        limits: hard limits for this run.
        argv: ``sys.argv[1:]`` seen by the program.
        cache_code: the code is harness-authored and repeated across many requests
            (a test runner, say): compile it once per sandbox, in the zygote, and reuse
            the code object. Never set it for model-written code.
        companion: a trusted process run beside the program (see :class:`Companion`);
            the program then has the socket to it on fd 3 instead of a report pipe.
        fetch_files: paths (relative to the work dir) of files to send back after the run, in
            :attr:`ExecResult.files`: regular files only, read once the program and everything
            it started are dead, ``limits.output_bytes`` in all.
        entry: with ``cache_code``: the zygote runs the code's top level once, as a module
            (``__name__`` is not ``"__main__"``), and each run calls its function of this
            name (``sys.argv`` set as usual) instead of executing the code again. Saves the
            module's set-up in every forked child; only for harness-authored code.
        command: run this argv instead of ``code``: ``command[0]`` is an absolute path or a
            name found on ``/usr/local/bin:/usr/bin:/bin``, started in the work dir (a
            ``./name`` is a file of ``files``). ``argv`` is then unused: the arguments are
            ``command[1:]``. A program that cannot be started exits with 127 and says why
            on stderr.
        env: environment variables set for the program on top of the sandbox's own
            (``PATH``, ``HOME``, ``LANG``).
        executable: names among ``files`` written with mode 0755 (a compiled program).
        interactive: the program talks to its companion over its standard streams (an
            interactive problem's interactor beside the solution): its stdin and stdout are
            its end of the companion link (the companion's fd 4) instead of pipes, so what it
            prints goes to the companion and what it reads comes from it; its fd 3 is the
            same link, its stderr stays a captured pipe. ``ExecResult.stdout`` is then empty;
            a program that prints more than the companion reads blocks on the full socket
            (until the companion ends the run, or the limits do). Needs a ``companion``;
            ``stdin`` must be empty (data for the exchange goes to the companion).
    """

    code: str
    stdin: str = ""
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    argv: Sequence[str] = ()
    cache_code: bool = False
    companion: Companion | None = None
    entry: str = ""
    fetch_files: Sequence[str] = ()
    command: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    executable: Sequence[str] = ()
    interactive: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.code, str):
            raise TypeError(f"ExecRequest.code must be str, got {type(self.code).__name__}")
        if self.command:
            if isinstance(self.command, str) or not all(isinstance(a, str) and "\0" not in a for a in self.command):
                raise ValueError(f"ExecRequest.command must be a sequence of strings, got {self.command!r}")
            if not self.command[0]:
                raise ValueError("ExecRequest.command[0] (the program to run) is empty")
            if self.code or self.cache_code:
                raise ValueError("ExecRequest.command replaces code: leave code empty and cache_code off")
        for key, value in self.env.items():
            if not (isinstance(key, str) and key and "=" not in key and "\0" not in key and isinstance(value, str)
                    and "\0" not in value):
                raise ValueError(f"ExecRequest.env: {key!r}={value!r} is not a valid variable")
        missing = [name for name in self.executable if name not in self.files]
        if missing:
            raise ValueError(f"ExecRequest.executable names files that are not in files: {missing}")
        for what, names in (("files", self.files), ("fetch_files", self.fetch_files)):
            for name in names:
                if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
                    raise ValueError(f"ExecRequest.{what}: {name!r} must be a relative path inside the work dir")
        _check_entry("ExecRequest", self.entry, self.cache_code)
        if self.interactive:
            if self.companion is None:
                raise ValueError("ExecRequest.interactive needs a companion (the program's stdin and stdout "
                                 "are its link to it)")
            if self.stdin:
                raise ValueError("ExecRequest.interactive: the program's stdin is the companion link; "
                                 "leave stdin empty (give the data to the companion)")


@dataclass(frozen=True)
class ExecResult:
    """What happened to one program.

    Attributes:
        status: why the run ended.
        exit_code: the exit status if the program exited, else ``None``.
        signal: the signal that killed it, if any.
        stdout / stderr: decoded output (UTF-8, invalid bytes replaced), each capped.
        stdout_truncated / stderr_truncated: True when the cap cut the output.
        report: bytes written to file descriptor 3 of the companion where there is one
            (its report, out of the program's reach), else of the program.
        wall_s: wall-clock seconds from fork to reap, measured inside the sandbox.
        cpu_s: user + system CPU seconds of the program and its reaped children.
        attempts: sandboxes used (2 when the first one died under the program).
        error: for SANDBOX_ERROR / SANDBOX_KILLED, what went wrong.
        timeout_by: for TIMEOUT, ``"cpu"`` (the CPU-time limit) or ``"wall"`` (the
            wall-clock backstop); empty otherwise.
        companion: how the companion ended, for requests that had one.
        files: the requested :attr:`ExecRequest.fetch_files` that existed, by name (missing
            ones, non-regular ones and those past the size budget are left out).
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
    timeout_by: str = ""
    companion: CompanionResult | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK
