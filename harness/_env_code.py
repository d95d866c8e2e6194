"""Tool output capping and the fallback program of :class:`harness.CodeEnvironment`.

Host-side only, on the code the model sent: nothing here reads anything back from a session.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from rewards import CallTests, Problem

__all__ = ["program_from_cells"]


def _cap(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters: head and tail kept, a visible marker in between."""
    if len(text) <= limit:
        return text
    tail = limit // 3
    head = limit - tail
    return f"{text[:head]}\n[... {len(text) - head - tail} characters truncated ...]\n{text[len(text) - tail:]}"


_SANDBOX_CUT = "[... output truncated by the sandbox ...]"


def _stream(text: str, truncated: bool) -> str:
    if not truncated:
        return text
    return text + ("\n" if text and not text.endswith("\n") else "") + _SANDBOX_CUT


# --------------------------------------------------------------------------- the fallback program

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _entry_point(problem: Problem) -> str | None:
    if problem.entry_point:
        return problem.entry_point
    if isinstance(problem.tests, CallTests):
        return problem.tests.fn_name
    return None


def _defines(node: ast.stmt, name: str) -> bool:
    """``node`` defines ``name`` at top level, or is ``class Solution`` with a method ``name``."""
    if isinstance(node, _DEFS) and node.name == name:
        return True
    if isinstance(node, ast.ClassDef) and node.name == "Solution":
        return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in node.body)
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Name) and t.id == name for t in targets)
    return False


def _bound_names(node: ast.stmt) -> frozenset[str] | None:
    """The global names a kept statement binds (``None``: unknown, ``from x import *``)."""
    if isinstance(node, ast.Import):
        return frozenset(a.asname or a.name.split(".")[0] for a in node.names)
    if isinstance(node, ast.ImportFrom):
        if any(a.name == "*" for a in node.names):
            return None
        return frozenset(a.asname or a.name for a in node.names)
    if isinstance(node, _DEFS):
        return frozenset([node.name])
    if isinstance(node, ast.Assign):
        return frozenset(t.id for t in node.targets if isinstance(t, ast.Name))
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return frozenset([node.target.id])
    return frozenset()


def _used_names(node: ast.stmt) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def program_from_cells(cells: Sequence[str], entry_point: str | None) -> str | None:
    """The program the model's cells define, for an episode that never submitted.

    Only the code the model sent is read (never anything the session reports). The program is
    the entry point's last definition (a top-level ``def`` / ``class``, an assignment, or
    ``class Solution`` with that method) and, transitively, the last top-level import, definition
    or assignment of each global name it uses, in cell order. Calls, prints, loops and the rest are
    left out, as are cells that do not parse. ``None`` when the cells never define ``entry_point``
    (or there is none): nothing usable.
    """
    if not entry_point:
        return None
    kept: list[ast.stmt] = []
    for cell in cells:
        try:
            tree = ast.parse(cell)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom, *_DEFS)):
                kept.append(node)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if node.value is not None and all(isinstance(t, ast.Name) for t in targets):
                    kept.append(node)
    binders: dict[str, int] = {}  # name -> the last statement binding it
    star_imports: list[int] = []
    for i, node in enumerate(kept):
        names = _bound_names(node)
        if names is None:
            star_imports.append(i)
            continue
        for name in names:
            binders[name] = i
    roots = [i for i, node in enumerate(kept) if _defines(node, entry_point)]
    if not roots:
        return None
    chosen = {roots[-1], *star_imports}
    todo = [roots[-1]]
    while todo:
        for name in _used_names(kept[todo.pop()]):
            binder = binders.get(name)
            if binder is not None and binder not in chosen:
                chosen.add(binder)
                todo.append(binder)
    parts: list[str] = []
    for i in sorted(chosen):
        try:
            parts.append(ast.unparse(kept[i]))
        except (RecursionError, ValueError):
            continue
    return "\n\n".join(parts) + "\n"
