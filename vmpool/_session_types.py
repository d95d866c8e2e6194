"""What a session is configured with and what its calls return (the plain data of :mod:`vmpool._session`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._settings import SettingsError

__all__ = ["CodeError", "CodeResult", "CommandResult", "FileInfo", "SessionConfig", "call_limits", "entry_args"]


def _setting(help_text: str, default: object) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class SessionConfig:
    """Limits and set-up of one session; every field's help is in its metadata.

    Raises:
        SettingsError: a value is out of range (``key`` names the field).
    """

    memory_mb: int = _setting("address-space limit of the session's processes, each, MiB (>= 64)", 1024)
    max_processes: int = _setting(
        "processes the session may have at once (the kernel's floor for a pid namespace's pid_max makes it "
        "at least 299 on the namespace backend)", 64)
    disk_mb: int = _setting("size of the session's /tmp, where its home (/tmp/home) is, MiB (>= 8)", 256)
    file_size_bytes: int = _setting("largest file the session may write or the host may read from it", 16 << 20)
    output_bytes: int = _setting("cap on each of stdout and stderr of one call, bytes", 1 << 20)
    start_timeout_s: float = _setting("seconds the session may take to start", 30.0)
    transport_slack_s: float = _setting(
        "seconds past a call's timeout the host waits for its answer before the session is declared dead", 10.0)
    python: str = _setting("the interpreter inside the session", "/usr/bin/python3")
    backend: str = _setting("namespace (nested namespaces in a bubblewrap sandbox) or microvm (a VM per session)",
                            "namespace")
    accel: str = _setting("microvm only: auto (KVM where a probe boot works, else TCG), kvm or tcg", "auto")
    idle_timeout_s: float = _setting("a session no call has used for this long is closed, seconds", 600.0)
    max_lifetime_s: float = _setting("a session is closed this long after it started, seconds", 3600.0)

    def __post_init__(self) -> None:
        minimum = {"memory_mb": 64, "max_processes": 4, "disk_mb": 8, "file_size_bytes": 1, "output_bytes": 1}
        for name, least in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise SettingsError(f"must be an integer >= {least}, got {value!r}", name, owner="SessionConfig")
        if self.backend not in ("namespace", "microvm"):
            raise SettingsError(f"must be namespace or microvm, got {self.backend!r}", "backend", owner="SessionConfig")
        if self.accel not in ("auto", "kvm", "tcg"):
            raise SettingsError(f"must be auto, kvm or tcg, got {self.accel!r}", "accel", owner="SessionConfig")
        for name in ("start_timeout_s", "transport_slack_s", "idle_timeout_s", "max_lifetime_s"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"must be > 0, got {getattr(self, name)!r}", name, owner="SessionConfig")


@dataclass(frozen=True)
class CodeError:
    """An exception a cell raised: its type name, its message and the traceback text."""

    name: str
    value: str
    traceback: str


@dataclass(frozen=True)
class CodeResult:
    """What one :meth:`Session.run_code` call did.

    Attributes:
        text: ``repr`` of the cell's trailing expression (``None`` when there is none or it is ``None``).
        data: that value itself when it is plain data (JSON-like), else ``None`` (see ``has_data``).
        stdout / stderr: what the cell and the processes it started wrote (capped; ``*_truncated``).
        error: the exception the cell raised, if any (a timeout is ``TimeoutError``).
        execution_count: the context's cell counter, from 1.
        timed_out: the cell ran past its timeout: it was interrupted and what it started was killed.
    """

    text: str | None
    data: Any
    has_data: bool
    stdout: str
    stderr: str
    error: CodeError | None
    execution_count: int
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    limit: str = ""  # "cpu" / "memory": the call's cpu_s or memory_mb stopped it (see error)


@dataclass(frozen=True)
class CommandResult:
    """What one :meth:`Session.run` command did (``exit_code`` is ``None`` when it timed out)."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    cwd: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    limit: str = ""  # "cpu" / "memory": the command's cpu_s or memory_mb killed it


@dataclass(frozen=True)
class FileInfo:
    """An entry of :meth:`Session.list_dir`: its name, ``file`` / ``dir`` / ``link``, and size."""

    name: str
    type: str
    size: int


def call_limits(cpu_s: float | None, memory_mb: int | None) -> dict[str, Any]:
    """The wire fields of a call's limits (checked here: a bad value is the caller's error)."""
    out: dict[str, Any] = {}
    if cpu_s is not None:
        if isinstance(cpu_s, bool) or not isinstance(cpu_s, (int, float)) or not cpu_s > 0:
            raise ValueError(f"cpu_s must be a number > 0, got {cpu_s!r}")
        out["cpu_s"] = float(cpu_s)
    if memory_mb is not None:
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 1:
            raise ValueError(f"memory_mb must be an integer >= 1, got {memory_mb!r}")
        out["memory_mb"] = memory_mb
    return out


def entry_args(cfg: SessionConfig) -> tuple[str, ...]:
    return ("--memory-mb", str(cfg.memory_mb), "--max-processes", str(cfg.max_processes),
            "--disk-mb", str(cfg.disk_mb), "--file-size", str(cfg.file_size_bytes),
            "--output-bytes", str(cfg.output_bytes))
