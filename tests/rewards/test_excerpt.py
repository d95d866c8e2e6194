"""Error text is cut one way everywhere: its start and its end (the exception line) survive."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rewards import excerpt


def test_short_text_is_only_stripped() -> None:
    assert excerpt("  boom\n", 10) == "boom"
    assert excerpt(None, 10) == ""


def test_a_long_traceback_keeps_where_and_the_exception_line() -> None:
    trace = "case 7: Traceback (most recent call last):\n" + "  File 'x', line 1\n" * 200 + "ZeroDivisionError: bad"
    cut = excerpt(trace, 300)
    assert len(cut) <= 300
    assert cut.startswith("case 7: Traceback")
    assert cut.endswith("ZeroDivisionError: bad")
    assert " ... " in cut


@given(st.text(), st.integers(min_value=0, max_value=400))
def test_never_longer_than_the_limit_and_keeps_the_last_characters(text: str, limit: int) -> None:
    cut = excerpt(text, limit)
    stripped = text.strip()
    assert len(cut) <= limit
    if len(stripped) <= limit:
        assert cut == stripped
    elif limit > 12:
        keep = (limit - 5) - (limit - 5) // 3
        assert cut.endswith(stripped[len(stripped) - keep:])
