"""Sessions on the microVM backend: one VM per session, its guest running the same session
supervisor as a namespace sandbox (the guest agent hands it its channel).

What differs from the namespace backend: a checkpoint is the whole VM (RAM and devices, through
QEMU's migration to a file), so it keeps everything, background processes included; a fork is a
new VM restored from that file; a pause writes the VM to a file and ends its QEMU (its memory is
freed), and a resume restores it. The isolation between sessions is the VM boundary.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ._errors import SandboxError
from ._microvm import Checkpoint as VMCheckpoint
from ._microvm import MicroVMTemplate
from ._session_family import Family, SessionError

if TYPE_CHECKING:
    from ._session_types import SessionConfig

_TEMPLATES: dict[str, MicroVMTemplate] = {}
_TEMPLATES_LOCK = threading.Lock()


def template(accel: str) -> MicroVMTemplate:
    """The default guest image's snapshot (made once per process and accelerator).

    Raises:
        BackendUnavailableError: no guest image is built (the message says how to build one).
    """
    with _TEMPLATES_LOCK:
        found = _TEMPLATES.get(accel)
        if found is None:
            found = _TEMPLATES[accel] = MicroVMTemplate.ensure(accel=accel)
        return found


def new_family(cfg: SessionConfig, entry_args: tuple[str, ...], checkpoint: VMCheckpoint | None = None) -> Family:
    """A session VM: fresh (its supervisor started), or restored from ``checkpoint``."""
    return Family.microvm(template(cfg.accel), entry_args, checkpoint=checkpoint,
                          start_timeout_s=max(cfg.start_timeout_s, 60.0), transport_slack_s=cfg.transport_slack_s)


def capture(family: Family) -> VMCheckpoint:
    """The whole VM of a session family, written to a file (the VM goes on).

    Raises:
        SessionError: the VM is dead or the capture failed.
    """
    try:
        return family.sandbox.checkpoint()  # type: ignore[attr-defined, no-any-return]
    except SandboxError as exc:
        raise SessionError(f"cannot checkpoint the session's VM: {exc}") from exc
