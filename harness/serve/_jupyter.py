"""E2B's code interpreter over a session: IPython syntax in, E2B's result stream out.

E2B's interpreter is a Jupyter kernel, and clients send what a notebook accepts: ``!shell``
lines, ``%magics``, a trailing expression whose value is the cell's main result, figures and
``display()`` calls that become results of their own. A session's kernel runs plain Python, so
each cell is rewritten here, on the host, with IPython's own input transformer (``!ls`` becomes
``get_ipython().system('ls')``) and its trailing expression wrapped in ``_e2b_.finish(...)``,
which the context's copy of :mod:`harness.serve._jupyter_side` answers inside the sandbox.
Nothing here trusts what comes back: it is the user's own computer's output.
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmpool import CodeResult

__all__ = ["Context", "SIDE_SOURCE", "cell_events", "rewrite", "setup_code"]

SIDE_SOURCE = (Path(__file__).with_name("_jupyter_side.py")).read_text()
FINISH = "_e2b_.finish"


@dataclass
class Context:
    """One E2B context: a named kernel namespace of the session, with its own counter."""

    id: str
    language: str = "python"
    cwd: str = "/home/user"
    count: int = 0
    ready: bool = False  # the side module is set up in it
    env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}


def setup_code(env: dict[str, str]) -> str:
    """The hidden cell that gives a context ``_e2b_``, ``get_ipython`` and ``display``."""
    return (
        "import sys as _s, types as _t\n"
        "if '_e2b_' not in _s.modules:\n"
        "    _m = _t.ModuleType('_e2b_')\n"
        f"    exec(compile({SIDE_SOURCE!r}, '<e2b>', 'exec'), _m.__dict__)\n"
        "    _s.modules['_e2b_'] = _m\n"
        "_e2b_ = _s.modules['_e2b_']\n"
        "get_ipython, display = _e2b_.get_ipython, _e2b_.display\n"
        f"_e2b_.setup({json.dumps(env)})\n"
        "del _s, _t\n"
    )


@functools.lru_cache(maxsize=1)
def _transformer() -> Any:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()


def rewrite(code: str) -> str:
    """IPython syntax to plain Python that ends in ``_e2b_.finish(<trailing expression>)``.

    Line numbers are kept (a traceback points at the user's own line). A cell that is not
    valid Python even after IPython's transforms goes to the kernel as written, which reports
    its ``SyntaxError`` as the cell's error.
    """
    try:
        source = _transformer().transform_cell(code)
    except Exception:  # IPython's transformer gave up: the kernel will say what is wrong
        return code
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    last = tree.body[-1] if tree.body else None
    quiet = code.rstrip().endswith(";")  # IPython: a trailing ';' hides the value
    if not isinstance(last, ast.Expr) or quiet or last.end_lineno is None or last.end_col_offset is None:
        return source + ("" if source.endswith("\n") or not source else "\n") + f"{FINISH}(None)\n"
    # ast's columns count UTF-8 bytes: cut the expression out of the encoded text.
    lines = source.encode().splitlines(keepends=True)
    begin = sum(len(line) for line in lines[: last.lineno - 1]) + last.col_offset
    stop = sum(len(line) for line in lines[: last.end_lineno - 1]) + last.end_col_offset
    raw = source.encode()
    wrapped = raw[:begin] + f"{FINISH}((".encode() + raw[begin:stop] + b"))" + raw[stop:]
    return wrapped.decode() + ("" if wrapped.endswith(b"\n") else "\n")


def _result_line(formats: dict[str, Any], main: bool) -> dict[str, Any]:
    return {"type": "result", **{k: v for k, v in formats.items() if k != "type"}, "is_main_result": main}


def cell_events(result: CodeResult, count: int, streamed: bool, now: Callable[[], int]) -> Iterator[dict[str, Any]]:
    """The NDJSON lines of one cell after its output (which streams as it comes when
    ``streamed``): its results, its error, ``end_of_execution``."""
    if not streamed:
        for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
            if text:
                yield {"type": name, "text": text, "timestamp": now()}
    answer = result.data if result.has_data and isinstance(result.data, dict) else None
    if answer is not None:
        for shown in answer.get("displays") or []:
            if isinstance(shown, dict):
                yield _result_line(shown, False)
        main = answer.get("main")
        if isinstance(main, dict):
            yield _result_line(main, True)
    if result.error is not None:
        name, value, tb = result.error.name, result.error.value, result.error.traceback
        if name == "TimeoutError" and result.timed_out:
            value = "the cell ran past its timeout and was interrupted"
        yield {"type": "error", "name": name, "value": value, "traceback": _user_traceback(tb)}
    yield {"type": "end_of_execution"}


def _user_traceback(tb: str) -> str:
    """The traceback from the user's cell on (the kernel's own frame left out)."""
    lines = tb.splitlines(keepends=True)
    keep = [line for i, line in enumerate(lines)
            if not (line.lstrip().startswith('File "/opt/vmpool/') or
                    (i and lines[i - 1].lstrip().startswith('File "/opt/vmpool/') and line.startswith("    ")))]
    return "".join(keep)
