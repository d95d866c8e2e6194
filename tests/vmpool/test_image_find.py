"""Finding a built guest image runs no apt tool; neither backend auto nor a microvm Pool ever builds one."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

import vmpool
from vmpool import BackendUnavailableError, ImageConfig, Pool, PoolConfig, find_image


@pytest.fixture
def no_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a tool was run: {args!r}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def test_nothing_built_is_none_without_running_apt(tmp_path: Path, no_tools: None) -> None:
    assert find_image(ImageConfig(cache_dir=str(tmp_path))) is None


def test_auto_without_a_built_image_is_namespace_and_says_how_to_build(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, no_tools: None) -> None:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("without /dev/kvm auto never looks for an image")
    config = tmp_path / "image.yaml"
    config.write_text(f"cache_dir: {tmp_path / 'cache'}\n")
    with caplog.at_level(logging.INFO, logger="vmpool"):
        assert vmpool.resolve_backend("auto", str(config)) == "namespace"
    assert "python -m harness image build --config" in caplog.text


def test_a_microvm_pool_without_a_built_image_says_how_to_build_it(tmp_path: Path, no_tools: None) -> None:
    config = tmp_path / "image.yaml"
    config.write_text(f"cache_dir: {tmp_path / 'cache'}\n")
    with pytest.raises(BackendUnavailableError, match=r"no microvm guest image is built.*python -m harness image build"):
        Pool(PoolConfig(backend="microvm", size=1, image_config=str(config)))


def test_a_template_needs_the_microvm_backend() -> None:
    with pytest.raises(ValueError, match="needs backend='microvm'"):
        Pool(PoolConfig(backend="namespace", size=1), template=object())  # type: ignore[arg-type]


@pytest.mark.microvm
def test_a_built_image_is_found_as_built(no_tools: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # building may run apt; finding afterwards must not
    built = vmpool.build_image(ImageConfig())

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a tool was run: {args!r}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    found = find_image(ImageConfig())
    assert found is not None and found.dir == built.dir and found.cached
