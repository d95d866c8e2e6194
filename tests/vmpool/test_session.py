"""Sessions on the namespace backend: state that persists, calls that fail as data, isolation.

Real sandboxes throughout; the hostile cases are the model's own code inside its session.
"""

from __future__ import annotations

import os
import time

import pytest

from tests._procs import descendants
from vmpool._session import Session, SessionConfig, SessionError

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture
def session():  # type: ignore[no-untyped-def]
    with Session() as s:
        yield s


def test_python_state_persists_jupyter_style(session: Session) -> None:
    first = session.run_code("import math\nx = 40\ndef f(y):\n    return y + 2\nf(x)")
    assert (first.text, first.data, first.has_data, first.execution_count) == ("42", 42, True, 1)
    second = session.run_code("print('x is', x, file=__import__('sys').stderr)\nprint(math.pi > 3)\n{'a': [1, (2, 3)]}")
    assert second.stdout == "True\n" and second.stderr == "x is 40\n"
    assert second.data == {"a": [1, [2, 3]]} and second.text == "{'a': [1, (2, 3)]}" and second.execution_count == 2
    assert session.run_code("x = None\nx").text is None  # a None value is no result
    obj = session.run_code("class C:\n    pass\nC()")
    assert obj.text.startswith("<__main__.C object") and not obj.has_data and obj.data is None


def test_errors_are_data_with_name_value_and_traceback(session: Session) -> None:
    res = session.run_code("def g():\n    return 1 / 0\ng()")
    assert res.error is not None and res.error.name == "ZeroDivisionError" and res.error.value == "division by zero"
    assert "in g" in res.error.traceback and res.text is None
    assert session.run_code("raise SystemExit(3)").error.name == "SystemExit"  # the kernel survives it
    assert session.run_code("1 +").error.name == "SyntaxError"
    assert session.run_code("2 + 2").data == 4


def test_contexts_are_separate_and_restartable(session: Session) -> None:
    session.run_code("v = 'default'")
    session.run_code("v = 'other'", context="other")
    assert session.run_code("v").data == "default" and session.run_code("v", context="other").data == "other"
    assert session.run_code("v", context="other").execution_count == 3
    session.restart_context("other")
    fresh = session.run_code("v", context="other")
    assert fresh.error.name == "NameError" and fresh.execution_count == 1
    assert session.run_code("v").data == "default"


def test_the_shell_keeps_its_working_directory_and_reports_exit_codes(session: Session) -> None:
    res = session.run("mkdir -p proj && cd proj && echo made >&2 && exit 3")
    assert (res.exit_code, res.stderr, res.cwd) == (3, "made\n", "/tmp/home/proj")
    assert session.run("pwd").stdout == "/tmp/home/proj\n"
    session.run("echo 'print(6 * 7)' > main.py")
    assert session.run("python3 main.py").stdout == "42\n"
    assert session.run_code("open('proj/main.py').read()").data == "print(6 * 7)\n"  # one filesystem


def test_files_round_trip_and_are_bounded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Session(SessionConfig(file_size_bytes=1000)) as session:
        session.write_file("data/in.txt", "hello")
        session.write_file("blob.bin", bytes(range(256)))
        assert session.read_file("data/in.txt") == b"hello" and session.read_file("blob.bin") == bytes(range(256))
        assert [(e.name, e.type) for e in session.list_dir()] == [("blob.bin", "file"), ("data", "dir")]
        with pytest.raises(SessionError, match="over the session's limit"):
            session.write_file("big", b"x" * 2000)
        session.run("head -c 5000 /dev/zero > made_big; true")  # RLIMIT_FSIZE stops the writer at 1000
        assert len(session.read_file("made_big")) <= 1000
        with pytest.raises(SessionError, match="No such file"):
            session.read_file("missing.txt")


def test_a_timeout_interrupts_the_call_not_the_session(session: Session) -> None:
    session.run_code("kept = [1, 2, 3]")
    start = time.monotonic()
    res = session.run_code("import subprocess, time\np = subprocess.Popen(['sleep', '300'])\nwhile True:\n"
                           "    time.sleep(0.01)", timeout=1.0)
    assert res.timed_out and res.error.name == "TimeoutError" and time.monotonic() - start < 10
    assert session.run("pgrep -x sleep || echo none").stdout == "none\n"  # what it started is gone
    assert session.run_code("kept").data == [1, 2, 3]
    shell = session.run("sleep 300", timeout=1.0)
    assert shell.timed_out and shell.exit_code is None
    assert session.run("echo alive").stdout == "alive\n"


def test_background_processes_of_a_finished_call_live_on(session: Session) -> None:
    session.run("(sleep 30 &) ; echo started")
    assert "sleep" in session.run("ps -eo comm").stdout


def test_a_kernel_that_kills_itself_is_a_clear_error_and_frees_everything() -> None:
    before = descendants(os.getpid())
    session = Session()
    try:
        with pytest.raises(SessionError, match="state is lost"):
            session.run_code("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        assert session.closed
        with pytest.raises(SessionError, match="closed"):
            session.run("echo again")
    finally:
        session.close()
    deadline = time.monotonic() + 5
    while descendants(os.getpid()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not descendants(os.getpid()) - before


def test_a_session_sees_neither_the_host_nor_the_network(session: Session) -> None:
    probe = session.run_code(
        "import os, socket\n"
        "seen = {p: os.path.exists(p) for p in ('/etc/passwd', '/root', '/work', '/run')}\n"
        "seen['/home: not only user'] = os.listdir('/home') != ['user']\n"
        "seen['/home/user is elsewhere'] = os.path.realpath('/home/user') != '/tmp/home'\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); net = 'open'\n"
        "except OSError as exc:\n    net = type(exc).__name__\n"
        "(seen, net, os.getuid())")
    seen, net, uid = probe.data
    assert not any(seen.values()), seen
    assert net != "open"
    assert uid in (65534, 1000)  # the program uid (mapped), or the user's single uid


def test_two_sessions_share_nothing() -> None:
    with Session() as a, Session() as b:
        a.write_file("secret.txt", "a's")
        a.run("sleep 60 &")
        assert b.run("ls /tmp/home; ps -eo comm").stdout.count("sleep") == 0
        assert "secret.txt" not in b.run("ls /tmp/home").stdout
        pids_b = b.run_code("import os\nsorted(int(p) for p in os.listdir('/proc') if p.isdigit())").data
        assert len(pids_b) < 10  # its own pid namespace: its few processes only
        ua, ub = a._family.sandbox.uids, b._family.sandbox.uids
        if ua != (os.getuid(),):  # uids of their own (root, or subordinate uids)
            assert set(ua).isdisjoint(ub[1:])


def test_a_session_pool_hands_out_fresh_sessions_and_cleans_up() -> None:
    from vmpool import SessionPool

    before = descendants(os.getpid())
    with SessionPool(warm=2) as pool:
        first = pool.lease()
        first.run_code("secret = 'first lessee'")
        second = pool.lease()
        assert second is not first and second.run_code("secret").error.name == "NameError"
        pool.release(first)
        assert first.closed  # its state never reaches another lessee
        third = pool.lease()
        assert third.run_code("'secret' in globals()").data is False
        held = pool.lease()  # left leased: close() takes it too
    assert held.closed and third.closed and second.closed
    deadline = time.monotonic() + 5
    while descendants(os.getpid()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not descendants(os.getpid()) - before
    with pytest.raises(SessionError, match="closed"):
        pool.lease()


def test_a_cell_that_defeats_its_timeout_loses_the_session_clearly() -> None:
    with Session(SessionConfig(transport_slack_s=1.0)) as session:
        session.run_code("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)")  # undone before each cell
        assert session.run_code("while True:\n    pass", timeout=0.5).timed_out
        start = time.monotonic()
        with pytest.raises(SessionError, match="stopped answering"):
            session.run_code("while True:\n    try:\n        while True:\n            pass\n"
                             "    except BaseException:\n        pass", timeout=0.5)
        assert session.closed and time.monotonic() - start < 10


def test_interrupt_stops_the_running_cell_or_command_and_keeps_the_session(session: Session) -> None:
    import threading

    assert session.interrupt() is False  # nothing runs
    session.run_code("kept = 7")
    for call in (lambda: session.run_code("while True: pass", timeout=60),
                 lambda: session.run("sleep 60; echo never", timeout=60)):
        timer = threading.Timer(0.5, session.interrupt)
        started = time.monotonic()
        timer.start()
        result = call()
        timer.join()
        assert time.monotonic() - started < 20
        assert "never" not in result.stdout
    assert session.run_code("kept").text == "7"
