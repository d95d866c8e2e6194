"""rewards: problems, test kinds, code extraction, output comparison, reward shaping, anti-hacking.

Public surface::

    from rewards import load_problems, Grader, RewardConfig, compute_reward
    problems = load_problems("rewards/data/humaneval.jsonl")   # or stdio problems, solved in
                                                                # C, C++, Java, JS, Go, Rust, Bash
    with vmpool.Pool(vmpool.PoolConfig(size=2)) as pool:
        grader = Grader(pool)
        verdicts = grader.grade_batch([(problems[0], completion)])
        rewards = [compute_reward(v, RewardConfig()) for v in verdicts]

Exception tree::

    RewardsError
    ├── ProblemFormatError(file, line, field, message)   (also a ValueError)
    └── RewardConfigError                                (also a ValueError)

Program failures are never exceptions: they are :class:`Verdict` outcomes. Sandbox
infrastructure failures become ``Verdict.passed is None`` and a ``None`` reward, never 0.0.
"""

from ._adapters import (
    FORMATS,
    ProblemSet,
    RestrictedUnpickler,
    load_problems,
    problem_from_row,
    reference_solutions,
    restricted_loads,
)
from ._build import COMPILE_LIMITS, Build, Builder
from ._compare import stdout_matches, values_equal
from ._data import DATASETS, data_path
from ._errors import ProblemFormatError, RewardConfigError, RewardsError
from ._excerpt import excerpt
from ._extract import extract_code, extract_program
from ._grade import CaseResult, Grader, Outcome, Verdict
from ._languages import LANGUAGES, Language, find_language, language_names
from ._problems import (
    AssertTests,
    CallCase,
    CallTests,
    Checker,
    Problem,
    ProgramTests,
    StdioCase,
    StdioTests,
    Tests,
    problem_from_dict,
    problem_to_dict,
)
from ._shaping import RewardConfig, compute_reward

__all__ = [
    "COMPILE_LIMITS",
    "LANGUAGES",
    "AssertTests",
    "Build",
    "Builder",
    "CallCase",
    "CaseResult",
    "Checker",
    "CallTests",
    "DATASETS",
    "FORMATS",
    "Grader",
    "Language",
    "Outcome",
    "Problem",
    "ProblemFormatError",
    "ProblemSet",
    "ProgramTests",
    "RestrictedUnpickler",
    "RewardConfig",
    "RewardConfigError",
    "RewardsError",
    "StdioCase",
    "StdioTests",
    "Tests",
    "Verdict",
    "compute_reward",
    "data_path",
    "excerpt",
    "extract_code",
    "extract_program",
    "find_language",
    "language_names",
    "load_problems",
    "problem_from_dict",
    "problem_from_row",
    "problem_to_dict",
    "reference_solutions",
    "restricted_loads",
    "stdout_matches",
    "values_equal",
]
