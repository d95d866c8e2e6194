"""Output comparison done outside the sandbox: stdout text and JSON values.

Nothing here trusts the program: stdout is plain text and call results arrive as JSON, so
the only types seen are JSON's. Line lists are compared in full - extra or missing lines
fail (no ``zip()`` truncation).

Float tolerance applies only where the *expected* token or value is a non-integer number:
an expected integer (``1000000007``, ``-12``) must come back exactly, so a near miss such as
``1000000507`` or an integer printed or returned as a float (``5.0``) fails at any tolerance.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["stdout_matches", "values_equal"]

# An integer literal: optional sign, ASCII digits only. Expected tokens like this need exact text.
_INT_TOKEN = re.compile(r"[+-]?[0-9]+", re.ASCII)
# A decimal number literal as programs print them (``2.5``, ``-.5``, ``3.``, ``1e-3``); ``float()``
# alone would also take ``1_0``, ``inf``, ``nan`` and non-ASCII digits.
# Written without nested or adjacent repeats over the same characters, so a long token
# cannot make the match backtrack quadratically.
_FLOAT_TOKEN = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _float_token_equal(actual: str, expected: str, tol: float) -> bool:
    """Whether two textually different tokens match under ``tol``.

    Args:
        actual: the program's token.
        expected: the reference token.
        tol: absolute or relative tolerance.

    Returns:
        True only when ``expected`` is a finite non-integer number literal, ``actual`` is a
        number literal, and they are within ``tol``; an integer-literal ``expected`` never
        matches here (it needs equal text), nor do ``nan``/``inf`` spellings.
    """
    if _INT_TOKEN.fullmatch(expected) or not _FLOAT_TOKEN.fullmatch(expected) or not _FLOAT_TOKEN.fullmatch(actual):
        return False
    x, y = float(actual), float(expected)
    if not (math.isfinite(x) and math.isfinite(y)):  # overflowed literals such as 1e999
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
        float_tol: when set, a token that differs textually from its expected token still
            matches if the expected token is a non-integer number literal (``2.5``, ``1e-3``,
            ``3.0``), the actual one is a number literal, and they are within this absolute or
            relative tolerance. An expected integer literal (optional sign and digits, e.g.
            ``-12``, ``007``, ``1000000007``) must be matched by equal text, so ``1000000507``
            or ``5.0`` for ``5`` fail; ``nan``/``inf`` need equal text too.
        whitespace: ``"tolerant"``: split each line into whitespace-separated tokens, ignore
            trailing blank lines; ``"tokens"``: compare the whole output's tokens, any run of
            whitespace (newlines included) separating them (Codeforces' default checker);
            ``"exact"``: compare text after CRLF->LF normalisation, allowing only a
            missing/extra final newline.

    Returns:
        True when every line matches and the number of lines is the same.

    Raises:
        ValueError: unknown ``whitespace`` mode.
    """
    if whitespace == "exact":
        a = actual.replace("\r\n", "\n")
        b = expected.replace("\r\n", "\n")
        return a == b or a.rstrip("\n") == b.rstrip("\n")
    if whitespace == "tokens":
        return _tokens_match(actual.split(), expected.split(), float_tol)
    if whitespace != "tolerant":
        raise ValueError(f"whitespace must be 'tolerant', 'tokens' or 'exact', got {whitespace!r}")
    got, want = _lines(actual), _lines(expected)
    if len(got) != len(want):
        return False
    # same length checked above: no truncation
    return all(_tokens_match(g.split(), w.split(), float_tol) for g, w in zip(got, want))


def _tokens_match(got: list[str], want: list[str], float_tol: float | None) -> bool:
    if len(got) != len(want):
        return False
    for tg, tw in zip(got, want):
        if tg != tw and (float_tol is None or not _float_token_equal(tg, tw, float_tol)):
            return False
    return True


def _numbers_equal(a: int | float, e: int | float, float_tol: float | None) -> bool:
    """``values_equal`` for two numbers (``int`` or ``float``, never ``bool``).

    Args:
        a: actual number.
        e: expected number.
        float_tol: tolerance for an expected float, or None.

    Returns:
        Whether they are equal: exact value (NaN equal to NaN) without ``float_tol``; with it, an
        expected int needs an equal int and an expected float a number within the tolerance.
    """
    a_nan = type(a) is float and math.isnan(a)
    e_nan = type(e) is float and math.isnan(e)
    if a_nan or e_nan:
        return a_nan and e_nan
    if float_tol is None:
        return a == e  # exact even for ints beyond float range
    if type(e) is int:
        return type(a) is int and a == e
    if a == e:
        return True
    try:
        return math.isclose(a, e, rel_tol=float_tol, abs_tol=float_tol)
    except OverflowError:  # an int too large for a float is nowhere near a finite float
        return False


def values_equal(actual: Any, expected: Any, *, float_tol: float | None = None) -> bool:
    """Strict structural equality of JSON-like values.

    ``bool`` is not ``int``; tuples equal lists (JSON has no tuples); dicts need the same keys;
    NaN equals NaN. Any other type on either side compares unequal. Numbers:

    * ``float_tol`` None: ``int`` and ``float`` compare by exact value (``2 == 2.0``).
    * ``float_tol`` set: an expected ``int`` needs an ``int`` of the same value (a near miss
      such as ``1000000507`` for ``1000000007``, or ``5.0`` for ``5``, fails); an expected
      ``float`` accepts an ``int`` or ``float`` within ``float_tol`` (absolute or relative).

    The rule applies at every depth of nested lists and dicts.

    Args:
        actual: the value the program returned (decoded from JSON).
        expected: the reference value.
        float_tol: tolerance for expected floats, or None for exact comparison.

    Returns:
        True when the values are equal under these rules.
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
            if not _numbers_equal(a, e, float_tol):
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
