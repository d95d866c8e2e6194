"""Pull the program out of a model completion (plain text, markdown, or chat messages)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from ._languages import find_language

__all__ = ["extract_code", "extract_program"]

logger = logging.getLogger(__name__)

# An opening fence: ``` or ~~~ (3+), optional info string; its first word is the language tag.
_FENCE_RE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n]*$", re.MULTILINE)
# Reasoning that models emit before the answer (DeepSeek-R1, Qwen3...): never the program.
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def _without_thinking(text: str) -> str:
    """``text`` with ``<think>...</think>`` blocks removed; an unclosed ``<think>`` runs to the end
    (the model never finished thinking), and text before a lone ``</think>`` (the opening tag was
    in the prompt) is thinking too."""
    text = _THINK_RE.sub("", text)
    lower = text.lower()
    close = lower.rfind("</think>")
    if close >= 0:
        text, lower = text[close + len("</think>"):], lower[close + len("</think>"):]
    start = lower.find("<think>")
    return text[:start] if start >= 0 else text


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+{re.escape(name)}\b", code, re.MULTILINE) is not None


def _message_text(message: Any) -> str | None:
    """Text of one chat message: ``content`` as str, or the text parts of a list of parts."""
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                if part.get("type", "text") in ("text", "output_text"):
                    parts.append(part["text"])
        return "".join(parts)
    return None


def _completion_text(completion: Any) -> str | None:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _message_text(completion)
    if isinstance(completion, (list, tuple)):
        # Chat transcript: the last assistant message is the answer.
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role") == "assistant":
                return _message_text(message)
        return None
    return None


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """All fenced blocks as (tag, body); an unterminated final fence runs to the end of text."""
    blocks: list[tuple[str, str]] = []
    pos = 0
    while True:
        match = _FENCE_RE.search(text, pos)
        if match is None:
            return blocks
        fence, tag = match.group(1), match.group(2).lower()
        body_start = match.end() + 1
        closing = re.compile(r"^[ \t]{0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$", re.MULTILINE)
        end = closing.search(text, body_start) if body_start <= len(text) else None
        if end is None:
            blocks.append((tag, text[body_start:]))
            return blocks
        blocks.append((tag, text[body_start:end.start()]))
        pos = end.end()


def extract_code(completion: Any, entry_point: str = "") -> str | None:
    """The program in a completion, or ``None`` when there is none.

    ``<think>...</think>`` reasoning is removed first (see :func:`_without_thinking`).

    Args:
        completion: a string; a list of chat messages (``{"role", "content"}`` dicts, the last
            assistant message is used; ``content`` may be a string or a list of parts); or a
            single message dict. Anything else yields ``None``.
        entry_point: the function the tests call: among several fenced blocks, the last one
            that defines it (``def``/``class``) is the program.

    Returns:
        The body of the last ```python / ```py / untagged fenced block (the last one defining
        ``entry_point`` when one does; an unterminated final fence counts); the whole text when
        there is no fence; ``None`` for empty or whitespace-only code. Never raises.
    """
    found = extract_program(completion, entry_point)
    return found[0] if found is not None else None


def extract_program(completion: Any, entry_point: str = "", languages: Sequence[str] = ("python",),
                    default: str = "python") -> tuple[str, str] | None:
    """The program in a completion and its language, or ``None`` when there is none in an
    allowed language.

    Args:
        completion: as for :func:`extract_code`; a message dict may also say its
            ``"language"`` (what its untagged code is written in).
        entry_point: as for :func:`extract_code` (Python blocks only).
        languages: the canonical names of the languages the sample may be in.
        default: the language of untagged code (a fence with no tag, or no fence at all).

    Returns:
        ``(code, language)``: the last fenced block whose tag names an allowed language
        (``cpp``, ``c++``, ``java``, ``js``, ``go``, ``rust``, ``bash``...; see
        :mod:`rewards._languages`), the whole text in ``default`` when there is no fence;
        ``None`` when the fences hold no allowed language, or the code is empty. Never raises.
    """
    try:
        if isinstance(completion, dict) and isinstance(completion.get("language"), str):
            named = find_language(completion["language"])
            if named is None:
                return None
            default = named.name
        text = _completion_text(completion)
        if text is None or not text.strip():
            return None
        text = _without_thinking(text.replace("\r\n", "\n"))
        if not text.strip():
            return None
        blocks = []
        for tag, body in _fenced_blocks(text):
            lang = find_language(tag) if tag else find_language(default)
            if lang is not None and lang.name in languages:
                blocks.append((body, lang.name))
        if blocks:
            defining = [b for b in blocks if entry_point and b[1] == "python" and _defines(b[0], entry_point)]
            code, language = (defining or blocks)[-1]
        elif _FENCE_RE.search(text):
            return None  # only blocks of other languages (```json, ```bash...): no program here
        elif default in languages:
            code, language = text, default
        else:
            return None
        return (code, language) if code.strip() else None
    except Exception:  # must never raise on model output; log and treat as no code
        logger.exception("extract_program failed on a %s", type(completion).__name__)
        return None
