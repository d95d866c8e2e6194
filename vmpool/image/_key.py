"""The guest image's content key: everything that decides an image's bytes, and its hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._config import BUILD_FORMAT, INIT_SRC, OPTIONAL_MODULES, REQUIRED_MODULES, ImageConfig, agent_sources


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
        "agent_sha256": {source.name: _sha256_file(source) for source in agent_sources()},
        "init_sha256": _sha256_file(INIT_SRC),
    }


def _key_hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
