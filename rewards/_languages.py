"""The languages programs are graded in: how each is named, built and run in a sandbox.

Python runs as code in the sandbox's warm interpreter (:mod:`rewards._runner`); every other
language is a :class:`Language`: a source file, an optional build command (a compiler, or a
syntax check for the interpreted ones) run once per unique source in a sandbox, and a run
command started per test in a sandbox with the build's output (see :mod:`rewards._build`).
Toolchains are Debian's (``.ci/install-system.sh`` installs them; a microVM image lists
them in its ``extra_packages``).

Memory: C, C++, Rust and Bash run under ``RLIMIT_AS`` (exact, as for Python); the JVM, Go
and Node reserve far more address space than they use, so they run in vmpool's ``resident``
memory mode, the limit counted on the resident memory of the run's processes. The JVM's
heap (``-Xmx``) and Node's old space are the memory limit; the JVM gets ``overhead_mb`` more
resident memory for itself.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LANGUAGES", "Language", "find_language", "language", "language_names"]


@dataclass(frozen=True)
class Language:
    """One language a program may be written in.

    Attributes:
        name: canonical name (``cpp``); what ``Problem.language(s)`` and results use.
        aliases: other names and fenced-block tags that mean it (``c++``, ``cxx``...).
        source: the source file's name in the work dir (Java: ``{class}.java``).
        build: the build command (compiler, or a syntax check); empty: none. ``{source}``
            and ``{main}`` are filled in.
        artifact: what the build leaves that the run needs (fetched back, sent to each run);
            empty: the run needs the source itself.
        run: the run command; ``{source}``, ``{main}``, ``{memory_mb}`` are filled in.
        env: environment of builds and runs.
        memory_mode: ``address_space`` or ``resident`` (see the module docstring).
        overhead_mb: resident memory the runtime gets on top of the limit.
        min_processes: processes (threads count) the runtime needs at least.
        test_source / test_build / test_run: what :class:`~rewards.ProgramTests` (test code
            built into the program: HumanEval-X) use instead of ``source`` / ``build`` /
            ``run`` where they differ (Go's ``go test``, Rust's ``rustc --test``).
    """

    name: str
    aliases: tuple[str, ...]
    source: str
    build: tuple[str, ...] = ()
    artifact: str = ""
    run: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    memory_mode: str = "address_space"
    overhead_mb: int = 0
    min_processes: int = 0
    test_source: str = ""
    test_build: tuple[str, ...] = ()
    test_run: tuple[str, ...] = ()

    def for_tests(self) -> Language:
        """This language as program tests build and run it."""
        return dataclasses.replace(self, source=self.test_source or self.source, build=self.test_build or self.build,
                                   run=self.test_run or self.run, test_source="", test_build=(), test_run=())

    @property
    def is_python(self) -> bool:
        return self.name == "python"

    def main_class(self, source: str) -> str:
        """Java: the class to start (the last one declaring ``main``; else the public class;
        else ``Main``). Other languages: ``""``."""
        if self.name != "java":
            return ""
        text = _JAVA_COMMENTS.sub(" ", source)
        classes = [(m.start(), m.group(1)) for m in _JAVA_CLASS.finditer(text)]
        mains = list(_JAVA_MAIN.finditer(text))
        main = mains[-1] if mains else None  # the last: a launcher after the tests (rewards._program_tests)
        if main is not None:
            before = [name for pos, name in classes if pos < main.start()]
            if before:
                return before[-1]
        public = _JAVA_PUBLIC.search(text)
        return public.group(1) if public else "Main"

    def source_name(self, source: str) -> str:
        """The source file's name for ``source`` (Java: its public class's name, which javac
        requires)."""
        if self.name != "java":
            return self.source
        public = _JAVA_PUBLIC.search(_JAVA_COMMENTS.sub(" ", source))
        return f"{public.group(1) if public else 'Main'}.java"


_JAVA_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\\n])*\"", re.DOTALL)
_JAVA_CLASS = re.compile(r"\b(?:class|interface|enum|record)\s+([A-Za-z_$][\w$]*)")
_JAVA_PUBLIC = re.compile(r"\bpublic\s+(?:(?:final|abstract|static|strictfp)\s+)*(?:class|interface|enum|record)\s+"
                          r"([A-Za-z_$][\w$]*)")
_JAVA_MAIN = re.compile(r"\bstatic\s+(?:final\s+)?void\s+main\s*\(")

TOOLCHAINS = "/usr/local/lib/vmpool-toolchains"
"""What ``.ci/prepare-toolchains.sh`` prepares (under /usr, so every sandbox sees it read-only):
the Rust crates HumanEval-X uses and their ``rustc`` flags, a warm Go build cache, the npm
package (``js-md5``) one JavaScript task requires."""

_RUSTC = ("exec rustc --edition=2021 -O -C strip=debuginfo -o prog \"$0\" "
          f"$(cat {TOOLCHAINS}/rust/rustc-args 2>/dev/null)")
# Each Go build starts from a copy of the warm cache (testify compiled): 0.3 s instead of 6.
_GO_WARM = f"mkdir -p /tmp/.cache && cp -r {TOOLCHAINS}/go-cache \"$GOCACHE\" 2>/dev/null; "

# Go without modules: imports come from GOPATH (Debian's packaged libraries in /usr/share/gocode);
# the build cache lives in the run's scratch space; no cgo (no C toolchain in a Go build).
_GO_ENV = {"GO111MODULE": "off", "GOPATH": "/tmp/go:/usr/share/gocode", "GOCACHE": "/tmp/.cache/go-build",
           "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}

LANGUAGES: tuple[Language, ...] = (
    Language("python", ("py", "python3", "py3"), "main.py"),
    Language("c", ("gnu c", "c11", "c17", "gcc"), "main.c",
             build=("gcc", "-std=gnu17", "-O2", "-pipe", "-o", "prog", "{source}", "-lm"),
             artifact="prog", run=("./prog",)),
    Language("cpp", ("c++", "cc", "cxx", "c++17", "cpp17", "c++20", "cpp20", "g++", "gnu c++"), "main.cpp",
             # libcrypto where a program uses it (HumanEval-X's md5 task), linked only then
             build=("g++", "-std=gnu++17", "-O2", "-pipe", "-o", "prog", "{source}", "-Wl,--as-needed", "-lcrypto"),
             artifact="prog", run=("./prog",)),
    Language("java", ("java17", "jdk"), "Main.java",
             # javac writes a class file per class: they travel as one zip (a jar without a manifest).
             # javac is a short-lived JVM: C1 only and the serial GC cost it 40% less CPU.
             build=("/bin/sh", "-c", "javac -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC -encoding UTF-8 -nowarn "
                    "-d classes \"$0\" && cd classes && /usr/bin/python3 -I -m zipfile -c ../prog.jar *", "{source}"),
             artifact="prog.jar",
             run=("java", "-Xmx{memory_mb}m", "-Xss64m", "-XX:+UseSerialGC", "-XX:CICompilerCount=2",
                  "-XX:ReservedCodeCacheSize=64m", "-XX:CompressedClassSpaceSize=64m", "-XX:-UsePerfData",
                  "-Dfile.encoding=UTF-8", "-cp", "prog.jar", "{main}"),
             memory_mode="resident", overhead_mb=128, min_processes=64),
    Language("javascript", ("js", "node", "nodejs", "javascript (node)"), "main.js",
             build=("node", "--check", "{source}"),
             run=("node", "--max-old-space-size={memory_mb}", "{source}"),
             env={"NODE_PATH": f"{TOOLCHAINS}/node/node_modules"},
             memory_mode="resident", overhead_mb=64, min_processes=64),
    Language("go", ("golang",), "main.go",
             build=("/bin/sh", "-c", _GO_WARM + "exec go build -o prog \"$0\"", "{source}"), artifact="prog",
             run=("./prog",), env=_GO_ENV, memory_mode="resident", min_processes=64,
             test_source="main_test.go", test_build=("/bin/sh", "-c", _GO_WARM + "exec go test -c -o prog \"$0\"",
                                                     "{source}")),
    Language("rust", ("rs", "rust2021"), "main.rs",
             build=("/bin/sh", "-c", _RUSTC, "{source}"), artifact="prog", run=("./prog",),
             test_build=("/bin/sh", "-c", _RUSTC + " --test", "{source}"), test_run=("./prog", "--test-threads=1")),
    Language("bash", ("sh", "shell", "shell-session", "zsh"), "main.sh",
             build=("bash", "-n", "{source}"), run=("bash", "{source}")),
)

_BY_NAME: dict[str, Language] = {}
for _lang in LANGUAGES:
    for _key in (_lang.name, *_lang.aliases):
        _BY_NAME[_key] = _lang


def language_names() -> tuple[str, ...]:
    return tuple(lang.name for lang in LANGUAGES)


def find_language(name: str) -> Language | None:
    """The language a name or fenced-block tag means (case-insensitive), or ``None``."""
    return _BY_NAME.get(name.strip().lower())


def language(name: str) -> Language:
    """The language ``name`` means.

    Raises:
        ValueError: no language has that name (the message lists them).
    """
    found = find_language(name)
    if found is None:
        raise ValueError(f"unknown language {name!r}; languages: {', '.join(language_names())}")
    return found
