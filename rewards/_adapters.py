"""Readers for the real benchmark schemas, plus format detection and the problem loader.

Supported formats (``fmt``): ``native`` (see :mod:`rewards._problems`), ``humaneval``,
``mbpp`` (sanitized), ``code_contests`` (SandboxFusion rows), ``livecodebench``
(SandboxFusion rows whose ``test`` is base64(zlib(pickle))), ``humaneval_x`` (C++, Java,
JavaScript, Go and Rust rows, each with program tests in its language), ``deepmind_code_contests``
(CodeContests in its own multi-language form: public, private and generated tests, limits, and
solutions in C++, Python 3 and Java). ``auto`` looks at the first
decodable record of the file.

LiveCodeBench pickles are decoded with :class:`RestrictedUnpickler`, which only builds builtin
containers and scalars: any global reference (``os.system``, ``builtins.eval``...) is refused.
"""

from __future__ import annotations

import ast
import base64
import binascii
import io
import json
import logging
import os
import pickle
import re
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._errors import ProblemFormatError
from ._problems import (
    AssertTests,
    CallCase,
    CallTests,
    Problem,
    ProgramTests,
    StdioCase,
    StdioTests,
    parse_native_line,
)

__all__ = ["FORMATS", "ProblemSet", "load_problems", "reference_solutions", "RestrictedUnpickler", "restricted_loads"]

logger = logging.getLogger(__name__)

FORMATS = ("native", "humaneval", "mbpp", "code_contests", "livecodebench", "humaneval_x", "deepmind_code_contests")

#: Imports that common harnesses (e.g. LiveCodeBench's) put before call-based solutions.
LCB_CALL_SETUP = (
    "from typing import *\n"
    "from collections import *\n"
    "from functools import *\n"
    "from itertools import *\n"
    "from heapq import *\n"
    "from bisect import *\n"
    "from math import *\n"
    "import collections, functools, itertools, heapq, bisect, math, string, re\n"
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only builtin containers and scalars.

    ``find_class`` always raises, so a pickle that references any global (``os.system``,
    ``builtins.eval``, a class) fails instead of running code.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in test data")


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Raises:
        pickle.UnpicklingError: the pickle references a global or is malformed.
    """
    return RestrictedUnpickler(io.BytesIO(data)).load()


@dataclass
class ProblemSet:
    """Problems loaded from one file, plus one error per record that could not be loaded.

    Iterating yields the problems. ``errors`` holds a :class:`ProblemFormatError` per bad line,
    naming file and line; the rest of the file still loads.
    """

    path: str
    fmt: str
    problems: list[Problem] = field(default_factory=list)
    errors: list[ProblemFormatError] = field(default_factory=list)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, index: int) -> Problem:
        return self.problems[index]

    def by_id(self) -> dict[str, Problem]:
        """Problems keyed by ``task_id``."""
        return {p.task_id: p for p in self.problems}


# --------------------------------------------------------------------------- helpers


def _need(obj: dict[str, Any], key: str, typ: type | tuple[type, ...], file: str, line: int) -> Any:
    if key not in obj:
        raise ProblemFormatError(file, line, key, "is required")
    value = obj[key]
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise ProblemFormatError(file, line, key, f"must be {names}, got {type(value).__name__}")
    return value


def _humaneval(obj: dict[str, Any], file: str, line: int) -> Problem:
    task_id = _need(obj, "task_id", str, file, line)
    prompt = _need(obj, "prompt", str, file, line)
    test = _need(obj, "test", str, file, line)
    entry = _need(obj, "entry_point", str, file, line)
    if not entry.isidentifier():
        raise ProblemFormatError(file, line, "entry_point", f"must be a Python identifier, got {entry!r}")
    if "check(" not in test:
        raise ProblemFormatError(file, line, "test", "must define check(candidate)")
    return Problem(
        task_id=task_id, prompt=prompt, completion_mode="continue", entry_point=entry, source="humaneval",
        tests=AssertTests(code=(f"{test}\ncheck({entry})\n",)),
    )


def _mbpp(obj: dict[str, Any], file: str, line: int) -> Problem:
    tid = _need(obj, "task_id", (int, str), file, line)
    text = _need(obj, "text", str, file, line) if "text" in obj else _need(obj, "prompt", str, file, line)
    tests = _need(obj, "test_list", list, file, line)
    for i, t in enumerate(tests):
        if not isinstance(t, str) or not t.strip():
            raise ProblemFormatError(file, line, f"test_list[{i}]", "must be a non-empty string")
    if not tests:
        raise ProblemFormatError(file, line, "test_list", "must not be empty")
    setup = obj.get("test_setup_code", "") or ""
    if not isinstance(setup, str):
        raise ProblemFormatError(file, line, "test_setup_code", f"must be a string, got {type(setup).__name__}")
    imports = obj.get("test_imports") or []
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise ProblemFormatError(file, line, "test_imports", "must be a list of strings")
    setup_code = "import math\n" + "".join(i + "\n" for i in imports) + setup
    return Problem(
        task_id=f"MBPP/{tid}", prompt=text, completion_mode="program", setup_code=setup_code,
        source="mbpp", tests=AssertTests(code=tuple(tests)), entry_point=_tested_function(obj.get("code"), tests),
    )


def _tested_function(code: Any, tests: list[str]) -> str | None:
    """The reference's top-level function that the tests call (MBPP names it only there).

    It matters where the function shadows a builtin (MBPP/126 asks for ``sum``): the
    tester then calls the program's function by that name, and only that one.
    """
    if not isinstance(code, str):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes in the dataset's own strings
        try:
            defined = [n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        except (SyntaxError, ValueError, RecursionError):
            return None
        called: set[str] = set()
        for test in tests:
            try:
                called |= {n.func.id for n in ast.walk(ast.parse(test))
                           if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            except (SyntaxError, ValueError, RecursionError):
                continue
    return next((name for name in defined if name in called), None)


def _code_contests(obj: dict[str, Any], file: str, line: int) -> Problem:
    rid = _need(obj, "id", (int, str), file, line)
    content = _need(obj, "content", str, file, line)
    raw = _need(obj, "test", str, file, line)
    try:
        cases_raw = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProblemFormatError(file, line, "test", f"is not a JSON string: {exc.msg}") from None
    if not isinstance(cases_raw, list) or not cases_raw:
        raise ProblemFormatError(file, line, "test", "must hold a non-empty JSON list")
    cases = []
    for i, case in enumerate(cases_raw):
        try:
            stdin = case["input"]["stdin"]
            stdout = case["output"]["stdout"]
        except (KeyError, TypeError):
            raise ProblemFormatError(file, line, f"test[{i}]", "must be {input: {stdin}, output: {stdout}}") from None
        if not isinstance(stdin, str) or not isinstance(stdout, str):
            raise ProblemFormatError(file, line, f"test[{i}]", "stdin and stdout must be strings")
        cases.append(StdioCase(stdin=stdin, stdout=stdout))
    # Codeforces' default checker compares tokens, line breaks included: the rows' expected
    # outputs do not always break lines where a correct program does.
    return Problem(task_id=f"code_contests/{rid}", prompt=content, source="code_contests",
                   tests=StdioTests(cases=tuple(cases), whitespace="tokens"))


def _lcb_decode(raw: str, file: str, line: int) -> dict[str, Any]:
    try:
        blob = zlib.decompress(base64.b64decode(raw, validate=True))
        data = restricted_loads(blob)
    except (binascii.Error, ValueError, zlib.error) as exc:
        raise ProblemFormatError(file, line, "test", f"is not base64(zlib(pickle)): {exc}") from None
    except pickle.UnpicklingError as exc:
        raise ProblemFormatError(file, line, "test", f"refused pickle: {exc}") from None
    except Exception as exc:  # a malformed pickle can raise almost anything; it is still just bad data
        raise ProblemFormatError(file, line, "test", f"undecodable pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("input_output"), str):
        raise ProblemFormatError(file, line, "test", "pickle must hold a dict with an 'input_output' JSON string")
    try:
        io_spec = json.loads(data["input_output"])
    except json.JSONDecodeError as exc:
        raise ProblemFormatError(file, line, "test.input_output", f"is not JSON: {exc.msg}") from None
    if not isinstance(io_spec, dict):
        raise ProblemFormatError(file, line, "test.input_output", "must be a JSON object")
    return io_spec


def _livecodebench(obj: dict[str, Any], file: str, line: int) -> Problem:
    content = _need(obj, "content", str, file, line)
    labels_raw = obj.get("labels", "{}")
    try:
        labels = json.loads(labels_raw) if isinstance(labels_raw, str) else labels_raw
    except json.JSONDecodeError:
        raise ProblemFormatError(file, line, "labels", "is not a JSON string") from None
    if not isinstance(labels, dict):
        raise ProblemFormatError(file, line, "labels", "must be a JSON object")
    name = labels.get("task_id") or obj.get("id")
    if name is None:
        raise ProblemFormatError(file, line, "labels.task_id", "is required (or a top-level id)")
    io_spec = _lcb_decode(_need(obj, "test", str, file, line), file, line)
    inputs, outputs = io_spec.get("inputs"), io_spec.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs) or not inputs:
        raise ProblemFormatError(file, line, "test.input_output", "needs equally long, non-empty inputs/outputs lists")
    fn_name = io_spec.get("fn_name")
    task_id = f"livecodebench/{name}"
    if fn_name:
        if not isinstance(fn_name, str) or not fn_name.isidentifier():
            raise ProblemFormatError(file, line, "test.input_output.fn_name", f"must be an identifier, got {fn_name!r}")
        calls = []
        for i, (inp, out) in enumerate(zip(inputs, outputs)):
            try:
                # LiveCodeBench's functional format: one JSON value per argument, one per line.
                args = tuple(json.loads(part) for part in str(inp).split("\n") if part.strip())
                expected = json.loads(out)
            except json.JSONDecodeError as exc:
                raise ProblemFormatError(file, line, f"test.input_output.inputs[{i}]", f"not JSON: {exc.msg}") from None
            calls.append(CallCase(args=args, kwargs={}, expected=expected))
        return Problem(task_id=task_id, prompt=content, setup_code=LCB_CALL_SETUP, source="livecodebench",
                       tests=CallTests(fn_name=fn_name, cases=tuple(calls)))
    cases = []
    for i, (inp, out) in enumerate(zip(inputs, outputs)):
        if not isinstance(inp, str) or not isinstance(out, str):
            raise ProblemFormatError(file, line, f"test.input_output.inputs[{i}]", "stdin/stdout must be strings")
        cases.append(StdioCase(stdin=inp, stdout=out))
    return Problem(task_id=task_id, prompt=content, source="livecodebench", tests=StdioTests(cases=tuple(cases)))


_C_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
# HumanEval-X's task id prefixes and the languages they mean.
HUMANEVAL_X = {"CPP": "cpp", "Java": "java", "JavaScript": "javascript", "Go": "go", "Rust": "rust"}


def _humaneval_x(obj: dict[str, Any], file: str, line: int) -> Problem:
    task_id = _need(obj, "task_id", str, file, line)
    lang = HUMANEVAL_X.get(task_id.partition("/")[0])
    if lang is None:
        raise ProblemFormatError(file, line, "task_id", f"must start with one of {', '.join(HUMANEVAL_X)} and '/', "
                                 f"got {task_id!r}")
    prompt = _need(obj, "prompt", str, file, line)
    test = _need(obj, "test", str, file, line)
    if lang == "rust":  # the Rust rows' prompt is the docstring alone: the signature is the declaration's
        prompt += _need(obj, "declaration", str, file, line)
        if "#[test]" not in _C_COMMENTS.sub("", test):  # Rust/32's tests are commented out: any program passes
            raise ProblemFormatError(file, line, "test", "has no #[test] outside comments: nothing would be tested")
    elif lang == "go":  # the package clause and the test's imports (testing, testify)
        test = _need(obj, "test_setup", str, file, line) + test
    return Problem(task_id=task_id, prompt=prompt, completion_mode="continue", source="humaneval_x", language=lang,
                   tests=ProgramTests(code=test))


# CodeContests' own language codes (its Problem.Solution.Language) that this harness runs.
CODE_CONTESTS_LANGUAGES = {2: "cpp", 3: "python", 4: "java"}


def _cc_tests(obj: dict[str, Any], file: str, line: int) -> list[StdioCase]:
    cases = []
    for key in ("public_tests", "private_tests", "generated_tests"):
        part = obj.get(key) or {}
        if not isinstance(part, dict) or not isinstance(part.get("input", []), list) \
                or not isinstance(part.get("output", []), list) or len(part.get("input", [])) != len(part.get("output", [])):
            raise ProblemFormatError(file, line, key, "must be {input: [...], output: [...]} of equal lengths")
        for i, (stdin, stdout) in enumerate(zip(part.get("input", []), part.get("output", []))):
            if not isinstance(stdin, str) or not isinstance(stdout, str):
                raise ProblemFormatError(file, line, f"{key}[{i}]", "input and output must be strings")
            cases.append(StdioCase(stdin=stdin, stdout=stdout))
    return cases


def _deepmind_code_contests(obj: dict[str, Any], file: str, line: int) -> Problem:
    name = _need(obj, "name", str, file, line)
    cases = _cc_tests(obj, file, line)
    if not cases:
        raise ProblemFormatError(file, line, "public_tests", "no test at all (public, private or generated)")
    limit = obj.get("time_limit") or {}
    seconds = float(limit.get("seconds") or 0) + float(limit.get("nanos") or 0) / 1e9 if isinstance(limit, dict) else 0
    memory = obj.get("memory_limit_bytes") or 0
    memory_mb = int(memory) >> 20 if isinstance(memory, int) and memory >> 20 >= 32 else None
    return Problem(task_id=f"code_contests/{name}", prompt=_need(obj, "description", str, file, line),
                   source="code_contests", time_limit_s=seconds or None, memory_mb=memory_mb,
                   tests=StdioTests(cases=tuple(cases), whitespace="tokens"))


_PARSERS: dict[str, Callable[[dict[str, Any], str, int], Problem]] = {
    "humaneval": _humaneval,
    "mbpp": _mbpp,
    "code_contests": _code_contests,
    "livecodebench": _livecodebench,
    "humaneval_x": _humaneval_x,
    "deepmind_code_contests": _deepmind_code_contests,
}


def problem_from_row(row: dict[str, Any], fmt: str, where: str = "row", index: int = 0) -> Problem:
    """One problem from a dataset row of a known format (a HuggingFace ``datasets`` row,
    a parsed JSONL line).

    Args:
        row: the row's fields.
        fmt: one of :data:`FORMATS` but ``native`` (``problem_from_dict`` reads that).
        where: what to call the row's source in errors (a file, ``column 'test'``).
        index: the row's number in errors.

    Raises:
        ProblemFormatError: an unknown ``fmt``, or a row that does not fit it (the message
            names ``where``, ``index`` and the field).
    """
    parse = _PARSERS.get(fmt)
    if parse is None:
        raise ProblemFormatError(where, index, "", f"unknown row format {fmt!r}; use one of {sorted(_PARSERS)}")
    return parse(row, where, index)


def _detect(obj: dict[str, Any]) -> str | None:
    keys = set(obj)
    if "tests" in keys and "task_id" in keys:
        return "native"
    if {"name", "description", "public_tests"} <= keys:
        return "deepmind_code_contests"
    if {"prompt", "test", "declaration", "canonical_solution"} <= keys and "entry_point" not in keys:
        return "humaneval_x"
    if {"prompt", "test", "entry_point"} <= keys:
        return "humaneval"
    if "test_list" in keys and ("code" in keys or "text" in keys):
        return "mbpp"
    if {"content", "test"} <= keys and isinstance(obj.get("test"), str):
        return "code_contests" if obj["test"].lstrip().startswith("[") else "livecodebench"
    return None


def _iter_lines(path: str) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, text in enumerate(fh, start=1):
            if text.strip():
                yield number, text


def detect_format(path: str) -> str:
    """Guess the format of a JSONL file from its first decodable record.

    Raises:
        ProblemFormatError: no record could be decoded or none matches a known format.
    """
    for number, text in _iter_lines(path):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            fmt = _detect(obj)
            if fmt is None:
                keys = sorted(obj)
                shown = ", ".join(keys[:12]) + (f" and {len(keys) - 12} more" if len(keys) > 12 else "")
                raise ProblemFormatError(path, number, "", f"unknown problem record format (its keys: {shown}); "
                                         f"name the format: --format {{{','.join(FORMATS)}}} on the command "
                                         "line, fmt= in rewards.load_problems")
            return fmt
    raise ProblemFormatError(path, 0, "", "no JSON object found: cannot detect the format")


def load_problems(path: str | os.PathLike[str], fmt: str = "auto") -> ProblemSet:
    """Load every problem of a JSONL file, collecting per-line errors.

    Args:
        path: the JSONL file.
        fmt: ``"auto"`` or one of :data:`FORMATS`.

    Returns:
        A :class:`ProblemSet`; malformed lines end up in ``errors`` and the rest still loads.

    Raises:
        ProblemFormatError: unknown ``fmt``, undetectable format, or duplicate task ids (the
            second occurrence is recorded as an error, not raised).
        OSError: the file cannot be read.
    """
    path = os.fspath(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise ProblemFormatError(path, 0, "", f"unknown format {fmt!r}; use 'auto' or one of {FORMATS}")
    resolved = detect_format(path) if fmt == "auto" else fmt
    result = ProblemSet(path=path, fmt=resolved)
    seen: set[str] = set()
    for number, text in _iter_lines(path):
        try:
            if resolved == "native":
                problem = parse_native_line(text, path, number)
            else:
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ProblemFormatError(path, number, "", f"not valid JSON: {exc.msg} at column {exc.colno}") from None
                if not isinstance(obj, dict):
                    raise ProblemFormatError(path, number, "", f"a record must be a JSON object, got {type(obj).__name__}")
                problem = _PARSERS[resolved](obj, path, number)
            if problem.task_id in seen:
                raise ProblemFormatError(path, number, "task_id", f"duplicate task id {problem.task_id!r}")
        except ProblemFormatError as exc:
            logger.warning("skipping record: %s", exc)
            result.errors.append(exc)
            continue
        except ValueError as exc:  # Problem.__post_init__ invariants
            err = ProblemFormatError(path, number, "", str(exc))
            logger.warning("skipping record: %s", err)
            result.errors.append(err)
            continue
        seen.add(problem.task_id)
        result.problems.append(problem)
    return result


def reference_solutions(path: str | os.PathLike[str], fmt: str = "auto") -> dict[str, str]:
    """Reference solutions where the data has them, keyed like the loaded problems' ``task_id``.

    HumanEval and HumanEval-X: ``canonical_solution`` (a completion, to append to the prompt); MBPP: ``code``
    (a whole program); CodeContests' own rows: the first solution in C++, Python 3 or Java, as a
    fenced block tagged with its language; LiveCodeBench rows: ``canonical_solution`` (in the SandboxFusion sample
    this is ``import sys; sys.exit(0)``, a reward-hacking probe that must score 0). Rows that
    cannot be read are skipped (``load_problems`` reports them).
    """
    path = os.fspath(path)
    resolved = detect_format(path) if fmt == "auto" else fmt
    out: dict[str, str] = {}
    for _number, text in _iter_lines(path):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if resolved in ("humaneval", "humaneval_x") and isinstance(obj.get("canonical_solution"), str):
            out[str(obj.get("task_id"))] = obj["canonical_solution"]
        elif resolved == "deepmind_code_contests" and isinstance(obj.get("solutions"), dict):
            sols = obj["solutions"]
            for code, text in zip(sols.get("language") or [], sols.get("solution") or []):
                lang = CODE_CONTESTS_LANGUAGES.get(code)
                if lang is not None and isinstance(text, str):  # a fenced block: its tag names the language
                    out[f"code_contests/{obj.get('name')}"] = f"```{lang}\n{text}\n```\n"
                    break
        elif resolved == "mbpp" and isinstance(obj.get("code"), str):
            out[f"MBPP/{obj.get('task_id')}"] = obj["code"]
        elif resolved == "livecodebench" and isinstance(obj.get("canonical_solution"), str):
            try:
                labels = json.loads(obj.get("labels", "{}"))
                name = labels.get("task_id") or obj.get("id")
            except (json.JSONDecodeError, AttributeError):
                name = obj.get("id")
            out[f"livecodebench/{name}"] = obj["canonical_solution"]
    return out
