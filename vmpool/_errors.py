"""Exceptions raised by vmpool. Only infrastructure failures raise; a program's own
failure is reported as data in :class:`vmpool.ExecResult`.

Exception tree::

    VmpoolError
    ├── BackendUnavailableError   the requested backend cannot run on this host
    ├── SandboxError              a sandbox failed to start, died, or broke its protocol
    │   └── SandboxStartError     it never became ready
    └── PoolClosedError           the pool was used after close()
"""

from __future__ import annotations

__all__ = ["VmpoolError", "BackendUnavailableError", "SandboxError", "SandboxStartError", "PoolClosedError"]


class VmpoolError(Exception):
    """Base class of every exception vmpool raises."""


class BackendUnavailableError(VmpoolError):
    """The requested backend cannot run here (missing binary, kernel feature...)."""


class SandboxError(VmpoolError):
    """A sandbox failed: it died, broke the protocol, or missed its transport deadline."""


class SandboxStartError(SandboxError):
    """A sandbox did not become ready within its start timeout."""


class PoolClosedError(VmpoolError):
    """The pool was closed; no more programs can be submitted."""
