"""``harness bench --suite languages``: HumanEval-X per language, and build once vs build per case.

* HumanEval-X (C++, Java, JavaScript, Go, Rust; canonical solutions, ``repeat`` copies of each
  program, every copy a distinct source): graded with an empty build cache (every program
  built: programs/s and the build's CPU seconds per program), then the same batch again with
  the cache warm (no build: programs/s); the passed count of each language.
* Build once, run per case (what rewards does) against build per case (what a client that sends
  one ``/run_code`` per test case gets, verl's SandboxFusion path): a C++ solution of the bundled
  ``code_contests/19`` (101 cases), side by side in one run, cases/s and the ratio.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["LanguagesBench", "format_languages_bench", "run_languages_bench"]

LANGS = ("cpp", "java", "js", "go", "rust")
# code_contests/19 (Codeforces 1342C) in C++: prefix counts over one period a*b.
CC19 = r"""
#include <bits/stdc++.h>
int main() {
    int t; scanf("%d", &t);
    while (t--) {
        long long a, b; int q; scanf("%lld %lld %d", &a, &b, &q);
        long long p = a * b; std::vector<long long> pre(p + 1, 0);
        for (long long x = 0; x < p; x++) pre[x + 1] = pre[x] + ((x % a) % b != (x % b) % a);
        auto f = [&](long long n) { return (n / p) * pre[p] + pre[n % p + 1]; };
        for (int i = 0; i < q; i++) { long long l, r; scanf("%lld %lld", &l, &r); printf("%lld ", f(r) - f(l - 1)); }
        printf("\n");
    }
}
"""


@dataclass
class LanguageRow:
    language: str
    programs: int
    passed: int
    cold_s: float
    warm_s: float
    build_cpu_s: float

    @property
    def cold_rate(self) -> float:
        return self.programs / self.cold_s if self.cold_s else 0.0

    @property
    def warm_rate(self) -> float:
        return self.programs / self.warm_s if self.warm_s else 0.0


@dataclass
class LanguagesBench:
    rows: list[LanguageRow] = field(default_factory=list)
    cases: int = 0
    once_s: float = 0.0
    per_case_s: float = 0.0
    once_passed: bool = False
    per_case_passed: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.rows) and self.once_passed and self.per_case_passed == self.cases

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [{**asdict(r), "cold_programs_per_s": r.cold_rate, "warm_programs_per_s": r.warm_rate}
                         for r in self.rows],
                "cases": self.cases, "once_s": self.once_s, "per_case_s": self.per_case_s, "ok": self.ok}


def _copies(problems: list[Any], refs: dict[str, str], lang: str, repeat: int) -> list[tuple[Any, str]]:
    comment = "#" if lang == "python" else "//"
    return [(p, refs[p.task_id] + f"\n{comment} bench copy {k}\n") if k else (p, refs[p.task_id])
            for k in range(repeat) for p in problems]


def run_languages_bench(workers: int = 2, repeat: int = 1) -> LanguagesBench:
    """Run the measurements above (see the module docstring)."""
    from rewards import Builder, Grader, Problem, StdioTests, data_path, load_problems, reference_solutions
    from vmpool import Pool, PoolConfig

    bench = LanguagesBench()
    with Pool(PoolConfig(size=workers)) as pool:
        for lang in LANGS:
            path = data_path(f"humaneval_x_{lang}")
            problems, refs = list(load_problems(path)), reference_solutions(path)
            items = _copies(problems, refs, lang, repeat)
            builder = Builder()
            grader = Grader(pool, builder=builder)
            start = time.perf_counter()
            verdicts = grader.grade_batch(items)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            grader.grade_batch(items)
            warm = time.perf_counter() - start
            bench.rows.append(LanguageRow(lang, len(items), sum(1 for v in verdicts if v.passed), cold, warm,
                                          builder.build_cpu_s / max(1, builder.builds_run)))

        problem = load_problems(data_path("code_contests")).by_id()["code_contests/19"]
        tests = problem.tests
        assert isinstance(tests, StdioTests)
        bench.cases = tests.count
        completion = f"```cpp\n{CC19}\n```"
        start = time.perf_counter()
        bench.once_passed = bool(Grader(pool, builder=Builder()).grade(problem, completion).passed)
        bench.once_s = time.perf_counter() - start
        # Per case: each case its own one-case problem and a fresh builder: a build per case.
        singles = [Problem(task_id=f"cc19/{i}", tests=StdioTests(cases=(case,), whitespace="tokens"))
                   for i, case in enumerate(tests.cases)]
        start = time.perf_counter()
        passed = 0
        for single in singles:
            passed += bool(Grader(pool, builder=Builder()).grade(single, completion).passed)
        bench.per_case_s = time.perf_counter() - start
        bench.per_case_passed = passed
    return bench


def format_languages_bench(b: LanguagesBench) -> str:
    lines = ["HumanEval-X, canonical solutions (programs/s on this machine's pool)",
             f"  {'language':<10} {'passed':>9} {'built':>10} {'cached':>10} {'build CPU s/program':>20}"]
    for r in b.rows:
        lines.append(f"  {r.language:<10} {r.passed:>4}/{r.programs:<4} {r.cold_rate:>8.1f}/s {r.warm_rate:>8.1f}/s "
                     f"{r.build_cpu_s:>20.2f}")
    ratio = b.per_case_s / b.once_s if b.once_s else 0.0
    lines += ["Build once, run per case vs build per case (code_contests/19 in C++, "
              f"{b.cases} cases)",
              f"  build once   {b.once_s:7.2f} s  {b.cases / b.once_s if b.once_s else 0:7.1f} cases/s  "
              f"(passed: {b.once_passed})",
              f"  build each   {b.per_case_s:7.2f} s  {b.cases / b.per_case_s if b.per_case_s else 0:7.1f} cases/s  "
              f"({b.per_case_passed}/{b.cases} passed)   build once is {ratio:.1f}x faster"]
    return "\n".join(lines)
