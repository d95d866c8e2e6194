"""Result rows on disk (JSONL or Parquet) or in memory: :class:`ResultStore` and :func:`read_results`.

:class:`ResultStore` makes grading resumable: it loads the rows already in the output, tells
the grader which ``(problem, sample_index)`` pairs are done, and flushes each new chunk to
disk at once. JSONL outputs are appended to directly. Parquet cannot be appended to, so new
chunks go to a JSONL journal beside it (``OUT.partial.jsonl``) and
:meth:`ResultStore.finalize` folds everything into the Parquet file atomically. Without a
path the store keeps the rows in memory only (``Harness.grade(..., out=None)``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from ._errors import InputError
from ._io import ResultRow, _arrow_schema, _row_from_mapping, output_format

__all__ = ["ResultStore", "read_results"]

logger = logging.getLogger(__name__)


def _read_jsonl_rows(path: Path, truncate_partial: bool) -> list[ResultRow]:
    """Read result rows from a JSONL file.

    A last line without its newline is the trace of an interrupted write: it is dropped,
    and when ``truncate_partial`` cut off so later appends start on a fresh line.
    """
    data = path.read_bytes()
    end = len(data)
    if data and not data.endswith(b"\n"):
        end = data.rfind(b"\n") + 1
        logger.warning("%s: dropping a partly written last line (%d bytes)", path, len(data) - end)
        if truncate_partial:
            with open(path, "r+b") as fh:
                fh.truncate(end)
    rows: list[ResultRow] = []
    for number, raw in enumerate(data[:end].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = _row_from_mapping(json.loads(raw))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            row = f"invalid JSON: {exc}"
        if isinstance(row, str):
            # That sample will simply be graded again.
            logger.warning("%s:%d: ignoring unreadable result row: %s", path, number, row)
            continue
        rows.append(row)
    return rows


def _read_parquet_rows(path: Path) -> list[ResultRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise InputError(
            f"existing output is not a readable Parquet file ({exc}); move it away or pick another --out", str(path)
        ) from exc
    missing = [c for c in ("task_id", "sample_index") if c not in table.column_names]
    if missing:
        raise InputError(f"existing output lacks column(s) {', '.join(missing)}", str(path))
    rows: list[ResultRow] = []
    for number, record in enumerate(table.to_pylist(), start=1):
        row = _row_from_mapping(record)
        if isinstance(row, str):
            logger.warning("%s: row %d: ignoring unreadable result row: %s", path, number, row)
            continue
        rows.append(row)
    return rows


def read_results(path: str | os.PathLike[str]) -> list[ResultRow]:
    """Read a results file (JSONL or Parquet, by extension), including an unfinished Parquet journal.

    Args:
        path: the results file.

    Returns:
        The rows, first occurrence of each ``(task_id, sample_index)`` kept.

    Raises:
        InputError: when the file does not exist or cannot be parsed.
    """
    p = Path(path)
    fmt = output_format(p)
    journal = _journal_path(p)
    if not p.exists() and not (fmt == "parquet" and journal.exists()):
        raise InputError("results file does not exist", str(p))
    rows: list[ResultRow] = []
    if p.exists():
        rows = _read_parquet_rows(p) if fmt == "parquet" else _read_jsonl_rows(p, truncate_partial=False)
    if fmt == "parquet" and journal.exists():
        rows.extend(_read_jsonl_rows(journal, truncate_partial=False))
    return _dedupe(rows)


def _dedupe(rows: Iterable[ResultRow]) -> list[ResultRow]:
    seen: set[tuple[str, int]] = set()
    kept: list[ResultRow] = []
    for row in rows:
        if row.key not in seen:
            seen.add(row.key)
            kept.append(row)
    return kept


def _journal_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial.jsonl")


def _row_json(row: ResultRow) -> bytes:
    return (json.dumps(asdict(row), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


class ResultStore:
    """The output of a grading run: rows already there, and new rows flushed chunk by chunk.

    Args:
        path: output file; ``.parquet``/``.pq`` or ``.jsonl``/``.ndjson``; ``None`` keeps the
            rows in memory only (:attr:`rows`), nothing is written.
        resume: keep rows already in ``path`` (and skip their samples); when False the
            output is started afresh.

    Raises:
        InputError: bad extension, or an existing output that cannot be read.
    """

    def __init__(self, path: str | os.PathLike[str] | None, resume: bool = True) -> None:
        self.rows: list[ResultRow] = []
        self.resumed = 0
        self._done: set[tuple[str, int]] = set()
        if path is None:
            self.format = "memory"
            self.path = Path("<memory>")
            self._journal = self.path
            return
        self.path = Path(path)
        self.format = output_format(self.path)
        self._journal = _journal_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume:
            for stale in (self.path, self._journal):
                stale.unlink(missing_ok=True)
        existing: list[ResultRow] = []
        if self.path.exists():
            existing = (
                _read_parquet_rows(self.path)
                if self.format == "parquet"
                else _read_jsonl_rows(self.path, truncate_partial=True)
            )
        if self.format == "parquet" and self._journal.exists():
            existing.extend(_read_jsonl_rows(self._journal, truncate_partial=True))
        self.rows = _dedupe(existing)
        self.resumed = len(self.rows)
        self._done = {row.key for row in self.rows}
        if self.resumed:
            logger.info("%s: resuming, %d result rows already there", self.path, self.resumed)

    def is_done(self, problem: str, sample_index: int) -> bool:
        """Whether a row for this sample (problem id, index) is already stored."""
        return (problem, sample_index) in self._done

    def discard(self, keys: Iterable[tuple[str, int]]) -> None:
        """Drop stored rows (stale ones, to be graded again), on disk before returning.

        The output is rewritten atomically without them, so an interruption afterwards
        never resumes from a dropped row.
        """
        gone = set(keys)
        self.rows = [r for r in self.rows if r.key not in gone]
        self._done -= gone
        self.resumed = len(self.rows)
        if self.format == "memory":
            return
        if self.format == "parquet":
            self.finalize()  # writes every kept row (journal rows included), then drops the journal
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(b"".join(_row_json(r) for r in self.rows))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def append(self, rows: Sequence[ResultRow]) -> None:
        """Store new rows and push them to disk before returning.

        Args:
            rows: rows for samples not yet stored (duplicates are dropped).
        """
        fresh = [r for r in rows if r.key not in self._done]
        if not fresh:
            return
        if self.format == "memory":
            self.rows.extend(fresh)
            self._done.update(r.key for r in fresh)
            return
        target = self.path if self.format == "jsonl" else self._journal
        with open(target, "ab") as fh:
            fh.write(b"".join(_row_json(r) for r in fresh))
            fh.flush()
            os.fsync(fh.fileno())
        self.rows.extend(fresh)
        self._done.update(r.key for r in fresh)

    def finalize(self) -> None:
        """Make the output file complete: for Parquet, write every row and drop the journal.

        JSONL needs nothing (each chunk was appended already), but an empty run still
        leaves an (empty) file so the output always exists afterwards.
        """
        if self.format == "memory":
            return
        if self.format == "jsonl":
            self.path.touch(exist_ok=True)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([asdict(r) for r in self.rows], schema=_arrow_schema())
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        pq.write_table(table, tmp)
        os.replace(tmp, self.path)  # atomic: readers see the old file or the new one
        self._journal.unlink(missing_ok=True)
