"""Stdio problems solved in every language: built once per unique source, run per case, in the
same sandboxes under the same limits; compile errors, limits and hostile programs per language."""

from __future__ import annotations

import shutil

import pytest

from rewards import (
    Builder,
    Grader,
    Outcome,
    Problem,
    ProblemFormatError,
    StdioCase,
    StdioTests,
    compute_reward,
    data_path,
    extract_program,
    find_language,
    language_names,
    load_problems,
    problem_from_dict,
    stdout_matches,
)
from tests._sources import COMPILE_ERRORS, SUM_PROGRAMS
from vmpool import Limits

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("g++", "javac", "node", "go", "rustc")),
                                reason="the toolchains are installed by make test (.ci/install-system.sh)")

SUM = Problem(task_id="sum", time_limit_s=2.0, memory_mb=256, tests=StdioTests(cases=tuple(
    StdioCase(f"{n}\n{' '.join(map(str, range(1, n + 1)))}\n", f"{n * (n + 1) // 2}\n") for n in (1, 5, 1000))))

RIGHT = SUM_PROGRAMS
TAGS = {"c": "c", "cpp": "c++", "java": "java", "javascript": "js", "go": "go", "rust": "rs", "bash": "bash",
        "python": "python"}


def fenced(lang: str, code: str) -> str:
    return f"Here you go:\n```{TAGS.get(lang, lang)}\n{code}\n```\n"


@pytest.fixture(scope="module")
def grader(pool) -> Grader:
    return Grader(pool)


def test_every_language_passes_and_a_wrong_answer_fails(grader: Grader) -> None:
    wrong = {lang: code.replace("s+=x", "s-=x").replace("s+=d[i]", "s-=d[i]").replace("s+=sc", "s-=sc")
             .replace("s=$((s+x))", "s=$((s-x))").replace("v[1..].iter().sum()", "-v[1..].iter().sum::<i64>()")
             .replace("print(sum(", "print(-sum(")
             for lang, code in RIGHT.items()}
    items = [(SUM, fenced(lang, code)) for lang, code in RIGHT.items()]
    items += [(SUM, fenced(lang, code)) for lang, code in wrong.items()]
    verdicts = grader.grade_batch(items)
    right, bad = verdicts[:len(RIGHT)], verdicts[len(RIGHT):]
    assert [v.outcome for v in right] == [Outcome.PASSED] * len(RIGHT), [(v.outcome, v.error) for v in right]
    assert all(v.passed is False and v.outcome is Outcome.FAILED and v.tests_passed == 0 for v in bad), \
        [(v.outcome, v.error) for v in bad]
    assert set(language_names()) == set(RIGHT)


def test_each_unique_source_is_built_once_per_batch_and_then_cached(pool) -> None:
    grader = Grader(pool, builder=Builder())
    items = [(SUM, fenced("cpp", RIGHT["cpp"]))] * 4 + [(SUM, fenced("rust", RIGHT["rust"]))] * 2
    assert all(v.passed for v in grader.grade_batch(items))
    assert grader.builder.builds_run == 2  # 6 samples x 3 cases: 2 builds
    assert all(v.passed for v in grader.grade_batch(items))
    assert grader.builder.builds_run == 2  # the next batch builds nothing


@pytest.mark.parametrize("lang, code, says", [
    *COMPILE_ERRORS,
    ("javascript", "function f( { }", "SyntaxError"),
    ("bash", "if then fi (", "syntax error"),
])
def test_a_compile_error_is_its_own_outcome_with_the_compilers_words(grader: Grader, lang: str, code: str,
                                                                     says: str) -> None:
    verdict = grader.grade(SUM, fenced(lang, code))
    assert verdict.passed is False and verdict.outcome is Outcome.COMPILE_ERROR, verdict
    assert says in verdict.error and verdict.tests_passed == 0
    assert compute_reward(verdict) == 0.0


def test_a_build_that_never_ends_is_a_compile_error_under_the_compile_limits(pool) -> None:
    grader = Grader(pool, builder=Builder(Limits(wall_s=20, cpu_s=2, memory_mb=512, memory_mode="resident",
                                                 max_processes=64, output_bytes=1 << 20)))
    for source in ("#include </dev/zero>\nint main(){}", "#include \"main.cpp\"\nint main(){}"):
        verdict = grader.grade(SUM, fenced("cpp", source))
        assert verdict.passed is False and verdict.outcome is Outcome.COMPILE_ERROR, verdict
    assert Grader(pool).grade(SUM, fenced("cpp", RIGHT["cpp"])).passed


HOSTILE_C = {
    "fork bomb": ("#include <unistd.h>\nint main(){ for(;;) fork(); }", {Outcome.TIMEOUT, Outcome.RUNTIME_ERROR}),
    "memory bomb": ("#include <stdlib.h>\n#include <string.h>\nint main(){ for(;;){ char*p=(char*)malloc(1<<24);"
                    " if(!p) return 1; memset(p,1,1<<24);} }", {Outcome.MEMORY_LIMIT, Outcome.RUNTIME_ERROR}),
    "new bomb": ("#include <vector>\nint main(){ std::vector<std::vector<char>> v; for(;;) v.emplace_back(1<<24, 1); }",
                 {Outcome.MEMORY_LIMIT}),
    "infinite output": ("#include <stdio.h>\nint main(){ for(;;) puts(\"yes yes yes yes\"); }", {Outcome.OUTPUT_LIMIT}),
    "spin": ("int main(){ volatile unsigned long i = 0; for(;;) i++; }", {Outcome.TIMEOUT}),
    "sleep": ("#include <unistd.h>\nint main(){ sleep(100); }", {Outcome.TIMEOUT}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_C))
def test_hostile_native_programs_are_contained_with_the_right_status(grader: Grader, name: str) -> None:
    source, outcomes = HOSTILE_C[name]
    verdict = grader.grade(SUM, fenced("cpp", source))
    assert verdict.passed is False and verdict.outcome in outcomes, verdict
    assert grader.grade(SUM, fenced("c", RIGHT["c"])).passed  # the sandboxes go on


def test_a_native_program_cannot_write_outside_its_work_dir_nor_reach_the_network(grader: Grader) -> None:
    spy = ("#include <stdio.h>\n#include <sys/socket.h>\n#include <netinet/in.h>\n#include <arpa/inet.h>\n"
           "int main(){ const char *paths[] = {\"/usr/x\", \"/etc/x\", \"/opt/vmpool/agent.py\", \"/proc/1/mem\"};"
           " int bad = 0; for (int i = 0; i < 4; i++) { FILE *f = fopen(paths[i], \"w\"); if (f) bad++; }"
           " int s = socket(AF_INET, SOCK_STREAM, 0); struct sockaddr_in a = {0}; a.sin_family = AF_INET;"
           " a.sin_port = htons(53); inet_pton(AF_INET, \"8.8.8.8\", &a.sin_addr);"
           " if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0) bad++;"
           " FILE *o = fopen(\"mine.txt\", \"w\"); if (!o) bad++; else fclose(o);"
           " long n, x, t = 0; scanf(\"%ld\", &n); while (n--) { scanf(\"%ld\", &x); t += x; }"
           " printf(\"%ld\\n\", bad ? -1 : t); }")
    assert grader.grade(SUM, fenced("c", spy)).passed  # every escape refused, its own dir writable


@pytest.mark.parametrize("lang, bomb", [
    ("java", "import java.util.*;\npublic class Main { public static void main(String[] a) {"
             " List<long[]> l = new ArrayList<>(); for (;;) l.add(new long[1 << 20]); } }"),
    ("go", "package main\nfunc main() { var l [][]byte; for { b := make([]byte, 1<<24); for i := range b { b[i] = 1 };"
           " l = append(l, b) } }"),
    ("javascript", "const l = []; for (;;) l.push(new Array(1 << 20).fill(1.5));"),
])
def test_managed_runtimes_hit_their_memory_limit_as_memory_limit(grader: Grader, lang: str, bomb: str) -> None:
    verdict = grader.grade(SUM, fenced(lang, bomb))
    assert verdict.passed is False and verdict.outcome is Outcome.MEMORY_LIMIT, verdict


def test_a_program_that_exits_zero_early_fails_on_its_output(grader: Grader) -> None:
    verdict = grader.grade(SUM, fenced("cpp", "#include <cstdlib>\nint main(){ std::exit(0); }"))
    assert verdict.passed is False and verdict.outcome is Outcome.FAILED


def test_token_mode_takes_an_answer_split_over_lines_as_codeforces_does(grader: Grader) -> None:
    assert stdout_matches("1\n2 3\n", "1 2\n3", whitespace="tokens")
    assert not stdout_matches("1\n2 3\n", "1 2\n3", whitespace="tolerant")
    assert not stdout_matches("1 2", "1 2 3", whitespace="tokens")
    # code_contests/19 stores one test's answer a number per line, the other 100 a line per test case
    problem = load_problems(data_path("code_contests")).by_id()["code_contests/19"]
    assert isinstance(problem.tests, StdioTests) and problem.tests.whitespace == "tokens"
    solution = ("import sys\n"
                "def main():\n"
                "    data = sys.stdin.buffer.read().split(); t = int(data[0]); i = 1; out = []\n"
                "    for _ in range(t):\n"
                "        a, b, q = int(data[i]), int(data[i + 1]), int(data[i + 2]); i += 3\n"
                "        p = a * b; pre = [0] * (p + 1)\n"
                "        for x in range(p):\n"
                "            pre[x + 1] = pre[x] + ((x % a) % b != (x % b) % a)\n"
                "        f = lambda n: (n // p) * pre[p] + pre[n % p + 1]\n"
                "        ans = []\n"
                "        for _ in range(q):\n"
                "            l, r = int(data[i]), int(data[i + 1]); i += 2\n"
                "            ans.append(f(r) - f(l - 1))\n"
                "        out.append(' '.join(map(str, ans)))\n"
                "    print('\\n'.join(out))\n"
                "main()\n")
    verdict = grader.grade(problem, fenced("python", solution))
    assert verdict.passed, verdict.error


def test_a_problem_may_restrict_languages_and_names_them() -> None:
    only_py = Problem(task_id="p", tests=SUM.tests, languages=("python",))
    assert extract_program(fenced("cpp", RIGHT["cpp"]), languages=only_py.allowed_languages) is None
    assert extract_program(fenced("cpp", RIGHT["cpp"]), languages=SUM.allowed_languages)[1] == "cpp"
    assert extract_program("```\nint main(){}\n```", languages=("c",), default="c") == ("int main(){}\n", "c")
    assert extract_program({"role": "assistant", "content": "echo hi", "language": "sh"},
                           languages=("bash",)) == ("echo hi", "bash")
    assert find_language("C++").name == "cpp" and find_language("golang").name == "go"
    with pytest.raises(ProblemFormatError, match="languages"):
        problem_from_dict({"task_id": "x", "tests": {"kind": "stdio", "cases": [{"stdin": "", "stdout": ""}]},
                           "languages": ["cobol"]}, "f.jsonl", 3)
    with pytest.raises(ProblemFormatError, match="Python"):
        problem_from_dict({"task_id": "x", "tests": {"kind": "assert", "code": ["assert 1"]}, "language": "cpp"},
                          "f.jsonl", 4)


def test_no_code_in_an_allowed_language_says_which(grader: Grader) -> None:
    only_rust = Problem(task_id="p", tests=SUM.tests, languages=("rust",))
    verdict = grader.grade(only_rust, fenced("cpp", RIGHT["cpp"]))
    assert verdict.outcome is Outcome.NO_CODE and "rust" in verdict.error


def test_codecontests_in_its_own_multi_language_form(grader: Grader, tmp_path) -> None:
    import json

    from rewards import reference_solutions

    row = {"name": "1000_A. Sum", "description": "Print a + b.", "source": 2, "difficulty": 7,
           "public_tests": {"input": ["1 2\n"], "output": ["3\n"]},
           "private_tests": {"input": ["-5 5\n", "1500000000 1500000000\n"], "output": ["0\n", "3000000000\n"]},
           "generated_tests": {"input": ["7 8\n"], "output": ["15\n"]},
           "solutions": {"language": [1, 4, 2],
                         "solution": ["print input()", "import java.util.*;\npublic class Main { public static void "
                                      "main(String[] a) { Scanner s = new Scanner(System.in); "
                                      "System.out.println(s.nextLong() + s.nextLong()); } }",
                                      "#include <cstdio>\nint main(){long a,b; scanf(\"%ld %ld\",&a,&b); "
                                      "printf(\"%ld\\n\", a+b);}"]},
           "incorrect_solutions": {"language": [2], "solution": ["#include <cstdio>\nint main(){int a,b; "
                                                                  "scanf(\"%d %d\",&a,&b); printf(\"%d\\n\", a+b);}"]},
           "time_limit": {"seconds": 2, "nanos": 500000000}, "memory_limit_bytes": 256 << 20}
    path = tmp_path / "cc.jsonl"
    path.write_text(json.dumps(row) + "\n")
    problem = load_problems(path)[0]
    assert problem.task_id == "code_contests/1000_A. Sum" and problem.tests.count == 4
    assert problem.time_limit_s == 2.5 and problem.memory_mb == 256 and problem.tests.whitespace == "tokens"
    reference = reference_solutions(path)[problem.task_id]
    assert reference.startswith("```java")  # the first solution in a language run here (Python 2 is not)
    overflow = f"```cpp\n{row['incorrect_solutions']['solution'][0]}\n```"
    right, wrong = grader.grade_batch([(problem, reference), (problem, overflow)])
    assert right.passed and right.tests_passed == 4
    assert wrong.passed is False and wrong.tests_passed == 3  # int overflows on 3e9
