"""verl's own SandboxFusion client (``verl/utils/reward_score/sandbox_fusion/utils.py`` from the verl
wheel, loaded from its file: verl's heavy dependencies are not installed) against a real
``harness serve``, on the bundled CodeContests and LiveCodeBench rows; plus /run_code's own
fields and POST /grade."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from harness import ConfigError
from harness.serve import ServeConfig
from rewards import load_problems

from ._server import TOKEN, running

DATA = Path(__file__).resolve().parents[2] / "rewards" / "data"

CARDS = ("t = int(input())\n"
         "for _ in range(t):\n"
         "    s = input().strip()\n"
         "    print('YES' if sum(a != b for a, b in zip(s, 'abc')) in (0, 2) else 'NO')\n")
# CodeContests 19 (Codeforces 1342C); its expected outputs end each line with a space.
MOD_QUERIES = (
    "import sys\n"
    "data = sys.stdin.read().split(); t = int(data[0]); i = 1; out = []\n"
    "for _ in range(t):\n"
    "    a, b, q = map(int, data[i:i + 3]); i += 3\n"
    "    p = a * b; pre = [0] * (p + 1)\n"
    "    for x in range(p):\n"
    "        pre[x + 1] = pre[x] + ((x % a) % b != (x % b) % a)\n"
    "    f = lambda n: (n + 1) // p * pre[p] + pre[(n + 1) % p]\n"
    "    res = []\n"
    "    for _ in range(q):\n"
    "        l, r = map(int, data[i:i + 2]); i += 2\n"
    "        res.append(f(r) - f(l - 1))\n"
    "    out.append(' '.join(map(str, res)) + ' ')\n"
    "print('\\n'.join(out))\n")





def _io(task_id: str, path: Path) -> dict[str, list[str]]:
    problem = load_problems(path).by_id()[task_id]
    return {"inputs": [c.stdin for c in problem.tests.cases], "outputs": [c.stdout for c in problem.tests.cases]}


def test_verl_scores_livecodebench_programs_with_its_codes(url: str, verl: ModuleType) -> None:
    io = _io("livecodebench/codeforces/1873_A", DATA / "livecodebench_sample.jsonl")
    endpoint = f"{url}/run_code?token={TOKEN}"
    n = len(io["inputs"])
    assert verl.check_correctness(endpoint, io, CARDS)[0] == [True] * n
    assert verl.check_correctness(endpoint, io, "print('NO')")[0].count(False) >= 1
    results, meta = verl.check_correctness(endpoint, io, "raise ValueError('boom')")
    assert results == [-2] * n and meta[0]["status"] == "runtime_error"
    results, meta = verl.check_correctness(endpoint, io, "while True:\n    pass\n", timeout=1)
    assert results == [-3] * n and meta[0]["status"] == "timeout"


def test_verl_on_a_codecontests_row(url: str, verl: ModuleType) -> None:
    io = _io("code_contests/19", DATA / "code_contests_sample.jsonl")
    results, meta = verl.check_correctness(f"{url}/run_code?token={TOKEN}", io, MOD_QUERIES)
    # verl compares exactly (trailing spaces count) and this row's stored answers are not
    # consistent in their whitespace (some end lines with a space, one puts a number per line):
    # the cases a correct program fails differ from its output in whitespace only, as they
    # would against SandboxFusion.
    failed = [i for i, r in enumerate(results) if r is not True]
    assert len(failed) <= 6 and all(results[i] is False for i in failed), Counter(map(str, results))
    for i in failed:
        assert meta[i]["stdout"].split() == io["outputs"][i].split(), i


def test_without_the_token_verl_gets_its_api_error(url: str, verl: ModuleType) -> None:
    io = {"inputs": ["1\n"], "outputs": ["1\n"]}
    assert verl.check_correctness(f"{url}/run_code", io, "print(input())")[0] == [-1]


def _run(url: str, **body: object) -> dict:
    r = httpx.post(f"{url}/run_code", json={"language": "python", **body}, headers={"X-API-KEY": TOKEN}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_run_code_fields_and_meanings(url: str) -> None:
    ok = _run(url, code="print(input()[::-1])", stdin="abc")
    assert ok["status"] == "Success" and ok["run_result"]["stdout"] == "cba\n"
    assert ok["run_result"]["status"] == "Finished" and ok["run_result"]["return_code"] == 0
    assert isinstance(ok["message"], str) and ok["compile_result"] is None
    failed = _run(url, code="import sys; sys.exit(4)")
    assert failed["status"] == "Failed" and failed["run_result"]["return_code"] == 4
    slow = _run(url, code="while True: pass", run_timeout=1)
    assert slow["status"] == "Failed" and slow["run_result"]["status"] == "TimeLimitExceeded"
    # A memory-limit death is told apart from a crash (SandboxFusion cannot: its issue #43).
    big = _run(url, code="x = bytearray(600 << 20)", memory_limit_MB=128)
    assert big["status"] == "Failed" and big["run_result"]["outcome"] == "memory_limit"
    assert "memory limit" in big["message"]
    crash = _run(url, code="raise KeyError(1)")
    assert crash["run_result"]["outcome"] == "runtime_error" and "KeyError" in crash["run_result"]["stderr"]
    files = _run(url, code="print(open('in.txt').read()); open('out.bin', 'wb').write(bytes([7, 8]))",
                 files={"in.txt": base64.b64encode(b"given").decode()}, fetch_files=["out.bin", "nothing.txt"])
    assert files["run_result"]["stdout"] == "given\n"
    assert files["files"] == {"out.bin": base64.b64encode(bytes([7, 8])).decode()}


def test_run_code_refusals_name_the_field(url: str) -> None:
    def refused(body: object, status: int, words: str) -> None:
        r = httpx.post(f"{url}/run_code", content=json.dumps(body), headers={"X-API-KEY": TOKEN})
        assert r.status_code == status and words in r.json()["message"], r.text

    refused({"language": "python"}, 400, "'code' is required")
    refused({"code": 1}, 400, "'code' must be a string")
    refused({"code": "1", "language": "cobol"}, 422, "cobol")
    refused({"code": "1", "run_timeout": 10_000}, 400, "max_run_timeout_s")
    refused({"code": "1", "files": {"../x": ""}}, 400, "relative path")
    refused([1, 2], 400, "JSON object")
    r = httpx.post(f"{url}/run_code", content=b"{not json", headers={"X-API-KEY": TOKEN})
    assert r.status_code == 400 and "not JSON" in r.json()["message"]
    r = httpx.post(f"{url}/run_code", json={"code": "1"}, headers={"X-API-KEY": "wrong-key-123456"})
    assert r.status_code == 401


def test_grade_endpoint(url: str) -> None:
    problems = [json.loads(line) for line in (DATA / "humaneval.jsonl").read_text().splitlines()[:2]]
    samples = [{"task_id": problems[0]["task_id"], "completion": problems[0]["canonical_solution"]},
               {"task_id": problems[1]["task_id"], "completion": "    return None\n"},
               {"task_id": "HumanEval/none", "completion": "x"}, {"completion": "no id"}]
    r = httpx.post(f"{url}/grade", json={"format": "humaneval", "problems": problems, "samples": samples},
                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [row["passed"] for row in answer["rows"]] == [True, False]
    assert answer["rows"][0]["reward"] == 1.0 and answer["rows"][1]["reward"] == 0.0
    assert sorted(i["index"] for i in answer["issues"]) == [2, 3]
    bad = httpx.post(f"{url}/grade", json={"problems": [{"nope": 1}], "samples": []}, headers={"X-API-KEY": TOKEN})
    assert bad.status_code == 200 and bad.json()["issues"][0]["field"] == "problems"


def test_a_public_bind_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="needs a token"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", tokens=("long-enough-token",)).tokens


def test_no_sandbox_is_sandbox_error_and_verl_scores_it_minus_one(verl: ModuleType) -> None:
    from harness import HarnessConfig
    from vmpool import PoolConfig

    broken = HarnessConfig(pool=PoolConfig(size=1, python="/nonexistent/python3", start_timeout_s=5))
    with running(ServeConfig(tokens=(TOKEN,), warm_sessions=1, harness=broken)) as base:
        r = httpx.post(f"{base}/run_code", json={"code": "print(1)"}, headers={"X-API-KEY": TOKEN}, timeout=60)
        assert r.status_code == 200 and r.json()["status"] == "SandboxError", r.text
        assert r.json()["message"] and r.json()["run_result"] is None
        io = {"inputs": ["1\n"], "outputs": ["1\n"]}
        assert verl.check_correctness(f"{base}/run_code?token={TOKEN}", io, "print(input())")[0] == [-1]
