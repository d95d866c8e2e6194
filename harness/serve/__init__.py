"""``harness serve``: the sandbox services clients already talk to, on warm pools.

Faces, one ASGI app (:func:`create_app`):

- **SandboxFusion** ``POST /run_code`` (verl's code rewards, the ``sandbox-fusion`` client);
- **E2B**: the control plane (``/sandboxes``...), envd (``/process.Process/Start``, ``/files``)
  and the code interpreter (``/execute``, ``/contexts``), for the unmodified ``e2b`` /
  ``e2b-code-interpreter`` SDK with ``E2B_API_URL`` and ``E2B_SANDBOX_URL`` set to the service;
  each E2B sandbox is one ``vmpool`` session;
- **grading** ``POST /grade``: problems and completions in, verdict rows out.

::

    from harness.serve import ServeConfig, create_app
    app = create_app(ServeConfig(tokens=("a-long-secret",)))   # any ASGI server runs it
    with running(ServeConfig()) as url: ...                     # or in a thread of this process

Errors are in :mod:`harness.serve._errors` (``ServeError`` and one class per HTTP refusal).
"""

from ._app import create_app, run, running
from ._config import ServeConfig
from ._errors import (
    BadRequest,
    Conflict,
    Gone,
    LimitExceeded,
    NotFound,
    ServeError,
    TooLarge,
    Unauthorized,
    Unprocessable,
)

__all__ = [
    "BadRequest",
    "Conflict",
    "Gone",
    "LimitExceeded",
    "NotFound",
    "ServeConfig",
    "ServeError",
    "TooLarge",
    "Unauthorized",
    "Unprocessable",
    "create_app",
    "run",
    "running",
]
