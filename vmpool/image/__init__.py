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

Host tools: ``apt-get``/``apt-cache``/``dpkg-deb`` (Debian) and ``lz4`` (Debian package
``lz4``; the Python ``lz4`` package is used when the CLI is missing). Booting an image is
:mod:`vmpool._qemu`'s job (command line, boot probe, KVM probe), snapshots and clones
:mod:`vmpool._microvm`'s; a ``Pool`` only ever *finds* a built image.

Public API::

    config = load_image_config("configs/image.yaml")      # or ImageConfig(...)
    paths = build_image(config)                           # ImagePaths(dir, vmlinux, initramfs, manifest)
    paths = find_image(config)                            # the built one, or None: builds nothing, no apt

Modules: ``_config`` (builder constants, :class:`ImageConfig`, its loader), ``_apt``
(package resolution and download), ``_key`` (content key), ``_build`` (:func:`build_image`,
:func:`find_image`) and ``_rootfs`` (kernel, modules, root filesystem, cpio).
"""

from __future__ import annotations

from ._apt import resolve_packages
from ._build import ImagePaths, build_image, find_image, min_memory_mb
from ._config import (
    AGENT_PORT,
    ImageConfig,
    ImageConfigError,
    ImageError,
    describe_image_config,
    image_config_from_dict,
    load_image_config,
)
from ._key import image_key

__all__ = [
    "AGENT_PORT",
    "ImageConfig",
    "ImageConfigError",
    "ImageError",
    "ImagePaths",
    "build_image",
    "describe_image_config",
    "find_image",
    "image_config_from_dict",
    "image_key",
    "load_image_config",
    "min_memory_mb",
    "resolve_packages",
]
