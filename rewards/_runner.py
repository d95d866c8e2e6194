"""Host side of the in-sandbox runner: the runner's source, payloads, and report parsing.

The runner itself is :mod:`rewards._sandbox_runner` (a standalone stdlib-only script, read
as text and sent as ``ExecRequest.code``; see its docstring for what it does and does not
guarantee). This module builds the ``payload.json`` it reads and decodes the JSON-line
report it writes on the private channel, keeping only records that carry this run's nonce.
"""

from __future__ import annotations

import ast
import base64
import functools
import importlib.util
import json
import logging
import marshal
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from . import _sandbox_runner

__all__ = ["RUNNER_SOURCE", "RunnerReport", "build_payload", "new_nonce", "parse_report"]

logger = logging.getLogger(__name__)

RUNNER_SOURCE: str = resources.files(__package__).joinpath("_sandbox_runner.py").read_text(encoding="utf-8")
"""Source of the in-sandbox runner, sent as ``ExecRequest.code``."""


# Test units are rewritten (comparisons, calls... routed through the runner's guards) and
# compiled here, once per distinct unit, instead of in every sandbox run: the runner loads the
# marshalled code when the sandbox interpreter has this interpreter's bytecode format (same
# magic number) and otherwise rewrites the unit itself. The token only keeps the guard
# placeholders apart from test code's own string constants; it is not a secret.
_PRE_TOKEN = secrets.token_hex(8)
_PRE_PH = _sandbox_runner.placeholder_names(_PRE_TOKEN)
_PRE_MAGIC = importlib.util.MAGIC_NUMBER.hex()
_Rewriter = _sandbox_runner.make_rewriter(ast, _PRE_PH)


@functools.lru_cache(maxsize=4096)
def _precompiled_unit(unit: str, index: int) -> str | None:
    """Base64 of the marshalled, rewritten code of a test unit; None to leave it to the runner."""
    if _PRE_TOKEN in unit:
        return None
    filename = f"<rewards-test-{index}>"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "'str' object is not callable" on the placeholders
            tree = _Rewriter().visit(ast.parse(unit, filename))
            ast.fix_missing_locations(tree)
            # optimize=0: asserts must survive even if the host runs with -O.
            code = compile(tree, filename, "exec", dont_inherit=True, optimize=0)
        return base64.b64encode(marshal.dumps(code)).decode("ascii")
    except Exception:  # SyntaxError and the like: the runner compiles it and reports the error
        return None


def new_nonce() -> str:
    """A fresh secret that authenticates one run's report records."""
    return secrets.token_hex(16)


def build_payload(*, nonce: str, mode: str, program: str, setup: str = "",
                  units: Sequence[str] = (), fn_name: str | None = None,
                  cases: Sequence[tuple[Sequence[Any], dict[str, Any]]] = ()) -> str:
    """The ``payload.json`` text for one runner execution.

    Args:
        nonce: secret the runner puts in every record (see :func:`new_nonce`).
        mode: ``"assert"`` or ``"call"``.
        program: the program under test.
        setup: trusted code run before the program.
        units: assert mode: test code units.
        fn_name: call mode: the function to call.
        cases: call mode: ``(args, kwargs)`` per case (expected values stay on the host).

    Raises:
        ValueError: unknown mode, or missing fn_name in call mode.
    """
    if mode not in ("assert", "call"):
        raise ValueError(f"mode must be 'assert' or 'call', got {mode!r}")
    doc: dict[str, Any] = {"nonce": nonce, "mode": mode, "program": program, "setup": setup}
    if mode == "assert":
        doc["units"] = list(units)
        doc["pre"] = {"tok": _PRE_TOKEN, "magic": _PRE_MAGIC,
                      "units": [_precompiled_unit(unit, i) for i, unit in enumerate(doc["units"])]}
    else:
        if not fn_name:
            raise ValueError("call mode needs fn_name")
        doc["fn_name"] = fn_name
        doc["cases"] = [json.dumps([list(args), dict(kwargs)]) for args, kwargs in cases]
    return json.dumps(doc)


@dataclass
class RunnerReport:
    """What the runner reported, from authenticated records only.

    Attributes:
        done: the final record arrived (without it nothing counts as passed).
        results: per-test pass flags from the ``done`` record (empty when not done).
        partial: per-test flags seen before the run ended (for partial credit on timeouts).
        values: call mode: index -> returned JSON value.
        errors: index -> error text of failed tests.
        load_error: why the program did not load, if it did not.
        forged: number of lines that did not carry the nonce (written by the program).
    """

    done: bool = False
    results: list[bool] = field(default_factory=list)
    partial: dict[int, bool] = field(default_factory=dict)
    values: dict[int, Any] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    load_error: str | None = None
    forged: int = 0


def parse_report(data: bytes, nonce: str, expected_units: int) -> RunnerReport:
    """Decode the runner's report channel, ignoring anything not carrying ``nonce``.

    Args:
        data: the raw bytes of ``ExecResult.report``.
        nonce: the secret of this run.
        expected_units: how many tests the payload held; a ``done`` record with another
            count is treated as absent.

    Returns:
        The authenticated report.
    """
    report = RunnerReport()
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            report.forged += 1
            continue
        if not isinstance(rec, dict) or rec.get("n") != nonce:
            report.forged += 1
            continue
        kind = rec.get("t")
        if kind == "load":
            report.load_error = str(rec.get("err"))[:500]
        elif kind in ("unit", "call"):
            i = rec.get("i")
            if isinstance(i, int):
                report.partial[i] = rec.get("ok") is True
                if rec.get("ok") is True and kind == "call":
                    report.values[i] = rec.get("value")
                elif rec.get("err"):
                    report.errors[i] = str(rec["err"])[:500]
        elif kind == "done":
            results = rec.get("results")
            if isinstance(results, list) and len(results) == expected_units and all(r in (True, False) for r in results):
                report.done = True
                report.results = [r is True for r in results]
                if rec.get("load_error"):
                    report.load_error = str(rec["load_error"])[:500]
            elif rec.get("load_error") == "syntax":
                report.done = True
                report.results = [False] * expected_units
    if report.forged:
        logger.debug("ignored %d report line(s) without this run's nonce", report.forged)
    return report
