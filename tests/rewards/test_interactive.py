"""Interactive problems (rewards._interactive): a testlib-style interactor beside the solution,
talking over the solution's stdin and stdout, in real sandboxes; and the verdict rules on
results made up here."""

from __future__ import annotations

import shutil
import signal

import pytest

from rewards import Checker, Grader, Outcome, Problem, StdioCase, StdioTests, find_language
from rewards._build import Build, Builder
from rewards._interactive import (
    InteractiveOutcome,
    interactive_request,
    judge_interactive,
)
from vmpool import CompanionResult, ExecResult, Limits, Status

needs_cxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is installed by make test")

LIMITS = Limits(wall_s=5.0, cpu_s=2.0, memory_mb=256)
SECRET = "123456789\n"

# Guess the number (1..10^9): the secret is the input file's; each guess gets "<" (the secret is
# smaller), ">" (larger) or "="; 30 guesses at most. testlib's exit codes: 0 ok, 1 wa, 2 pe, 3 fail.
INTERACTOR = r"""
#include <cstdio>
#include <cstdlib>
#include <cerrno>
int main(int argc, char **argv) {
    if (argc < 3) return 3;
    FILE *in = fopen(argv[1], "r");
    long long secret;
    if (!in || fscanf(in, "%lld", &secret) != 1) { fprintf(stderr, "bad input file\n"); return 3; }
    FILE *out = fopen(argv[2], "w");
    if (!out) return 3;
    for (int i = 1; i <= 30; i++) {
        char token[64];
        if (scanf("%63s", token) != 1) { fprintf(stderr, "no guess %d\n", i); return 1; }
        char *end; errno = 0;
        long long guess = strtoll(token, &end, 10);
        if (*end || errno) { fprintf(stderr, "not a number: %s\n", token); return 2; }
        if (guess == secret) {
            printf("=\n"); fflush(stdout);
            fprintf(out, "%d\n", i); fprintf(stderr, "guessed in %d\n", i);
            return 0;
        }
        printf(guess > secret ? "<\n" : ">\n"); fflush(stdout);
    }
    fprintf(stderr, "too many guesses\n");
    return 1;
}
"""

# An interactor that goes wrong the way its input says, after the first guess.
BROKEN_INTERACTOR = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
int main(int argc, char **argv) {
    char mode[16] = "";
    FILE *in = fopen(argv[1], "r");
    if (!in || fscanf(in, "%15s", mode) != 1) return 3;
    long long guess; if (scanf("%lld", &guess) != 1) return 1;
    fprintf(stderr, "going %s\n", mode);
    if (!strcmp(mode, "crash")) abort();
    if (!strcmp(mode, "fail")) return 3;
    return 7;
}
"""

# The same game in Python: a non-native interactor, started by its language's run command.
PY_INTERACTOR = """
import sys
secret = int(open(sys.argv[1]).read())
for i in range(1, 31):
    line = sys.stdin.readline()
    if not line:
        sys.exit(1)
    guess = int(line)
    if guess == secret:
        print("=", flush=True)
        open(sys.argv[2], "w").write(f"{i}\\n")
        sys.exit(0)
    print("<" if guess > secret else ">", flush=True)
sys.exit(1)
"""

CPP_SOLUTION = r"""
#include <cstdio>
int main() {
    long long lo = 1, hi = 1000000000;
    while (lo <= hi) {
        long long mid = (lo + hi) / 2;
        printf("%lld\n", mid); fflush(stdout);
        char r[8];
        if (scanf("%7s", r) != 1) return 1;
        if (r[0] == '=') return 0;
        if (r[0] == '<') hi = mid - 1; else lo = mid + 1;
    }
    return 0;
}
"""

# Binary search over [1, 1e9]; ``AFTER_ANSWER`` marks where a variant acts on each answer.
_SEARCH = """
lo, hi = 1, 10**9
while lo <= hi:
    mid = (lo + hi) // 2
    print(mid, flush=True)
    r = input().strip()
    AFTER_ANSWER
    if r == "=":
        break
    if r == "<":
        hi = mid - 1
    else:
        lo = mid + 1
"""
PY_SOLUTION = _SEARCH.replace("AFTER_ANSWER", "pass")

JS_SOLUTION = """
const readline = require('readline');
const rl = readline.createInterface({input: process.stdin});
let lo = 1, hi = 1e9, mid = 0;
function ask() { mid = Math.floor((lo + hi) / 2); process.stdout.write(mid + '\\n'); }
rl.on('line', (r) => {
    r = r.trim();
    if (r === '=') { rl.close(); return; }
    if (r === '<') hi = mid - 1; else lo = mid + 1;
    ask();
});
ask();
"""

LINEAR = """
i = 1
while True:
    print(i, flush=True)
    if input().strip() == "=":
        break
    i += 1
"""

SLEEPER = "import time\nprint(500000000, flush=True)\ntime.sleep(60)\n"  # one guess, then stops reading

FLOOD_NUMBERS = "import sys\ni = 1\nwhile True:\n    sys.stdout.write(f'{i}\\n')\n    i += 1\n"  # never reads
FLOOD_GARBAGE = r"""
#include <cstdio>
#include <cstring>
int main() { char buf[1 << 16]; memset(buf, 'x', sizeof buf); for (;;) fwrite(buf, 1, sizeof buf, stdout); }
"""

# Tries to reach the interactor (its files, its process) once it answers, then plays fairly.
SPY = r"""
import os, signal, sys
def note(what):
    print(what, file=sys.stderr, flush=True)
tried = []
def spy():
    if tried:
        return
    tried.append(1)
    dirs = [d for d in os.listdir("/tmp") if d.startswith("interactor-")]
    note(f"dirs {len(dirs)}")
    for d in dirs:
        for attempt in (lambda: os.listdir("/tmp/" + d), lambda: open(f"/tmp/{d}/input").read(),
                        lambda: open(f"/tmp/{d}/input", "w").write("1\n"),
                        lambda: os.rename(f"/tmp/{d}", "/tmp/mine")):
            try:
                attempt()
                note("GOT IN")
            except OSError as exc:
                note(f"refused {type(exc).__name__}")
    pids = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{p}/cmdline", "rb").read().endswith(b"input\0output\0"):
                pids.append(int(p))
        except OSError:
            pass
    note(f"pids {len(pids)}")
    for pid in pids:
        for attempt in (lambda: open(f"/proc/{pid}/cwd/input").read(), lambda: os.listdir(f"/proc/{pid}/fd"),
                        lambda: os.kill(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGSTOP)):
            try:
                attempt()
                note("GOT IN")
            except OSError as exc:
                note(f"refused {type(exc).__name__}")
""" + _SEARCH.replace("AFTER_ANSWER", "spy()")


@pytest.fixture(scope="module")
def builder() -> Builder:
    return Builder()


def _build(pool, builder: Builder, language: str, source: str) -> Build:
    lang = find_language(language)
    assert lang is not None
    build = builder.build_all(pool.map, [(lang, source)])[builder.key(lang, source)]
    assert build.ok, build.error
    return build


def _play(pool, interactor: Build, solution: Build, test_input: str = SECRET, limits: Limits = LIMITS):
    res = pool.run(interactive_request(interactor, solution, test_input, limits))
    return judge_interactive(res), res


@pytest.fixture(scope="module")
def interactor(pool, builder: Builder) -> Build:
    return _build(pool, builder, "cpp", INTERACTOR)


@needs_cxx
def test_a_binary_search_in_cpp_is_accepted(pool, builder, interactor) -> None:
    verdict, res = _play(pool, interactor, _build(pool, builder, "cpp", CPP_SOLUTION))
    assert verdict.outcome is InteractiveOutcome.ACCEPTED and verdict.passed is True, (verdict, res)
    assert verdict.interactor_exit == 0 and int(verdict.output) <= 30  # the interactor's output file
    assert "guessed in" in verdict.message
    assert res.stdout == ""  # what the solution printed went to the interactor


@needs_cxx
@pytest.mark.parametrize("secret", ["1\n", "1000000000\n", "777\n"])
def test_a_binary_search_in_python_code_is_accepted(pool, builder, interactor, secret) -> None:
    solution = _build(pool, builder, "python", PY_SOLUTION)
    verdict, res = _play(pool, interactor, solution, secret)
    assert res.companion is not None
    assert verdict.outcome is InteractiveOutcome.ACCEPTED, (verdict, res)


@needs_cxx
@pytest.mark.skipif(shutil.which("node") is None, reason="node is installed by make test")
def test_a_solution_run_by_its_languages_command_is_accepted(pool, builder, interactor) -> None:
    verdict, res = _play(pool, interactor, _build(pool, builder, "javascript", JS_SOLUTION),
                         limits=Limits(wall_s=10.0, cpu_s=4.0, memory_mb=256))
    assert verdict.outcome is InteractiveOutcome.ACCEPTED, (verdict, res)


@needs_cxx
def test_an_interactor_in_python_runs_by_its_command(pool, builder) -> None:
    py_interactor = _build(pool, builder, "python", PY_INTERACTOR)
    verdict, res = _play(pool, py_interactor, _build(pool, builder, "cpp", CPP_SOLUTION))
    assert verdict.outcome is InteractiveOutcome.ACCEPTED, (verdict, res)
    verdict, res = _play(pool, py_interactor, _build(pool, builder, "python", LINEAR))
    assert verdict.outcome is InteractiveOutcome.WRONG_ANSWER, (verdict, res)


@needs_cxx
def test_a_solution_that_guesses_badly_gets_wrong_answer(pool, builder, interactor) -> None:
    verdict, res = _play(pool, interactor, _build(pool, builder, "python", LINEAR))
    assert verdict.outcome is InteractiveOutcome.WRONG_ANSWER and verdict.passed is False, (verdict, res)
    assert verdict.interactor_exit == 1 and "too many guesses" in verdict.message
    # A small secret is found within the 30 guesses: the same solution passes.
    assert _play(pool, interactor, _build(pool, builder, "python", LINEAR), "17\n")[0].passed is True


@needs_cxx
def test_a_solution_that_stops_reading_times_out_at_the_wall_backstop(pool, builder, interactor) -> None:
    limits = Limits(wall_s=2.0, cpu_s=1.0, memory_mb=256)
    verdict, res = _play(pool, interactor, _build(pool, builder, "python", SLEEPER), limits=limits)
    assert verdict.outcome is InteractiveOutcome.TIMEOUT and verdict.passed is False, (verdict, res)
    assert res.timeout_by == "wall" and res.wall_s < limits.wall_s + 2


@needs_cxx
@pytest.mark.parametrize("language, flood", [("python", FLOOD_NUMBERS), ("cpp", FLOOD_GARBAGE)],
                         ids=["numbers", "garbage"])
def test_a_solution_that_floods_its_output_never_passes(pool, builder, interactor, language, flood) -> None:
    verdict, res = _play(pool, interactor, _build(pool, builder, language, flood))
    assert verdict.passed is False and verdict.outcome is not InteractiveOutcome.ACCEPTED, (verdict, res)
    expected = {"python": InteractiveOutcome.WRONG_ANSWER, "cpp": InteractiveOutcome.PRESENTATION_ERROR}[language]
    assert verdict.outcome is expected and res.wall_s < LIMITS.wall_s, (verdict, res)


@needs_cxx
def test_a_solution_cannot_reach_the_interactors_files_or_process(pool, builder, interactor) -> None:
    verdict, res = _play(pool, interactor, _build(pool, builder, "python", SPY))
    assert "GOT IN" not in res.stderr, res.stderr
    assert "dirs 1" in res.stderr and "pids 1" in res.stderr, res.stderr  # it did find them
    assert res.stderr.count("refused") == 8, res.stderr
    assert verdict.outcome is InteractiveOutcome.ACCEPTED, (verdict, res)  # judged on its answers


@needs_cxx
@pytest.mark.parametrize("mode", ["crash", "fail", "odd"])
def test_a_failing_interactor_is_a_judge_failure_never_a_pass(pool, builder, mode) -> None:
    broken = _build(pool, builder, "cpp", BROKEN_INTERACTOR)
    verdict, res = _play(pool, broken, _build(pool, builder, "cpp", CPP_SOLUTION), f"{mode}\n")
    assert verdict.outcome is InteractiveOutcome.JUDGE_FAILURE, (verdict, res)
    assert verdict.passed is None and verdict.infrastructure
    assert f"going {mode}" in verdict.message
    if mode == "crash":
        assert verdict.interactor_signal == signal.SIGABRT and verdict.interactor_exit is None


@needs_cxx
def test_the_interactor_never_reaches_the_solutions_request(interactor) -> None:
    py = find_language("python")
    assert py is not None
    solution = Build(py, True, {"main.py": PY_SOLUTION.encode()})
    req = interactive_request(interactor, solution, SECRET, LIMITS)
    assert req.interactive and req.companion is not None and req.code == PY_SOLUTION
    assert not req.files and not req.stdin  # the interactor and the input travel to the companion only
    assert SECRET.strip() in req.companion.stdin
    with pytest.raises(ValueError, match="not built"):
        interactive_request(Build(py, False, error="nope"), solution, SECRET, LIMITS)


# ------------------------------------------------------------------ the verdict rules, on made-up results
def _result(status: Status = Status.OK, report: bytes = b"", **kw: object) -> ExecResult:
    return ExecResult(status=status, report=report, companion=CompanionResult(exit_code=0), **kw)  # type: ignore[arg-type]


def _said(code: int | None, sig: int | None = None) -> bytes:
    import json
    return json.dumps({"exit_code": code, "signal": sig, "stderr": "said", "output": ""}).encode()


@pytest.mark.parametrize("code, outcome", [
    (0, InteractiveOutcome.ACCEPTED), (1, InteractiveOutcome.WRONG_ANSWER),
    (2, InteractiveOutcome.PRESENTATION_ERROR), (3, InteractiveOutcome.JUDGE_FAILURE),
    (4, InteractiveOutcome.JUDGE_FAILURE), (7, InteractiveOutcome.JUDGE_FAILURE),
    (255, InteractiveOutcome.JUDGE_FAILURE)])
def test_testlibs_exit_codes(code: int, outcome: InteractiveOutcome) -> None:
    verdict = judge_interactive(_result(report=_said(code)))
    assert verdict.outcome is outcome and verdict.interactor_exit == code
    assert verdict.passed is (True if code == 0 else False if code in (1, 2) else None)


def test_a_missing_or_broken_report_or_a_killed_interactor_is_a_judge_failure() -> None:
    for report in (b"", b"not json", b"[1]", _said(None, 9), _said(None)):
        verdict = judge_interactive(_result(report=report))
        assert verdict.outcome is InteractiveOutcome.JUDGE_FAILURE and verdict.passed is None, report


def test_the_solutions_own_limits_come_first() -> None:
    for status, outcome in ((Status.TIMEOUT, InteractiveOutcome.TIMEOUT),
                            (Status.MEMORY_LIMIT, InteractiveOutcome.MEMORY_LIMIT),
                            (Status.OUTPUT_LIMIT, InteractiveOutcome.OUTPUT_LIMIT),
                            (Status.SANDBOX_KILLED, InteractiveOutcome.SANDBOX_KILLED)):
        for report in (b"", _said(0), _said(None, 9)):  # no report: the backstop killed the companion
            verdict = judge_interactive(_result(status, report))
            assert verdict.outcome is outcome and verdict.passed is False
    verdict = judge_interactive(_result(Status.SANDBOX_ERROR))
    assert verdict.outcome is InteractiveOutcome.SANDBOX_ERROR and verdict.passed is None


def test_a_crashed_solution_fails_unless_the_interactor_failed_or_hung_up_first() -> None:
    crash = judge_interactive(_result(Status.RUNTIME_ERROR, _said(0), exit_code=1, stderr="Traceback"))
    assert crash.outcome is InteractiveOutcome.RUNTIME_ERROR and crash.passed is False
    assert judge_interactive(_result(Status.RUNTIME_ERROR, _said(3), exit_code=1)).passed is None
    hung_up = judge_interactive(_result(Status.RUNTIME_ERROR, _said(1), signal=int(signal.SIGPIPE)))
    assert hung_up.outcome is InteractiveOutcome.WRONG_ANSWER
    # Python ignores SIGPIPE: its write to the closed link raises instead (seen in CI, a race)
    reset = judge_interactive(_result(Status.RUNTIME_ERROR, _said(1), exit_code=1,
                                      stderr="ConnectionResetError: [Errno 104] Connection reset by peer"))
    assert reset.outcome is InteractiveOutcome.WRONG_ANSWER and reset.passed is False


# ---------------------------------------------------------------- through the Grader
GUESS = Problem(task_id="guess", time_limit_s=2.0, tests=StdioTests(
    cases=(StdioCase("1\n", ""), StdioCase("777\n", ""), StdioCase("1000000000\n", "")),
    interactor=Checker(INTERACTOR, "cpp")))


def test_an_interactive_problem_graded_in_any_language(pool) -> None:
    grader = Grader(pool)
    verdicts = grader.grade_batch([(GUESS, f"```cpp\n{CPP_SOLUTION}\n```"), (GUESS, f"```python\n{PY_SOLUTION}\n```"),
                                   (GUESS, f"```python\n{LINEAR}\n```"), (GUESS, f"```python\n{SLEEPER}\n```"),
                                   (GUESS, "```python\ndef broken(:\n```")])
    right_cpp, right_py, linear, sleeper, broken = verdicts
    assert right_cpp.passed and right_py.passed and right_py.tests_passed == 3, (right_cpp, right_py)
    assert linear.passed is False and linear.outcome is Outcome.FAILED and "wrong answer" in linear.error
    assert linear.tests_passed == 1  # the secret 1 is its first guess
    assert sleeper.passed is False and sleeper.outcome is Outcome.TIMEOUT
    assert broken.outcome is Outcome.SYNTAX_ERROR


def test_a_failing_interactor_voids_the_sample(pool) -> None:
    broken = Problem(task_id="guess", tests=StdioTests(cases=GUESS.tests.cases[:1],
                                                       interactor=Checker(BROKEN_INTERACTOR, "cpp")))
    verdict = Grader(pool).grade(broken, f"```cpp\n{CPP_SOLUTION}\n```")
    assert verdict.passed is None and verdict.outcome is Outcome.SANDBOX_ERROR and "interactor" in verdict.error
    unbuilt = Problem(task_id="guess", tests=StdioTests(cases=GUESS.tests.cases[:1],
                                                        interactor=Checker("int main( {", "cpp")))
    assert Grader(pool).grade(unbuilt, f"```cpp\n{CPP_SOLUTION}\n```").passed is None
