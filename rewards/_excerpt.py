"""One policy for cutting error text short, wherever it is cut (verdicts, rows, reports), and
the words a verdict gives for a failed run or a wrong answer."""

from __future__ import annotations

from vmpool import ExecResult, Status

__all__ = ["excerpt", "run_why", "wrong_output"]

_GAP = " ... "


def excerpt(text: str | None, limit: int) -> str:
    """``text`` stripped, at most ``limit`` characters: its start and its end, the middle cut.

    The start says where (``case 3:``, ``test 0:``, the first traceback line) and the end
    carries the exception line of a traceback; a third of the room goes to the start, the
    rest to the end.

    Args:
        text: the error text (None reads as empty).
        limit: the most characters returned (>= 0).
    """
    text = (text or "").strip()
    if len(text) <= limit:
        return text
    if limit <= len(_GAP) + 2:
        return text[len(text) - limit:] if limit > 0 else ""
    room = limit - len(_GAP)
    head = room // 3
    return text[:head] + _GAP + text[len(text) - (room - head):]


def run_why(res: ExecResult, load_error: str | None = None) -> str:
    """Why a run that did not end OK ended, for the verdict's error excerpt."""
    if res.status is Status.TIMEOUT:
        if res.timeout_by == "wall":
            return "wall-clock backstop reached (the program slept or blocked)"
        return "CPU time limit exceeded"
    tail = res.stderr.strip()[-300:]
    return load_error or res.error or tail or res.status.value


_SHOWN = 80


def wrong_output(actual: str, expected: str, whitespace: str = "tolerant") -> str:
    """Where stdout first differs from the expected output (a line, or a token in ``tokens``
    mode), both sides cut short."""
    if whitespace == "tokens":
        got_t, want_t = actual.split(), expected.split()
        for n in range(max(len(got_t), len(want_t))):
            g = got_t[n] if n < len(got_t) else "<no token>"
            w = want_t[n] if n < len(want_t) else "<no token>"
            if g != w:
                return f"wrong answer at token {n + 1}: expected {w[:_SHOWN]!r}, got {g[:_SHOWN]!r}"
        return "wrong answer"
    got = actual.replace("\r\n", "\n").split("\n")
    want = expected.replace("\r\n", "\n").split("\n")
    for n in range(max(len(got), len(want))):
        g = got[n] if n < len(got) else "<no line>"
        w = want[n] if n < len(want) else "<no line>"
        if g.split() != w.split():
            return f"wrong answer at line {n + 1}: expected {w[:_SHOWN]!r}, got {g[:_SHOWN]!r}"
    return "wrong answer"
