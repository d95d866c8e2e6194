"""Guest image config: builder constants, :class:`ImageConfig` and its YAML loader (see :mod:`vmpool.image`)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import VmpoolError
from .._settings import SettingsError, describe_settings, load_settings, settings_from_dict

GUEST_DIR = Path(__file__).resolve().parents[1] / "_guest"
AGENT_SRC = GUEST_DIR / "agent.py"


def agent_sources() -> list[Path]:
    """The agent and the modules it imports: every ``_guest/*.py`` but the package marker."""
    return sorted(p for p in GUEST_DIR.glob("*.py") if p.name != "__init__.py")

INIT_SRC = GUEST_DIR / "init"
AGENT_PORT = "vmpool.agent"  # name of the virtserialport the guest agent talks on

# Bump when the builder changes what it puts into an image (layout, pruning, ...):
# it is part of the cache key, so old images are not reused by a new builder.
BUILD_FORMAT = 4

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
    # Toolchain files no build reads (configs/image-languages.yaml): the compiled packages of Go's
    # own commands (138 MiB; a go build imports std, never cmd/), the JDK's jmods (78 MiB, jlink's
    # input; javac and java read lib/modules) and GCC's LTO debugging tool (30 MiB).
    "usr/lib/go-1.19/pkg/linux_amd64/cmd", "usr/lib/jvm/java-17-openjdk-amd64/jmods",
    "usr/bin/x86_64-linux-gnu-lto-dump-12",
)  # fmt: skip
_PKG_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_APT_ENV = {"LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}


class ImageError(VmpoolError):
    """The guest image could not be built (a package, a tool or the kernel is missing or wrong)."""


class ImageConfigError(SettingsError, ImageError):
    """A bad :class:`ImageConfig` value or image config file; the message names the key."""


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
            raise ImageConfigError(f"must be a Debian package name such as 'linux-image-cloud-amd64', got {kp!r}",
                                   "kernel_package", owner="ImageConfig")
        extra = self.extra_packages
        if isinstance(extra, str) or not isinstance(extra, Iterable):
            raise ImageConfigError(f"must be a list of Debian package names (e.g. [python3-numpy]), got {extra!r}",
                                   "extra_packages", owner="ImageConfig")
        extra = tuple(extra)
        for name in extra:
            if not isinstance(name, str) or not _PKG_NAME.match(name):
                raise ImageConfigError(f"{name!r} is not a Debian package name (lowercase letters, digits, + - .)",
                                       "extra_packages", owner="ImageConfig")
        if len(set(extra)) != len(extra):
            dup = sorted({n for n in extra if extra.count(n) > 1})
            raise ImageConfigError(f"lists {', '.join(dup)} more than once; remove the duplicates", "extra_packages",
                                   owner="ImageConfig")
        object.__setattr__(self, "extra_packages", extra)
        mem = self.memory_mb
        if isinstance(mem, bool) or not isinstance(mem, int) or not 128 <= mem <= 65536:
            raise ImageConfigError(
                f"must be an integer number of MiB from 128 (Python and the initramfs need it) to 65536, got {mem!r}",
                "memory_mb", owner="ImageConfig")
        cd = self.cache_dir
        if not isinstance(cd, (str, os.PathLike)) or not str(cd).strip():
            raise ImageConfigError(f"must be a directory path, got {cd!r}", "cache_dir", owner="ImageConfig")
        object.__setattr__(self, "cache_dir", os.path.abspath(os.path.expanduser(str(cd))))


def describe_image_config() -> list[tuple[str, str, str]]:
    """``(key, default, help)`` for every :class:`ImageConfig` field."""
    return describe_settings(ImageConfig)


def load_image_config(path: str | os.PathLike[str]) -> ImageConfig:
    """Load an :class:`ImageConfig` from YAML: a mapping of its field names (see :func:`vmpool.load_settings`).

    Raises:
        ImageConfigError: unreadable file, invalid YAML, unknown keys or bad values, all at
            once; the message names the file and each key.
    """
    try:
        return load_settings(ImageConfig, path)
    except SettingsError as exc:
        raise _image_error(exc) from None


def image_config_from_dict(data: Any, source: str = "<dict>") -> ImageConfig:
    """Build an :class:`ImageConfig` from a mapping, rejecting unknown keys and wrong types."""
    try:
        return settings_from_dict(ImageConfig, data, source)
    except SettingsError as exc:
        raise _image_error(exc) from None


def _image_error(exc: SettingsError) -> ImageConfigError:
    return ImageConfigError(exc.message, exc.key, exc.source, problems=exc.problems)
