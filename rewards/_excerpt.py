"""One policy for cutting error text short, wherever it is cut (verdicts, rows, reports)."""

from __future__ import annotations

__all__ = ["excerpt"]

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
