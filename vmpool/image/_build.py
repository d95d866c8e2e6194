"""Guest image build: :class:`ImagePaths` and :func:`build_image` (content-addressed, cached)."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._apt import _download, _run, remembered_packages, resolve_packages
from ._config import AGENT_PORT, PRUNE, ImageConfig, ImageConfigError, ImageError
from ._key import _key_hash, _sha256_file, image_key
from ._rootfs import (
    _extract_vmlinux,
    _install_modules,
    _link_alternatives,
    _merge_usr,
    _populate,
    _precompile,
    _write_cpio,
)

logger = logging.getLogger("vmpool.image")  # one logger for the whole image builder


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


def find_image(config: ImageConfig | None = None) -> ImagePaths | None:
    """The built image for ``config`` if the cache holds it, else None. Builds nothing and
    runs no apt tool: it looks only where :func:`build_image` put what it built."""
    config = config or ImageConfig()
    packages = remembered_packages(config)
    if packages is None:
        return None
    final = ImagePaths.at(Path(config.cache_dir) / _key_hash(image_key(config, packages))[:20])
    return ImagePaths.at(final.dir, cached=True) if _complete(final) else None


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
    while it unpacks (else "Initramfs unpacking failed: write error"), Python needs ~30.

    A large image (toolchains) needs more: the root filesystem it unpacks into is a tmpfs
    that holds at most half the RAM the kernel manages at that point, which is neither the
    kernel's own (measured 38 MiB of 256, 166 of 3968, 190 of 5120; counted as 64 MiB + 1/16
    of the RAM) nor the still-reserved archive; its files take whole pages. Short of that the
    guest still boots, with the files that did not fit missing.
    """
    size_mb = -(-initramfs.stat().st_size // (1 << 20))
    pages_mb = -(-_file_pages(initramfs) // 256)
    rootfs_fits = -(-(size_mb + 2 * pages_mb + 64) * 16 // 15)
    return -(-max(2 * size_mb + 140, rootfs_fits) // 64) * 64


def _file_pages(cpio: Path) -> int:
    """4 KiB pages the regular files of a newc cpio archive take once unpacked (headers only
    are read)."""
    pages = 0
    with open(cpio, "rb") as fh:
        while True:
            head = fh.read(110)
            if len(head) < 110 or head[:6] != b"070701":
                return pages
            mode, size, namesize = int(head[14:22], 16), int(head[54:62], 16), int(head[94:102], 16)
            name = fh.read(namesize)
            if name[:-1] == b"TRAILER!!!":
                return pages
            if mode & 0o170000 == 0o100000:
                pages += -(-size // 4096)
            fh.seek((-(110 + namesize)) % 4 + size + (-size) % 4, os.SEEK_CUR)
