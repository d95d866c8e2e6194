"""A warm pool of sandboxes: hands them out, takes them back, replaces the broken ones.

Invariants (each has a test in tests/vmpool):

* a sandbox that died, missed its transport deadline, reported an anomaly (a
  process survived the sweep, its work dir could not be removed) or ran
  ``max_programs_per_sandbox`` programs is closed and never returned to the idle set;
* a program whose sandbox died under it, or was left in a state not reused (an
  anomaly, a corrupted or unknown reply), is retried once in a fresh sandbox; if that
  happens again the result is ``SANDBOX_KILLED`` (the program's failure); only when
  no sandbox can be started, or twice none could prepare the run before the program
  started, is it ``SANDBOX_ERROR`` (infrastructure): no program can cause that;
* ``close()`` kills every sandbox, idle or busy, and everything running in them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import (
    BackendUnavailableError,
    PoolClosedError,
    SandboxError,
    SandboxSetupError,
    SandboxStartError,
    VmpoolError,
)
from ._namespace import NamespaceSandbox
from ._settings import SettingsError
from ._types import ExecRequest, ExecResult, Status

if TYPE_CHECKING:
    from ._microvm import MicroVMTemplate
    from .image import ImageConfig

logger = logging.getLogger(__name__)

BACKENDS = ("namespace", "microvm", "auto")
ACCELS = ("auto", "kvm", "tcg")


class Sandbox(Protocol):
    """What the pool needs from a backend's sandbox."""

    backend: str
    programs_run: int
    broken: str

    def alive(self) -> bool: ...

    def execute(self, request: ExecRequest) -> ExecResult: ...

    def close(self) -> None: ...


def _setting(help_text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": help_text}, **kwargs)


@dataclass(frozen=True)
class PoolConfig:
    """How a :class:`Pool` is built; every field's help is in its metadata (``python -m harness config``).

    Raises:
        SettingsError: a value is out of range (``key`` names the field).
    """

    backend: str = _setting(
        "sandbox backend: 'namespace' (bubblewrap), 'microvm' (QEMU microvm clones of a snapshotted guest; "
        "KVM where a probe boot works, else TCG; needs a built image) or 'auto' (microvm where a built image "
        "boots under KVM, else namespace; the pool logs its choice)",
        default="namespace",
    )
    size: int | None = _setting(
        "sandboxes kept warm, i.e. programs run in parallel; null = one per CPU this process may use",
        default=None,
    )
    max_programs_per_sandbox: int = _setting(
        "recycle a sandbox after this many programs, so slow leaks in its interpreter or tmpfs never add up",
        default=1000,
    )
    python: str = _setting("namespace: the interpreter inside the sandbox", default="/usr/bin/python3")
    tmpfs_mb: int = _setting("namespace: size of each sandbox's private /tmp, MiB (>= 4)", default=64)
    start_timeout_s: float = _setting("seconds a sandbox may take to become ready", default=30.0)
    transport_slack_s: float = _setting(
        "seconds past a program's wall-clock limit the host waits for the sandbox's answer before it "
        "declares the sandbox dead (the transport deadline)",
        default=5.0,
    )
    image_config: str | None = _setting(
        "microvm: guest image YAML (e.g. configs/image.yaml), built beforehand with "
        "`python -m harness image build`; null = the default image",
        default=None,
    )
    accel: str = _setting("microvm: 'auto' (KVM if a probe boot works, else TCG), 'kvm' or 'tcg'", default="auto")
    site_packages: tuple[str, ...] = _setting(
        "namespace: host directories of Python packages for the programs (a venv's site-packages, a `pip install "
        "--target` directory), mounted read-only and put on sys.path; every uid must be able to read them. "
        "Debian's python3-* packages under /usr are there already. microvm: list Debian packages in the image "
        "config's extra_packages instead",
        default=(),
    )
    pin_cpus: bool = _setting(
        "namespace: pin each sandbox (agent, tester, programs) to one CPU, spread over the host by a "
        "machine-wide lease (faster hand-overs; `harness bench` measures it); false where other heavy "
        "work shares the CPUs",
        default=True,
    )

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise SettingsError(f"{rule}, got {getattr(self, name)!r}", name, owner="PoolConfig")

        def positive_int(name: str, minimum: int = 1) -> bool:
            value = getattr(self, name)
            return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

        check(self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}")
        check(self.size is None or positive_int("size"), "size", "must be an integer >= 1 or null")
        check(positive_int("max_programs_per_sandbox"), "max_programs_per_sandbox", "must be an integer >= 1")
        check(positive_int("tmpfs_mb", 4), "tmpfs_mb", "must be an integer >= 4")
        check(self.accel in ACCELS, "accel", f"must be one of {', '.join(ACCELS)}")
        check(isinstance(self.pin_cpus, bool), "pin_cpus", "must be true or false")
        check(not isinstance(self.site_packages, str) and all(isinstance(p, str) and p for p in self.site_packages),
              "site_packages", "must be a list of directory paths")
        check(not (self.site_packages and self.backend == "microvm"), "site_packages",
              "holds host directories, which a microVM guest cannot see: for microvm, add Debian packages "
              "(python3-numpy...) to the image config's extra_packages")
        object.__setattr__(self, "site_packages", tuple(self.site_packages))
        for name in ("start_timeout_s", "transport_slack_s"):
            check(getattr(self, name) > 0, name, "must be > 0")

    @property
    def sandboxes(self) -> int:
        """The pool size: ``size``, or the number of CPUs this process may run on."""
        return self.size if self.size is not None else max(1, len(os.sched_getaffinity(0)))


def resolve_backend(name: str, image_config: str | None = None) -> str:
    """Map ``auto`` to a concrete backend, logging why.

    ``auto`` picks microvm only where KVM really works, found by booting the guest
    image under KVM (never by the existence of /dev/kvm); otherwise namespace. It builds
    no image (and runs no apt): without a built one it picks namespace and says how to
    build it.
    """
    if name != "auto":
        return name
    if not os.path.exists("/dev/kvm"):
        logger.info("backend auto: namespace (no /dev/kvm on this host)")
        return "namespace"
    from ._microvm import choose_accel
    from .image import find_image

    try:
        image = find_image(_image_config(image_config))
        if image is None:
            logger.info("backend auto: namespace (no microvm guest image is built for %s; build one with "
                        "`python -m harness image build%s`)", image_config or "the default image config",
                        f" --config {image_config}" if image_config else "")
            return "namespace"
        accel, reason = choose_accel(image, "auto")
    except VmpoolError as exc:
        logger.info("backend auto: namespace (microvm image unavailable: %s)", exc)
        return "namespace"
    if accel == "kvm":
        logger.info("backend auto: microvm (KVM works: %s)", reason)
        return "microvm"
    logger.info("backend auto: namespace (%s; microVMs would run under TCG, ~17x slower)", reason)
    return "namespace"


def _image_config(path: str | None) -> ImageConfig:
    from .image import ImageConfig, load_image_config

    return load_image_config(path) if path else ImageConfig()


class Pool:
    """Keeps ``config.sandboxes`` sandboxes warm and runs programs in them.

    Thread-safe: :meth:`run` may be called from many threads; :meth:`map` runs a
    batch concurrently over all sandboxes and returns results in input order.

    A pool never builds a guest image (no apt, no downloads): the microvm backend takes
    ``template`` (a :class:`MicroVMTemplate`) or the image built beforehand for
    ``config.image_config`` (``python -m harness image build``).

    Args:
        config: how to build the pool (or pass its fields as keyword ``overrides``).
        template: microvm only: the snapshot its sandboxes are cloned from.

    Raises:
        BackendUnavailableError: the backend cannot run here, or no microvm image is
            built (the message gives the command that builds it) (at construction).
        SandboxStartError: the first sandbox could not start (at construction).
    """

    def __init__(self, config: PoolConfig | None = None, *, template: MicroVMTemplate | None = None,
                 **overrides: object) -> None:
        if config is None:
            config = PoolConfig(**overrides)  # type: ignore[arg-type]
        elif overrides:
            raise TypeError("pass either a PoolConfig or keyword overrides, not both")
        if template is not None and config.backend != "microvm":
            raise ValueError(f"a template is a microvm snapshot: it needs backend='microvm', not {config.backend!r}")
        self.template = template
        self.config = dataclasses.replace(config, size=config.sandboxes)
        self.backend = resolve_backend(config.backend, config.image_config)
        if self.backend == "microvm" and config.site_packages:
            raise BackendUnavailableError("backend auto chose microvm, whose guests cannot see pool.site_packages "
                                          "(host directories): use backend namespace, or Debian packages in the "
                                          "image config's extra_packages")
        self._factory: Callable[[], Sandbox] = self._make_factory()
        self._idle: queue.Queue[Sandbox | None] = queue.Queue()
        self._live: set[Sandbox] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        self.stats = {"programs": 0, "sandboxes_started": 0, "sandboxes_retired": 0, "retries": 0}
        # Every sandbox is spawned from these long-lived threads: bubblewrap's
        # --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread* that forked it
        # exits, so spawning from a short-lived caller thread would kill the sandbox.
        self._spawner = ThreadPoolExecutor(max_workers=min(self.config.sandboxes, 4), thread_name_prefix="vmpool-spawn")
        try:
            # Start the sandboxes concurrently: the pool is ready when all are.
            for sandbox in self._spawner.map(lambda _: self._spawn(), range(self.config.sandboxes)):
                self._idle.put(sandbox)
        except BaseException:
            self.close()
            raise

    def _make_factory(self) -> Callable[[], Sandbox]:
        cfg = self.config
        if self.backend == "namespace":
            return lambda: NamespaceSandbox(python=cfg.python, tmpfs_mb=cfg.tmpfs_mb,
                                            start_timeout_s=cfg.start_timeout_s,
                                            transport_slack_s=cfg.transport_slack_s, pin_cpu=cfg.pin_cpus,
                                            site_packages=cfg.site_packages)
        if self.backend == "microvm":
            from ._microvm import MicroVMSandbox, MicroVMTemplate

            # The given template, else the snapshot of the built image (made once, cached on
            # disk); never an image build: that is `harness image build`'s job.
            template = self.template or MicroVMTemplate.ensure(_image_config(cfg.image_config), accel=cfg.accel)
            self.template = template
            return lambda: MicroVMSandbox(template, start_timeout_s=cfg.start_timeout_s,
                                          transport_slack_s=cfg.transport_slack_s)
        raise BackendUnavailableError(f"unknown backend {self.backend!r}")

    def _start_sandbox(self) -> Sandbox:
        """Start a sandbox on a spawner thread and wait for it to be ready."""
        try:
            return self._spawner.submit(self._spawn).result()
        except RuntimeError as exc:  # the spawner was shut down by close()
            raise PoolClosedError("pool is closed") from exc

    def _spawn(self) -> Sandbox:
        sandbox = self._factory()
        with self._lock:
            if self._closed:
                sandbox.close()
                raise PoolClosedError("pool closed while a sandbox was starting")
            self._live.add(sandbox)
            self.stats["sandboxes_started"] += 1
        return sandbox

    def _retire(self, sandbox: Sandbox) -> None:
        with self._lock:
            self._live.discard(sandbox)
            self.stats["sandboxes_retired"] += 1
        sandbox.close()

    def _acquire(self) -> Sandbox:
        """Take an idle sandbox, replacing it first if it died while idle.

        Raises:
            PoolClosedError: the pool is closed.
            SandboxStartError: the slot's sandbox was dead and no new one would start.
        """
        if self._closed:
            raise PoolClosedError("pool is closed")
        sandbox = self._idle.get()
        if sandbox is None:  # close() wakes waiters with None; pass it on
            self._idle.put(None)
            raise PoolClosedError("pool is closed")
        if sandbox.alive():
            return sandbox
        # Dead while idle (killed from outside, or a slot whose start failed): never
        # hand it out; start a fresh one in its place, in this thread.
        logger.info("idle sandbox unusable (%s); starting a fresh one", sandbox.broken or "exited")
        self._retire(sandbox)
        try:
            return self._start_sandbox()
        except PoolClosedError:
            raise
        except Exception as exc:
            self._idle.put(_DeadSlot(str(exc)))  # keep the slot; a later acquirer retries
            raise SandboxStartError(f"cannot start a sandbox: {exc}") from exc

    def _replace(self) -> None:
        """Fill a retired sandbox's slot; if the start fails, leave a dead slot that
        the next acquirer tries to fill again (and reports if it cannot)."""
        try:
            self._idle.put(self._start_sandbox())
        except PoolClosedError:
            pass
        except Exception as exc:
            logger.error("could not start a replacement sandbox: %s", exc)
            self._idle.put(_DeadSlot(str(exc)))

    def _release(self, sandbox: Sandbox) -> None:
        if self._closed:
            self._retire(sandbox)
            return
        if sandbox.alive() and sandbox.programs_run < self.config.max_programs_per_sandbox:
            self._idle.put(sandbox)
            return
        self._retire(sandbox)
        self._replace()

    def run(self, request: ExecRequest) -> ExecResult:
        """Run one program and return its result; a program's failure is data.

        A sandbox that dies under the program is replaced and the program retried
        once in a fresh sandbox.

        Raises:
            PoolClosedError: the pool is closed.
        """
        errors: list[str] = []
        for attempt in (1, 2):
            try:
                sandbox = self._acquire()
            except SandboxStartError as exc:
                # Not the program's doing: no sandbox could be given to it.
                return ExecResult(status=Status.SANDBOX_ERROR, attempts=attempt,
                                  error=" | ".join([*errors, str(exc)])[:1000])
            try:
                result = sandbox.execute(request)
            except SandboxError as exc:
                errors.append(str(exc))
                self._release(sandbox)  # broken: retired and replaced
                if attempt == 1:
                    with self._lock:
                        self.stats["retries"] += 1
                    logger.info("sandbox died under a program (%s); retrying in a fresh sandbox", exc)
                    continue
                with self._lock:
                    self.stats["programs"] += 1
                if isinstance(exc, SandboxSetupError):
                    # Twice the run could not even be prepared: nothing of the program ran.
                    return ExecResult(status=Status.SANDBOX_ERROR, attempts=2,
                                      error="no sandbox could prepare the run: " + " | ".join(errors)[:1000])
                return ExecResult(status=Status.SANDBOX_KILLED, attempts=2,
                                  error="the program's sandbox died twice: " + " | ".join(errors)[:1000])
            except BaseException:
                self._release(sandbox)
                raise
            self._release(sandbox)
            with self._lock:
                self.stats["programs"] += 1
            if attempt == 2:
                result = dataclasses.replace(result, attempts=2)
            return result
        raise AssertionError("unreachable")

    @property
    def isolation_lost(self) -> str:
        """What this pool's sandboxes lack compared with the full design ("" = nothing), e.g.
        the tester and program sharing a uid when run as an ordinary user without subordinate uids."""
        return next((lost for sb in self.sandboxes() if (lost := getattr(sb, "isolation_lost", ""))), "")

    def sandboxes(self) -> list[Sandbox]:
        """The pool's live sandboxes now (a copy: sandboxes come and go as they are retired)."""
        with self._lock:
            return list(self._live)

    def map(self, requests: Iterable[ExecRequest]) -> list[ExecResult]:
        """Run many programs concurrently over the pool; results in input order."""
        return list(self.imap(requests))

    def imap(self, requests: Iterable[ExecRequest]) -> Iterator[ExecResult]:
        """Like :meth:`map`, yielding results in input order as they complete."""
        executor = self._get_executor()
        return executor.map(self.run, requests)

    def submit(self, request: ExecRequest) -> Future[ExecResult]:
        """Queue ``request`` on the pool's threads (one per sandbox, first in, first out).

        Returns:
            A future of its result. Cancelling it before it starts keeps it from running
            (``Future.cancel`` returns False once it has started; it then runs to its end).

        Raises:
            PoolClosedError: the pool is closed.
        """
        return self._get_executor().submit(self.run, request)

    def _get_executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise PoolClosedError("pool is closed")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.config.sandboxes,
                                                    thread_name_prefix="vmpool")
            return self._executor

    def live_sandboxes(self) -> int:
        with self._lock:
            return len(self._live)

    def close(self) -> None:
        """Kill every sandbox, idle or busy, and all their processes. Idempotent."""
        with self._lock:
            self._closed = True
            live = list(self._live)
            self._live.clear()
            executor, self._executor = self._executor, None
        self._idle.put(None)
        for sandbox in live:
            sandbox.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self._spawner.shutdown(wait=True, cancel_futures=True)
        # A sandbox that finished starting while we were closing closes itself in
        # _spawn (it sees _closed); nothing else can still be alive here.

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _DeadSlot:
    """Stands in for a sandbox that could not be started; the next acquirer replaces it."""

    backend = "none"
    programs_run = 0

    def __init__(self, reason: str) -> None:
        self.broken = reason

    def alive(self) -> bool:
        return False

    def execute(self, request: ExecRequest) -> ExecResult:  # pragma: no cover - never handed out
        raise SandboxError(self.broken)

    def close(self) -> None:
        pass
