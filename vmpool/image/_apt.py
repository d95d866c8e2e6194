"""Debian package resolution and download for the guest image (``apt-cache``/``apt-get``)."""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._config import (
    _APT_ENV,
    BASE_PACKAGES,
    BUILD_FORMAT,
    DENY_DEPENDENCIES,
    ImageConfig,
    ImageConfigError,
    ImageError,
)
from ._key import _key_hash

logger = logging.getLogger("vmpool.image")  # one logger for the whole image builder


_APT_CACHE_DIR: list[str] = []  # where apt keeps its binary package cache (set per build)


# apt is told that nothing is installed: the guest gets the package lists' candidates,
# whatever the host has installed. Else a host package from a source that is no longer
# listed (nodesource's nodejs, pinned by /etc/apt/preferences.d) is the candidate, with
# its own dependencies, and apt-get download cannot fetch it.
_NO_HOST_STATUS = ("-o", "Dir::State::status=/dev/null")


def _apt_options() -> list[str]:
    """Ignore the host's installed packages (``_NO_HOST_STATUS``); persist apt's binary cache
    in our cache dir: Debian container images turn it off (``Dir::Cache::pkgcache ""``), and
    rebuilding it costs each apt call about a second. apt checks it against the package lists
    itself."""
    if not _APT_CACHE_DIR:
        return [*_NO_HOST_STATUS]
    d = _APT_CACHE_DIR[0]
    return [*_NO_HOST_STATUS, "-o", f"Dir::Cache::pkgcache={d}/pkgcache.bin",
            "-o", f"Dir::Cache::srcpkgcache={d}/srcpkgcache.bin"]  # fmt: skip


def _run(argv: list[str], cwd: str | None = None, what: str = "") -> str:
    if argv[0] in ("apt-cache", "apt-get"):
        argv = [argv[0], *_apt_options(), *argv[1:]]
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **_APT_ENV}, check=False
        )
    except FileNotFoundError as exc:
        raise ImageError(f"{argv[0]} not found: the image builder needs Debian's apt/dpkg tools") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise ImageError(f"{what or argv[0]} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def _strip_arch(name: str) -> str:
    return name.split(":", 1)[0]


def _parse_depends(text: str) -> dict[str, list[list[tuple[str, list[str]]]]]:
    """Parse ``apt-cache depends`` output into package -> OR-groups of (name, providers)."""
    out: dict[str, list[list[tuple[str, list[str]]]]] = {}
    current: list[list[tuple[str, list[str]]]] | None = None
    group: list[tuple[str, list[str]]] = []
    continues = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            current = out.setdefault(_strip_arch(line.strip().strip("<>")), [])
            group, continues = [], False
            continue
        if current is None:
            continue
        if line.startswith("    "):  # a provider of the virtual package just listed
            if group:
                group[-1][1].append(_strip_arch(line.strip()))
            continue
        m = re.match(r"^ (\|| )(PreDepends|Depends): (.+)$", line)
        if not m:
            continue
        if not continues:
            group = []
            current.append(group)
        group.append((_strip_arch(m.group(3).strip()), []))
        continues = m.group(1) == "|"
    return out


def _denied(name: str) -> bool:
    return any(re.fullmatch(pat.replace("+", r"\+").replace(".", r"\.").replace("*", ".*"), name)
               for pat in DENY_DEPENDENCIES)  # fmt: skip


def _resolve_closure(roots: Iterable[str]) -> list[str]:
    """The roots plus their Depends/PreDepends, recursively (first alternative, first provider)."""
    flags = ["--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"]
    selected: list[str] = []
    seen: set[str] = set()
    todo = [r for r in roots]
    for r in todo:
        seen.add(r)
    while todo:
        batch, todo = todo, []
        deps = _parse_depends(_run(["apt-cache", "depends", *flags, *batch], what="apt-cache depends"))
        for name in batch:
            selected.append(name)
            for grp in deps.get(name, []):
                chosen = None
                for opt, providers in grp:  # an option already chosen satisfies the group
                    if opt in seen or any(p in seen for p in providers):
                        chosen = ""
                        break
                if chosen is None:
                    for opt, providers in grp:
                        if providers:  # a virtual package: its first provider
                            chosen = providers[0]
                        elif opt:
                            chosen = opt
                        if chosen:
                            break
                if not chosen or _denied(chosen):
                    continue
                seen.add(chosen)
                todo.append(chosen)
    return sorted(set(selected))


def _candidates(names: list[str]) -> dict[str, dict[str, str]]:
    """Candidate Version/Architecture/SHA256/Size of each package (apt-cache show)."""
    text = _run(["apt-cache", "show", "--no-all-versions", *names], what="apt-cache show")
    info: dict[str, dict[str, str]] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line.startswith(" ") and ":" in line:
                k, v = line.split(":", 1)
                fields[k] = v.strip()
        if "Package" in fields and fields["Package"] not in info:
            info[fields["Package"]] = {k: fields.get(k, "") for k in ("Version", "Architecture", "SHA256", "Size")}
    missing = [n for n in names if n not in info]
    if missing:
        raise ImageError(
            f"no installable candidate for {', '.join(missing)}: check the name (apt-cache policy NAME) "
            "or run apt-get update"
        )
    return info


def _resolve_kernel(name: str) -> str:
    """A kernel metapackage's concrete linux-image-* package (or ``name`` if concrete)."""
    deps = _parse_depends(_run(["apt-cache", "depends", "--no-recommends", "--no-suggests", name],
                               what=f"apt-cache depends {name}"))  # fmt: skip
    for grp in deps.get(name, []):
        for opt, providers in grp:
            for cand in [opt, *providers]:
                if cand.startswith("linux-image-") and cand != name:
                    return _resolve_kernel(cand)
    return name


def _apt_state() -> list[Any]:
    """What apt's candidate choice depends on: the package lists and apt's config files."""
    state = []
    for pattern in ("/var/lib/apt/lists/*", "/etc/apt/sources.list", "/etc/apt/sources.list.d/*",
                    "/etc/apt/preferences", "/etc/apt/preferences.d/*", "/etc/apt/apt.conf.d/*"):  # fmt: skip
        for path in sorted(glob.glob(pattern)):
            try:
                st = os.stat(path)
            except OSError:
                continue
            state.append([path, st.st_size, st.st_mtime_ns])
    return state


def _memo_path(config: ImageConfig) -> Path:
    memo_key = _key_hash({"format": BUILD_FORMAT, "kernel": config.kernel_package, "base": BASE_PACKAGES,
                          "extra": sorted(config.extra_packages), "deny": DENY_DEPENDENCIES,
                          "apt": _apt_state(), "options": _NO_HOST_STATUS})  # fmt: skip
    return Path(config.cache_dir) / ".resolve" / f"{memo_key[:24]}.json"


def _read_memo(memo: Path) -> dict[str, Any] | None:
    try:
        resolved: dict[str, Any] = json.loads(memo.read_text())
        return resolved
    except (OSError, ValueError):
        return None


def remembered_packages(config: ImageConfig) -> dict[str, Any] | None:
    """The resolution :func:`resolve_packages` remembered for ``config`` under apt's current
    state, or None; runs no apt tool."""
    return _read_memo(_memo_path(config))


def resolve_packages(config: ImageConfig) -> dict[str, Any]:
    """Resolve the packages of an image without downloading anything.

    The answer is remembered in ``cache_dir/.resolve`` for as long as apt's package
    lists and config files are unchanged (an ``apt-get update`` re-resolves).

    Returns:
        ``{"kernel": {name: info}, "userland": {name: info}}``, info holding the
        candidate Version, Architecture, SHA256 and Size.
    """
    memo = _memo_path(config)  # stats apt's lists and config once
    remembered = _read_memo(memo)
    if remembered is not None:
        return remembered
    packages = _resolve_packages(config)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(packages))
        os.replace(tmp, memo)
    except OSError as exc:
        logger.debug("cannot remember the package resolution: %s", exc)
    return packages


def _resolve_packages(config: ImageConfig) -> dict[str, Any]:
    apt_dir = Path(config.cache_dir) / ".apt"
    try:
        apt_dir.mkdir(parents=True, exist_ok=True)
        _APT_CACHE_DIR[:] = [str(apt_dir)]
    except OSError:
        _APT_CACHE_DIR[:] = []
    try:
        kernel = _resolve_kernel(config.kernel_package)
    except ImageError as exc:
        raise ImageConfigError(f"cannot resolve: {exc}", "kernel_package") from None
    if not kernel.startswith("linux-image-"):
        raise ImageConfigError(f"{config.kernel_package!r} does not lead to a linux-image-* package", "kernel_package")
    userland = _resolve_closure([*BASE_PACKAGES, *config.extra_packages])
    info = _candidates([kernel, *userland])
    return {"kernel": {kernel: info[kernel]}, "userland": {n: info[n] for n in userland}}


def _download(names_versions: dict[str, str], dest: Path) -> dict[str, Path]:
    pins = [f"{n}={v}" for n, v in sorted(names_versions.items())]
    _run(["apt-get", "download", "-q", *pins], cwd=str(dest), what="apt-get download")
    debs = {}
    for name in names_versions:
        found = glob.glob(str(dest / f"{glob.escape(name)}_*.deb"))
        if len(found) != 1:
            raise ImageError(f"apt-get download did not leave exactly one .deb for {name} in {dest}: {found}")
        debs[name] = Path(found[0])
    return debs

