"""The microVM guest image: config, content-addressed build, boot to a ready agent.

Builds use the shared image cache (``$VMPOOL_IMAGE_DIR`` or ``~/.cache/vmpool/images``),
so only the first run on a machine pays the download and build (about 15 s); a boot
under TCG takes about 5-10 s.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from vmpool._qemu import PROBE_REQUEST, boot_probe, probe_kvm
from vmpool.image import ImageConfig, ImageConfigError, build_image, image_key, load_image_config, resolve_packages

pytestmark = pytest.mark.microvm

HAVE_APT = all(shutil.which(t) for t in ("apt-get", "apt-cache", "dpkg-deb"))
HAVE_QEMU = shutil.which("qemu-system-x86_64") is not None
needs_apt = pytest.mark.skipif(not HAVE_APT, reason="needs Debian's apt-get, apt-cache and dpkg-deb")
needs_qemu = pytest.mark.skipif(not (HAVE_APT and HAVE_QEMU), reason="needs qemu-system-x86_64 (qemu-system-x86)")


# ----------------------------------------------------------------- config


def test_config_defaults_and_env(monkeypatch):
    monkeypatch.delenv("VMPOOL_IMAGE_DIR", raising=False)
    c = ImageConfig()
    assert c.kernel_package == "linux-image-cloud-amd64"
    assert c.extra_packages == () and c.memory_mb == 256
    assert c.cache_dir == os.path.expanduser("~/.cache/vmpool/images")
    monkeypatch.setenv("VMPOOL_IMAGE_DIR", "/tmp/some-images")
    assert ImageConfig().cache_dir == "/tmp/some-images"
    assert ImageConfig(cache_dir="/x/y").cache_dir == "/x/y"  # an explicit value wins
    assert ImageConfig(extra_packages=["python3-six"]).extra_packages == ("python3-six",)


@pytest.mark.parametrize(
    ("kwargs", "key", "words"),
    [
        ({"kernel_package": "Linux Image"}, "kernel_package", "Debian package name"),
        ({"extra_packages": "python3-numpy"}, "extra_packages", "list"),
        ({"extra_packages": ("python3-six", "python3-six")}, "extra_packages", "more than once"),
        ({"extra_packages": ("ok-name", "Bad_Name")}, "extra_packages", "'Bad_Name'"),
        ({"memory_mb": 64}, "memory_mb", "from 128"),
        ({"memory_mb": 256.0}, "memory_mb", "integer"),
        ({"memory_mb": True}, "memory_mb", "integer"),
        ({"cache_dir": ""}, "cache_dir", "directory"),
    ],
)
def test_config_rejects_bad_values(kwargs, key, words):
    with pytest.raises(ImageConfigError) as info:
        ImageConfig(**kwargs)
    assert info.value.key == key
    assert str(info.value).startswith(f"ImageConfig.{key}: ") and words in str(info.value)


def test_load_image_config(tmp_path):
    good = tmp_path / "image.yaml"
    good.write_text("extra_packages: [python3-six]\nmemory_mb: 512\ncache_dir: /tmp/imgs\n")
    c = load_image_config(good)
    assert c.extra_packages == ("python3-six",) and c.memory_mb == 512 and c.cache_dir == "/tmp/imgs"
    assert load_image_config("configs/image.yaml") == ImageConfig()
    cases = {
        "memory: 256\n": "memory: unknown key (known keys here: kernel_package, extra_packages, memory_mb, cache_dir)",
        "memory_mb: 64\n": "memory_mb: must be",
        "extra_packages: python3-six\n": "extra_packages: expected a list",
        "- a\n- b\n": "expected a mapping",
        "memory_mb: [\n": "invalid YAML",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ImageConfigError) as info:
            load_image_config(bad)
        assert str(info.value).startswith(f"{bad}") and message in str(info.value), str(info.value)
    with pytest.raises(ImageConfigError, match="cannot read"):
        load_image_config(tmp_path / "missing.yaml")


def test_key_depends_on_content_not_on_memory_or_cache_dir():
    pkgs = {"kernel": {"linux-image-x": {"Version": "1"}}, "userland": {"python3.11-minimal": {"Version": "3.11"}}}
    base = image_key(ImageConfig(), pkgs)
    assert image_key(ImageConfig(memory_mb=512, cache_dir="/elsewhere"), pkgs) == base
    assert image_key(ImageConfig(extra_packages=("python3-six",)), pkgs) != base
    newer = {**pkgs, "userland": {"python3.11-minimal": {"Version": "3.12"}}}
    assert image_key(ImageConfig(), newer) != base


@needs_apt
def test_resolve_extra_packages(tmp_path):
    base = resolve_packages(ImageConfig(cache_dir=str(tmp_path)))
    assert list(base["kernel"])[0].startswith("linux-image-6.")  # the metapackage resolved
    assert {"python3.11-minimal", "libpython3.11-stdlib", "busybox-static", "libc6"} <= set(base["userland"])
    assert not {"perl", "dpkg", "debconf"} & set(base["userland"])  # install-time tooling is left out
    six = resolve_packages(ImageConfig(cache_dir=str(tmp_path), extra_packages=("python3-six",)))
    assert "python3-six" in six["userland"] and "python3-six" not in base["userland"]
    with pytest.raises(ImageConfigError, match="kernel_package"):
        resolve_packages(ImageConfig(cache_dir=str(tmp_path), kernel_package="no-such-kernel-package"))


# ----------------------------------------------------------------- build and boot


@pytest.fixture(scope="module")
def image():
    if not HAVE_APT:
        pytest.skip("needs Debian's apt-get, apt-cache and dpkg-deb")
    return build_image(ImageConfig())


def test_build_is_cached_and_complete(image):
    start = time.monotonic()
    again = build_image(ImageConfig())
    assert again.cached and again.dir == image.dir
    assert time.monotonic() - start < 2.0
    assert image.vmlinux.read_bytes()[:4] == b"\x7fELF"
    assert image.initramfs.read_bytes()[:6] == b"070701"  # newc cpio
    import json

    manifest = json.loads(image.manifest.read_text())
    assert manifest["key_sha256"].startswith(image.dir.name)
    assert {"virtio_mmio", "virtio_console"} <= set(manifest["modules"])
    assert manifest["modules"].index("virtio") < manifest["modules"].index("virtio_mmio")
    assert manifest["files"]["vmlinux"]["bytes"] == image.vmlinux.stat().st_size
    # a changed config gives another directory (the key differs; nothing is built here)
    other = image_key(ImageConfig(extra_packages=("python3-six",)), manifest["packages"])
    assert other != manifest["key"]


@needs_qemu
def test_boot_probe_reaches_ready_and_runs_programs(image):
    orphan = {
        **PROBE_REQUEST,
        "id": 2,
        # a daemonised grandchild: the agent (pid 1 in the guest) must kill and reap it
        "code": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')",
    }
    clock = {**PROBE_REQUEST, "id": 3, "code": "import time\nt = time.monotonic()\ntime.sleep(0.5)\n"
             "print(round(time.monotonic() - t, 1))"}  # fmt: skip
    report = boot_probe(image, accel="tcg", timeout_s=120, more=[orphan, clock])
    assert report.ready["ready"] is True and report.ready["pid"] == 1
    assert report.result["status"] == "ok" and report.result["stdout"] == "2\n"
    assert report.result["anomaly"] == ""
    second, third = report.more_results
    assert second["status"] == "ok" and second["stdout"] == "parent done\n" and second["anomaly"] == ""
    assert third["stdout"] == "0.5\n"  # the guest clock runs at the right rate
    assert 0 < report.boot_to_ready_s < 120


@needs_qemu
def test_probe_kvm_answers_quickly(image):
    start = time.monotonic()
    ok, reason = probe_kvm(image, timeout_s=10)
    assert time.monotonic() - start < 25
    assert isinstance(ok, bool) and reason


@needs_apt
def test_cli_image_build(image, capsys):
    from harness._cli import main

    assert main(["image", "build", "--config", "configs/image.yaml"]) == 0
    assert capsys.readouterr().out.strip() == f"{image.dir} (cached)"
