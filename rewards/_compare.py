"""Output comparison done outside the sandbox: stdout text and JSON values.

Nothing here trusts the program: stdout is plain text and call results arrive as JSON, so
the only types seen are JSON's. Line lists are compared in full - extra or missing lines
fail (no ``zip()`` truncation).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["stdout_matches", "values_equal"]


def _float_token_equal(a: str, b: str, tol: float) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    if math.isnan(x) or math.isnan(y):
        return False
    return math.isclose(x, y, rel_tol=tol, abs_tol=tol)


def _lines(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def stdout_matches(actual: str, expected: str, *, float_tol: float | None = None, whitespace: str = "tolerant") -> bool:
    """Whether a program's stdout matches the expected output.

    Args:
        actual: what the program printed.
        expected: the reference output.
        float_tol: when set, tokens that differ textually but both parse as floats match if
            within this absolute or relative tolerance.
        whitespace: ``"tolerant"``: split each line into whitespace-separated tokens, ignore
            trailing blank lines; ``"exact"``: compare text after CRLF->LF normalisation, allowing
            only a missing/extra final newline.

    Returns:
        True when every line matches and the number of lines is the same.

    Raises:
        ValueError: unknown ``whitespace`` mode.
    """
    if whitespace == "exact":
        a = actual.replace("\r\n", "\n")
        b = expected.replace("\r\n", "\n")
        return a == b or a.rstrip("\n") == b.rstrip("\n")
    if whitespace != "tolerant":
        raise ValueError(f"whitespace must be 'tolerant' or 'exact', got {whitespace!r}")
    got, want = _lines(actual), _lines(expected)
    if len(got) != len(want):
        return False
    for line_got, line_want in zip(got, want):  # same length checked above: no truncation
        tokens_got, tokens_want = line_got.split(), line_want.split()
        if len(tokens_got) != len(tokens_want):
            return False
        for tg, tw in zip(tokens_got, tokens_want):
            if tg == tw:
                continue
            if float_tol is None or not _float_token_equal(tg, tw, float_tol):
                return False
    return True


def values_equal(actual: Any, expected: Any, *, float_tol: float | None = None) -> bool:
    """Strict structural equality of JSON-like values.

    ``bool`` is not ``int``; ``int`` and ``float`` compare by value (``2 == 2.0``), within
    ``float_tol`` when given; tuples equal lists (JSON has no tuples); dicts need the same keys.
    Any other type on either side compares unequal.
    """
    stack = [(actual, expected)]
    while stack:
        a, e = stack.pop()
        ta, te = type(a), type(e)
        if ta is bool or te is bool:
            if ta is not te or a != e:
                return False
        elif a is None or e is None:
            if not (a is None and e is None):
                return False
        elif ta in (int, float) and te in (int, float):
            if ta is int and te is int:
                if a != e:
                    return False
            elif math.isnan(a) or math.isnan(e):
                if not (math.isnan(a) and math.isnan(e)):
                    return False
            elif float_tol is None:
                if a != e:
                    return False
            elif not math.isclose(a, e, rel_tol=float_tol, abs_tol=float_tol):
                return False
        elif ta is str and te is str:
            if a != e:
                return False
        elif ta in (list, tuple) and te in (list, tuple):
            if len(a) != len(e):
                return False
            stack.extend(zip(a, e))
        elif ta is dict and te is dict:
            if a.keys() != e.keys():
                return False
            stack.extend((a[k], e[k]) for k in a)
        else:
            return False
    return True
