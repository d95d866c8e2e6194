"""Problems and their tests: the data model and the native JSONL schema.

A :class:`Problem` carries exactly one test suite of one of four kinds:

* :class:`AssertTests` - test code (HumanEval/MBPP style) that must run next to the program;
* :class:`StdioTests` - stdin in, stdout compared outside the sandbox (any language);
* :class:`CallTests` - a function called with JSON arguments, its JSON return value
  compared outside the sandbox;
* :class:`ProgramTests` - test code in the problem's language built into the program
  (HumanEval-X).

The native schema is JSONL, one problem per line, with exactly the keys of :class:`Problem`
(``tests`` holds a ``kind`` plus that kind's fields). Parsing is strict: unknown keys and
wrong types raise :class:`~rewards.ProblemFormatError` naming file, line and field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from ._errors import ProblemFormatError
from ._languages import find_language, language_names

__all__ = [
    "AssertTests",
    "Checker",
    "StdioCase",
    "StdioTests",
    "CallCase",
    "CallTests",
    "ProgramTests",
    "Tests",
    "Problem",
    "problem_from_dict",
    "problem_to_dict",
    "parse_native_line",
]

CompletionMode = Literal["continue", "program"]
Whitespace = Literal["tolerant", "exact", "tokens"]
WHITESPACE_MODES = ("tolerant", "exact", "tokens")


@dataclass(frozen=True)
class AssertTests:
    """Test code run in the program's namespace; each element of ``code`` is one test unit."""

    code: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.code)


@dataclass(frozen=True)
class StdioCase:
    """One stdin -> expected stdout pair."""

    stdin: str
    stdout: str


@dataclass(frozen=True)
class Checker:
    """A judge program for stdio cases, by testlib's exit codes: a checker (it decides each case
    from the files ``input``, ``output`` and ``answer``: :mod:`rewards._checker`) or an
    interactor (it talks to the solution: :mod:`rewards._interactive`).

    Args:
        source: its source code (harness- or dataset-written, never the solution's).
        language: its language (a name of :data:`rewards.LANGUAGES`).
    """

    source: str
    language: str = "cpp"

    def __post_init__(self) -> None:
        if find_language(self.language) is None:
            raise ValueError(f"Checker.language: unknown language {self.language!r}; languages: "
                             f"{', '.join(language_names())}")


@dataclass(frozen=True)
class StdioTests:
    """Run the program once per case with ``stdin``; compare its stdout outside the sandbox.

    Args:
        cases: the cases, each counted as one test.
        float_tol: when set, a token whose expected text is a non-integer number (``2.5``,
            ``1e-3``) matches a number within this absolute/relative tolerance; an expected
            integer token (``-12``, ``1000000007``) always needs equal text.
        whitespace: ``"tolerant"`` compares token lists line by line (trailing blank lines
            ignored); ``"tokens"`` compares the whole output's tokens, any whitespace (newlines
            included) separating them, as Codeforces' default checker does; ``"exact"``
            compares the text byte for byte (after newline normalisation).
        checker: a special judge that decides each case instead of the comparison (then
            ``float_tol`` and ``whitespace`` are unused).
        interactor: for interactive problems, a judge program that talks to the solution over
            its stdin and stdout (``interactor input output``, the case's ``stdin`` its input
            file) and decides by testlib's exit codes (see :mod:`rewards._interactive`); the
            cases' ``stdout`` is then unused.
    """

    cases: tuple[StdioCase, ...]
    float_tol: float | None = None
    whitespace: Whitespace = "tolerant"
    checker: Checker | None = None
    interactor: Checker | None = None

    def __post_init__(self) -> None:
        if self.checker is not None and self.interactor is not None:
            raise ValueError("StdioTests: a checker or an interactor, not both (the interactor decides)")

    @property
    def count(self) -> int:
        return len(self.cases)


@dataclass(frozen=True)
class CallCase:
    """One call: ``fn(*args, **kwargs)`` must return a value equal to ``expected``."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    expected: Any


@dataclass(frozen=True)
class CallTests:
    """Call ``fn_name`` (a top-level function, or a method of ``class Solution``) per case.

    Args:
        fn_name: the function or ``Solution`` method to call.
        cases: the calls, each counted as one test.
        float_tol: when set, an expected ``float`` (at any depth) accepts a number within this
            absolute/relative tolerance; an expected ``int`` always needs an equal ``int``.
    """

    fn_name: str
    cases: tuple[CallCase, ...]
    float_tol: float | None = None

    @property
    def count(self) -> int:
        return len(self.cases)


@dataclass(frozen=True)
class ProgramTests:
    """Test code in the problem's language (not Python), built into one program after the
    solution and run once (HumanEval-X's form); one test, passed when the program exits cleanly
    after the test code ran to its end (see :mod:`rewards._program_tests`, and its limit: the
    tests share the program's process).

    Args:
        code: the test code (C/C++: a ``main``; Java: ``public class Main``; JavaScript:
            statements; Go: ``Test*`` functions and their imports; Rust: a ``#[cfg(test)]``
            module).
    """

    code: str

    @property
    def count(self) -> int:
        return 1


Tests = Union[AssertTests, StdioTests, CallTests, ProgramTests]


@dataclass(frozen=True)
class Problem:
    """One programming problem with its tests.

    Args:
        task_id: unique id within its set.
        tests: the test suite.
        prompt: the text shown to the model (for ``continue`` mode, the code prefix).
        completion_mode: ``"program"`` (the completion is the whole program) or ``"continue"``
            (program = prompt + completion, HumanEval style).
        setup_code: trusted code run before the program (e.g. ``import math`` for MBPP).
        entry_point: name of the function under test, where there is one.
        time_limit_s: wall-clock limit of one run; ``None`` = the grader's default.
        memory_mb: memory limit of one run; ``None`` = the grader's default.
        source: where the problem came from (``"humaneval"``, ``"mbpp"``, ``"native"``...).
        language: the language of the prompt and of untagged code (a canonical name of
            :data:`rewards.LANGUAGES`: ``python``, ``c``, ``cpp``, ``java``, ``javascript``, ``go``,
            ``rust``, ``bash``).
        languages: the languages a solution may be written in (named by its fenced block's
            tag); ``None``: every language for stdio tests, ``language`` for the others
            (assert and call tests run in Python; program tests in ``language``, never Python).
    """

    task_id: str
    tests: Tests
    prompt: str | None = None
    completion_mode: CompletionMode = "program"
    setup_code: str = ""
    entry_point: str | None = None
    time_limit_s: float | None = None
    memory_mb: int | None = None
    source: str = "native"
    language: str = "python"
    languages: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        known = language_names()
        for name in (self.language, *(self.languages or ())):
            if name not in known:
                raise ValueError(f"Problem {self.task_id!r}: unknown language {name!r}; languages: {', '.join(known)}")
        if isinstance(self.tests, ProgramTests):
            if self.language == "python" or set(self.languages or ()) - {self.language}:
                raise ValueError(f"Problem {self.task_id!r}: program tests are in the problem's language, which "
                                 "is not python (Python's own tests are assert tests)")
        elif not isinstance(self.tests, StdioTests) and {self.language, *(self.languages or ())} != {"python"}:
            raise ValueError(f"Problem {self.task_id!r}: {type(self.tests).__name__} run in Python; "
                             "other languages need stdio or program tests")
        if self.languages is not None and not self.languages:
            raise ValueError(f"Problem {self.task_id!r}: languages must name at least one language (or be null)")
        if self.completion_mode not in ("continue", "program"):
            raise ValueError(f"Problem.completion_mode must be 'continue' or 'program', got {self.completion_mode!r}")
        if self.completion_mode == "continue" and self.prompt is None:
            raise ValueError("Problem.completion_mode 'continue' needs a prompt to continue")
        if self.tests.count == 0:
            raise ValueError(f"Problem {self.task_id!r} has no tests")

    @property
    def allowed_languages(self) -> tuple[str, ...]:
        """The languages a solution may be in (see ``languages``)."""
        if self.languages is not None:
            return self.languages
        return language_names() if isinstance(self.tests, StdioTests) else (self.language,)

    def program_for(self, code: str) -> str:
        """The program text for a solution: ``prompt + code`` in continue mode, else ``code``."""
        if self.completion_mode == "continue":
            return (self.prompt or "") + code
        return code


# --------------------------------------------------------------------------- native parsing

_PROBLEM_KEYS = {
    "task_id", "prompt", "completion_mode", "setup_code", "tests", "entry_point",
    "time_limit_s", "memory_mb", "source", "language", "languages",
}


class _Ctx:
    """Where a value came from, so every error names file, line and field."""

    def __init__(self, file: str, line: int) -> None:
        self.file = file
        self.line = line

    def error(self, field_name: str, message: str) -> ProblemFormatError:
        return ProblemFormatError(self.file, self.line, field_name, message)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _req_str(ctx: _Ctx, obj: Mapping[str, Any], key: str, prefix: str = "", allow_empty: bool = True) -> str:
    if key not in obj:
        raise ctx.error(prefix + key, "is required")
    value = obj[key]
    if not isinstance(value, str):
        raise ctx.error(prefix + key, f"must be a string, got {_type_name(value)}")
    if not allow_empty and not value.strip():
        raise ctx.error(prefix + key, "must not be empty")
    return value


def _opt_str(ctx: _Ctx, obj: Mapping[str, Any], key: str, default: str | None) -> str | None:
    value = obj.get(key, default)
    if value is None or isinstance(value, str):
        return value
    raise ctx.error(key, f"must be a string or null, got {_type_name(value)}")


def _opt_tol(ctx: _Ctx, obj: Mapping[str, Any], key: str, prefix: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ctx.error(prefix + key, f"must be a finite number >= 0 or null, got {value!r}")
    return float(value)


def _check_keys(ctx: _Ctx, obj: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ctx.error(prefix + unknown[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _parse_tests(ctx: _Ctx, raw: Any) -> Tests:
    if not isinstance(raw, dict):
        raise ctx.error("tests", f"must be an object, got {_type_name(raw)}")
    kind = raw.get("kind")
    if kind == "assert":
        _check_keys(ctx, raw, {"kind", "code"}, "tests.")
        code = raw.get("code")
        if isinstance(code, str):
            units: tuple[str, ...] = (code,)
        elif isinstance(code, list):
            for i, unit in enumerate(code):
                if not isinstance(unit, str):
                    raise ctx.error(f"tests.code[{i}]", f"must be a string, got {_type_name(unit)}")
            units = tuple(code)
        else:
            raise ctx.error("tests.code", f"must be a string or a list of strings, got {_type_name(code)}")
        if not units or any(not u.strip() for u in units):
            raise ctx.error("tests.code", "must hold at least one non-empty test unit")
        return AssertTests(code=units)
    if kind == "stdio":
        _check_keys(ctx, raw, {"kind", "cases", "float_tol", "whitespace", "checker", "interactor"}, "tests.")
        cases_raw = raw.get("cases")
        if not isinstance(cases_raw, list) or not cases_raw:
            raise ctx.error("tests.cases", "must be a non-empty list of {stdin, stdout} objects")
        cases = []
        for i, case in enumerate(cases_raw):
            prefix = f"tests.cases[{i}]."
            if not isinstance(case, dict):
                raise ctx.error(prefix[:-1], f"must be an object, got {_type_name(case)}")
            _check_keys(ctx, case, {"stdin", "stdout"}, prefix)
            cases.append(StdioCase(stdin=_req_str(ctx, case, "stdin", prefix), stdout=_req_str(ctx, case, "stdout", prefix)))
        ws = raw.get("whitespace", "tolerant")
        if ws not in WHITESPACE_MODES:
            raise ctx.error("tests.whitespace", f"must be one of {', '.join(WHITESPACE_MODES)}, got {ws!r}")
        return StdioTests(cases=tuple(cases), float_tol=_opt_tol(ctx, raw, "float_tol", "tests."), whitespace=ws,
                          checker=_checker(ctx, raw.get("checker"), "checker"),
                          interactor=_checker(ctx, raw.get("interactor"), "interactor"))
    if kind == "call":
        _check_keys(ctx, raw, {"kind", "fn_name", "cases", "float_tol"}, "tests.")
        fn_name = _req_str(ctx, raw, "fn_name", "tests.", allow_empty=False)
        if not fn_name.isidentifier():
            raise ctx.error("tests.fn_name", f"must be a Python identifier, got {fn_name!r}")
        cases_raw = raw.get("cases")
        if not isinstance(cases_raw, list) or not cases_raw:
            raise ctx.error("tests.cases", "must be a non-empty list of {args, kwargs, expected} objects")
        calls = []
        for i, case in enumerate(cases_raw):
            prefix = f"tests.cases[{i}]."
            if not isinstance(case, dict):
                raise ctx.error(prefix[:-1], f"must be an object, got {_type_name(case)}")
            _check_keys(ctx, case, {"args", "kwargs", "expected"}, prefix)
            args = case.get("args", [])
            kwargs = case.get("kwargs", {})
            if not isinstance(args, list):
                raise ctx.error(prefix + "args", f"must be a list, got {_type_name(args)}")
            if not isinstance(kwargs, dict):
                raise ctx.error(prefix + "kwargs", f"must be an object, got {_type_name(kwargs)}")
            if "expected" not in case:
                raise ctx.error(prefix + "expected", "is required")
            calls.append(CallCase(args=tuple(args), kwargs=dict(kwargs), expected=case["expected"]))
        return CallTests(fn_name=fn_name, cases=tuple(calls), float_tol=_opt_tol(ctx, raw, "float_tol", "tests."))
    if kind == "program":
        _check_keys(ctx, raw, {"kind", "code"}, "tests.")
        return ProgramTests(code=_req_str(ctx, raw, "code", "tests.", allow_empty=False))
    raise ctx.error("tests.kind", f"must be 'assert', 'stdio', 'call' or 'program', got {kind!r}")


def _checker(ctx: _Ctx, raw: Any, key: str) -> Checker | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ctx.error(f"tests.{key}", f"must be an object {{source, language}} or null, got {_type_name(raw)}")
    _check_keys(ctx, raw, {"source", "language"}, f"tests.{key}.")
    source = _req_str(ctx, raw, "source", f"tests.{key}.", allow_empty=False)
    return Checker(source=source, language=_language(ctx, raw.get("language", "cpp"), f"tests.{key}.language"))


def problem_from_dict(obj: Any, file: str = "<memory>", line: int = 0) -> Problem:
    """Build a :class:`Problem` from a native-schema mapping, validating strictly.

    Args:
        obj: the decoded JSON object.
        file: file name used in error messages.
        line: 1-based line number used in error messages.

    Returns:
        The problem.

    Raises:
        ProblemFormatError: on unknown keys, missing keys or wrong types, naming the field.
    """
    ctx = _Ctx(file, line)
    if not isinstance(obj, dict):
        raise ctx.error("", f"a problem must be a JSON object, got {_type_name(obj)}")
    _check_keys(ctx, obj, _PROBLEM_KEYS, "")
    task_id = _req_str(ctx, obj, "task_id", allow_empty=False)
    if "tests" not in obj:
        raise ctx.error("tests", "is required")
    tests = _parse_tests(ctx, obj["tests"])
    mode = obj.get("completion_mode", "program")
    if mode not in ("continue", "program"):
        raise ctx.error("completion_mode", f"must be 'continue' or 'program', got {mode!r}")
    prompt = _opt_str(ctx, obj, "prompt", None)
    if mode == "continue" and prompt is None:
        raise ctx.error("prompt", "is required when completion_mode is 'continue'")
    setup = obj.get("setup_code", "")
    if not isinstance(setup, str):
        raise ctx.error("setup_code", f"must be a string, got {_type_name(setup)}")
    entry = _opt_str(ctx, obj, "entry_point", None)
    tl = obj.get("time_limit_s")
    if tl is not None and (isinstance(tl, bool) or not isinstance(tl, (int, float)) or not math.isfinite(tl) or tl <= 0):
        raise ctx.error("time_limit_s", f"must be a number > 0 or null, got {tl!r}")
    mem = obj.get("memory_mb")
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, int) or mem < 32):
        raise ctx.error("memory_mb", f"must be an integer >= 32 or null, got {mem!r}")
    source = obj.get("source", "native")
    if not isinstance(source, str):
        raise ctx.error("source", f"must be a string, got {_type_name(source)}")
    language = _language(ctx, obj.get("language", "python"), "language")
    langs = obj.get("languages")
    if langs is not None and not (isinstance(langs, list) and langs):
        raise ctx.error("languages", f"must be a non-empty list of language names or null, got {langs!r}")
    languages = None if langs is None else tuple(_language(ctx, v, f"languages[{i}]") for i, v in enumerate(langs))
    try:
        return Problem(
            task_id=task_id, tests=tests, prompt=prompt, completion_mode=mode, setup_code=setup,
            entry_point=entry, time_limit_s=float(tl) if tl is not None else None, memory_mb=mem, source=source,
            language=language, languages=languages,
        )
    except ValueError as exc:
        raise ctx.error("languages", str(exc)) from None


def _language(ctx: _Ctx, value: Any, key: str) -> str:
    lang = find_language(value) if isinstance(value, str) else None
    if lang is None:
        raise ctx.error(key, f"must be a language name ({', '.join(language_names())}), got {value!r}")
    return lang.name


def parse_native_line(text: str, file: str, line: int) -> Problem:
    """Parse one JSONL line of the native schema (see :func:`problem_from_dict`)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProblemFormatError(file, line, "", f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    return problem_from_dict(obj, file, line)


def problem_to_dict(problem: Problem) -> dict[str, Any]:
    """The native-schema mapping of a problem (inverse of :func:`problem_from_dict`)."""
    tests = problem.tests
    if isinstance(tests, AssertTests):
        t: dict[str, Any] = {"kind": "assert", "code": list(tests.code)}
    elif isinstance(tests, StdioTests):
        t = {"kind": "stdio", "cases": [{"stdin": c.stdin, "stdout": c.stdout} for c in tests.cases],
             "float_tol": tests.float_tol, "whitespace": tests.whitespace}
        for key, judge in (("checker", tests.checker), ("interactor", tests.interactor)):
            if judge is not None:
                t[key] = {"source": judge.source, "language": judge.language}
    elif isinstance(tests, ProgramTests):
        t = {"kind": "program", "code": tests.code}
    else:
        t = {"kind": "call", "fn_name": tests.fn_name, "float_tol": tests.float_tol,
             "cases": [{"args": list(c.args), "kwargs": dict(c.kwargs), "expected": c.expected} for c in tests.cases]}
    out: dict[str, Any] = {"task_id": problem.task_id, "tests": t, "completion_mode": problem.completion_mode,
                           "source": problem.source}
    if problem.prompt is not None:
        out["prompt"] = problem.prompt
    if problem.setup_code:
        out["setup_code"] = problem.setup_code
    if problem.entry_point is not None:
        out["entry_point"] = problem.entry_point
    if problem.time_limit_s is not None:
        out["time_limit_s"] = problem.time_limit_s
    if problem.memory_mb is not None:
        out["memory_mb"] = problem.memory_mb
    if problem.language != "python":
        out["language"] = problem.language
    if problem.languages is not None:
        out["languages"] = list(problem.languages)
    return out
