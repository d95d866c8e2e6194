"""Every notebook runs top to bottom (its code cells executed in order, in one namespace)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {"__name__": "__notebook__"}
    try:
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)
    finally:
        pool = namespace.get("pool")
        if pool is not None:
            pool.close()


def test_there_is_a_notebook():
    assert NOTEBOOKS and all(os.path.getsize(p) > 0 for p in NOTEBOOKS)
