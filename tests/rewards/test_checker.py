"""Special judges: a checker of our own (C++ and Python) decides cases with several right
answers, by testlib's exit codes; partial credit; a failing checker is infrastructure; the
solution never reaches the checker's files."""

from __future__ import annotations

import shutil

import pytest

from rewards import (
    Checker,
    Grader,
    Outcome,
    Problem,
    RewardConfig,
    StdioCase,
    StdioTests,
    compute_reward,
    problem_from_dict,
    problem_to_dict,
)

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is installed by make test")

# "Print two different positions (1-based) of numbers that sum to s": many right answers.
PAIR_CHECKER = r"""
#include <fstream>
#include <vector>
#include <cstdio>
int main(int argc, char **argv) {
    if (argc < 4) return 3;
    std::ifstream in(argv[1]), out(argv[2]), ans(argv[3]);
    long n, s; if (!(in >> n >> s)) return 3;
    std::vector<long> a(n); for (auto &x : a) in >> x;
    long want_i, want_j; if (!(ans >> want_i >> want_j)) return 3;   // the reference has a pair
    long i, j;
    if (!(out >> i >> j)) { fprintf(stderr, "expected two positions"); return 2; }
    std::string extra; if (out >> extra) { fprintf(stderr, "extra output"); return 2; }
    if (i < 1 || j < 1 || i > n || j > n || i == j) { fprintf(stderr, "positions out of range"); return 1; }
    if (a[i - 1] + a[j - 1] != s) { fprintf(stderr, "%ld + %ld != %ld", a[i - 1], a[j - 1], s); return 1; }
    return 0;
}
"""
CASES = (StdioCase("4 10\n1 9 3 7\n", "1 2\n"), StdioCase("5 8\n4 4 1 7 2\n", "1 2\n"),
         StdioCase("3 5\n2 3 2\n", "1 2\n"))
PAIR = Problem(task_id="pair", tests=StdioTests(cases=CASES, checker=Checker(PAIR_CHECKER, "cpp")))

# Finds the *last* pair (the reference prints the first): right, though its output differs.
LAST_PAIR = ("n, s = map(int, input().split())\na = list(map(int, input().split()))\n"
             "print(*next((i + 1, j + 1) for i in range(n - 1, -1, -1) for j in range(i - 1, -1, -1)"
             " if a[i] + a[j] == s))\n")


@pytest.fixture(scope="module")
def grader(pool) -> Grader:
    return Grader(pool)


def test_a_right_answer_other_than_the_reference_passes(grader: Grader) -> None:
    verdict = grader.grade(PAIR, f"```python\n{LAST_PAIR}```")
    assert verdict.passed and verdict.tests_passed == 3 and verdict.credit == 3.0, verdict
    cpp = ("#include <cstdio>\nint main(){ long n, s; scanf(\"%ld %ld\", &n, &s); long a[100];"
           " for (int i = 0; i < n; i++) scanf(\"%ld\", &a[i]);"
           " for (int i = 0; i < n; i++) for (int j = i + 1; j < n; j++)"
           " if (a[i] + a[j] == s) { printf(\"%d\\n%d\\n\", j + 1, i + 1); return 0; } }")
    assert grader.grade(PAIR, f"```cpp\n{cpp}\n```").passed  # another language, another layout


def test_wrong_and_malformed_answers_fail_with_the_checkers_words(grader: Grader) -> None:
    verdict = grader.grade(PAIR, "```python\ninput(); input(); print(1, 1)\n```")
    assert verdict.passed is False and verdict.outcome is Outcome.FAILED
    assert "wrong answer" in verdict.error and "out of range" in verdict.error
    verdict = grader.grade(PAIR, "```python\ninput(); input(); print('1 2 3')\n```")
    assert verdict.passed is False and "presentation error" in verdict.error and "extra output" in verdict.error
    assert compute_reward(verdict) == 0.0


def test_the_solution_never_sees_the_answer_file(grader: Grader) -> None:
    peek = ("import os\ntry:\n    print(open('answer').read())\nexcept OSError:\n"
            "    print(sorted(os.listdir('.')) or 'nothing')\n")
    verdict = grader.grade(PAIR, f"```python\n{peek}```")
    assert verdict.passed is False and verdict.outcome is Outcome.FAILED
    flood = "print('1 2 ' * 10**7)"
    verdict = grader.grade(PAIR, f"```python\n{flood}\n```")
    assert verdict.passed is False and verdict.outcome is Outcome.OUTPUT_LIMIT  # never handed to the checker


def test_points_are_partial_credit(grader: Grader) -> None:
    # credit: the share of the three numbers printed in sorted order
    checker = ("import sys\n"
               "want = open(sys.argv[3]).read().split()\n"
               "got = open(sys.argv[2]).read().split()\n"
               "right = sum(1 for w, g in zip(want, got) if w == g)\n"
               "if right == len(want):\n    sys.exit(0)\n"
               "print(f'points {right / len(want)}', file=sys.stderr)\nsys.exit(7)\n")
    problem = Problem(task_id="sort3", tests=StdioTests(cases=(StdioCase("3 1 2\n", "1 2 3\n"),),
                                                        checker=Checker(checker, "python")))
    half = grader.grade(problem, "```python\nprint('1 3 2')\n```")
    assert half.passed is False and half.credit == pytest.approx(1 / 3)
    assert compute_reward(half, RewardConfig(kind="fraction")) == pytest.approx(1 / 3)
    assert grader.grade(problem, "```python\nprint(*sorted(map(int, input().split())))\n```").passed


@pytest.mark.parametrize("checker", [
    Checker("int main() { return 3; }", "cpp"),                       # testlib's fail
    Checker("int main() { int *p = 0; return *p; }", "cpp"),          # a crash
    Checker("int main() { return 5; }", "cpp"),                       # a code testlib never uses
    Checker("import sys\nprint('points 7')\nsys.exit(7)", "python"),  # points out of range
    Checker("int main( {", "cpp"),                                    # it does not build
    Checker("while True:\n    pass\n", "python"),                     # it never ends
])
def test_a_checker_that_fails_is_infrastructure_never_a_pass(grader: Grader, checker: Checker) -> None:
    problem = Problem(task_id="broken", tests=StdioTests(cases=CASES[:1], checker=checker))
    verdict = grader.grade(problem, f"```python\n{LAST_PAIR}```")
    assert verdict.passed is None and verdict.outcome is Outcome.SANDBOX_ERROR, verdict
    assert "checker" in verdict.error
    assert compute_reward(verdict) is None


def test_the_native_schema_carries_the_checker() -> None:
    row = problem_to_dict(PAIR)
    assert row["tests"]["checker"] == {"source": PAIR_CHECKER, "language": "cpp"}
    assert problem_from_dict(row) == PAIR
    with pytest.raises(ValueError, match="tests.checker.language"):
        problem_from_dict({**row, "tests": {**row["tests"], "checker": {"source": "x", "language": "cobol"}}})
