"""``ExecRequest.command``: a program of the sandbox's (a compiler, a compiled binary) run in
place of Python code, under the same uid, limits and isolation; ``Limits.memory_mode``."""

from __future__ import annotations

import shutil

import pytest

from vmpool import ExecRequest, Limits, Status

BUILD = Limits(wall_s=60, cpu_s=30, memory_mb=1024, memory_mode="resident", output_bytes=16 << 20,
               file_size_bytes=64 << 20)
ADD = "#include <stdio.h>\nint main(void){ long a, b; if (scanf(\"%ld %ld\", &a, &b) != 2) return 3;" \
      " printf(\"%ld\\n\", a + b); return 0; }\n"

needs_cc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is installed by make test")


def _build(pool, source: str, *flags: str) -> bytes:
    res = pool.run(ExecRequest(code="", command=["gcc", "-O2", *flags, "-o", "prog", "main.c"],
                               files={"main.c": source}, fetch_files=["prog"], limits=BUILD))
    assert res.status is Status.OK and "prog" in res.files, res.stderr
    return res.files["prog"]


def _run(pool, binary: bytes, stdin: str = "", **limits) -> object:
    return pool.run(ExecRequest(code="", command=["./prog"], files={"prog": binary}, executable=["prog"],
                                stdin=stdin, limits=Limits(**{"wall_s": 10.0, "cpu_s": 2.0, **limits})))


@needs_cc
def test_a_compiled_program_runs_as_the_program_with_its_stdin(pool) -> None:
    binary = _build(pool, ADD)
    res = _run(pool, binary, "2 40\n")
    assert res.status is Status.OK and res.stdout == "42\n"
    res = _run(pool, binary, "nope")
    assert res.status is Status.RUNTIME_ERROR and res.exit_code == 3


@needs_cc
def test_the_binary_runs_as_the_program_uid_with_no_network_and_the_work_dir_only(pool) -> None:
    spy = ("#include <stdio.h>\n#include <unistd.h>\n#include <sys/socket.h>\n#include <netinet/in.h>\n"
           "int main(void){ printf(\"uid %d\\n\", (int)getuid());"
           " FILE *f = fopen(\"/usr/evil\", \"w\"); printf(\"usr %s\\n\", f ? \"open\" : \"refused\");"
           " int s = socket(AF_INET, SOCK_STREAM, 0); struct sockaddr_in a = {0}; a.sin_family = AF_INET;"
           " a.sin_port = htons(80); a.sin_addr.s_addr = htonl(0x01010101);"
           " printf(\"net %s\\n\", connect(s, (struct sockaddr*)&a, sizeof a) == 0 ? \"open\" : \"refused\"); }\n")
    res = _run(pool, _build(pool, spy))
    assert res.status is Status.OK, res.stderr
    assert "usr refused" in res.stdout and "net refused" in res.stdout
    probe = pool.run(ExecRequest(code="import os; print('uid', os.getuid())"))
    assert probe.stdout.split()[1] == res.stdout.split()[1]  # the same uid as a Python program


def test_a_program_that_cannot_start_exits_127_saying_why(pool) -> None:
    res = pool.run(ExecRequest(code="", command=["no-such-compiler", "x"]))
    assert res.status is Status.RUNTIME_ERROR and res.exit_code == 127
    assert "cannot execute no-such-compiler" in res.stderr
    res = pool.run(ExecRequest(code="", command=["./data"], files={"data": "not a program"}))
    assert res.exit_code == 127 and "Permission denied" in res.stderr  # not marked executable


def test_env_reaches_commands_and_python_programs(pool) -> None:
    res = pool.run(ExecRequest(code="", command=["/bin/sh", "-c", "echo $GREETING $HOME"], env={"GREETING": "hi"}))
    assert res.stdout == "hi /tmp\n"
    res = pool.run(ExecRequest(code="import os; print(os.environ['GREETING'])", env={"GREETING": "hi"}))
    assert res.stdout == "hi\n"


@needs_cc
def test_resident_memory_mode_stops_a_memory_bomb_and_its_children(pool) -> None:
    bomb = ("#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\n"
            "int main(void){ fork(); for (;;) { char *p = malloc(8 << 20); if (p) memset(p, 1, 8 << 20); } }\n")
    res = _run(pool, _build(pool, bomb), memory_mb=128, memory_mode="resident", wall_s=30.0, cpu_s=20.0)
    assert res.status is Status.MEMORY_LIMIT
    assert pool.run(ExecRequest(code="print('next')")).stdout == "next\n"  # the sandbox goes on


@needs_cc
def test_address_space_mode_still_refuses_the_allocation_itself(pool) -> None:
    big = ("#include <stdlib.h>\n#include <stdio.h>\n"
           "int main(void){ void *p = malloc(300u << 20); puts(p ? \"got\" : \"refused\"); return 0; }\n")
    binary = _build(pool, big)
    assert _run(pool, binary, memory_mb=128).stdout == "refused\n"
    assert _run(pool, binary, memory_mb=128, memory_mode="resident").stdout == "got\n"  # untouched pages are free


@pytest.mark.skipif(shutil.which("javac") is None, reason="the JDK is installed by make test")
def test_the_jvm_runs_under_a_resident_limit(pool) -> None:
    main = "public class Main { public static void main(String[] a) { System.out.println(6 * 7); } }\n"
    built = pool.run(ExecRequest(code="", command=["javac", "-d", ".", "Main.java"], files={"Main.java": main},
                                 fetch_files=["Main.class"], limits=BUILD))
    assert built.status is Status.OK, built.stderr
    res = pool.run(ExecRequest(code="", command=["java", "-Xmx128m", "-XX:+UseSerialGC", "-cp", ".", "Main"],
                               files={"Main.class": built.files["Main.class"]},
                               limits=Limits(memory_mb=256, memory_mode="resident", max_processes=64)))
    assert res.status is Status.OK and res.stdout == "42\n", res.stderr


def test_requests_that_make_no_sense_are_refused() -> None:
    with pytest.raises(ValueError, match="replaces code"):
        ExecRequest(code="print(1)", command=["true"])
    with pytest.raises(ValueError, match="not in files"):
        ExecRequest(code="", command=["./a"], executable=["a"])
    with pytest.raises(ValueError, match="env"):
        ExecRequest(code="", command=["true"], env={"A=B": "c"})
    with pytest.raises(ValueError, match="sequence of strings"):
        ExecRequest(code="", command="ls -l")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="memory_mode"):
        Limits(memory_mode="rss")


@needs_cc
def test_resident_mode_counts_a_compilers_children_against_the_cpu_limit(pool) -> None:
    # cc1plus does the work under the g++ driver: without counting it, only RLIMIT_CPU (a second
    # past the limit) would stop it, and the driver would exit 4 ("internal compiler error").
    heavy = ("constexpr long f(long n) { long s = 0; for (long i = 0; i < n; i++) s += i % 7; return s; }\n"
             "constexpr long x = f(200000000);\nint main() { return x == 0; }\n")
    res = pool.run(ExecRequest(code="", command=["g++", "-fconstexpr-loop-limit=2000000000",
                                                 "-fconstexpr-ops-limit=4000000000000", "-o", "prog", "main.cpp"],
                               files={"main.cpp": heavy},
                               limits=Limits(wall_s=30, cpu_s=1.0, memory_mb=1024, memory_mode="resident")))
    assert res.status is Status.TIMEOUT and res.timeout_by == "cpu", (res.status, res.stderr[-300:])
    burner = "import os\nfor _ in range(3):\n    if os.fork() == 0:\n        while True: pass\nos.wait()\n"
    res = pool.run(ExecRequest(code=burner, limits=Limits(wall_s=30, cpu_s=1.0, memory_mode="resident")))
    assert res.status is Status.TIMEOUT and res.timeout_by == "cpu" and res.wall_s < 10
