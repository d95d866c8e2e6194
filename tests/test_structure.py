"""The shape of the code base, checked: small modules, one-way seams between packages,
and an ``import harness`` that loads only what grading needs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("vmpool", "rewards", "harness")  # the product
SUPPORT = ("bench",)  # beside it in the source tree, held to the product's public names
MAX_LINES = 520  # "about 500": a module past this is doing more than one job


def _modules(packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    return sorted(p for pkg in packages for p in (REPO / pkg).rglob("*.py"))


def test_no_module_is_over_about_500_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in _modules(PACKAGES + SUPPORT)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def _private_imports(path: Path) -> list[str]:
    """Imports in ``path`` of another package's private module or name."""
    own = path.relative_to(REPO).parts[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top, *rest = node.module.split(".")
            if top in PACKAGES + SUPPORT and top != own and (any(p.startswith("_") for p in rest)
                                                     or any(a.name.startswith("_") for a in node.names)):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: from {node.module} import "
                             + ", ".join(a.name for a in node.names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top, *rest = alias.name.split(".")
                if top in PACKAGES + SUPPORT and top != own and any(p.startswith("_") for p in rest):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: import {alias.name}")
    return found


def test_no_package_imports_another_packages_private_names() -> None:
    found = [line for p in _modules(PACKAGES + SUPPORT) for line in _private_imports(p)]
    assert not found, "\n".join(found)


def test_dependencies_point_one_way() -> None:
    # harness -> rewards -> vmpool: vmpool knows nothing of the others, rewards nothing of
    # harness; no product module imports bench but the command that runs its suites.
    below = {"vmpool": ("rewards", "harness", "bench"), "rewards": ("harness", "bench"), "harness": ("bench",)}
    found = []
    for path in _modules():
        own = path.relative_to(REPO).parts[0]
        if path == REPO / "harness" / "_cli_commands.py":  # `harness bench` runs the suites
            below_here: tuple[str, ...] = ()
        else:
            below_here = below.get(own, ())
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{path.relative_to(REPO)}: imports {n}" for n in names if n.split(".")[0] in below_here]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_loads_no_benchmark_ray_or_trl_code(package: str) -> None:
    probe = (f"import json, sys; import {package}; "
             "print(json.dumps(sorted(m for m in sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                       cwd=REPO, timeout=120).stdout)
    heavy = {"ray", "trl", "transformers", "datasets", "torch", "pytest"}
    assert not [m for m in loaded if m.split(".")[0] in heavy]
    ours = [m for m in loaded if m.startswith("harness.")]
    assert not [m for m in ours if m.split(".")[1] in ("ray", "_trl") or m.split(".")[1].startswith("_bench")], ours


def test_guest_copies_of_host_facts_are_equal() -> None:
    # The guest agent is standalone (it runs on the sandbox's interpreter), so it keeps its
    # own copy of what the host also needs to know.
    import vmpool
    from vmpool._guest import agent

    assert agent.PROTOCOL == vmpool.PROTOCOL_VERSION
    from vmpool._guest import session

    assert session.PROTOCOL == vmpool.PROTOCOL_VERSION  # the session kernel's hello passes the same check
    from vmpool import _protocol
    from vmpool._guest import _vmpool_chan

    assert _vmpool_chan.HEADER.format == _protocol.HEADER.format and _vmpool_chan.MAX_FRAME == _protocol.MAX_FRAME
    assert tuple(agent.PRELOAD) == vmpool.PRELOADED_MODULES


def _guest_status_literals() -> set[str]:
    """Every string the guest sources put where a status goes: ``"status": "..."`` entries,
    ``verdict = "..."`` (also as the first of a tuple assignment) and ``_classify``'s returns."""
    found: set[str] = set()

    def text(node: ast.AST | None) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    for path in sorted((REPO / "vmpool" / "_guest").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                found.update(v for k, val in zip(node.keys, node.values)
                             if text(k) == "status" and (v := text(val)) is not None)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id == "verdict" and (v := text(node.value)):
                        found.add(v)
                    if (isinstance(target, ast.Tuple) and isinstance(target.elts[0], ast.Name)
                            and target.elts[0].id == "verdict" and isinstance(node.value, ast.Tuple)
                            and (v := text(node.value.elts[0]))):
                        found.add(v)
            elif isinstance(node, ast.FunctionDef) and node.name == "_classify":
                found.update(v for r in ast.walk(node) if isinstance(r, ast.Return) and (v := text(r.value)))
    return found


def test_guest_statuses_are_the_hosts() -> None:
    import vmpool

    sys.path.insert(0, str(REPO / "vmpool" / "_guest"))  # the guest modules import each other by bare name
    try:
        import _vmpool_run
    finally:
        sys.path.remove(str(REPO / "vmpool" / "_guest"))
    host = {s.value for s in vmpool.Status}
    assert set(_vmpool_run.STATUSES) <= host
    assert host - set(_vmpool_run.STATUSES) == {"sandbox_killed"}  # decided by the pool alone
    used = _guest_status_literals()
    assert used == set(_vmpool_run.STATUSES), used ^ set(_vmpool_run.STATUSES)
