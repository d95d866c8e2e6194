"""Guest image ("template") for the QEMU ``microvm`` backend, and a boot probe.

An image is a directory holding an uncompressed kernel (``vmlinux``, booted through
its PVH entry), a newc cpio ``initramfs`` and a ``manifest.json``. It is built only
from Debian packages (``apt-get download`` + ``dpkg-deb -x``): the cloud kernel (its
virtio modules go into the initramfs), ``busybox-static`` (``/bin/sh``, ``mount``,
``insmod``), Python 3.11 with the shared libraries it needs, and any
``extra_packages`` with their dependencies. ``/init`` (``_guest/init``) mounts
proc/sys/devtmpfs and size-capped tmpfs ``/tmp`` and ``/dev/shm``, loads the
modules, finds the virtio-serial port named ``vmpool.agent`` and execs the guest
agent (``_guest/agent.py``, standalone) on it as pid 1.

Images are content-addressed: the directory name is a hash of what decides the
bytes (kernel and extra packages asked for, every resolved package version, the
sha256 of ``agent.py`` and ``init``, the builder's format version). Building the
same inputs again returns the existing directory ("cached"); a build happens in a
temp directory renamed into place at the end, so an interrupted build leaves
nothing that looks complete.

Host tools: ``apt-get``/``apt-cache``/``dpkg-deb`` (Debian), ``lz4`` (Debian package
``lz4``; the Python ``lz4`` package is used when the CLI is missing) and, for
booting, ``qemu-system-x86_64`` (``qemu-system-x86``).

Public API::

    config = load_image_config("configs/image.yaml")      # or ImageConfig(...)
    paths = build_image(config)                           # ImagePaths(dir, vmlinux, initramfs, manifest)
    report = boot_probe(paths)                            # BootReport: boot-to-ready seconds, ...
    ok, reason = probe_kvm(paths, timeout_s=10)
    argv = qemu_command(paths, sock, log, accel="tcg")    # the QEMU command line used
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._errors import SandboxStartError, VmpoolError
from ._protocol import FrameChannel

__all__ = [
    "AGENT_PORT",
    "PROBE_REQUEST",
    "BootReport",
    "ImageConfig",
    "ImageConfigError",
    "ImageError",
    "ImagePaths",
    "build_image",
    "describe_image_config",
    "host_tsc_khz",
    "image_config_from_dict",
    "boot_probe",
    "image_key",
    "min_memory_mb",
    "load_image_config",
    "probe_kvm",
    "qemu_command",
    "resolve_packages",
]

logger = logging.getLogger(__name__)

GUEST_DIR = Path(__file__).with_name("_guest")
AGENT_SRC = GUEST_DIR / "agent.py"
INIT_SRC = GUEST_DIR / "init"
AGENT_PORT = "vmpool.agent"  # name of the virtserialport the guest agent talks on

# Bump when the builder changes what it puts into an image (layout, pruning, ...):
# it is part of the cache key, so old images are not reused by a new builder.
BUILD_FORMAT = 3

GUEST_PYTHON = "3.11"
BASE_PACKAGES = ("busybox-static", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib")
# Guest kernel modules (with their dependencies, found from each module's modinfo).
# virtio_mmio + virtio_console are required (the agent channel); virtio_rng,
# virtio_blk and the vsock transport are there for the snapshot/restore layer
# (reseeding the RNG, a scratch disk, vhost-vsock where the host has it).
REQUIRED_MODULES = ("virtio_mmio", "virtio_console")
OPTIONAL_MODULES = ("virtio_rng", "virtio_blk", "vmw_vsock_virtio_transport")
# Dependencies never installed into the guest: install-time tooling (dpkg, debconf,
# perl, ...) that Debian packages depend on but a running Python does not need.
# Packages named explicitly (base or extra_packages) are always installed.
DENY_DEPENDENCIES = (
    "dpkg", "tar", "install-info", "debconf", "debconf-2.0", "perl", "perl-base", "perl-modules-*",
    "libperl*", "mailcap", "mime-support", "sensible-utils", "readline-common", "tzdata",
)  # fmt: skip
# Pruned after extraction: documentation and files nothing in the guest reads (gconv:
# glibc iconv modules, 8 MB; Python codecs do not use them).
PRUNE = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
    "usr/lib/x86_64-linux-gnu/gconv", "usr/share/bug", "usr/share/bash-completion", "usr/share/menu", "usr/share/applications",
    "usr/share/pixmaps", "usr/share/gdb", "usr/share/binfmts", "usr/share/python3/debian_defaults",
    "etc/python3.11/sitecustomize.py", "usr/lib/python3.11/pydoc_data", "usr/lib/python3.11/ensurepip",
    "usr/lib/python3.11/idlelib", "usr/lib/python3.11/turtledemo", "usr/lib/python3.11/lib2to3/tests",
)  # fmt: skip
_PKG_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_APT_ENV = {"LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}


class ImageError(VmpoolError):
    """The guest image could not be built (a package, a tool or the kernel is missing or wrong)."""


class ImageConfigError(ImageError, ValueError):
    """A bad :class:`ImageConfig` value or image config file; the message names the key."""

    def __init__(self, message: str, key: str = "", source: str = "") -> None:
        self.message = message
        self.key = key
        self.source = source
        prefix = ": ".join(p for p in (source, key) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message)


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


def _default_cache_dir() -> str:
    return os.environ.get("VMPOOL_IMAGE_DIR") or "~/.cache/vmpool/images"


@dataclass(frozen=True)
class ImageConfig:
    """What goes into a guest image, and where images are cached."""

    kernel_package: str = _help(
        "Debian kernel package: a metapackage such as linux-image-cloud-amd64 (resolved to the "
        "concrete linux-image-6.1.0-N-cloud-amd64 with apt-cache depends) or a concrete one; its "
        "kernel must boot through the PVH entry (CONFIG_PVH=y)",
        default="linux-image-cloud-amd64",
    )
    extra_packages: tuple[str, ...] = _help(
        "extra Debian packages installed into the guest with their dependencies, e.g. python3-numpy",
        default=(),
    )
    memory_mb: int = _help(
        "guest RAM in MiB used when booting the image (not part of the image's bytes or cache key)",
        default=256,
    )
    cache_dir: str = _help(
        "directory holding built images, one subdirectory per content hash; default "
        "$VMPOOL_IMAGE_DIR if set, else ~/.cache/vmpool/images ('~' is expanded)",
        default_factory=_default_cache_dir,
    )

    def __post_init__(self) -> None:
        kp = self.kernel_package
        if not isinstance(kp, str) or not _PKG_NAME.match(kp):
            raise ImageConfigError(
                f"must be a Debian package name such as 'linux-image-cloud-amd64', got {kp!r}", "kernel_package"
            )
        extra = self.extra_packages
        if isinstance(extra, str) or not isinstance(extra, Iterable):
            raise ImageConfigError(
                f"must be a list of Debian package names (e.g. [python3-numpy]), got {extra!r}", "extra_packages"
            )
        extra = tuple(extra)
        for name in extra:
            if not isinstance(name, str) or not _PKG_NAME.match(name):
                raise ImageConfigError(
                    f"{name!r} is not a Debian package name (lowercase letters, digits, + - .)", "extra_packages"
                )
        if len(set(extra)) != len(extra):
            dup = sorted({n for n in extra if extra.count(n) > 1})
            raise ImageConfigError(f"lists {', '.join(dup)} more than once; remove the duplicates", "extra_packages")
        object.__setattr__(self, "extra_packages", extra)
        mem = self.memory_mb
        if isinstance(mem, bool) or not isinstance(mem, int) or not 128 <= mem <= 65536:
            raise ImageConfigError(
                f"must be an integer number of MiB from 128 (Python and the initramfs need it) to 65536, got {mem!r}",
                "memory_mb",
            )
        cd = self.cache_dir
        if not isinstance(cd, (str, os.PathLike)) or not str(cd).strip():
            raise ImageConfigError(f"must be a directory path, got {cd!r}", "cache_dir")
        object.__setattr__(self, "cache_dir", os.path.abspath(os.path.expanduser(str(cd))))


def describe_image_config() -> list[tuple[str, str, str]]:
    """``(key, default, help)`` for every :class:`ImageConfig` field."""
    rows = []
    for f in dataclasses.fields(ImageConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, repr(default), f.metadata.get("help", "")))
    return rows


def load_image_config(path: str | os.PathLike[str]) -> ImageConfig:
    """Load an :class:`ImageConfig` from YAML: a mapping of its field names (strict keys).

    Raises:
        ImageConfigError: unreadable file, invalid YAML, an unknown key or a bad value;
            the message names the file and the key.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ImageConfigError(f"cannot read image config: {exc.strerror or exc}", source=source) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ImageConfigError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", source=source) from exc
    return image_config_from_dict({} if data is None else data, source)


def image_config_from_dict(data: Any, source: str = "<dict>") -> ImageConfig:
    """Build an :class:`ImageConfig` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, Mapping):
        raise ImageConfigError(f"must be a mapping of image settings, got {type(data).__name__}", source=source)
    known = {f.name for f in dataclasses.fields(ImageConfig)}
    for key in data:
        if key not in known:
            raise ImageConfigError(f"unknown key; valid keys: {', '.join(sorted(known))}", str(key), source)
    kwargs = dict(data)
    if "extra_packages" in kwargs:
        value = kwargs["extra_packages"]
        if value is None:
            kwargs["extra_packages"] = ()
        elif not isinstance(value, list):
            raise ImageConfigError(
                f"must be a list of package names, got {type(value).__name__}", "extra_packages", source
            )
    if "cache_dir" in kwargs and kwargs["cache_dir"] is None:
        del kwargs["cache_dir"]
    try:
        return ImageConfig(**kwargs)
    except ImageConfigError as exc:
        raise ImageConfigError(exc.message, exc.key, source) from None


# --------------------------------------------------------------------------- apt


_APT_CACHE_DIR: list[str] = []  # where apt keeps its binary package cache (set per build)


def _apt_options() -> list[str]:
    """Persist apt's binary cache in our cache dir: Debian container images turn it off
    (``Dir::Cache::pkgcache ""``), and rebuilding it costs each apt call about a second.
    apt checks it against the package lists itself."""
    if not _APT_CACHE_DIR:
        return []
    d = _APT_CACHE_DIR[0]
    return ["-o", f"Dir::Cache::pkgcache={d}/pkgcache.bin", "-o", f"Dir::Cache::srcpkgcache={d}/srcpkgcache.bin"]


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


def resolve_packages(config: ImageConfig) -> dict[str, Any]:
    """Resolve the packages of an image without downloading anything.

    The answer is remembered in ``cache_dir/.resolve`` for as long as apt's package
    lists and config files are unchanged (an ``apt-get update`` re-resolves).

    Returns:
        ``{"kernel": {name: info}, "userland": {name: info}}``, info holding the
        candidate Version, Architecture, SHA256 and Size.
    """
    memo_key = _key_hash({"format": BUILD_FORMAT, "kernel": config.kernel_package, "base": BASE_PACKAGES,
                          "extra": sorted(config.extra_packages), "deny": DENY_DEPENDENCIES,
                          "apt": _apt_state()})  # fmt: skip
    memo = Path(config.cache_dir) / ".resolve" / f"{memo_key[:24]}.json"
    try:
        return json.loads(memo.read_text())
    except (OSError, ValueError):
        pass
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


# --------------------------------------------------------------------------- key


def _sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_key(config: ImageConfig, packages: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that decides an image's bytes; its hash names the image directory.

    ``memory_mb`` and ``cache_dir`` are not in it: they change where and how an image
    is used, not what it holds.
    """
    return {
        "format": BUILD_FORMAT,
        "kernel_package": config.kernel_package,
        "extra_packages": sorted(config.extra_packages),
        "modules": [*REQUIRED_MODULES, *OPTIONAL_MODULES],
        "packages": {
            part: {n: packages[part][n]["Version"] for n in sorted(packages[part])} for part in ("kernel", "userland")
        },
        "agent_sha256": _sha256_file(AGENT_SRC),
        "init_sha256": _sha256_file(INIT_SRC),
    }


def _key_hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class ImagePaths:
    """A built image: its directory and the files in it."""

    dir: Path
    vmlinux: Path
    initramfs: Path
    manifest: Path
    cached: bool = False  # True when build_image found it already built

    @classmethod
    def at(cls, directory: Path | str, cached: bool = False) -> ImagePaths:
        d = Path(directory)
        return cls(d, d / "vmlinux", d / "initramfs.cpio", d / "manifest.json", cached)


def _complete(paths: ImagePaths) -> bool:
    return paths.vmlinux.is_file() and paths.initramfs.is_file() and paths.manifest.is_file()


def build_image(config: ImageConfig | None = None) -> ImagePaths:
    """Build the guest image for ``config`` (or find it in the cache).

    Returns:
        The image's paths; ``cached`` says whether it already existed.

    Raises:
        ImageConfigError: a package of the config does not exist.
        ImageError: a download, an extraction or a tool failed (message says which).
    """
    config = config or ImageConfig()
    t0 = time.monotonic()
    packages = resolve_packages(config)
    key = image_key(config, packages)
    digest = _key_hash(key)
    cache = Path(config.cache_dir)
    final = ImagePaths.at(cache / digest[:20])
    if _complete(final):
        logger.info("image %s cached (resolved in %.2f s)", final.dir, time.monotonic() - t0)
        return ImagePaths.at(final.dir, cached=True)
    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(cache)
    work = Path(tempfile.mkdtemp(prefix=f".build-{digest[:12]}-", dir=cache))
    try:
        out = work / "image"
        out.mkdir()
        manifest = _build_into(work, out, config, packages, key, digest)
        manifest["build_s"] = round(time.monotonic() - t0, 2)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(out, final.dir)
        except OSError:
            if not _complete(final):  # another builder won the race: theirs is as good
                if final.dir.exists():
                    shutil.rmtree(final.dir, ignore_errors=True)
                os.rename(out, final.dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("image %s built in %.1f s", final.dir, time.monotonic() - t0)
    need = min_memory_mb(final.initramfs)
    if config.memory_mb < need:
        logger.warning("image %s needs memory_mb >= %d to boot, the config says %d: raise memory_mb",
                       final.dir.name, need, config.memory_mb)  # fmt: skip
    return final


def _remove_stale_builds(cache: Path, age_s: float = 3600.0) -> None:
    """Remove temp dirs of builds that were killed (older than ``age_s``)."""
    for stale in cache.glob(".build-*"):
        try:
            if time.time() - stale.stat().st_mtime > age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


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


def _build_into(work: Path, out: Path, config: ImageConfig, packages: dict[str, Any],
                key: dict[str, Any], digest: str) -> dict[str, Any]:  # fmt: skip
    timings: dict[str, float] = {}
    t = time.monotonic()
    debdir = work / "debs"
    debdir.mkdir()
    versions = {n: i["Version"] for part in ("kernel", "userland") for n, i in packages[part].items()}
    debs = _download(versions, debdir)
    timings["download_s"] = time.monotonic() - t

    t = time.monotonic()
    (kernel_name,) = packages["kernel"]
    kroot = work / "kernel"
    _run(["dpkg-deb", "-x", str(debs[kernel_name]), str(kroot)], what=f"dpkg-deb -x {kernel_name}")
    vmlinuz = sorted(glob.glob(str(kroot / "boot" / "vmlinuz-*")))
    if not vmlinuz:
        raise ImageError(f"{kernel_name} has no /boot/vmlinuz-*: is kernel_package a kernel image package?")
    kver = Path(vmlinuz[0]).name[len("vmlinuz-"):]
    _extract_vmlinux(Path(vmlinuz[0]), out / "vmlinux")
    config_file = kroot / "boot" / f"config-{kver}"
    if config_file.is_file() and "CONFIG_PVH=y" not in config_file.read_text(errors="replace"):
        raise ImageConfigError(f"{kernel_name} is built without CONFIG_PVH: QEMU microvm cannot boot its vmlinux",
                               "kernel_package")  # fmt: skip
    timings["kernel_s"] = time.monotonic() - t

    t = time.monotonic()
    root = work / "root"
    root.mkdir()
    for name in sorted(packages["userland"]):
        _run(["dpkg-deb", "-x", str(debs[name]), str(root)], what=f"dpkg-deb -x {name}")
    shutil.rmtree(debdir)
    _merge_usr(root)
    for rel in PRUNE:
        p = root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    modules = _install_modules(kroot / "lib" / "modules" / kver, root)
    shutil.rmtree(kroot)
    _link_alternatives(root)
    _populate(root, modules)
    timings["rootfs_s"] = time.monotonic() - t

    t = time.monotonic()
    pyc = _precompile(root)
    timings["precompile_s"] = time.monotonic() - t

    t = time.monotonic()
    entries = _write_cpio(root, out / "initramfs.cpio")
    timings["cpio_s"] = time.monotonic() - t
    rootfs_bytes = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    return {
        "key": key,
        "key_sha256": digest,
        "kernel_release": kver,
        "modules": modules,
        "packages": packages,
        "files": {
            "vmlinux": {"bytes": (out / "vmlinux").stat().st_size, "sha256": _sha256_file(out / "vmlinux")},
            "initramfs.cpio": {
                "bytes": (out / "initramfs.cpio").stat().st_size,
                "sha256": _sha256_file(out / "initramfs.cpio"),
                "entries": entries,
                "rootfs_bytes": rootfs_bytes,
            },
        },
        "precompiled_pyc": pyc,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "boot": {"memory_mb": config.memory_mb, "min_memory_mb": min_memory_mb(out / "initramfs.cpio"),
                 "agent_port": AGENT_PORT},
    }


def min_memory_mb(initramfs: Path) -> int:
    """Guest RAM an image needs: the kernel keeps ~100 MiB, the initramfs is in RAM twice
    while it unpacks (else "Initramfs unpacking failed: write error"), Python needs ~30."""
    size_mb = -(-initramfs.stat().st_size // (1 << 20))
    return -(-(2 * size_mb + 140) // 64) * 64


def _elf_complete(data: bytes | memoryview) -> bool:
    """An x86-64 ELF whose program headers all lie inside ``data``."""
    if len(data) < 64 or bytes(data[:4]) != b"\x7fELF" or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    if phnum == 0 or phoff + phentsize * phnum > len(data):
        return False
    for i in range(phnum):
        _, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if offset + filesz > len(data):
            return False
    return True


def _lz4_legacy_decompress(payload: bytes, dest: Path) -> None:
    if shutil.which("lz4"):
        with open(dest, "wb") as fh:
            # Exit status 1 is expected: the bzImage has trailing data after the stream.
            subprocess.run(["lz4", "-dc"], input=payload, stdout=fh, stderr=subprocess.DEVNULL, check=False)
        return
    try:
        import lz4.block  # type: ignore[import-not-found]
    except ImportError:
        raise ImageError("lz4 is needed to unpack the kernel: apt-get install lz4 (or pip install lz4)") from None
    # Legacy frame: magic, then blocks of (uint32 LE compressed size, data) of up to 8 MiB each.
    pos, chunks = 4, []
    while pos + 4 <= len(payload):
        (size,) = struct.unpack_from("<I", payload, pos)
        if size == 0x184C2102 or size == 0 or pos + 4 + size > len(payload):
            break
        try:
            chunks.append(lz4.block.decompress(payload[pos + 4:pos + 4 + size], uncompressed_size=8 << 20))
        except Exception:
            break  # trailing data after the stream
        pos += 4 + size
    dest.write_bytes(b"".join(chunks))


def _extract_vmlinux(vmlinuz: Path, dest: Path) -> None:
    """Uncompressed ELF vmlinux from a bzImage whose payload is lz4 (legacy frame)."""
    data = vmlinuz.read_bytes()
    magic = b"\x02\x21\x4c\x18"
    start = data.find(magic)
    while start >= 0:
        _lz4_legacy_decompress(data[start:], dest)
        with open(dest, "rb") as fh:
            head = fh.read()
        if _elf_complete(head):
            return
        start = data.find(magic, start + 1)
    dest.unlink(missing_ok=True)
    raise ImageError(f"no lz4-compressed ELF payload found in {vmlinuz.name} (expected CONFIG_KERNEL_LZ4)")


def _merge_usr(root: Path) -> None:
    """Debian 12's merged /usr: /bin, /sbin, /lib, /lib64 become links into /usr."""
    for d in ("bin", "sbin", "lib", "lib64"):
        src, dst = root / d, root / "usr" / d
        dst.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and not src.is_symlink():
            for item in src.iterdir():
                target = dst / item.name
                if item.is_dir() and not item.is_symlink() and target.is_dir():
                    shutil.copytree(item, target, symlinks=True, dirs_exist_ok=True)
                    shutil.rmtree(item)
                else:
                    if target.exists() or target.is_symlink():
                        target.unlink() if not target.is_dir() else shutil.rmtree(target)
                    os.rename(item, target)
            src.rmdir()
        if not src.is_symlink():
            src.symlink_to(f"usr/{d}")


def _modinfo(path: Path) -> dict[str, list[str]]:
    """Key/value pairs of a kernel module's .modinfo ELF section."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        data = lzma.decompress(data)
    if data[:4] != b"\x7fELF":
        raise ImageError(f"{path.name} is not an ELF kernel module")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    stroff = sections[shstrndx][4]
    info: dict[str, list[str]] = {}
    for name_off, _type, _flags, _addr, offset, size in sections:
        end = data.index(b"\0", stroff + name_off)
        if data[stroff + name_off:end] == b".modinfo":
            for item in data[offset:offset + size].split(b"\0"):
                if b"=" in item:
                    k, v = item.decode(errors="replace").split("=", 1)
                    info.setdefault(k, []).append(v)
    return info


def _install_modules(moddir: Path, root: Path) -> list[str]:
    """Copy the wanted modules and their dependencies (uncompressed) to /lib/modules/vmpool.

    Returns their names in load order (dependencies first); also written to
    /etc/vmpool/modules for /init.
    """
    builtin = set()
    if (moddir / "modules.builtin").is_file():
        builtin = {Path(line).name.split(".ko")[0].replace("-", "_")
                   for line in (moddir / "modules.builtin").read_text().split()}  # fmt: skip
    index: dict[str, Path] = {}
    for path in moddir.rglob("*.ko*"):
        if path.name.endswith((".ko", ".ko.xz")):
            index[path.name.split(".ko")[0].replace("-", "_")] = path
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, required: bool) -> None:
        if name in order or name in builtin:
            return
        if name not in index:
            if required:
                raise ImageError(f"kernel module {name} is neither built in nor shipped in {moddir.name}")
            logger.info("kernel module %s not available; skipped", name)
            return
        if name in visiting:
            raise ImageError(f"module dependency cycle at {name}")
        visiting.add(name)
        for dep_list in _modinfo(index[name]).get("depends", []):
            for dep in filter(None, dep_list.split(",")):
                visit(dep.replace("-", "_"), True)
        visiting.discard(name)
        order.append(name)

    for name in REQUIRED_MODULES:
        visit(name, True)
    for name in OPTIONAL_MODULES:
        visit(name, False)
    dest = root / "usr" / "lib" / "modules" / "vmpool"
    dest.mkdir(parents=True, exist_ok=True)
    for name in order:
        data = index[name].read_bytes()
        if index[name].name.endswith(".xz"):
            data = lzma.decompress(data)
        (dest / f"{name}.ko").write_bytes(data)
    return order


def _link_alternatives(root: Path) -> None:
    """Stand-in for update-alternatives (maintainer scripts are not run): a shared library
    shipped in a subdirectory of the multiarch lib dir (libblas3: .../blas/libblas.so.3)
    gets a link in the lib dir itself, where the dynamic loader looks."""
    libdir = root / "usr" / "lib" / "x86_64-linux-gnu"
    if not libdir.is_dir():
        return
    for lib in sorted(libdir.glob("*/lib*.so.*")):
        link = libdir / lib.name
        if not link.exists() and not link.is_symlink() and not lib.parent.name.startswith("python"):
            link.symlink_to(f"{lib.parent.name}/{lib.name}")


def _populate(root: Path, modules: list[str]) -> None:
    """/init, the agent, busybox applet links, /etc basics, mount points."""
    usr_bin = root / "usr" / "bin"
    busybox = usr_bin / "busybox"
    if not busybox.is_file():
        raise ImageError("busybox-static did not provide /bin/busybox")
    listing = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=False).stdout.split()
    for applet in listing or ["sh", "mount", "insmod", "mkdir", "cat", "env", "usleep", "poweroff"]:
        link = usr_bin / applet
        if not link.exists() and not link.is_symlink() and not (root / "usr" / "sbin" / applet).exists():
            link.symlink_to("busybox")
    py = usr_bin / "python3"
    if not py.exists():
        py.symlink_to(f"python{GUEST_PYTHON}")
    if not (usr_bin / f"python{GUEST_PYTHON}").exists():
        raise ImageError(f"python{GUEST_PYTHON} missing from the guest root (python3.11-minimal not extracted?)")
    for d in ("proc", "sys", "dev", "tmp", "root", "run", "opt/vmpool", "etc/vmpool"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INIT_SRC, root / "init")
    os.chmod(root / "init", 0o755)
    shutil.copyfile(AGENT_SRC, root / "opt" / "vmpool" / "agent.py")
    (root / "etc" / "vmpool" / "modules").write_text("".join(f"{m}\n" for m in modules))
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc" / "hostname").write_text("vmpool\n")


def _precompile(root: Path) -> int:
    """Byte-compile the guest's Python files (unchecked-hash pycs, guest paths).

    The guest runs ``-B`` on a fresh initramfs, so without these every boot would
    compile every imported module (slow under TCG). Needs a host interpreter of the
    guest's version; without one the image still works, just boots slower.
    """
    host_py = sys.executable if f"{sys.version_info[0]}.{sys.version_info[1]}" == GUEST_PYTHON else (
        shutil.which(f"python{GUEST_PYTHON}"))  # fmt: skip
    if not host_py:
        logger.warning("no host python%s: guest modules are not precompiled (slower boots)", GUEST_PYTHON)
        return 0
    targets = [str(p) for p in (root / "usr" / "lib" / f"python{GUEST_PYTHON}", root / "usr" / "lib" / "python3",
                                root / "opt" / "vmpool") if p.is_dir()]  # fmt: skip
    subprocess.run(
        [host_py, "-I", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
         "-s", str(root), "-p", "/", "-x", r"/(test|tests|lib2to3)/", *targets],
        capture_output=True, check=False,
    )  # fmt: skip  (a file that fails to compile just stays source-only)
    return sum(1 for _ in root.rglob("*.pyc"))


def _write_cpio(root: Path, dest: Path) -> int:
    """Write ``root`` as a newc cpio archive (root-owned, fixed mtime) plus /dev/console."""
    ino = [1]
    count = [0]

    def header(fh: Any, name: str, mode: int, size: int, nlink: int = 1, rmaj: int = 0, rmin: int = 0) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino[0], mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, len(encoded), 0)
        ino[0] += 1
        count[0] += 1
        fh.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        fh.write(b"\0" * ((-(110 + len(encoded))) % 4))

    def pad(fh: Any, size: int) -> None:
        fh.write(b"\0" * ((-size) % 4))

    tmp = dest.with_suffix(".part")
    with open(tmp, "wb", buffering=1 << 20) as fh:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir != ".":
                st = os.lstat(dirpath)
                header(fh, rel_dir, stat.S_IFDIR | (st.st_mode & 0o7777), 0, nlink=2)
            for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                path = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    target = os.readlink(path).encode()
                    header(fh, rel, stat.S_IFLNK | 0o777, len(target))
                    fh.write(target)
                    pad(fh, len(target))
                elif stat.S_ISREG(st.st_mode):
                    header(fh, rel, stat.S_IFREG | (st.st_mode & 0o7777), st.st_size)
                    with open(path, "rb") as src:
                        shutil.copyfileobj(src, fh, 1 << 20)
                    pad(fh, st.st_size)
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        header(fh, "dev/console", stat.S_IFCHR | 0o600, 0, rmaj=5, rmin=1)
        header(fh, "TRAILER!!!", 0, 0)
        fh.write(b"\0" * ((-fh.tell()) % 512))
    os.rename(tmp, dest)
    return count[0] - 1


# --------------------------------------------------------------------------- boot


@dataclass(frozen=True)
class BootReport:
    """What one boot of an image did."""

    accel: str
    boot_to_ready_s: float  # QEMU start to the agent's ready frame
    run_s: float  # send of the test program to its result
    ready: dict[str, Any]  # the agent's ready message
    result: dict[str, Any]  # the agent's answer to the test program
    qemu_argv: list[str]
    log_tail: str  # the guest console (kernel, init, agent stderr)
    more_results: tuple[dict[str, Any], ...] = ()  # answers to ``more`` requests, in order


@functools.lru_cache(maxsize=1)
def host_tsc_khz() -> int | None:
    """The host's TSC frequency in kHz, or None if it cannot be found.

    Under TCG the guest's TSC is the host's. The guest kernel calibrates it against
    the emulated PIT, which fails when the host is loaded (then, having no HPET or
    PM timer on microvm, the boot hangs after "tsc: Unable to calibrate against
    PIT"). Passing ``tsc_early_khz`` skips that calibration. Measured with RDTSC
    against the monotonic clock; /proc/cpuinfo's "cpu MHz" is preferred when it
    agrees within 0.5% (on VMs it is the kernel's own calibrated TSC value).
    """
    measured = None
    try:
        import ctypes
        import mmap

        code = bytes([0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0xC3])  # rdtsc; rdx<<32|rax; ret
        buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        buf.write(code)
        rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
        samples = []
        for _ in range(5):
            t0, c0 = time.perf_counter_ns(), rdtsc()
            time.sleep(0.02)
            t1, c1 = time.perf_counter_ns(), rdtsc()
            samples.append((c1 - c0) * 1e6 / (t1 - t0))
        measured = sorted(samples)[len(samples) // 2]
    except Exception as exc:  # no x86, no executable mappings, ...
        logger.debug("cannot measure the host TSC: %s", exc)
    cpuinfo = None
    try:
        m = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", Path("/proc/cpuinfo").read_text(), re.M)
        cpuinfo = float(m.group(1)) * 1000 if m else None
    except OSError:
        pass
    if measured and cpuinfo and abs(cpuinfo - measured) / measured < 0.005:
        return int(cpuinfo)
    return int(measured) if measured else None


def qemu_command(paths: ImagePaths, sock: str, log: str, accel: str = "tcg", memory_mb: int = 256,
                 extra_append: str = "") -> list[str]:  # fmt: skip
    """The QEMU command line that boots ``paths`` with the agent on unix socket ``sock``.

    The guest console (ttyS0: kernel messages, /init, the agent's stderr) goes to the
    file ``log``. The agent channel is a virtserialport named ``vmpool.agent`` on a
    unix-socket chardev (QEMU is the server; connect after it starts).
    """
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise VmpoolError("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    append = "console=ttyS0 quiet panic=-1 reboot=t i8042.noaux i8042.nokbd"
    if accel == "tcg" and host_tsc_khz():
        # The guest's TSC is the host's: give its frequency (PIT calibration fails on a
        # loaded host and the boot hangs) and trust it (else the clocksource watchdog,
        # comparing against jiffies that lose ticks under TCG, falls back to jiffies:
        # 4 ms resolution and a guest clock that runs slow, i.e. wrong wall limits).
        append += f" tsc_early_khz={host_tsc_khz()} tsc=reliable"
    return [
        qemu,
        "-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-m", str(memory_mb),
        "-smp", "1",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-serial", f"file:{log}",
        "-kernel", str(paths.vmlinux),
        "-initrd", str(paths.initramfs),
        "-append", f"{append} {extra_append}".strip(),
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=agent,path={sock},server=on,wait=off",
        "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
    ]  # fmt: skip


PROBE_REQUEST = {
    "id": 1, "code": "print(1+1)", "stdin": "", "files": {}, "argv": [],
    "limits": {"wall_s": 30, "cpu_s": 31, "memory_mb": 128, "max_processes": 32, "max_open_files": 64,
               "output_bytes": 65536, "file_size_bytes": 1048576},
}  # fmt: skip


def _tail(path: str, n: int = 3000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def boot_probe(paths: ImagePaths, accel: str = "tcg", timeout_s: float = 60.0, memory_mb: int | None = None,
               request: Mapping[str, Any] | None = None,
               more: Sequence[Mapping[str, Any]] = ()) -> BootReport:  # fmt: skip
    """Boot the image once, wait for the agent's ready frame, run one program, stop.

    Args:
        paths: a built image.
        accel: ``tcg`` or ``kvm``.
        timeout_s: the deadline for boot plus the program.
        memory_mb: guest RAM; default the image config's ``memory_mb`` (from the manifest).
        request: the program to run (default ``print(1+1)``, checked to print ``2``).
        more: further requests sent one after another in the same VM; their answers
            are returned unchecked in ``more_results``.

    Raises:
        SandboxStartError: QEMU failed, the guest never got ready or answered wrongly;
            the message carries the tail of the guest console.
    """
    if memory_mb is None:
        try:
            memory_mb = int(json.loads(paths.manifest.read_text())["boot"]["memory_mb"])
        except (OSError, ValueError, KeyError, TypeError):
            memory_mb = 256
    need = min_memory_mb(paths.initramfs)
    if memory_mb < need:
        raise SandboxStartError(f"image {paths.dir.name} needs at least {need} MiB of guest RAM to unpack its "
                                f"initramfs, got memory_mb={memory_mb}: raise memory_mb in the image config")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vmpool-boot-") as tmp:
        sock, log = os.path.join(tmp, "agent.sock"), os.path.join(tmp, "console.log")
        argv = qemu_command(paths, sock, log, accel=accel, memory_mb=memory_mb)
        start = time.monotonic()
        deadline = start + timeout_s
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        conn: socket.socket | None = None

        def failure(what: str) -> SandboxStartError:
            out = ""
            if proc.poll() is not None and proc.stdout:
                out = proc.stdout.read().decode("utf-8", "replace")[-1500:]
            detail = f"\n--- qemu output ---\n{out}" if out.strip() else ""
            return SandboxStartError(f"{accel} boot of {paths.dir.name}: {what}{detail}\n"
                                     f"--- guest console (tail) ---\n{_tail(log)}")  # fmt: skip

        try:
            while conn is None:
                if proc.poll() is not None:
                    raise failure(f"qemu exited with status {proc.returncode} before its socket was up")
                if time.monotonic() > deadline:
                    raise failure("qemu did not create the agent socket")
                if os.path.exists(sock):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        s.connect(sock)
                        conn = s
                        break
                    except OSError:
                        s.close()
                time.sleep(0.005)
            chan = FrameChannel(conn.fileno(), conn.fileno())
            try:
                ready = chan.recv(deadline)
            except VmpoolError as exc:
                if proc.poll() is not None:
                    raise failure(f"the VM stopped (qemu status {proc.returncode}) before the agent was ready") from exc
                raise failure(f"no ready frame within {timeout_s:g} s ({exc})") from exc
            boot_s = time.monotonic() - start
            if not ready.get("ready"):
                raise failure(f"first frame is not a ready message: {ready}")
            req = dict(request or PROBE_REQUEST)
            t = time.monotonic()
            chan.send(req)
            try:
                result = chan.recv(deadline)
            except VmpoolError as exc:
                raise failure(f"no answer to the test program ({exc})") from exc
            run_s = time.monotonic() - t
            if request is None and (result.get("status") != "ok" or result.get("stdout") != "2\n"):
                raise failure(f"test program print(1+1) answered {result}")
            more_results = []
            for extra in more:
                chan.send(dict(extra))
                try:
                    more_results.append(chan.recv(deadline))
                except VmpoolError as exc:
                    raise failure(f"no answer to request {extra.get('id')!r} ({exc})") from exc
            return BootReport(accel, boot_s, run_s, ready, result, argv, _tail(log), tuple(more_results))
        finally:
            if conn is not None:
                conn.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()


def probe_kvm(paths: ImagePaths, timeout_s: float = 10.0) -> tuple[bool, str]:
    """Whether this host can boot the image under KVM, found by booting it (never by /dev/kvm alone).

    Returns:
        ``(True, "...")`` when the guest agent ran a program under ``-accel kvm``
        within ``timeout_s``; otherwise ``(False, reason)``.
    """
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist (no KVM on this host)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    try:
        report = boot_probe(paths, accel="kvm", timeout_s=timeout_s)
    except VmpoolError as exc:
        lines = str(exc).splitlines()
        reason = f"KVM present but the guest did not run under it: {lines[0]}"
        if "--- qemu output ---" in lines:  # QEMU's own complaint, e.g. a failed MSR write
            said = [ln for ln in lines[lines.index("--- qemu output ---") + 1:] if ln.strip() and not ln.startswith("---")]
            if said:
                reason += f" ({said[0].strip()})"
        return False, reason
    return True, f"kvm guest ready in {report.boot_to_ready_s:.2f} s"
