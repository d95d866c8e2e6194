"""``POST /run_code`` in every language ``rewards`` grades, under SandboxFusion's names, against a
real ``harness serve`` and real sandboxes: programs with stdin, compile errors and a compile past
its time, run limits, files, the service's Builder building each source once (concurrent requests
included), and verl's own client (``check_correctness(..., language="cpp")``) scoring C++."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from harness.serve import ServeConfig, create_app
from harness.serve._app import HTTP, LOOP
from harness.serve._fusion import builder
from tests._sources import COMPILE_ERRORS, SUM_PROGRAMS

from ._server import TOKEN, running

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("g++", "javac", "node", "go", "rustc")),
                                reason="the toolchains are installed by make test (.ci/install-system.sh)")

STDIN, SUM = "3\n1 2 3\n", "6\n"
# A sum of n numbers in each language, by SandboxFusion's names (c is this service's own).
# SandboxFusion's names for rewards' languages (c is this service's own).
PROGRAMS = {**{name: SUM_PROGRAMS[lang] for name, lang in (("python", "python"), ("python3", "python"),
            ("cpp", "cpp"), ("c", "c"), ("java", "java"), ("nodejs", "javascript"), ("js", "javascript"),
            ("go", "go"), ("rust", "rust"), ("bash", "bash"))}}
COMPILED = {"cpp", "c", "java", "go", "rust"}

# LiveCodeBench codeforces/1873_A (the row tests/serve/test_fusion_verl.py scores in Python), in C++.
CARDS_CPP = ("#include <bits/stdc++.h>\nint main(){int t; std::cin>>t; while(t--){std::string s; std::cin>>s;"
             " int d=0; for(int i=0;i<3;i++) d+=s[i]!=\"abc\"[i]; std::cout<<(d==0||d==2?\"YES\":\"NO\")<<\"\\n\";}}")
CARDS_IO = {"inputs": ["6\nabc\nacb\nbac\nbca\ncab\ncba\n", "1\nbca\n", "2\nabc\ncba\n"],
            "outputs": ["YES\nYES\nYES\nNO\nNO\nYES\n", "NO\n", "YES\nYES\n"]}




def _run(url: str, language: str, code: str, **body: object) -> dict:
    r = httpx.post(f"{url}/run_code", json={"language": language, "code": code, **body},
                   headers={"X-API-KEY": TOKEN}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("language", sorted(PROGRAMS))
def test_each_language_runs_its_program_on_stdin(url: str, language: str) -> None:
    reply = _run(url, language, PROGRAMS[language], stdin=STDIN)
    assert reply["status"] == "Success", reply
    run = reply["run_result"]
    assert run["status"] == "Finished" and run["return_code"] == 0 and run["stdout"] == SUM, run
    if language in COMPILED:
        built = reply["compile_result"]
        assert built["status"] == "Finished" and built["return_code"] == 0 and built["outcome"] == "ok", built
    else:  # as in SandboxFusion: Python, Node and Bash have no compile step
        assert reply["compile_result"] is None


@pytest.mark.parametrize("language, code, says", COMPILE_ERRORS)
def test_a_compile_error_is_failed_with_the_compilers_words_and_no_run(url: str, language: str, code: str,
                                                                       says: str) -> None:
    reply = _run(url, language, code, stdin=STDIN)
    assert reply["status"] == "Failed" and reply["run_result"] is None, reply
    built = reply["compile_result"]
    assert built["status"] == "Finished" and built["return_code"] not in (0, None), built
    assert says in built["stderr"] and built["outcome"] == "runtime_error", built
    assert reply["message"].startswith("compile error: ")


def test_a_syntax_error_in_an_interpreted_language_is_the_runs_failure(url: str) -> None:
    # SandboxFusion has no compile step for Node or Bash: the run fails (verl: -2, not -4).
    for language, code, says in (("nodejs", "function f( {", "SyntaxError"), ("bash", "if then fi (", "syntax error")):
        reply = _run(url, language, code)
        assert reply["status"] == "Failed" and reply["compile_result"] is None, reply
        assert reply["run_result"]["return_code"] != 0 and says in reply["run_result"]["stderr"], reply


def test_a_build_past_compile_timeout_is_a_compile_time_limit(url: str) -> None:
    # Constant evaluation that takes minutes (each loop under g++'s constexpr loop limit).
    spin = ("constexpr long spin(){ long s=0; for(long i=0;i<200000;i++) for(long j=0;j<200000;j++) s+=i^j;"
            " return s; }\nstatic_assert(spin() != 1, \"\");\nint main(){}\n")
    reply = _run(url, "cpp", spin, compile_timeout=1)
    assert reply["status"] == "Failed" and reply["run_result"] is None, reply
    assert reply["compile_result"]["status"] == "TimeLimitExceeded", reply
    assert "compile time limit" in reply["message"]


def test_run_limits_in_a_compiled_language(url: str) -> None:
    spin = _run(url, "cpp", "int main(){ volatile unsigned long i = 0; for(;;) i++; }", run_timeout=1)
    assert spin["status"] == "Failed" and spin["run_result"]["status"] == "TimeLimitExceeded", spin
    assert spin["compile_result"]["status"] == "Finished" and spin["run_result"]["outcome"] == "timeout"
    bomb = _run(url, "cpp", "#include <vector>\nint main(){ std::vector<std::vector<char>> v;"
                            " for(;;) v.emplace_back(1<<24, 1); }", memory_limit_MB=128)
    assert bomb["status"] == "Failed" and bomb["run_result"]["outcome"] == "memory_limit", bomb
    assert "memory limit" in bomb["message"]
    crash = _run(url, "rust", "fn main(){ std::process::exit(3); }")
    assert crash["status"] == "Failed" and crash["run_result"]["return_code"] == 3, crash


def test_files_and_fetch_files_with_a_compiled_program(url: str) -> None:
    import base64

    code = ("#include <cstdio>\nint main(){ char b[64] = {0}; FILE *f = fopen(\"in.txt\", \"r\"); fread(b, 1, 63, f);"
            " printf(\"%s\\n\", b); FILE *o = fopen(\"out.bin\", \"wb\"); fputc(7, o); fclose(o); }")
    reply = _run(url, "cpp", code, files={"in.txt": base64.b64encode(b"given").decode()},
                 fetch_files=["out.bin", "nothing.txt"])
    assert reply["status"] == "Success" and reply["run_result"]["stdout"] == "given\n", reply
    assert reply["files"] == {"out.bin": base64.b64encode(bytes([7])).decode()}


def test_an_unknown_language_is_a_422_listing_the_served_ones(url: str) -> None:
    for language in ("cobol", "typescript", "CPP"):
        r = httpx.post(f"{url}/run_code", json={"code": "1", "language": language}, headers={"X-API-KEY": TOKEN})
        assert r.status_code == 422, r.text
        message = r.json()["message"]
        assert repr(language) in message and all(name in message for name in ("cpp", "java", "nodejs", "go", "rust",
                                                                              "bash", "python3"))
    r = httpx.post(f"{url}/run_code", json={"code": "1", "language": "cpp", "compile_timeout": 10_000},
                   headers={"X-API-KEY": TOKEN})
    assert r.status_code == 400 and "compile_timeout" in r.json()["message"]


def test_verl_scores_cpp_with_its_codes(url: str, verl: ModuleType) -> None:
    endpoint = f"{url}/run_code?token={TOKEN}"
    n = len(CARDS_IO["inputs"])
    results, meta = verl.check_correctness(endpoint, CARDS_IO, CARDS_CPP, language="cpp")
    assert results == [True] * n, meta
    assert meta[0]["compile_status"] == "Finished"
    wrong = CARDS_CPP.replace("d==0||d==2", "d==0")
    results, meta = verl.check_correctness(endpoint, CARDS_IO, wrong, language="cpp")
    assert False in results and all(r in (True, False) for r in results), results
    results, meta = verl.check_correctness(endpoint, CARDS_IO, "int main() { return x; }", language="cpp")
    assert results == [-4] * n and meta[0]["status"] == "compile_error", meta
    assert "not declared" in meta[0]["compile_stderr"]
    results, meta = verl.check_correctness(endpoint, CARDS_IO, "int main(){ for(;;); }", timeout=1, language="cpp")
    assert results == [-3] * n and meta[0]["status"] == "timeout", meta
    results, meta = verl.check_correctness(endpoint, CARDS_IO, "int main(){ return 2; }", language="cpp")
    assert results == [-2] * n and meta[0]["status"] == "runtime_error", meta


@contextmanager
def _serving(config: ServeConfig) -> Iterator[tuple[str, Starlette]]:
    """``config``'s app on a free loopback port, as ``harness.serve.running`` serves it, with the
    app itself at hand (its ``state.service`` is what the test inspects)."""
    app = create_app(config)
    with socket.socket() as probe:
        probe.bind((config.host, 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=port, log_level="warning", loop=LOOP, http=HTTP))
    thread = threading.Thread(target=server.run, name="test-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.02)
    try:
        yield f"http://{config.host}:{port}", app
    finally:
        server.should_exit = True
        thread.join(60)


def test_the_service_builds_each_source_once(verl: ModuleType) -> None:
    with _serving(ServeConfig(tokens=(TOKEN,), warm_sessions=1)) as (base, app):
        built = builder(app.state.service)
        assert built.builds_run == 0
        first = _run(base, "cpp", PROGRAMS["cpp"], stdin=STDIN)
        again = _run(base, "cpp", PROGRAMS["cpp"], stdin="1\n41\n")
        assert first["run_result"]["stdout"] == SUM and again["run_result"]["stdout"] == "41\n"
        assert again["compile_result"] == first["compile_result"]
        assert built.builds_run == 1
        bad = [_run(base, "go", "package main\nfunc main() { x := 1 }") for _ in range(2)]
        assert all(r["status"] == "Failed" for r in bad) and built.builds_run == 2  # compile errors are kept too
        _run(base, "nodejs", PROGRAMS["nodejs"], stdin=STDIN)
        assert built.builds_run == 2  # nothing to build
        # verl sends every case of a program at once: they wait for one build.
        results, _ = verl.check_correctness(f"{base}/run_code?token={TOKEN}", CARDS_IO, CARDS_CPP, language="cpp")
        assert results == [True] * len(CARDS_IO["inputs"]) and built.builds_run == 3
        # Another compile_timeout is another build (the time limit is part of what was built).
        assert _run(base, "cpp", PROGRAMS["cpp"], stdin=STDIN, compile_timeout=20)["status"] == "Success"
        assert built.builds_run == 4


def test_a_build_no_sandbox_can_run_is_sandbox_error(verl: ModuleType) -> None:
    from harness import HarnessConfig
    from vmpool import PoolConfig

    broken = HarnessConfig(pool=PoolConfig(size=1, python="/nonexistent/python3", start_timeout_s=5))
    with running(ServeConfig(tokens=(TOKEN,), warm_sessions=1, harness=broken)) as base:
        reply = _run(base, "cpp", PROGRAMS["cpp"], stdin=STDIN)
        assert reply["status"] == "SandboxError" and reply["message"] and reply["run_result"] is None, reply
        io = {"inputs": [STDIN], "outputs": [SUM]}
        assert verl.check_correctness(f"{base}/run_code?token={TOKEN}", io, PROGRAMS["cpp"], language="cpp")[0] == [-1]
