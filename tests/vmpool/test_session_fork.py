"""SessionCheckpoint, fork and pause of sessions on the namespace backend, and the attacks a fork
must hold against: a branch of the model's trying to reach its siblings or its parent.

Real sandboxes throughout: every branch is a real interpreter in nested namespaces.
"""

from __future__ import annotations

import time

import pytest

from vmpool import Session, SessionCheckpoint, SessionConfig, SessionError

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture
def session():  # type: ignore[no-untyped-def]
    with Session() as s:
        yield s


def test_forks_start_from_the_checkpointed_state_and_diverge_in_isolation(session: Session) -> None:
    session.run_code("import json\nstate = {'n': 1}\ndef bump(k):\n    state['n'] += k\n    return state['n']")
    session.write_file("notes/plan.txt", "v1")
    session.run("mkdir -p work && cd work")
    with session.checkpoint() as cp:
        assert isinstance(cp, SessionCheckpoint)
        branches = cp.fork(3)
    try:
        for i, b in enumerate(branches):  # each one diverges its own way
            assert b.run_code(f"bump({10 * (i + 1)})").data == 1 + 10 * (i + 1)
            b.write_file("notes/plan.txt", f"branch {i}")
            assert b.run("pwd").stdout == "/tmp/home/work\n"  # the shell's directory came along
        for i, b in enumerate(branches):
            assert b.run_code("state['n']").data == 1 + 10 * (i + 1)
            assert b.read_file("notes/plan.txt") == f"branch {i}".encode()
        assert session.run_code("state['n']").data == 1  # the parent saw none of it
        assert session.read_file("notes/plan.txt") == b"v1"
        assert session.run_code("bump(1)").execution_count == 3  # its counter goes on
        assert all(b.run_code("1").execution_count == 4 for b in branches)
    finally:
        for b in branches:
            b.close()


def test_session_fork_and_nested_forks(session: Session) -> None:
    session.run_code("depth = 0")
    (child,) = session.fork(1)
    with child:
        child.run_code("depth = 1")
        grandchildren = child.fork(2)
        assert [g.run_code("depth").data for g in grandchildren] == [1, 1]
        grandchildren[0].run_code("depth = 2")
        assert [g.run_code("depth").data for g in grandchildren] == [2, 1]
        assert child.run_code("depth").data == 1 and session.run_code("depth").data == 0
        for g in grandchildren:
            g.close()


def test_a_checkpoint_outlives_its_session_and_forks_again_later(session: Session) -> None:
    session.run_code("value = 'saved'")
    cp = session.checkpoint()
    session.close()
    first = cp.fork(1)[0]
    first.run_code("value = 'changed'")
    second = cp.fork(1)[0]  # the checkpoint did not move
    assert second.run_code("value").data == "saved"
    cp.close()
    assert first.run_code("value").data == "changed"  # forks live on after their checkpoint
    assert cp.closed
    with pytest.raises(SessionError, match="closed"):
        cp.fork(1)
    first.close()
    second.close()


def test_a_file_held_open_by_a_cell_is_reopened_on_the_copy(session: Session) -> None:
    session.run_code("fh = open('log.txt', 'w+')\nfh.write('line1\\n')\nfh.flush()")
    (fork,) = session.fork(1)
    with fork:
        fork.run_code("fh.write('fork\\n')\nfh.flush()")
        session.run_code("fh.write('parent\\n')\nfh.flush()")
        assert fork.read_file("log.txt") == b"line1\nfork\n"  # same offset, its own copy
        assert session.read_file("log.txt") == b"line1\nparent\n"


def test_a_checkpoint_refuses_running_threads_and_shared_mappings(session: Session) -> None:
    session.run_code("import threading, time\nstop = threading.Event()\n"
                     "t = threading.Thread(target=stop.wait)\nt.start()")
    with pytest.raises(SessionError, match="threads"):
        session.checkpoint()
    session.run_code("stop.set()\nt.join()")
    session.run_code("import mmap\nm = mmap.mmap(-1, 4096)")  # anonymous shared memory
    with pytest.raises(SessionError, match="shared memory"):
        session.checkpoint()
    session.run_code("m.close()")
    with session.checkpoint():
        pass
    assert session.run_code("1 + 1").data == 2


def test_background_processes_end_at_a_checkpoint_and_the_session_goes_on(session: Session) -> None:
    session.run("sleep 300 &")
    assert "sleep" in session.run("ps -eo comm").stdout
    session.checkpoint().close()
    assert "sleep" not in session.run("ps -eo comm").stdout
    assert session.run("echo still here").stdout == "still here\n"


def test_pause_stops_every_process_and_resume_continues_exactly(session: Session) -> None:
    session.run_code("kept = list(range(5))")
    session.run("(while :; do echo tick >> ticks; sleep 0.05; done) > /dev/null 2>&1 &")
    time.sleep(0.4)
    before = session.read_file("ticks").count(b"tick")
    session.pause()
    assert session.paused
    with pytest.raises(SessionError, match="paused"):
        session.run_code("1")
    time.sleep(1.0)  # unpaused, the loop would tick about 20 times meanwhile
    session.resume()
    after = session.read_file("ticks").count(b"tick")
    assert after - before <= 3
    time.sleep(0.5)
    assert session.read_file("ticks").count(b"tick") > after  # the background loop runs again
    assert session.run_code("kept").data == [0, 1, 2, 3, 4]


def test_forks_cannot_reach_each_other_or_their_parent(session: Session) -> None:
    session.run("sleep 300 > /dev/null 2>&1 &")
    a, b = session.fork(2)
    try:
        b.run("sleep 301 > /dev/null 2>&1 &")
        seen = a.run("ps -eo pid,comm").stdout
        assert "sleep" not in seen  # neither the parent's nor b's processes are visible
        pids = a.run_code("import os\nsorted(int(p) for p in os.listdir('/proc') if p.isdigit())").data
        assert pids[:2] == [1, 2] and len(pids) < 6
        # signalling every pid it can name hits only itself
        a.run_code("import os, signal\nfor p in range(3, 400):\n    try:\n        os.kill(p, signal.SIGKILL)\n"
                   "    except OSError:\n        pass")
        assert "sleep 301" in b.run("ps -eo args").stdout and b.run("echo ok").stdout == "ok\n"
        # no capability, no new user namespace, no mount, no setns into anything
        status = a.run("grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status").stdout
        assert "CapEff:\t0000000000000000" in status and "CapBnd:\t0000000000000000" in status
        assert "NoNewPrivs:\t1" in status
        escape = a.run_code(
            "import os, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nout = {}\n"
            "for name, flag in (('user', 0x10000000), ('mnt', 0x20000), ('net', 0x40000000)):\n"
            "    out[name] = libc.unshare(flag) == 0\n"
            "out['mount'] = libc.mount(b'tmpfs', b'/mnt', b'tmpfs', 0, None) == 0\n"
            "out['unshare_cmd'] = os.system('unshare -U true 2>/dev/null') == 0\nout")
        assert escape.data == {"user": False, "mnt": False, "net": False, "mount": False, "unshare_cmd": False}
        # a unix socket in one branch is out of reach of the other (network namespaces of their own)
        a.run_code("import socket\nsrv = socket.socket(socket.AF_UNIX)\nsrv.bind('\\0rendezvous')\nsrv.listen()")
        probe = b.run_code("import socket\nc = socket.socket(socket.AF_UNIX)\nc.connect('\\0rendezvous')")
        assert probe.error is not None and probe.error.name == "ConnectionRefusedError"
        a.run("echo from-a > /dev/shm/drop")
        assert b.run("cat /dev/shm/drop").exit_code != 0
    finally:
        a.close()
        b.close()
    assert "sleep" not in session.run("ps -eo comm").stdout  # the parent's own job ended at its checkpoint


def test_a_fork_holds_no_descriptor_of_its_parent(session: Session) -> None:
    session.run_code("import os\nr, w = os.pipe()")  # a pipe shared by parent and forks would be a channel
    (fork,) = session.fork(1)
    with fork:
        res = fork.run_code("os.write(w, b'x')")
        assert res.error is not None and res.error.name == "OSError"  # closed in the fork
        fds = fork.run("ls -l /proc/$$/fd /proc/2/fd 2>/dev/null | grep -c pipe").stdout.strip()
        assert fds in ("0", "")


def test_idle_and_lifetime_limits_close_a_session_and_say_why() -> None:
    with Session(SessionConfig(idle_timeout_s=1.0)) as idle:
        idle.run_code("x = 1")
        time.sleep(2.5)
        assert idle.closed
        with pytest.raises(SessionError, match="idle for more than 1 s"):
            idle.run_code("x")
    with Session(SessionConfig(max_lifetime_s=2.0)) as old:
        old.run_code("x = 1")
        time.sleep(1.0)
        old.run_code("x")  # in use: still open
        time.sleep(2.0)
        with pytest.raises(SessionError, match="maximum lifetime of 2 s"):
            old.run_code("x")
    with pytest.raises(Exception, match="idle_timeout_s"):
        SessionConfig(idle_timeout_s=0)


def test_output_streams_to_callbacks_while_the_call_runs(session: Session) -> None:
    seen: list[tuple[float, str, str]] = []
    start = time.monotonic()
    res = session.run_code("import time, sys\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(0.3)\n"
                           "print('warn', file=sys.stderr)\n'done'",
                           on_stdout=lambda t: seen.append((time.monotonic() - start, "out", t)),
                           on_stderr=lambda t: seen.append((time.monotonic() - start, "err", t)))
    end = time.monotonic() - start
    assert res.data == "done" and res.stdout == "step 0\nstep 1\nstep 2\n"  # the result holds all of it too
    assert "".join(t for _, k, t in seen if k == "out") == res.stdout
    assert "".join(t for _, k, t in seen if k == "err") == "warn\n"
    first = next(at for at, k, t in seen if "step 0" in t)
    assert first < end - 0.3  # it came while the cell still ran: 0.9 s of sleeps follow the first print
    lines: list[str] = []
    assert session.run("for i in 1 2; do echo $i; sleep 0.2; done", on_stdout=lines.append).exit_code == 0
    assert "".join(lines) == "1\n2\n"
    session.checkpoint().close()  # the streaming thread is gone between calls


def test_a_fork_bomb_is_held_to_its_own_branch(session: Session) -> None:
    a, b = session.fork(2)
    try:
        bomb = a.run("bomb() { bomb | bomb & }; bomb; sleep 2", timeout=4)
        assert bomb.timed_out or bomb.exit_code is not None  # it ran into its branch's pid limit, not the host's
        count = a.run_code("import os\nlen([p for p in os.listdir('/proc') if p.isdigit()])").data
        assert count < 305  # the branch's pid_max bounds it (the kernel's floor is 301)
        # the sibling forked from the same checkpoint still starts processes freely
        assert b.run("for i in 1 2 3 4 5 6 7 8; do (sleep 0.1 &); done; echo ok").stdout == "ok\n"
        with session.fork(1)[0] as later:  # and a later fork of the parent too
            assert later.run("echo fine").stdout == "fine\n"
    finally:
        a.close()
        b.close()


def test_a_calls_cpu_and_memory_limits_hold_from_outside_and_the_session_goes_on(session: Session) -> None:
    start = time.monotonic()
    spin = session.run_code("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (-1, -1))\nwhile True:\n    pass",
                            cpu_s=0.5, timeout=60)  # lifting its own rlimit does not lift the call's limit
    assert spin.limit == "cpu" and spin.error.name == "CPUTimeLimitExceeded" and not spin.timed_out
    assert time.monotonic() - start < 30
    grow = session.run_code("chunks = []\nwhile True:\n    chunks.append(b'x' * (8 << 20))", memory_mb=64, timeout=60)
    assert grow.limit == "memory" and grow.error.name == "MemoryLimitExceeded"
    session.run_code("del chunks")
    burn = session.run("yes > /dev/null", cpu_s=0.5, timeout=60)
    assert burn.limit == "cpu" and "more than 0.5 s of CPU time" in burn.stderr
    hog = session.run("python3 -c 'x = []\nwhile 1: x.append(b\"x\" * (8 << 20))'", memory_mb=64, timeout=60)
    assert hog.limit == "memory" and hog.exit_code != 0
    ok = session.run_code("sum(range(1000))", cpu_s=5, memory_mb=64)
    assert ok.data == 499500 and ok.limit == "" and ok.error is None
    assert "yes" not in session.run("ps -eo comm").stdout  # what the calls started is gone
    with pytest.raises(ValueError, match="cpu_s"):
        session.run_code("1", cpu_s=0)
