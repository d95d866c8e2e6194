"""Program tests: test code in the problem's own language, built into one program with the
solution and run once (HumanEval-X's form: C++ ``main`` with ``assert``, Java ``class Main``,
JavaScript ``console.assert``, Go ``testing`` with testify, Rust ``#[test]``).

A pass needs a clean exit *and* the test code run to its end: the harness ends the test code
with a hook that writes the run's nonce (a fresh random value in the environment, never in the
built program, which is cached and shared) to the file ``DONE_FILE`` in the work dir, fetched
back after the run. So a solution that exits early with success (``exit(0)``, ``System.exit(0)``,
``process.exit(0)``, ``os.Exit(0)``, ``std::process::exit(0)``) fails, and so does printing
anything. Per language:

* C/C++: the hook is called before the closing brace of the test code's ``main``;
* Java: a launcher class runs ``Main.main`` and then the hook (an exception fails the run);
* JavaScript: ``console.assert`` throws (Node's only logs), the hook follows the test code;
* Go: a ``TestMain`` runs the tests and calls the hook when they passed;
* Rust: one more test, sorted after every other and run last (``--test-threads=1``).

The limit of this form: the tests share the program's process, so a program that sets out to
read its own environment and write that file can forge the hook. Stdio and call tests (compared
outside the sandbox, or by a tester process the program cannot reach) have no such gap: use
them where a reward must hold against a policy that targets the grader.
"""

from __future__ import annotations

import dataclasses
import re
import secrets

from vmpool import ExecRequest, ExecResult, Limits, Status

from ._build import Build
from ._excerpt import run_why
from ._languages import Language
from ._verdict import STATUS_OUTCOME, Outcome, Verdict, cut

__all__ = ["NONCE_ENV", "assemble", "judge_program_tests", "program_tests_request"]

NONCE_ENV = "VMPOOL_TESTS_DONE"
DONE_FILE = "vmpool_tests_done"

_C_HOOK = f"""
#include <stdio.h>
#include <stdlib.h>
static void vmpool_tests_done(void) {{
    const char *nonce = getenv("{NONCE_ENV}");
    FILE *done = fopen("{DONE_FILE}", "w");
    if (nonce && done) fputs(nonce, done);
    if (done) fclose(done);
}}
"""

_JAVA_LAUNCHER = f"""
class VmpoolTestsLauncher {{
    public static void main(String[] args) throws Exception {{
        Main.main(args);
        String nonce = System.getenv("{NONCE_ENV}");
        java.nio.file.Files.writeString(java.nio.file.Path.of("{DONE_FILE}"), nonce == null ? "" : nonce);
    }}
}}
"""

_JS_PRELUDE = """Object.defineProperty(console, "assert", { writable: false, configurable: false,
  value: function (ok, ...message) { if (!ok) throw new Error("Assertion failed" + (message.length ? ": " + message.join(" ") : "")); } });
"""
_JS_HOOK = f"""
;require("fs").writeFileSync("{DONE_FILE}", process.env.{NONCE_ENV} || "");
"""

_GO_HOOK = f"""

func TestMain(m *testing.M) {{
    code := m.Run()
    if code == 0 {{
        os.WriteFile("{DONE_FILE}", []byte(os.Getenv("{NONCE_ENV}")), 0o600)
    }}
    os.Exit(code)
}}
"""

_RUST_HOOK = f"""

#[cfg(test)]
mod zzzz_vmpool_tests_done {{
    #[test]
    fn done() {{
        let _ = std::fs::write("{DONE_FILE}", std::env::var("{NONCE_ENV}").unwrap_or_default());
    }}
}}
"""


def assemble(lang: Language, program: str, tests: str) -> str:
    """The test program: the solution's program, then the test code, with the hook that says
    the tests ran to their end (see the module docstring)."""
    name = lang.name
    if name in ("c", "cpp"):
        end = tests.rstrip()
        if not end.endswith("}"):
            return f"{_C_HOOK}\n{program}\n{tests}\n"  # no main to hook: its run cannot pass
        return f"{_C_HOOK}\n{program}\n{end[:-1]}\n    vmpool_tests_done();\n}}\n"
    if name == "java":
        return f"{program}\n{tests}\n{_JAVA_LAUNCHER}"
    if name == "javascript":
        return f"{_JS_PRELUDE}{program}\n{tests}\n{_JS_HOOK}"
    if name == "go":
        return _assemble_go(program, tests)
    if name == "rust":
        return f"{program}\n{tests}\n{_RUST_HOOK}"
    return f"{program}\n{tests}\n"


_GO_PACKAGE = re.compile(r"^\s*package\s+\w+\s*$", re.MULTILINE)
_GO_IMPORTS = re.compile(r"^import\s*(?:\([^)]*\)|(?:[\w.]+\s+)?\"[^\"\n]*\")", re.MULTILINE)
_GO_NOT_CODE = re.compile(r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\\n])*\"|`[^`]*`|'(?:\\.|[^'\\\n])*'", re.DOTALL)
_GO_SPEC = re.compile(r"(?:([\w.]+)\s+)?\"([^\"\n]+)\"")
# Standard packages HumanEval-X's own harness imports for code that uses them without importing.
_GO_HELPERS = ("math", "sort", "strings", "strconv", "fmt", "bytes", "regexp", "unicode", "time", "errors",
               "crypto/md5", "encoding/hex", "math/rand", "math/big", "reflect", "container/heap")


def _go_imports(text: str) -> tuple[dict[str, str], str]:
    """The import specs of ``text`` (path -> alias) and ``text`` without its import decls."""
    specs = {path: alias or "" for m in _GO_IMPORTS.finditer(text)
             for alias, path in _GO_SPEC.findall(m.group(0)[len("import"):])}
    return specs, _GO_IMPORTS.sub("", text)


def _assemble_go(program: str, tests: str) -> str:
    """Go wants one package clause, then every import, then the rest, and refuses an import
    that is not used as much as a package used without one. So the imports are merged: the
    tests' (``testing``, testify) all kept, the program's kept where its code uses them, and
    the standard packages the code uses without importing them added (what HumanEval-X's own
    harness does); the hook imports ``os`` under a name of its own."""
    package = _GO_PACKAGE.search(program) or _GO_PACKAGE.search(tests)
    clause = package.group(0).strip() if package else "package main"
    test_specs, tests = _go_imports(_GO_PACKAGE.sub("", tests, count=1))
    prog_specs, program = _go_imports(_GO_PACKAGE.sub("", program, count=1))
    code = _GO_NOT_CODE.sub(" ", program + "\n" + tests)  # a "list of strings." in a comment uses nothing

    def used(path: str, alias: str) -> bool:
        return alias in ("_", ".") or re.search(rf"\b{re.escape(alias or path.rsplit('/', 1)[-1])}\.", code) is not None

    specs = dict(test_specs)
    for path, alias in prog_specs.items():
        if path not in specs and used(path, alias):
            specs[path] = alias
    taken = {alias or path.rsplit("/", 1)[-1] for path, alias in specs.items()}
    for path in _GO_HELPERS:
        name = path.rsplit("/", 1)[-1]
        if path not in specs and name not in taken and used(path, ""):
            specs[path] = ""
            taken.add(name)
    block = "".join(f"    {alias + ' ' if alias else ''}\"{path}\"\n" for path, alias in specs.items())
    hook = _GO_HOOK.replace("os.", "vmpool_os.")
    return f"{clause}\n\nimport (\n    vmpool_os \"os\"\n{block})\n{program}\n{tests}\n{hook}"


def program_tests_request(build: Build, limits: Limits) -> tuple[ExecRequest, str]:
    """The one run of a built test program, and the nonce its hook must report."""
    nonce = secrets.token_hex(16)
    req = build.run_request("", limits)
    return dataclasses.replace(req, env={**req.env, NONCE_ENV: nonce}, fetch_files=[DONE_FILE]), nonce


def judge_program_tests(res: ExecResult, nonce: str) -> Verdict:
    """Passed: a clean exit with the nonce, and nothing else, in the hook's file."""
    if res.status is Status.SANDBOX_ERROR:
        return Verdict(None, Outcome.SANDBOX_ERROR, 0, 1, cut(res.error or "sandbox error"), res.wall_s, res.status)
    done = res.files.get(DONE_FILE) == nonce.encode()
    if res.status is Status.OK and done:
        return Verdict(True, Outcome.PASSED, 1, 1, "", res.wall_s, res.status)
    if res.status is Status.OK:
        why = "the tests did not run to their end (the program exited early)"
        return Verdict(False, Outcome.FAILED, 0, 1, why, res.wall_s, res.status)
    if res.status is Status.RUNTIME_ERROR:  # an assertion failed (abort, an exception, a failed test)
        return Verdict(False, Outcome.FAILED, 0, 1, cut(_failure(res)), res.wall_s, res.status)
    outcome = STATUS_OUTCOME.get(res.status, Outcome.RUNTIME_ERROR)
    return Verdict(False, outcome, 0, 1, cut(run_why(res)), res.wall_s, res.status)


# What starts a failure's report (an exception, Go's and Rust's test runners), then any line that names one.
_FAILURE_START = re.compile(r"^\s*(?:[\w.]*(?:Error|Exception)\b|--- FAIL|thread '.*' panicked|Exception in thread)")
_FAILURE_LINE = re.compile(r"assert|error|fail|panic|exception", re.IGNORECASE)


def _failure(res: ExecResult) -> str:
    """The lines that say which test failed (test runners print theirs to stdout, crashes to
    stderr)."""
    for pattern in (_FAILURE_START, _FAILURE_LINE):
        for text in (res.stderr, res.stdout):
            lines = text.strip().splitlines()
            first = next((i for i, line in enumerate(lines) if pattern.search(line)), None)
            if first is not None:
                return "\n".join(lines[first:first + 8])
    return run_why(res)
