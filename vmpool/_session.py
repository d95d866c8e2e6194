"""Sessions: one agent's computer that keeps its state across calls, on either backend.

A :class:`Session` is a *branch* of a session family (:mod:`vmpool._session_family`): an
interpreter in namespaces of its own inside a sandbox (namespace backend) or a VM (microVM,
:mod:`vmpool._session_vm`) whose supervisor (``_guest/session.py``) never runs the model's
code. Python contexts, the shell's working directory and the files persist from call to call;
:meth:`Session.checkpoint` / :meth:`Session.fork` copy that state into sessions isolated from
one another. Everything in a session is the model's own, so nothing the host trusts lives
there (grading happens elsewhere, in a fresh grading sandbox). Configuration and results are
plain data in :mod:`vmpool._session_types`.

A call's failure is data (:class:`CodeResult.error`, :class:`CommandResult.exit_code`, a
``timed_out`` flag, a ``limit``); a session that died or stopped answering raises
:class:`SessionError`.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _session_vm as _vm
from ._errors import VmpoolError
from ._microvm import Checkpoint as VMCheckpoint
from ._session_family import REAPER as _REAPER
from ._session_family import Family, Lost, SessionError
from ._session_types import CodeError, CodeResult, CommandResult, FileInfo, SessionConfig
from ._session_types import call_limits as _call_limits
from ._session_types import entry_args as _entry_args

__all__ = ["CodeError", "CodeResult", "CommandResult", "FileInfo", "Session", "SessionCheckpoint", "SessionConfig",
           "SessionError"]

logger = logging.getLogger(__name__)


class Session:
    """A computer of the model's own that keeps its state across calls. A context manager;
    :meth:`close` always cleans up.

    Args:
        config: limits and set-up (default :class:`SessionConfig()`).

    Raises:
        BackendUnavailableError: bubblewrap or seccomp support is missing.
        SandboxStartError: the session did not start in time.
    """

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.config = config or SessionConfig()
        cfg = self.config
        if cfg.backend == "microvm":
            family = _vm.new_family(cfg, _entry_args(cfg))
        else:
            family = Family.namespace(python=cfg.python, tmpfs_mb=cfg.disk_mb, start_timeout_s=cfg.start_timeout_s,
                                      transport_slack_s=cfg.transport_slack_s, entry_args=_entry_args(cfg))
        try:
            branch = str(family.control({"op": "new"})["branch"])
        except BaseException:
            family.close()
            raise
        self._attach(family, branch, cfg)

    @classmethod
    def _of(cls, family: Family, branch: str, config: SessionConfig) -> Session:
        session = cls.__new__(cls)
        session._attach(family, branch, config)
        return session

    def _attach(self, family: Family, branch: str, config: SessionConfig) -> None:
        self.config = config
        self._family = family
        self._branch = branch
        self._lock = threading.Lock()
        self._closed = ""  # why it is closed ("" while open)
        self._paused = False
        self._parked: VMCheckpoint | None = None  # a paused microVM session's VM, on disk
        self.started = self.last_used = time.monotonic()
        family.join()
        _REAPER.watch(self)

    @property
    def closed(self) -> bool:
        if self._parked is not None:  # its VM is on disk, not dead
            return bool(self._closed)
        return bool(self._closed or self._family.dead)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def isolation_lost(self) -> str:
        """What this session lacks compared with the full design ("" = nothing)."""
        return self._family.isolation_lost

    def _why_closed(self) -> str:
        return self._closed or self._family.dead or "closed"

    def _call(self, message: dict[str, Any], timeout: float,
              on_stream: Callable[[str, str], None] | None = None) -> dict[str, Any]:
        with self._lock:
            if self.closed:
                raise SessionError(f"the session is closed: {self._why_closed()}")
            if self._parked is not None:
                raise SessionError("the session is paused: resume it first")
            self.last_used = time.monotonic()
            try:
                reply = self._family.call({**message, "branch": self._branch}, timeout + self.config.transport_slack_s,
                                          on_stream)
            except Lost as exc:
                self._shut(f"{exc}; its state is lost")
                raise SessionError(f"the session died ({exc}); its state is lost") from exc
            except SessionError as exc:
                self._shut(f"it stopped answering ({exc})")
                raise SessionError(f"the session stopped answering ({exc}); it was closed") from exc
            finally:
                self.last_used = time.monotonic()
        if isinstance(reply.get("error"), str):  # the supervisor's refusal (a cell's error is a dict)
            raise SessionError(reply["error"])
        return reply

    def _control(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self.closed:
                raise SessionError(f"the session is closed: {self._why_closed()}")
            try:
                return self._family.control({**message, "branch": self._branch})
            finally:
                self.last_used = time.monotonic()

    def run_code(self, code: str, *, timeout: float = 30.0, context: str = "default",
                 cpu_s: float | None = None, memory_mb: int | None = None,
                 on_stdout: Callable[[str], None] | None = None,
                 on_stderr: Callable[[str], None] | None = None) -> CodeResult:
        """Run a Python cell in a persistent context (variables, imports and definitions persist).

        Args:
            code: the cell.
            timeout: seconds of wall-clock time; past it the cell is interrupted (``TimeoutError``)
                and what it started is killed; the context survives.
            context: the context's name; each has its own namespace and counter.
            cpu_s / memory_mb: CPU seconds and resident memory (MiB) the call may add, the cell and
                what it starts together; measured and enforced from outside the session (the
                supervisor), past either the cell is stopped and what it started killed
                (``limit``, ``CPUTimeLimitExceeded`` / ``MemoryLimitExceeded``); the session goes on.
            on_stdout / on_stderr: called with the cell's output as it comes (pieces of text, from
                a background thread, within ``output_bytes``); the result still holds all of it.

        Raises:
            SessionError: the session died (a cell that stops the interpreter itself, say).
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be str, got {type(code).__name__}")
        r = self._call({"op": "exec", "code": code, "context": context, "timeout": timeout,
                        **_call_limits(cpu_s, memory_mb)}, timeout, _streams(on_stdout, on_stderr))
        err = r.get("error")
        return CodeResult(r.get("result"), r.get("data"), bool(r.get("has_data")), r.get("stdout", ""),
                          r.get("stderr", ""), CodeError(err["name"], err["value"], err["traceback"]) if err else None,
                          int(r.get("execution_count", 0)), bool(r.get("timed_out")),
                          bool(r.get("stdout_truncated")), bool(r.get("stderr_truncated")), str(r.get("limit", "")))

    def interrupt(self) -> bool:
        """Stop the call this session is running (from another thread), as its timeout would: a
        cell is interrupted (``TimeoutError``) and what it started killed, a command's processes
        are killed; the session goes on. Used when whoever waited for the call has gone away.

        Returns:
            True when a call was running, False when there was none (or the session is paused,
            closed or its VM is parked).
        """
        if self.closed or self._parked is not None or self._family.dead:
            return False
        try:  # not under the session's lock: the call being stopped holds it
            reply = self._family.control({"op": "interrupt", "branch": self._branch})
        except SessionError as exc:
            logger.debug("interrupting session %s: %s", self._branch, exc)
            return False
        return bool(reply.get("interrupted"))

    def restart_context(self, context: str = "default") -> None:
        """Forget a context's variables: its next cell starts from a fresh namespace."""
        self._call({"op": "restart", "context": context}, 10.0)

    def run(self, command: str, *, timeout: float = 30.0, cpu_s: float | None = None, memory_mb: int | None = None,
            on_stdout: Callable[[str], None] | None = None,
            on_stderr: Callable[[str], None] | None = None) -> CommandResult:
        """Run a shell command (``bash -c``) in the session's working directory, which persists
        (``cpu_s``, ``memory_mb``, ``on_stdout`` / ``on_stderr`` as for :meth:`run_code`).

        Raises:
            SessionError: the session died.
        """
        r = self._call({"op": "shell", "command": command, "timeout": timeout, **_call_limits(cpu_s, memory_mb)},
                       timeout, _streams(on_stdout, on_stderr))
        return CommandResult(r.get("exit_code"), r.get("stdout", ""), r.get("stderr", ""), bool(r.get("timed_out")),
                             r.get("cwd", ""), bool(r.get("stdout_truncated")), bool(r.get("stderr_truncated")),
                             str(r.get("limit", "")))

    def write_file(self, path: str, data: str | bytes) -> None:
        """Write a file (relative paths are under the session's home, ``/tmp/home``).

        Raises:
            SessionError: the file is over ``file_size_bytes`` or cannot be written.
        """
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self._call({"op": "write", "path": path, "b64": base64.b64encode(raw).decode()}, 30.0)

    def read_file(self, path: str) -> bytes:
        """Read a file of the session (at most ``file_size_bytes``).

        Raises:
            SessionError: missing, unreadable or too large.
        """
        return base64.b64decode(self._call({"op": "read", "path": path}, 30.0)["b64"])

    def list_dir(self, path: str = ".") -> list[FileInfo]:
        """The entries of a directory of the session, sorted by name."""
        reply = self._call({"op": "list", "path": path}, 30.0)
        return [FileInfo(e["name"], e["type"], int(e["size"])) for e in reply["entries"]]

    def checkpoint(self) -> SessionCheckpoint:
        """An immutable copy of this session's state to fork from; the session goes on.

        What it keeps: every Python context (all objects, imports, definitions, counters),
        the shell's and the cells' working directories, and the files (``/tmp``,
        ``/dev/shm``; a file a cell holds open is reopened on the copy at the same offset).
        What it does not: processes running in the background at that moment (they end
        here, on the namespace backend), threads a cell left running (refused: join them),
        shared memory mappings (refused), pipes and sockets a cell holds (closed in forks).

        On the microVM backend the checkpoint is the whole VM: it keeps everything, running
        background processes and threads included.

        Raises:
            SessionError: refused (the reason says what to change) or the session died.
        """
        if self.config.backend == "microvm":
            with self._lock:
                if self.closed or self._parked is not None:
                    raise SessionError("the session is closed or paused")
                return SessionCheckpoint._of_vm(_vm.capture(self._family), self._branch, self.config)
        reply = self._control({"op": "checkpoint"})
        return SessionCheckpoint(self._family, str(reply["checkpoint"]), self.config)

    def fork(self, n: int = 1) -> list[Session]:
        """``n`` new sessions whose state equals this one's now (see :meth:`checkpoint` for
        what a state holds); each is isolated from the others and from this session.

        Raises:
            SessionError: refused, or the session died.
        """
        with self.checkpoint() as cp:
            return cp.fork(n)

    def pause(self) -> None:
        """Stop every process of the session: it uses no CPU until :meth:`resume`, and keeps
        everything, running background processes included. On the namespace backend it is
        SIGSTOP (memory stays in use); on the microVM backend the VM is written to a file and
        its QEMU ends (its memory is freed). Calls on a paused session are refused."""
        if self.config.backend == "microvm":
            with self._lock:
                if self.closed or self._parked is not None:
                    raise SessionError("the session is closed or already paused")
                if self._family.members != 1:
                    raise SessionError("the session shares its VM with a checkpoint or fork: it cannot be paused")
                self._parked = _vm.capture(self._family)
                self._paused = True
                self._family.leave()  # its last member: the VM ends
            return
        self._control({"op": "pause"})
        self._paused = True

    def resume(self) -> None:
        """Continue a paused session exactly where it stopped.

        Raises:
            SessionError: not paused, or (microVM) the VM could not be restored.
        """
        if self._parked is not None:
            with self._lock:
                parked = self._parked
                try:
                    family = _vm.new_family(self.config, _entry_args(self.config), checkpoint=parked)
                except VmpoolError as exc:
                    raise SessionError(f"cannot restore the paused session's VM: {exc}") from exc
                family.join()
                self._family, self._parked, self._paused = family, None, False
                self.last_used = time.monotonic()
            parked.close()
            return
        self._control({"op": "resume"})
        self._paused = False

    def _shut(self, why: str) -> None:
        """Mark closed and free the branch (the caller may hold ``_lock``)."""
        if self._closed:
            return
        self._closed = why
        _REAPER.forget(self)
        if self._parked is not None:  # its VM is a file; its family was left at the pause
            self._parked.close()
            self._parked = None
            return
        if not self._family.dead:
            try:
                self._family.control({"op": "close", "branch": self._branch})
            except SessionError as exc:
                logger.debug("closing session %s: %s", self._branch, exc)
        self._family.leave()

    def close(self) -> None:
        """Kill the session and everything in it. Idempotent."""
        self._shut("closed by its owner")

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SessionCheckpoint:
    """An immutable snapshot of a session's state; :meth:`fork` starts sessions from it.

    A context manager; :meth:`close` frees it (sessions forked from it live on).
    """

    def __init__(self, family: Family | None, cid: str, config: SessionConfig) -> None:
        self._family = family
        self._cid = cid
        self.config = config
        self._closed = False
        self._lock = threading.Lock()
        self._vm: VMCheckpoint | None = None  # microVM: the captured VM, and the branch in it
        if family is not None:
            family.join()

    @classmethod
    def _of_vm(cls, vm: VMCheckpoint, branch: str, config: SessionConfig) -> SessionCheckpoint:
        cp = cls(None, branch, config)
        cp._vm = vm
        return cp

    @property
    def closed(self) -> bool:
        return self._closed or (self._family is not None and bool(self._family.dead))

    def fork(self, n: int = 1) -> list[Session]:
        """``n`` new sessions (1..64) with this checkpoint's state, isolated from one another.

        Raises:
            SessionError: the checkpoint is closed, or a fork failed (none is returned then).
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
            raise ValueError(f"n must be an integer from 1 to 64, got {n!r}")
        with self._lock:
            if self.closed:
                raise SessionError("the checkpoint is closed")
            if self._vm is not None:  # a VM restored from the file per fork; the branch is in each
                return self._fork_vms(n)
            assert self._family is not None
            reply = self._family.control({"op": "spawn", "checkpoint": self._cid, "n": n})
        return [Session._of(self._family, str(b), self.config) for b in reply["branches"]]

    def _fork_vms(self, n: int) -> list[Session]:
        sessions: list[Session] = []
        try:
            for _ in range(n):
                try:
                    family = _vm.new_family(self.config, _entry_args(self.config), checkpoint=self._vm)
                except VmpoolError as exc:
                    raise SessionError(f"cannot fork the session's VM: {exc}") from exc
                sessions.append(Session._of(family, self._cid, self.config))
        except BaseException:
            for s in sessions:
                s.close()
            raise
        return sessions

    def close(self) -> None:
        """Free the checkpoint. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._vm is not None:
            self._vm.close()
            return
        assert self._family is not None
        if not self._family.dead:
            try:
                self._family.control({"op": "release", "checkpoint": self._cid})
            except SessionError as exc:
                logger.debug("releasing checkpoint %s: %s", self._cid, exc)
        self._family.leave()

    def __enter__(self) -> SessionCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()




def _streams(on_stdout: Callable[[str], None] | None,
             on_stderr: Callable[[str], None] | None) -> Callable[[str, str], None] | None:
    if on_stdout is None and on_stderr is None:
        return None

    def route(name: str, text: str) -> None:
        target = on_stdout if name == "stdout" else on_stderr
        if target is not None:
            target(text)
    return route
