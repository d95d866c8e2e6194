"""The unmodified E2B SDK (``e2b-code-interpreter`` 2.x from PyPI) against a real ``harness serve``:
sandboxes are real sessions, nothing is mocked."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import Iterator

import httpx
import pytest
from e2b import AuthenticationException, CommandExitException, NotFoundException, SandboxException
from e2b_code_interpreter import AsyncSandbox, Sandbox

from harness.serve import ServeConfig

from ._server import TOKEN, running


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    config = ServeConfig(tokens=(TOKEN, "other-key-0123456789"), warm_sessions=4, max_sandboxes_per_token=100)
    with running(config) as base:
        yield base


@pytest.fixture
def e2b_env(url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("E2B_API_URL", url)
    monkeypatch.setenv("E2B_SANDBOX_URL", url)
    monkeypatch.setenv("E2B_API_KEY", TOKEN)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    return url


@pytest.fixture
def sbx(e2b_env: str) -> Iterator[Sandbox]:
    sandbox = Sandbox.create()
    yield sandbox
    sandbox.kill()


def test_state_text_errors_and_logs(sbx: Sandbox) -> None:
    assert sbx.run_code("x = 41").text is None
    ex = sbx.run_code("x + 1")
    assert ex.text == "42" and ex.error is None and ex.execution_count == 2
    assert float(sbx.run_code("0.25 * 3").text) == 0.75  # open-r1's reward reads float(execution.text)
    ex = sbx.run_code("import sys\nprint('out'); print('err', file=sys.stderr)")
    assert ex.logs.stdout == ["out\n"] and ex.logs.stderr == ["err\n"]
    err = sbx.run_code("def f():\n    return 1 / 0\nf()").error
    assert err is not None and err.name == "ZeroDivisionError" and err.value == "division by zero"
    assert 'line 2, in f' in err.traceback and "/opt/vmpool" not in err.traceback
    assert sbx.run_code("x").text == "41"  # an error loses nothing
    assert sbx.run_code("def g(:").error.name == "SyntaxError"
    assert sbx.run_code("'quiet';").text is None  # a trailing ';' hides the value, as in Jupyter


def test_ipython_syntax_and_rich_results(sbx: Sandbox) -> None:
    n = 3
    ex = sbx.run_code(f"n = {n}\n!echo shell {{n}} $n\nfiles = !ls /\nlen(files) > 3")
    assert ex.logs.stdout == [f"shell {n} {n}\n"] and ex.text == "True"
    ex = sbx.run_code("%time sum(range(10))")
    assert ex.text == "45" and "Wall time" in "".join(ex.logs.stdout)
    # E2B's default template has these: installing one succeeds with no network.
    ex = sbx.run_code("%pip install numpy pandas matplotlib pillow")
    assert ex.error is None and "already satisfied" in "".join(ex.logs.stdout)
    ex = sbx.run_code("!pip install numpy\nprint(_exit_code)")
    assert ex.logs.stdout[-1].strip() == "0"
    ex = sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
    assert ex.results[0].is_main_result and "<table" in ex.results[0].html and "a" in ex.text
    ex = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
    (figure,) = ex.results
    assert not figure.is_main_result and base64.b64decode(figure.png).startswith(b"\x89PNG")
    ex = sbx.run_code("display({'k': 1})\n7")
    assert [r.is_main_result for r in ex.results] == [False, True] and ex.text == "7"
    ex = sbx.run_code("%%writefile notes.txt\nhello\n")
    assert sbx.files.read("/home/user/notes.txt") == "hello\n"
    assert sbx.run_code("%nosuchmagic").error.name == "UsageError"


def test_commands_files_and_contexts(sbx: Sandbox) -> None:
    r = sbx.commands.run("echo hello; echo oops >&2; pwd")
    assert r.exit_code == 0 and r.stdout == "hello\n/home/user\n" and r.stderr == "oops\n"
    with pytest.raises(CommandExitException) as exc:
        sbx.commands.run("exit 3")
    assert exc.value.exit_code == 3
    assert sbx.commands.run("echo $GREETING", envs={"GREETING": "hi"}).stdout == "hi\n"
    sbx.files.write("/home/user/data.csv", "a,b\n1,2\n")
    sbx.files.write("rel.bin", b"\x00\x01")
    assert sbx.files.read("data.csv") == "a,b\n1,2\n"
    assert sbx.files.read("/home/user/rel.bin", format="bytes") == b"\x00\x01"
    assert sbx.run_code("import pandas as pd\nint(pd.read_csv('data.csv').b[0])").text == "2"
    with pytest.raises(NotFoundException):
        sbx.files.read("/home/user/missing.txt")
    ctx = sbx.create_code_context(cwd="/tmp")
    assert sbx.run_code("import os\nos.getcwd()", context=ctx).text == "'/tmp'"
    assert sbx.run_code("y = 5", context=ctx).error is None
    assert sbx.run_code("'y' in globals()").text == "False"  # contexts do not share variables
    assert sbx.run_code("os.getcwd()").error.name == "NameError"
    # /home/user is the session's home, a link to its /tmp/home (Python resolves it)
    assert sbx.run_code("import os\nos.path.samefile(os.getcwd(), '/home/user')").text == "True"
    assert sbx.run_code("echo from bash", language="bash").logs.stdout == ["from bash\n"]


def test_pause_then_connect_keeps_state(e2b_env: str) -> None:
    sbx = Sandbox.create()
    try:
        sbx.run_code("counter = 10")
        sbx.files.write("kept.txt", "yes")
        sbx.pause()
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.run_code("counter + 1").text == "11"
        assert again.files.read("kept.txt") == "yes"
        assert again.get_info().state == "running"
    finally:
        assert sbx.kill() is True
    assert Sandbox.kill(sbx.sandbox_id) is False  # gone: the SDK's 404


def test_keys_see_only_their_own_sandboxes(e2b_env: str, url: str) -> None:
    sbx = Sandbox.create(metadata={"who": "a"})
    try:
        with pytest.raises(NotFoundException):
            Sandbox.connect(sbx.sandbox_id, api_key="other-key-0123456789")
        assert Sandbox.kill(sbx.sandbox_id, api_key="other-key-0123456789") is False
        assert sbx.is_running()
        with pytest.raises(AuthenticationException):
            Sandbox.create(api_key="not-a-key-of-this-service")
        # The sandbox id alone opens nothing: envd and the interpreter want its access token.
        r = httpx.post(f"{url}/execute", json={"code": "1"}, headers={"E2b-Sandbox-Id": sbx.sandbox_id})
        assert r.status_code == 404
        r = httpx.get(f"{url}/files", params={"path": "/etc/hostname"},
                      headers={"E2b-Sandbox-Id": sbx.sandbox_id, "X-Access-Token": "guess"})
        assert r.status_code == 404
    finally:
        sbx.kill()


def test_no_network_ever(e2b_env: str) -> None:
    with pytest.raises(SandboxException, match="allow_internet_access"):
        Sandbox.create(allow_internet_access=True)
    sbx = Sandbox.create(allow_internet_access=False)
    try:
        ex = sbx.run_code("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); 'open'\n"
                          "except OSError as e:\n    type(e).__name__")
        assert ex.text != "'open'"
    finally:
        sbx.kill()


def test_timeout_ends_the_sandbox(e2b_env: str) -> None:
    sbx = Sandbox.create(timeout=2)
    assert sbx.run_code("1").text == "1"
    deadline = time.monotonic() + 30
    while sbx.is_running() and time.monotonic() < deadline:
        time.sleep(0.5)
    with pytest.raises(NotFoundException):
        sbx.get_info()


def test_a_client_that_leaves_stops_its_cell(e2b_env: str, url: str) -> None:
    sbx = Sandbox.create(timeout=60)
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "X-Access-Token": sbx._envd_access_token or ""}
    with httpx.stream("POST", f"{url}/execute", json={"code": "import time\nwhile True: time.sleep(0.01)"},
                      headers=headers, timeout=30) as r:
        first = next(r.iter_lines())
        assert '"number_of_executions"' in first
    started = time.monotonic()
    assert sbx.run_code("'free again'").text == "'free again'"
    assert time.monotonic() - started < 15  # interrupted, not run to the sandbox's end
    # and a command the same way
    with httpx.stream("POST", f"{url}/process.Process/Start", headers={**headers, "Content-Type": "application/connect+json"},
                      content=_envelope({"process": {"cmd": "/bin/bash", "args": ["-c", "sleep 50; echo done"]}}),
                      timeout=30) as r:
        assert next(r.iter_bytes())
    started = time.monotonic()
    assert sbx.commands.run("echo next").stdout == "next\n"
    assert time.monotonic() - started < 15
    sbx.kill()


def _envelope(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(body)) + body


def test_async_sdk_many_sandboxes_at_once(e2b_env: str) -> None:
    async def one(i: int) -> str | None:
        sandbox = await AsyncSandbox.create()
        try:
            ex = await sandbox.run_code(f"v = {i}\nv * 2")
            return ex.text
        finally:
            await sandbox.kill()

    async def main() -> list[str | None]:
        return await asyncio.gather(*(one(i) for i in range(64)))

    assert asyncio.run(main()) == [str(2 * i) for i in range(64)]


def test_the_per_key_limit_is_a_clear_429(e2b_env: str, url: str) -> None:
    config = ServeConfig(tokens=(TOKEN,), warm_sessions=1, max_sandboxes_per_token=2)
    with running(config) as small:
        made = [Sandbox.create(api_url=small, sandbox_url=small) for _ in range(2)]
        try:
            with pytest.raises(SandboxException, match="max_sandboxes_per_token"):
                Sandbox.create(api_url=small, sandbox_url=small)
        finally:
            for s in made:
                s.kill()
        r = httpx.post(f"{small}/v2/sandboxes", content=b"x" * (70 << 20), headers={"X-API-KEY": TOKEN})
        assert r.status_code == 413 and "limit" in r.json()["message"]


def test_hostile_cells_hurt_only_their_own_sandbox(e2b_env: str) -> None:
    bystander = Sandbox.create()
    sbx = Sandbox.create()
    try:
        bystander.run_code("mine = 'intact'")
        # a flood: capped per call (the cell's writes fail past the cap), the sandbox goes on
        ex = sbx.run_code("import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 100_000)\n'after'")
        assert sum(map(len, ex.logs.stdout)) <= 2 << 20 and ex.error is not None
        assert sbx.run_code("'after'").text == "'after'"
        # a cell that ends its own kernel: that sandbox is gone (a clear error, then 404s)
        ex = sbx.run_code("import os\nos._exit(3)")
        assert ex.error is not None and ex.error.name == "SandboxError"
        with pytest.raises(NotFoundException):
            sbx.run_code("1")
        assert bystander.run_code("mine").text == "'intact'"
    finally:
        bystander.kill()
        sbx.kill()


@pytest.mark.microvm
def test_a_template_can_be_a_microvm_session(e2b_env: str) -> None:
    from vmpool import SessionConfig

    config = ServeConfig(tokens=(TOKEN,), warm_sessions=1, custom_templates={"vm": SessionConfig(backend="microvm")})
    with running(config) as url:
        sbx = Sandbox.create(template="vm", api_url=url, sandbox_url=url)
        try:
            assert sbx.run_code("import os\nx = os.uname().release\nx").text != "''"
            uname = sbx.commands.run("uname -r").stdout.strip()
            assert sbx.run_code("x").text == repr(uname)  # a guest kernel of its own
            sbx.files.write("/home/user/v.txt", "vm")
            assert sbx.commands.run("cat v.txt").stdout == "vm"
        finally:
            sbx.kill()
        with pytest.raises(SandboxException, match="templates"):
            Sandbox.create(template="nope", api_url=url, sandbox_url=url)
