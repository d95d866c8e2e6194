"""Exceptions raised by vmpool. Only infrastructure failures raise; a program's own
failure is reported as data in :class:`vmpool.ExecResult`.

Exception tree::

    VmpoolError
    ├── BackendUnavailableError   the requested backend cannot run on this host
    ├── SandboxError              a sandbox died, broke its protocol, or was left unusable by a program
    │   ├── SandboxStartError     it never became ready
    │   └── SandboxSetupError     it could not prepare a run (before any program code ran)
    ├── PoolClosedError           the pool was used after close()
    ├── SessionError              a session died, stopped answering or refused a request (_session.py)
    ├── SettingsError             a config value or file is invalid (also a ValueError; _settings.py)
    │   └── ImageConfigError      ... of the guest image config (also an ImageError)
    └── ImageError                a guest image could not be built (_image_config.py)
"""

from __future__ import annotations

__all__ = ["VmpoolError", "BackendUnavailableError", "SandboxError", "SandboxStartError", "SandboxSetupError",
           "PoolClosedError"]


class VmpoolError(Exception):
    """Base class of every exception vmpool raises."""


class BackendUnavailableError(VmpoolError):
    """The requested backend cannot run here (missing binary, kernel feature...)."""


class SandboxError(VmpoolError):
    """A sandbox failed: it died, broke the protocol, or missed its transport deadline."""


class SandboxStartError(SandboxError):
    """A sandbox did not become ready within its start timeout."""


class SandboxSetupError(SandboxError):
    """A sandbox could not prepare a run (its work dir, say) before the program started:
    infrastructure, not the program's doing."""


class PoolClosedError(VmpoolError):
    """The pool was closed; no more programs can be submitted."""
