"""vmpool: warm pools of isolated sandboxes that run untrusted Python programs.

Two backends behind one :class:`Pool`: ``namespace`` (bubblewrap) and ``microvm``
(QEMU microvm guests cloned copy-on-write from a snapshot). Knows nothing about
tests or rewards. The public surface::

    from vmpool import Pool, PoolConfig, ExecRequest, Limits
    with Pool(PoolConfig(size=2)) as pool:
        result = pool.run(ExecRequest(code="print(1 + 1)"))
        assert result.status is Status.OK and result.stdout == "2\\n"

Sessions (an agent's computer: state across calls, checkpoint, fork, pause; both backends)::

    from vmpool import Session, SessionConfig, SessionPool, SessionCheckpoint
    with Session(SessionConfig()) as s:
        s.run_code("x = 1"); s.run("ls"); a, b = s.fork(2)

A program's failure is data (:class:`ExecResult.status`); infrastructure failures
raise exceptions from the tree in :mod:`vmpool._errors` (a session's: ``SessionError``).
"""

from ._errors import (
    BackendUnavailableError,
    PoolClosedError,
    SandboxError,
    SandboxSetupError,
    SandboxStartError,
    VmpoolError,
)
from ._microvm import Checkpoint, MicroVMSandbox, MicroVMTemplate, choose_accel
from ._namespace import NamespaceSandbox
from ._pool import BACKENDS, Pool, PoolConfig, Sandbox, resolve_backend
from ._protocol import PRELOADED_MODULES, PROTOCOL_VERSION
from ._qemu import boot_probe
from ._session import (
    CodeError,
    CodeResult,
    CommandResult,
    FileInfo,
    Session,
    SessionCheckpoint,
    SessionConfig,
    SessionError,
)
from ._session_pool import SessionPool
from ._settings import SettingsError, describe_settings, load_settings, settings_from_dict
from ._types import Companion, CompanionResult, ExecRequest, ExecResult, Limits, Status
from .image import ImageConfig, ImageConfigError, ImagePaths, build_image, find_image, load_image_config

__all__ = [
    "SessionPool",
    "SessionCheckpoint",
    "SessionError",
    "SessionConfig",
    "Session",
    "FileInfo",
    "CommandResult",
    "CodeResult",
    "CodeError",
    "BACKENDS",
    "PRELOADED_MODULES",
    "PROTOCOL_VERSION",
    "BackendUnavailableError",
    "Checkpoint",
    "Companion",
    "CompanionResult",
    "ExecRequest",
    "ExecResult",
    "ImageConfig",
    "ImageConfigError",
    "ImagePaths",
    "Limits",
    "MicroVMSandbox",
    "MicroVMTemplate",
    "NamespaceSandbox",
    "Pool",
    "PoolClosedError",
    "PoolConfig",
    "Sandbox",
    "SandboxError",
    "SandboxSetupError",
    "SandboxStartError",
    "SettingsError",
    "Status",
    "VmpoolError",
    "boot_probe",
    "build_image",
    "choose_accel",
    "describe_settings",
    "find_image",
    "load_image_config",
    "load_settings",
    "resolve_backend",
    "settings_from_dict",
]
