"""Guest image config: builder constants, :class:`ImageConfig` and its YAML loader (see :mod:`vmpool._image`)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._errors import VmpoolError

GUEST_DIR = Path(__file__).with_name("_guest")
AGENT_SRC = GUEST_DIR / "agent.py"


def agent_sources() -> list[Path]:
    """The agent and the modules it imports: every ``_guest/*.py`` but the package marker."""
    return sorted(p for p in GUEST_DIR.glob("*.py") if p.name != "__init__.py")

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
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
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

