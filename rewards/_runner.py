"""Host side of assert- and call-kind test runs: the request, the trusted names, the report.

One sample becomes one vmpool request with two processes (see :mod:`rewards._sandbox_side`):
the program half runs the model's code; the tester half, a vmpool
:class:`~vmpool.Companion` under another uid, holds the test code, the trusted prompt
helpers and setup, and calls the program through proxies. This module decides which
names the tests call on the program, builds the tester's payload (it travels on the
tester's stdin and never enters the program's process) and decodes the tester's report.
"""

from __future__ import annotations

import ast
import base64
import builtins
import functools
import json
import logging
import marshal
import sys
import types
import warnings
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from vmpool import Companion, ExecRequest, Limits

from . import _sandbox_wire
from ._excerpt import excerpt
from ._problems import AssertTests, CallTests, Problem

__all__ = ["SIDE_SOURCE", "RunnerReport", "build_request", "call_plan", "compile_program", "load_message",
           "parse_report", "trusted_names"]

logger = logging.getLogger(__name__)

SIDE_SOURCE: str = "\n".join(
    resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    for name in ("_sandbox_wire.py", "_sandbox_side.py", "_sandbox_tester.py")
)
"""Source of both in-sandbox halves (program and tester), sent as code of each: the wire
module's text, then the sides' (which import the wire only when imported on the host)."""

_BUILTINS = frozenset(dir(builtins))
# The tester's own memory: test code, expected values and decoded program values stay
# apart from the program's limits; the tester only needs room to build them.
_TESTER_MIN_MB = 512


def _parse(source: str) -> ast.Module | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


def _bound_and_loaded(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Names bound anywhere in ``tree`` (assignments, defs, imports, parameters) and names read."""
    bound: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound.add((alias.asname or alias.name).partition(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound, loaded


def _top_level_bound(source: str) -> set[str]:
    tree = _parse(source)
    return _bound_and_loaded(tree)[0] if tree is not None else set()


def prelude_of(problem: Problem) -> str:
    """The trusted code the tester runs before the tests: a continue-mode prompt (HumanEval
    helpers such as ``poly`` or ``encode_cyclic``), when it compiles on its own."""
    if problem.completion_mode != "continue" or not problem.prompt:
        return ""
    return _prelude(problem.prompt)


@functools.lru_cache(maxsize=4096)
def _prelude(prompt: str) -> str:
    # Cached: every sample of a problem has the same prompt, and parsing it is the
    # costliest step of planning a request.
    for candidate in (prompt, prompt.rstrip() + "\n    pass\n"):
        if _parse(candidate) is not None:
            return candidate
    return ""


@functools.lru_cache(maxsize=4096)
def trusted_names(units: tuple[str, ...], setup: str, prelude: str, entry_point: str | None) -> tuple[str, ...]:
    """The names tests call on the program (which become proxies in the tester).

    A name read by the test code that the test code, the setup code and the prelude do
    not bind and that is not a builtin belongs to the program; so does the entry point
    (HumanEval's ``check(candidate)`` gets it by name, and the prompt only declares it).
    Everything else the tests use comes from the trusted text, in the tester.
    """
    given = _top_level_bound(setup) | _top_level_bound(prelude) | _BUILTINS
    names: set[str] = set()
    for unit in units:
        tree = _parse(unit)
        if tree is None:
            continue
        bound, loaded = _bound_and_loaded(tree)
        names |= loaded - bound - given
    if entry_point:
        names.add(entry_point)
    return tuple(sorted(names))


# A proxy call under one of these may not happen, or happen more than once.
_CONDITIONAL = (ast.BoolOp, ast.IfExp, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
                ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                ast.ClassDef)
# Statements that run once, top to bottom, with no jump.
_STRAIGHT = (ast.Assert, ast.Expr, ast.Assign, ast.AnnAssign, ast.Pass, ast.Import, ast.ImportFrom)


class _NotPlannable(Exception):
    pass


def _calls_in(stmt: ast.stmt, names: dict[str, str]) -> list[list[Any]]:
    """The proxy calls of one straight-line statement, as [proxy, encoded args, encoded
    kwargs]; at most one (so their order is the statements'), with literal arguments.
    Raises _NotPlannable otherwise (a proxy read any other way, a call that may not run)."""
    if not isinstance(stmt, _STRAIGHT):
        raise _NotPlannable
    found: list[list[Any]] = []
    roots: list[ast.AST] = [stmt.test] if isinstance(stmt, ast.Assert) else [stmt]
    if isinstance(stmt, ast.Assert) and stmt.msg is not None:
        if any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(stmt.msg)):
            raise _NotPlannable  # the message runs only when the assert fails

    def visit(node: ast.AST, conditional: bool) -> None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
            if conditional or found or any(isinstance(a, ast.Starred) for a in node.args) \
                    or any(k.arg is None for k in node.keywords):
                raise _NotPlannable
            try:
                args = tuple(ast.literal_eval(a) for a in node.args)
                kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
                found.append([names[node.func.id], _sandbox_wire.encode(args), _sandbox_wire.encode(kwargs)])
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, _sandbox_wire.WireError):
                raise _NotPlannable from None
            return
        if isinstance(node, ast.Name) and node.id in names:
            raise _NotPlannable  # passed, stored or read: not a plain call
        for child in ast.iter_child_nodes(node):
            visit(child, conditional or isinstance(node, _CONDITIONAL))

    for root in roots:
        visit(root, False)
    return found


@functools.lru_cache(maxsize=4096)
def call_plan(unit: str, proxies: tuple[str, ...]) -> tuple[list[Any], ...] | None:
    """The calls a test unit makes on the program, in order, when it runs to its end, or
    None when that cannot be known from its text alone.

    Known for straight-line units whose every proxy call has literal arguments, one per
    statement: MBPP's ``assert f(1, [2]) == 3`` and HumanEval's ``def check(candidate):``
    of such asserts followed by ``check(entry_point)``. The tester sends these calls
    ahead in one message; the program answers each in turn; the test still makes every
    call itself and gets the reply to exactly that call (see ``Ahead`` in
    :mod:`rewards._sandbox_side`), so a plan saves round trips and changes no result.
    """
    tree = _parse(unit)
    if tree is None or not tree.body:
        return None
    body, identity = tree.body, {p: p for p in proxies}
    try:
        last = body[-1]
        if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) \
                and isinstance(last.value.func, ast.Name) and len(last.value.args) == 1 \
                and not last.value.keywords and isinstance(last.value.args[0], ast.Name) \
                and last.value.args[0].id in proxies:
            # HumanEval: def check(candidate): ... then check(<entry point>).
            checker, entry = last.value.func.id, last.value.args[0].id
            defs = [s for s in body[:-1] if isinstance(s, ast.FunctionDef) and s.name == checker]
            rest = [s for s in body[:-1] if not (isinstance(s, ast.FunctionDef) and s.name == checker)]
            if len(defs) != 1:
                return None
            fn, params = defs[0], defs[0].args
            if fn.decorator_list or params.posonlyargs or params.kwonlyargs or params.vararg \
                    or params.kwarg or params.defaults or len(params.args) != 1:
                return None
            for stmt in rest:  # module level: nothing that reaches the program or the checker
                if _calls_in(stmt, {**identity, checker: checker}):
                    return None
            inner = {**identity, params.args[0].arg: entry}
            return tuple(call for stmt in fn.body for call in _calls_in(stmt, inner))
        return tuple(call for stmt in body for call in _calls_in(stmt, identity))
    except _NotPlannable:
        return None


@functools.lru_cache(maxsize=4096)
def _assert_payload(units: tuple[str, ...], setup: str, prelude: str,
                    entry_point: str | None) -> tuple[str, tuple[str, ...]]:
    """The tester's payload (JSON) for assert tests, and the names they call on the
    program. Per problem, not per sample: every sample of a problem shares it."""
    proxies = trusted_names(units, setup, prelude, entry_point)
    plan = [call_plan(unit, proxies) for unit in units]
    # A unit that makes several calls can stop half way (a failed assert): the calls
    # sent ahead after that point still ran in the program, so a later unit could see
    # a program in another state than live calls leave it. Only the last unit may.
    plan = [p if p is None or len(p) <= 1 or i == len(plan) - 1 else None for i, p in enumerate(plan)]
    doc = {"setup": setup, "mode": "assert", "prelude": prelude, "units": list(units), "proxies": list(proxies),
           "plan": [list(p) if p is not None else None for p in plan]}
    return json.dumps(doc), proxies


# The bytecode format of this interpreter (the program half uses a shipped code object
# only when its own is the same).
_MAGIC: bytes = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER


def compile_program(program: str) -> types.CodeType:
    """``program`` compiled as the program half would compile it (``<solution>``, no
    inherited future flags, asserts kept).

    Raises:
        SyntaxError, ValueError, RecursionError, MemoryError, OverflowError: it does not compile.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile(program, "<solution>", "exec", dont_inherit=True, optimize=0)


def load_message(setup: str, program: str, names: tuple[str, ...], mode: str,
                 compiled: types.CodeType | None) -> str:
    """The program half's stdin: what it loads (read by ``read_load`` in the sandbox).

    Base64 of marshal of plain data (one C call each way, in any interpreter): the setup
    code, the program's text, the names the tests call, the mode, and the bytecode magic
    with the marshal bytes of ``compiled`` (the program half loads those only when its
    own magic is the same, and compiles the text otherwise).
    """
    code = marshal.dumps(compiled) if compiled is not None else None
    return base64.b64encode(marshal.dumps((setup, program, list(names), mode, _MAGIC, code))).decode("ascii")


def build_request(problem: Problem, program: str, limits: Limits,
                  compiled: types.CodeType | None = None) -> ExecRequest:
    """The vmpool request that tests ``program`` against ``problem``'s assert or call tests.

    ``compiled`` is ``program`` compiled by :func:`compile_program`, when the caller has it:
    it travels with the program (marshal), and a sandbox interpreter of the same bytecode
    format runs it instead of compiling the text again.

    Raises:
        TypeError: the problem's tests are stdio tests (they need no tester).
    """
    tests = problem.tests
    if isinstance(tests, AssertTests):
        payload, proxies = _assert_payload(tests.code, problem.setup_code, prelude_of(problem), problem.entry_point)
        mode = "assert"
    elif isinstance(tests, CallTests):
        mode, proxies = "call", (tests.fn_name,)
        payload = json.dumps({"setup": problem.setup_code, "mode": mode, "proxies": list(proxies),
                              "fn_name": tests.fn_name,
                              "cases": [[list(c.args), dict(c.kwargs)] for c in tests.cases]})
    else:
        raise TypeError(f"build_request needs assert or call tests, got {type(tests).__name__}")
    tester_limits = Limits(wall_s=limits.wall_s, cpu_s=limits.effective_cpu_s,
                           memory_mb=max(limits.memory_mb, _TESTER_MIN_MB), max_processes=4,
                           max_open_files=64, output_bytes=max(limits.output_bytes, 4 << 20),
                           file_size_bytes=1 << 20)
    companion = Companion(code=SIDE_SOURCE, stdin=payload, argv=("tester",), limits=tester_limits,
                          entry="tester_entry")
    # The program half reads what to load from its stdin: the model's code, the setup
    # code and the names the tests call (nothing the program may not know).
    load = load_message(problem.setup_code, program, proxies, mode, compiled)
    return ExecRequest(code=SIDE_SOURCE, stdin=load, argv=("program",), limits=limits, cache_code=True,
                       companion=companion, entry="program_main")


@dataclass
class RunnerReport:
    """What the tester reported.

    Attributes:
        done: the final record arrived (without it nothing counts as passed).
        results: per-test pass flags from the ``done`` record (empty when not done).
        kinds: per-test ``ok`` / ``failed`` / ``error`` / ``memory`` / ``died`` from ``done``.
        partial: per-test flags seen before the run ended (for partial credit on timeouts).
        partial_kinds: per-test kinds seen before the run ended.
        values: call mode: index -> returned value (decoded plain data).
        errors: index -> error text of failed tests.
        load_error: why the program did not load, if it did not.
    """

    done: bool = False
    results: list[bool] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    partial: dict[int, bool] = field(default_factory=dict)
    partial_kinds: dict[int, str] = field(default_factory=dict)
    values: dict[int, Any] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    load_error: str | None = None

    def kind(self, i: int) -> str:
        if self.done and i < len(self.kinds):
            return self.kinds[i]
        return self.partial_kinds.get(i, "died")


_KINDS = frozenset({"ok", "failed", "error", "memory", "died"})


def parse_report(data: bytes, expected: int) -> RunnerReport:
    """Decode the tester's report (written on a channel no program can reach).

    Args:
        data: the raw bytes of ``ExecResult.report``.
        expected: how many tests the problem has; a ``done`` record with another count
            is treated as absent.
    """
    report = RunnerReport()
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            logger.warning("unreadable tester report line: %r", raw[:200])
            continue
        if not isinstance(rec, dict):
            continue
        kind = rec.get("t")
        if kind == "load":
            report.load_error = excerpt(str(rec.get("err")), 500)
        elif kind in ("unit", "call"):
            i = rec.get("i")
            if not isinstance(i, int) or not 0 <= i < expected:
                continue
            report.partial[i] = rec.get("ok") is True
            kind_of = rec.get("kind")
            report.partial_kinds[i] = kind_of if isinstance(kind_of, str) and kind_of in _KINDS else "error"
            if rec.get("ok") is True and kind == "call":
                try:
                    report.values[i] = _sandbox_wire.decode(rec.get("value"))
                except _sandbox_wire.WireError:
                    report.partial[i] = False
                    report.errors[i] = "the returned value could not be decoded"
            elif rec.get("err"):
                report.errors[i] = excerpt(str(rec["err"]), 500)
        elif kind == "done":
            results, kinds = rec.get("results"), rec.get("kinds")
            if isinstance(results, list) and len(results) == expected and all(r in (True, False) for r in results) \
                    and isinstance(kinds, list) and len(kinds) == expected:
                report.done = True
                report.results = [r is True for r in results]
                report.kinds = [k if k in _KINDS else "error" for k in kinds]
    return report

