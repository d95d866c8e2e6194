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
    paths = find_image(config)                            # the built one, or None: builds nothing, no apt
    report = boot_probe(paths)                            # BootReport: boot-to-ready seconds, ...
    ok, reason = probe_kvm(paths, timeout_s=10)
    argv = qemu_command(paths, sock, log, accel="tcg")    # the QEMU command line used

Implementation (this module re-exports it): ``_image_config`` (constants, config, YAML
loader), ``_image_apt`` (package resolution and download), ``_image_key`` (content
key), ``_image_build`` (:func:`build_image`), ``_image_rootfs`` (kernel, modules,
root filesystem, cpio) and ``_image_boot`` (QEMU command line, boot probe).
"""

from __future__ import annotations

from ._image_apt import resolve_packages
from ._image_boot import PROBE_REQUEST, BootReport, boot_probe, host_tsc_khz, probe_kvm, qemu_command
from ._image_build import ImagePaths, build_image, find_image, min_memory_mb
from ._image_config import (
    AGENT_PORT,
    ImageConfig,
    ImageConfigError,
    ImageError,
    describe_image_config,
    image_config_from_dict,
    load_image_config,
)
from ._image_key import image_key

__all__ = [
    "AGENT_PORT",
    "PROBE_REQUEST",
    "BootReport",
    "ImageConfig",
    "ImageConfigError",
    "ImageError",
    "ImagePaths",
    "build_image",
    "find_image",
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
