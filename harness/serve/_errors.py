"""Errors of ``harness serve``: each is one HTTP answer with a message that says what to change.

Exception tree::

    HarnessError
    └── ServeError                 a request the service refuses (``status``: its HTTP code)
        ├── BadRequest       400   a field is missing or wrong (the message names it)
        ├── Unauthorized     401   no API key, or not one of the service's
        ├── NotFound         404   no such sandbox / context / file for this caller
        ├── Gone             404   the sandbox's session died or its node left (state lost)
        ├── Conflict         409   the sandbox is not in a state for this (paused, busy)
        ├── TooLarge         413   a body or file over the service's limit
        ├── Unprocessable    422   a value the service cannot run (an unknown language)
        └── LimitExceeded    429   too many sandboxes for the key or the service

A program's own failure is never one of these: it is data in the reply (an E2B ``error``
line, a SandboxFusion ``Failed``). Infrastructure failures are 5xx answers logged by the app.
"""

from __future__ import annotations

from .._errors import HarnessError

__all__ = ["BadRequest", "Conflict", "Gone", "LimitExceeded", "NotFound", "ServeError", "TooLarge",
           "Unauthorized", "Unprocessable"]


class ServeError(HarnessError):
    """A refused request; ``status`` is its HTTP status code."""

    status = 400


class BadRequest(ServeError, ValueError):
    status = 400


class Unauthorized(ServeError):
    status = 401


class NotFound(ServeError, LookupError):
    status = 404


class Gone(NotFound):
    """The sandbox was there but its session is lost (died, its Ray node left)."""


class Conflict(ServeError):
    status = 409


class TooLarge(ServeError):
    status = 413


class Unprocessable(ServeError):
    status = 422


class LimitExceeded(ServeError):
    status = 429
