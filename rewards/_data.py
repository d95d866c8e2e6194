"""The datasets bundled with the package (``rewards/data``; sources and licences in its SOURCES.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["DATASETS", "data_path"]

DATASETS: dict[str, str] = {
    "humaneval": "humaneval.jsonl",
    "mbpp": "mbpp_sanitized.jsonl",
    "code_contests": "code_contests_sample.jsonl",
    "livecodebench": "livecodebench_sample.jsonl",
    **{f"humaneval_x_{lang}": f"humaneval_x_{lang}.jsonl" for lang in ("cpp", "java", "js", "go", "rust")},
}
"""Bundled dataset names and their files: HumanEval (164), MBPP sanitized (427), samples of
CodeContests and LiveCodeBench, and HumanEval-X (164 in each of C++, Java, JavaScript, Go, Rust)."""


def data_path(name: str) -> Path:
    """Where a bundled dataset is, in a checkout or in an installed package alike.

    Args:
        name: a :data:`DATASETS` name (``"humaneval"``, ``"mbpp"``, ``"code_contests"``,
            ``"livecodebench"``) or a file name in ``rewards/data``.

    Returns:
        The path of the JSONL file.

    Raises:
        FileNotFoundError: the name is not a bundled dataset (the message lists them).
    """
    file = DATASETS.get(name, name)
    path = Path(str(resources.files(__package__).joinpath("data", file)))
    if not path.is_file():
        raise FileNotFoundError(f"no bundled dataset {name!r}: the bundled ones are {', '.join(DATASETS)}")
    return path
