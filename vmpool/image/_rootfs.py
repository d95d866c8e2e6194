"""Guest image contents: the kernel's vmlinux and modules, the root filesystem and its newc cpio."""

from __future__ import annotations

import logging
import lzma
import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from ._config import GUEST_PYTHON, INIT_SRC, OPTIONAL_MODULES, REQUIRED_MODULES, ImageError, agent_sources

logger = logging.getLogger("vmpool.image")  # one logger for the whole image builder


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


# Program names that Debian's maintainer scripts register with update-alternatives (not run
# here): link -> the package's own program, made when that program is in the guest. rustc
# links through cc; graders and users call c++ as often as g++.
PROGRAM_ALTERNATIVES = {"usr/bin/cc": "gcc", "usr/bin/c++": "g++"}


def _link_alternatives(root: Path) -> None:
    """Stand-in for update-alternatives (maintainer scripts are not run):

    * a shared library shipped in a subdirectory of the multiarch lib dir (libblas3:
      .../blas/libblas.so.3) gets a link in the lib dir itself, where the dynamic loader looks;
    * ``PROGRAM_ALTERNATIVES`` (``cc``, ``c++``);
    * a JDK's tools (``java``, ``javac``...): its ``/usr/lib/jvm/.NAME.jinfo`` lists them
      (``KIND NAME PATH`` lines, what update-java-alternatives reads); each gets
      ``/usr/bin/NAME``, else the JDK packages leave no ``java`` on PATH.
    """
    libdir = root / "usr" / "lib" / "x86_64-linux-gnu"
    if libdir.is_dir():
        for lib in sorted(libdir.glob("*/lib*.so.*")):
            link = libdir / lib.name
            if not link.exists() and not link.is_symlink() and not lib.parent.name.startswith("python"):
                link.symlink_to(f"{lib.parent.name}/{lib.name}")
    links = {rel: root / "usr" / "bin" / target for rel, target in PROGRAM_ALTERNATIVES.items()}
    for jinfo in sorted((root / "usr" / "lib" / "jvm").glob(".*.jinfo")):
        for line in jinfo.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2].startswith("/usr/") and "/" not in parts[1]:
                links.setdefault(f"usr/bin/{parts[1]}", root / parts[2].lstrip("/"))
    for rel, target in links.items():
        link = root / rel
        if (target.exists() or target.is_symlink()) and not link.exists() and not link.is_symlink():
            link.symlink_to(os.path.relpath(target, link.parent))


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
    for source in agent_sources():
        shutil.copyfile(source, root / "opt" / "vmpool" / source.name)
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
