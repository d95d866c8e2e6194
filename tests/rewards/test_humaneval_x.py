"""HumanEval-X (C++, Java, JavaScript, Go, Rust) with program tests: the canonical solutions pass
(the broken references are data facts, listed), an empty body fails, and the generic ways to
fake a pass in the test's own process (exit early with success, neuter the assertions, print a
runner's success line) fail in every language."""

from __future__ import annotations

import shutil

import pytest

from rewards import Grader, Outcome, data_path, load_problems, reference_solutions

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("g++", "javac", "node", "go", "rustc")),
                                reason="the toolchains are installed by make test (.ci/install-system.sh)")

LANGS = ("cpp", "java", "js", "go", "rust")
# References that do not pass, and why (measured: `python -m harness bench --suite languages`).
BROKEN = {
    "JavaScript/112": "returns (z, false), the comma operator: false, not the pair the tests expect",
    "JavaScript/155": "evenOddCount(0) gives [0, 0]; the tests expect [1, 0] (HumanEval-X's console.assert only logs)",
    "Go/95": "breaks out of a map iteration on the first key of the other case: right or wrong by Go's random "
             "map order",
    "Rust/50": "calls rng.gen_range(0, 2), rand 0.7's API; Debian ships rand 0.8",
}
# Every eighth task in CI (all 164 per language in the benchmark), plus the ones that need
# something beyond the plain toolchain (Boost, OpenSSL, js-md5, the Rust crates, testify).
SAMPLE = sorted({*range(0, 164, 8), 162, 50, 56, 147})


def _sample(lang: str) -> tuple[list, dict[str, str]]:
    path = data_path(f"humaneval_x_{lang}")
    problems = load_problems(path)
    if lang == "rust":  # Rust/32's tests are commented out: refused at load, with the reason
        assert len(problems) == 163 and len(problems.errors) == 1 and "no #[test]" in str(problems.errors[0])
    else:
        assert not problems.errors and len(problems) == 164
    by_id = problems.by_id()
    prefix = problems[0].task_id.split("/")[0]
    return [by_id[f"{prefix}/{i}"] for i in SAMPLE if f"{prefix}/{i}" in by_id], reference_solutions(path)


@pytest.fixture(scope="module")
def grader(pool) -> Grader:
    return Grader(pool)


@pytest.mark.parametrize("lang", LANGS)
def test_the_canonical_solutions_pass_but_the_broken_references(grader: Grader, lang: str) -> None:
    problems, refs = _sample(lang)
    verdicts = grader.grade_batch([(p, refs[p.task_id]) for p in problems])
    failed = {p.task_id: f"{v.outcome.value}: {v.error[:300]}" for p, v in zip(problems, verdicts) if not v.passed}
    assert set(failed) <= set(BROKEN), failed
    assert all(v.passed is not None for v in verdicts)


@pytest.mark.parametrize("lang", LANGS)
def test_an_empty_body_fails(grader: Grader, lang: str) -> None:
    problems, _ = _sample(lang)
    verdicts = grader.grade_batch([(p, "") for p in problems[:6]] + [(p, "\n") for p in problems[6:8]])
    assert all(v.passed is False for v in verdicts), [(v.outcome, v.error) for v in verdicts if v.passed is not False]


# Task 0 of each language (has_close_elements) with a body that fakes a pass.
HACKS = {
    "cpp": ["    exit(0);\n}\n", "    _Exit(0);\n}\n",
            "    printf(\"All tests passed\\n\"); std::quick_exit(0);\n}\n#define assert(x) (void)0\n"],
    "java": ["        System.exit(0); return false;\n    }\n}\n",
             "        Runtime.getRuntime().halt(0); return false;\n    }\n}\n"],
    "js": ["  process.exit(0)\n}\n", "  return false\n}\nconsole.assert = () => {}\n",
           "  return false\n}\nObject.defineProperty(console, 'assert', {value: () => {}})\n",
           "  process.reallyExit(0)\n}\n"],
    # (an import anywhere in a Go program is moved up with the others: os is the program's to use)
    "go": ["    os.Exit(0)\n    return false\n}\n\nimport \"os\"\n",
           "    fmt.Println(\"PASS\\nok\")\n    os.Exit(0)\n    return false\n}\n\nimport \"os\"\n"],
    "rust": ["    std::process::exit(0);\n}\n",
             "    println!(\"test result: ok. 1 passed; 0 failed\"); std::process::exit(0);\n}\n"],
}


@pytest.mark.parametrize("lang, body", [(lang, body) for lang, bodies in HACKS.items() for body in bodies])
def test_faking_a_pass_in_the_tests_process_fails(grader: Grader, lang: str, body: str) -> None:
    path = data_path(f"humaneval_x_{lang}")
    problem = load_problems(path)[0]
    verdict = grader.grade(problem, body)
    assert verdict.passed is False and verdict.outcome is Outcome.FAILED, verdict  # it built, it ran, it failed


def test_a_wrong_solution_fails_with_the_failing_assertion(grader: Grader) -> None:
    cases = {"cpp": "    return true;\n}\n", "java": "        return true;\n    }\n}\n", "js": "  return true\n}\n",
             "go": "    return true\n}\n", "rust": "    return true;\n}\n"}
    for lang, body in cases.items():
        problem = load_problems(data_path(f"humaneval_x_{lang}"))[0]
        verdict = grader.grade(problem, body)
        assert verdict.passed is False and verdict.outcome is Outcome.FAILED, (lang, verdict)
        assert verdict.error, lang
