"""``harness serve``'s settings: where it listens, who may use it, how much each may hold."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vmpool import SessionConfig, SettingsError

from .._config import HarnessConfig
from .._errors import ConfigError

__all__ = ["DEFAULT_TEMPLATES", "ServeConfig"]

# E2B's template names for its code interpreter and its plain sandbox; both are sessions here
# (the code interpreter needs nothing a session lacks).
DEFAULT_TEMPLATES = ("code-interpreter-v1", "code-interpreter", "base")


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig:
    """How ``harness serve`` runs; each field's help is in its metadata.

    Raises:
        ConfigError: a value is out of range or a token is missing where one is required
            (``key`` names the field).
    """

    host: str = _help("address to bind; anything but loopback requires a token", default="127.0.0.1")
    port: int = _help("TCP port to listen on (0 = any free port)", default=8000)
    tokens: tuple[str, ...] = _help(
        "API keys accepted (E2B's X-API-KEY, Authorization: Bearer, or ?token= for SandboxFusion "
        "clients that send no header); each key sees only its own sandboxes; empty = no key needed "
        "(loopback only)", default=())
    session: SessionConfig = _help("what each E2B sandbox is: a vmpool session (backend, memory, disk...)",
                                   default_factory=SessionConfig)
    templates: tuple[str, ...] = _help(
        "E2B template ids accepted by POST /sandboxes (each a session as `session` says); another id "
        "gets a 400 naming these", default=DEFAULT_TEMPLATES)
    custom_templates: Mapping[str, SessionConfig] = _help(
        "more E2B template ids, each with a session config of its own (e.g. a microvm session whose "
        "image carries other packages: SessionConfig(backend='microvm')); started on first use",
        default_factory=dict)
    warm_sessions: int = _help("sessions kept started ahead of E2B creates (>= 1)", default=4)
    max_sandboxes: int = _help("live E2B sandboxes (paused ones included) in the whole service", default=2000)
    max_sandboxes_per_token: int = _help("live E2B sandboxes one API key may hold", default=1100)
    default_timeout_s: float = _help("an E2B sandbox's life when the create request names none, seconds",
                                     default=300.0)
    max_timeout_s: float = _help("the longest life a request may ask for a sandbox, seconds", default=86400.0)
    max_body_bytes: int = _help("largest request body, bytes (413 beyond)", default=64 << 20)
    max_run_timeout_s: float = _help("largest run_timeout / compile_timeout a /run_code request may ask, seconds",
                                     default=60.0)
    max_grade_samples: int = _help("completions one POST /grade may carry", default=10_000)
    max_inflight: int = _help("requests running sandbox work at once (more wait their turn)", default=256)
    harness: HarnessConfig = _help(
        "the grading stack behind /run_code and /grade: pool (sandboxes, backend), limits, grading",
        default_factory=HarnessConfig)

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise ConfigError(message, key=key)

        need(0 <= self.port <= 65535, "port", f"must be 0..65535, got {self.port!r}")
        need(all(isinstance(t, str) and len(t) >= 8 for t in self.tokens), "tokens",
             "each token must be a string of at least 8 characters")
        need(bool(self.tokens) or is_loopback(self.host), "tokens",
             f"binding {self.host} (not loopback) needs a token: pass --token or set HARNESS_SERVE_TOKEN")
        need(bool(self.templates), "templates", "must name at least one template id")
        for name, session in self.custom_templates.items():
            need(isinstance(name, str) and bool(name) and isinstance(session, SessionConfig), "custom_templates",
                 f"each entry must map a template id to a vmpool.SessionConfig, got {name!r}: {session!r}")
        for name in ("max_sandboxes", "max_sandboxes_per_token", "max_body_bytes", "max_grade_samples",
                     "max_inflight"):
            need(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)!r}")
        need(self.warm_sessions >= 1, "warm_sessions", f"must be >= 1, got {self.warm_sessions!r}")
        need(0 < self.default_timeout_s <= self.max_timeout_s, "default_timeout_s",
             f"must be > 0 and <= max_timeout_s ({self.max_timeout_s}), got {self.default_timeout_s!r}")
        need(self.max_run_timeout_s > 0, "max_run_timeout_s", f"must be > 0, got {self.max_run_timeout_s!r}")

    def template_ids(self) -> tuple[str, ...]:
        return (*self.templates, *(t for t in self.custom_templates if t not in self.templates))

    def sandbox_session(self, template: str | None = None) -> SessionConfig:
        """The session config of an E2B sandbox of ``template``: its life is the service's to end
        (E2B's timeout), so the session's own idle timeout and lifetime are set past the longest
        one allowed."""
        base = self.custom_templates.get(template or "", self.session)
        try:
            return SessionConfig(**{**base.__dict__, "idle_timeout_s": self.max_timeout_s + 60,
                                    "max_lifetime_s": max(base.max_lifetime_s, 30 * 86400.0)})
        except SettingsError as exc:
            raise ConfigError(str(exc), key=f"session.{exc.key}") from exc
