"""Packages for sandboxed programs: host package directories mounted read-only (namespace backend).

The microvm backend takes Debian packages in its image config instead (``extra_packages``);
a site_packages directory there is refused with that advice.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmpool import BackendUnavailableError, ExecRequest, Limits, Pool, PoolConfig, SettingsError, Status

VENV_SITE = Path(__file__).resolve().parents[2] / ".venv" / "lib" / "python3.11" / "site-packages"


def _world_readable(root: Path) -> None:
    for path in (root, *root.rglob("*")):
        path.chmod(path.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0))
    for parent in root.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            pytest.skip(f"{parent} is not searchable by other uids")


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir other uids can reach (pytest's own is private to this user)."""
    path = Path(tempfile.mkdtemp(prefix="vmpool-site-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_package_directory_is_importable_read_only_and_invisible_without_it(shared_tmp: Path) -> None:
    tmp_path = shared_tmp
    site = tmp_path / "site"
    (site / "tinylib").mkdir(parents=True)
    (site / "tinylib" / "__init__.py").write_text("ANSWER = 42\n")
    _world_readable(tmp_path)
    code = ("import tinylib, sys\nprint(tinylib.ANSWER)\n"
            "try:\n    open(tinylib.__file__, 'a')\nexcept OSError as exc:\n    print('read-only', exc.errno)\n")
    with Pool(PoolConfig(size=1, site_packages=(str(site),))) as pool:
        res = pool.run(ExecRequest(code=code))
    assert res.status is Status.OK, res
    assert res.stdout.splitlines()[0] == "42" and res.stdout.splitlines()[1].startswith("read-only")
    with Pool(PoolConfig(size=1)) as pool:
        assert pool.run(ExecRequest(code="import tinylib")).status is Status.RUNTIME_ERROR


@pytest.mark.skipif(not (VENV_SITE / "numpy").is_dir() or not (VENV_SITE / "pandas").is_dir(),
                    reason="this checkout's venv has no numpy and pandas")
def test_numpy_and_pandas_from_a_venv(tmp_path: Path) -> None:
    if any(not p.stat().st_mode & stat.S_IXOTH for p in (VENV_SITE, *VENV_SITE.parents)):
        pytest.skip("the venv is not readable by other uids")
    code = "import numpy as np, pandas as pd\nprint(int(np.arange(10).sum()), pd.Series([1, 2]).sum())\n"
    with Pool(PoolConfig(size=1, site_packages=(str(VENV_SITE),))) as pool:
        res = pool.run(ExecRequest(code=code, limits=Limits(wall_s=60, memory_mb=1024)))
    assert res.status is Status.OK and res.stdout == "45 3\n", (res.status, res.stderr[-2000:])


def test_bad_package_directories_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="is not a directory"):
        Pool(PoolConfig(size=1, site_packages=(str(tmp_path / "missing"),)))
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "m.py").write_text("")
    os.chmod(private / "m.py", 0o600)
    with pytest.raises(BackendUnavailableError, match="chmod o\\+rx"):
        Pool(PoolConfig(size=1, site_packages=(str(private),)))
    with pytest.raises(SettingsError, match="extra_packages"):
        PoolConfig(backend="microvm", site_packages=("/usr/lib/python3/dist-packages",))


@pytest.mark.microvm
@pytest.mark.slow
def test_microvm_programs_get_debian_packages_from_the_image_config(tmp_path: Path) -> None:
    # The guest image's extra_packages: numpy from Debian (python3-numpy) with its dependencies.
    from vmpool import ImageConfig, MicroVMTemplate, build_image

    config = ImageConfig(extra_packages=("python3-numpy",), memory_mb=512)  # numpy needs room to boot
    image = build_image(config)
    template = MicroVMTemplate.ensure(config, image=image)
    image_yaml = tmp_path / "image.yaml"
    image_yaml.write_text("extra_packages: [python3-numpy]\nmemory_mb: 512\n")
    with Pool(PoolConfig(backend="microvm", size=1, image_config=str(image_yaml), start_timeout_s=120),
              template=template) as pool:
        res = pool.run(ExecRequest(code="import numpy as np\nprint(int(np.arange(10).sum()))\n",
                                   limits=Limits(wall_s=120, memory_mb=192)))
    assert res.status is Status.OK and res.stdout == "45\n", (res.status, res.stderr[-2000:])
