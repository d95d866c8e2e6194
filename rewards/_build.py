"""Build once, run many: each unique (language, source) is built once in a sandbox, its output
kept in a bounded, content-addressed cache, and every test case runs the same build.

A build runs under its own limits (the builder's ``compile_limits``, or the ``limits`` a caller
passes for its builds: CPU, memory and output, separate from the run limits) as the program would:
model-written source is compiled in the same sandboxes, under the same isolation. The cache key
holds the limits, so one source built under other limits is built again. How it ended decides the
sample before any test runs:

* built: the artifact (a binary, a jar; the source itself for Node and Bash, whose build is a
  syntax check) goes to each test's run;
* the program's fault (the compiler said no, or the build ran past its limits): a
  ``compile_error`` with the compiler's first lines, cached like a success;
* infrastructure (no sandbox could run the build): ``None``, never cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vmpool import ExecRequest, ExecResult, Limits, Status

from ._languages import Language

__all__ = ["COMPILE_LIMITS", "Build", "Builder"]

COMPILE_LIMITS = Limits(wall_s=120.0, cpu_s=30.0, memory_mb=2048, memory_mode="resident", max_processes=64,
                        max_open_files=256, output_bytes=64 << 20, file_size_bytes=256 << 20)
"""What one build may use by default: 30 s of CPU, 2 GiB resident, 64 MiB of compiler output
and artifact (the fetch budget is the output cap)."""

_ERROR_LINES, _ERROR_CHARS = 20, 2000


@dataclass(frozen=True)
class Build:
    """How one source was built.

    Attributes:
        language: its language.
        ok: True (built), False (a compile error: the program's), ``None`` (infrastructure).
        files: what each run gets in its work dir (the artifact, or the source).
        executable: which of ``files`` are programs.
        main: Java's class to start.
        error: the compiler's first lines, or why the build failed.
        cpu_s / wall_s: what the build took.
        status: how the build's run ended, in vmpool's words (``TIMEOUT``: past its CPU time,
            the compiler's own processes counted with it); ``None`` when no build ran (a
            language without a build command).
        exit_code: the build command's exit status (``None``: it did not exit, or never ran).
    """

    language: Language
    ok: bool | None
    files: Mapping[str, bytes] = field(default_factory=dict)
    executable: tuple[str, ...] = ()
    main: str = ""
    error: str = ""
    cpu_s: float = 0.0
    wall_s: float = 0.0
    status: Status | None = None
    exit_code: int | None = None

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values()) + len(self.error)

    def run_request(self, stdin: str, limits: Limits) -> ExecRequest:
        """The request of one test: the build's files, the language's run command, ``limits``
        adjusted to what the runtime needs (its memory mode, threads, overhead)."""
        lang = self.language
        fill = {"source": next(iter(self.files), ""), "main": self.main, "memory_mb": str(limits.memory_mb)}
        command = [arg.format(**fill) for arg in lang.run]
        run_limits = dataclasses.replace(
            limits, memory_mode=lang.memory_mode, memory_mb=limits.memory_mb + lang.overhead_mb,
            max_processes=max(limits.max_processes, lang.min_processes))
        return ExecRequest(code="", command=command, files=dict(self.files), executable=self.executable,
                           stdin=stdin, limits=run_limits, env=dict(lang.env))


def _first_lines(text: str) -> str:
    """The compiler's first error and what follows, not the warnings before it (the line
    before the error too where it introduces it, as g++'s ``In function ...:``)."""
    lines = text.strip().splitlines()
    first = next((i for i, line in enumerate(lines) if "error" in line.lower()), 0)
    if first and lines[first - 1].rstrip().endswith(":"):
        first -= 1
    return "\n".join(lines[first:first + _ERROR_LINES])[:_ERROR_CHARS]


class Builder:
    """Builds sources in a pool's sandboxes, each unique one once, and keeps the results.

    Args:
        compile_limits: the limits of one build where :meth:`build_all` is given none (default
            :data:`COMPILE_LIMITS`).
        max_entries / max_bytes: the cache's bounds (least recently used entries go first).
    """

    def __init__(self, compile_limits: Limits | None = None, *, max_entries: int = 4096,
                 max_bytes: int = 512 << 20) -> None:
        self.compile_limits = compile_limits or COMPILE_LIMITS
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._cache: OrderedDict[str, Build] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.builds_run = 0  # builds that ran in a sandbox (misses), for tests and the benchmark
        self.build_cpu_s = 0.0  # the CPU seconds they took

    def key(self, lang: Language, source: str, limits: Limits | None = None) -> str:
        """The cache key of ``source`` built under ``limits`` (default: ``compile_limits``)."""
        digest = hashlib.sha256()
        for part in (lang.name, "\0".join(lang.build), "\0".join(lang.run), source,
                     repr(sorted((limits or self.compile_limits).to_wire().items()))):
            digest.update(part.encode("utf-8", "surrogatepass") + b"\0\1")
        return digest.hexdigest()

    def get(self, lang: Language, source: str, limits: Limits | None = None) -> Build | None:
        """The cached build of ``source`` under ``limits`` (default: ``compile_limits``), or
        ``None`` when it has not been built (or was evicted)."""
        key = self.key(lang, source, limits)
        with self._lock:
            build = self._cache.get(key)
            if build is not None:
                self._cache.move_to_end(key)
            return build

    def _put(self, key: str, build: Build) -> None:
        if build.ok is None:
            return  # infrastructure: the next batch tries again
        with self._lock:
            if key in self._cache:
                return
            self._cache[key] = build
            self._bytes += build.size
            while self._cache and (len(self._cache) > self.max_entries or self._bytes > self.max_bytes):
                _, old = self._cache.popitem(last=False)
                self._bytes -= old.size

    def build_all(self, run_map: Callable[[list[ExecRequest]], Sequence[ExecResult]],
                  sources: Sequence[tuple[Language, str]], limits: Limits | None = None) -> dict[str, Build]:
        """Build every ``(language, source)`` not cached yet, each unique one once, in one
        ``run_map`` call (a pool's ``map``), under ``limits`` (default: ``compile_limits``);
        returns the builds by :meth:`key` (with the same ``limits``), cached ones included.
        Infrastructure failures come back as builds with ``ok=None`` (and are not cached)."""
        limits = limits or self.compile_limits
        out: dict[str, Build] = {}
        todo: dict[str, tuple[Language, str, ExecRequest]] = {}
        for lang, source in sources:
            key = self.key(lang, source, limits)
            if key in out or key in todo:
                continue
            cached = self.get(lang, source, limits)
            if cached is not None:
                out[key] = cached
            elif not lang.build:
                out[key] = self._remember(key, Build(lang, True, {lang.source_name(source): source.encode()},
                                                     main=lang.main_class(source)))
            else:
                todo[key] = (lang, source, self._request(lang, source, limits))
        if todo:
            results = run_map([req for _, _, req in todo.values()])
            self.builds_run += len(todo)
            self.build_cpu_s += sum(res.cpu_s for res in results)
            for (key, (lang, source, _)), res in zip(todo.items(), results):
                out[key] = self._remember(key, self._judge(lang, source, res, limits))
        return out

    def _remember(self, key: str, build: Build) -> Build:
        self._put(key, build)
        return build

    def _request(self, lang: Language, source: str, limits: Limits) -> ExecRequest:
        name = lang.source_name(source)
        command = [arg.format(source=name, main=lang.main_class(source), memory_mb="") for arg in lang.build]
        return ExecRequest(code="", command=command, files={name: source}, env=dict(lang.env),
                           fetch_files=[lang.artifact] if lang.artifact else [], limits=limits)

    def _judge(self, lang: Language, source: str, res: ExecResult, limits: Limits) -> Build:
        name, main = lang.source_name(source), lang.main_class(source)
        def done(ok: bool | None, files: Mapping[str, bytes] | None = None, executable: tuple[str, ...] = (),
                 error: str = "") -> Build:
            return Build(lang, ok, files or {}, executable, main, error, res.cpu_s, res.wall_s, res.status,
                         res.exit_code)

        if res.status is Status.SANDBOX_ERROR:
            return done(None, error=res.error or "no sandbox could run the build")
        why = {
            Status.TIMEOUT: f"the build ran past its limit ({limits.effective_cpu_s:g} s of CPU)",
            Status.MEMORY_LIMIT: f"the build ran out of memory ({limits.memory_mb} MiB)",
            Status.OUTPUT_LIMIT: f"the compiler's output passed {limits.output_bytes} bytes",
            Status.SANDBOX_KILLED: "the build brought down its sandbox",
        }.get(res.status)
        if why is not None:
            return done(False, error=why)
        if res.status is not Status.OK:
            said = _first_lines(res.stderr) or _first_lines(res.stdout)
            return done(False, error=said or f"the compiler exited with {res.exit_code}")
        if not lang.artifact:
            return done(True, {name: source.encode()})
        artifact = res.files.get(lang.artifact)
        if artifact is None:
            return done(False, error=f"the build left no {lang.artifact} (or one over {limits.output_bytes} bytes)")
        executable = (lang.artifact,) if lang.run and lang.run[0] == f"./{lang.artifact}" else ()
        return done(True, {lang.artifact: artifact}, executable)
