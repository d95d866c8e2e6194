"""A real namespace sandbox: I/O contract, statuses and isolation."""

from __future__ import annotations

import os

import pytest

from tests._procs import pool_extra_processes
from vmpool import ExecRequest, Limits, Status

FAST = Limits(wall_s=3.0)


def run(pool, code: str, **kw):
    kw.setdefault("limits", FAST)
    return pool.run(ExecRequest(code=code, **kw))


def test_stdout_stderr_exit_code(pool):
    r = run(pool, "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert (r.status, r.exit_code, r.stdout, r.stderr) == (Status.RUNTIME_ERROR, 3, "out\n", "err\n")


def test_ok_program(pool):
    r = run(pool, "print(sum(range(10)))")
    assert r.status is Status.OK and r.exit_code == 0 and r.stdout == "45\n"
    assert r.wall_s > 0


def test_fetch_files_sends_back_regular_files_of_the_work_dir_only(pool):
    code = ("import os\n"
            "open('out.txt', 'w').write('made')\n"
            "os.mkdir('d'); open('d/x.bin', 'wb').write(bytes([0, 1]))\n"
            "os.symlink('/opt/vmpool/agent.py', 'link')\n"
            "os.symlink('/etc', 'dirlink')\n"
            "os.mkfifo('fifo')\n"
            "import subprocess; subprocess.Popen(['sleep', '30'])  # still running at the end: killed first\n")
    r = run(pool, code, fetch_files=["out.txt", "d/x.bin", "link", "dirlink/alternatives", "fifo", "d", "none"])
    assert r.status is Status.OK, r.stderr
    assert r.files == {"out.txt": b"made", "d/x.bin": b"\x00\x01"}
    with pytest.raises(ValueError, match="relative path"):
        ExecRequest(code="", fetch_files=["../x"])
    # the size budget is limits.output_bytes in all
    big = run(pool, "open('a', 'w').write('x' * 3000); open('b', 'w').write('y' * 3000)",
              fetch_files=["a", "b"], limits=Limits(wall_s=5, output_bytes=4096))
    assert list(big.files) == ["a"]


def test_stdin_larger_than_a_pipe_buffer(pool):
    data = "x" * 300_000 + "\nend\n"
    r = run(pool, "import sys\nd = sys.stdin.read()\nprint(len(d), d.split()[-1])", stdin=data)
    assert r.stdout == f"{len(data)} end\n"


def test_program_that_ignores_stdin(pool):
    r = run(pool, "print('ignored')", stdin="y" * 500_000)
    assert r.status is Status.OK and r.stdout == "ignored\n"


def test_files_argv_and_report_channel(pool):
    code = ("import sys, os\n"
            "print(open('data/in.txt').read(), open('blob.bin','rb').read(), sys.argv[1:])\n"
            "os.write(3, b'report-bytes')\n")
    r = run(pool, code, files={"data/in.txt": "hello", "blob.bin": b"\x00\x01"}, argv=["a", "b"])
    assert r.status is Status.OK, r.stderr
    assert r.stdout == "hello b'\\x00\\x01' ['a', 'b']\n"
    assert r.report == b"report-bytes"
    assert r.stdout.count("report") == 0


def test_uncaught_exception_is_runtime_error(pool):
    r = run(pool, "raise ValueError('boom')")
    assert r.status is Status.RUNTIME_ERROR and r.exit_code == 1 and "ValueError: boom" in r.stderr


def test_syntax_error_is_runtime_error(pool):
    r = run(pool, "def f(:\n")
    assert r.status is Status.RUNTIME_ERROR and "SyntaxError" in r.stderr


def test_infinite_loop_times_out(pool):
    r = run(pool, "while True: pass", limits=Limits(wall_s=1.0))
    assert r.status is Status.TIMEOUT
    assert 0.9 <= r.wall_s < 3.0


def test_cpu_limit_is_timeout_not_crash(pool):
    r = run(pool, "while True: pass", limits=Limits(wall_s=10.0, cpu_s=1))
    assert r.status is Status.TIMEOUT
    assert r.wall_s < 5


def test_sleep_with_sigalrm_ignored_times_out(pool):
    code = "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.alarm(1)\ntime.sleep(60)"
    r = run(pool, code, limits=Limits(wall_s=1.0))
    assert r.status is Status.TIMEOUT


def test_memory_bomb_is_memory_limit_not_timeout(pool):
    code = ("import resource\n"
            "soft, _ = resource.getrlimit(resource.RLIMIT_AS)\n"
            "assert 0 < soft <= 256 << 20, 'limit not set: refusing to allocate'\n"
            "blocks = []\n"
            "while True:\n    blocks.append(bytearray(16 << 20))\n")
    r = run(pool, code, limits=Limits(wall_s=5.0, memory_mb=256))
    assert r.status is Status.MEMORY_LIMIT, (r.status, r.stderr[-300:])


def test_infinite_output_is_output_limit(pool):
    r = run(pool, "while True:\n    print('y' * 1000)", limits=Limits(wall_s=5.0, output_bytes=100_000))
    assert r.status is Status.OUTPUT_LIMIT
    assert r.stdout_truncated and len(r.stdout) == 100_000


def test_huge_file_write_is_stopped(pool):
    code = ("import resource\n"
            "assert 0 < resource.getrlimit(resource.RLIMIT_FSIZE)[0] <= 1 << 20, 'limit not set'\n"
            "with open('big', 'wb') as f:\n"
            "    while True:\n        f.write(b'z' * 65536)\n")
    r = run(pool, code, limits=Limits(wall_s=5.0, file_size_bytes=1 << 20))
    assert r.status is Status.RUNTIME_ERROR
    assert "File too large" in r.stderr or r.signal == 25  # EFBIG, or SIGXFSZ


def test_fork_bomb_is_contained(pool):
    code = ("import os, resource\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)\n"
            "assert 0 < hard <= 64, 'limit not set: refusing to fork'\n"
            "n = 0\n"
            "while True:\n"
            "    try:\n"
            "        if os.fork() == 0:\n"
            "            while True: pass\n"
            "        n += 1\n"
            "    except OSError:\n"
            "        print('fork refused after', n, flush=True)\n"
            "        break\n"
            "import time; time.sleep(30)\n")
    r = run(pool, code, limits=Limits(wall_s=2.0, max_processes=16))
    assert r.status is Status.TIMEOUT
    assert "fork refused after" in r.stdout
    assert int(r.stdout.split()[-1]) <= 16
    assert not pool_extra_processes(pool)


def test_daemonised_grandchild_does_not_outlive_the_program(pool):
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(60)\n"
            "    os._exit(0)\n"
            "print('parent done')\n")
    r = run(pool, code)
    assert r.status is Status.OK and r.wall_s < 2.5
    assert not pool_extra_processes(pool)


def test_no_network(pool):
    code = ("import socket\n"
            "for fam, typ in [(socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET, socket.SOCK_DGRAM),\n"
            "                 (socket.AF_INET6, socket.SOCK_STREAM), (socket.AF_PACKET, socket.SOCK_RAW)]:\n"
            "    try:\n"
            "        socket.socket(fam, typ)\n"
            "        print('OPENED', fam, typ)\n"
            "    except OSError as e:\n"
            "        print('denied', e.errno)\n"
            "try:\n"
            "    socket.getaddrinfo('example.com', 80)\n"
            "    print('RESOLVED')\n"
            "except OSError:\n"
            "    print('no dns')\n")
    r = run(pool, code)
    assert r.status is Status.OK, r.stderr
    assert "OPENED" not in r.stdout and "RESOLVED" not in r.stdout
    assert r.stdout.count("denied") == 4 and "no dns" in r.stdout


def test_host_secrets_are_invisible(pool, monkeypatch):
    monkeypatch.setenv("HARNESS_SECRET_TOKEN", "s3cr3t")
    project = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import os\n"
            f"paths = ['/etc/shadow', '/etc/passwd', '/root', '/home', {project!r}, '/proc/1/environ']\n"
            "for p in paths:\n"
            "    try:\n"
            "        if os.path.isdir(p):\n"
            "            print(p, 'LISTED', os.listdir(p))\n"
            "        else:\n"
            "            print(p, 'READ', open(p, 'rb').read()[:50])\n"
            "    except OSError as e:\n"
            "        print(p, 'denied')\n"
            "print('ENV', sorted(os.environ))\n")
    r = run(pool, code)
    assert r.status is Status.OK, r.stderr
    assert "s3cr3t" not in r.stdout and "HARNESS_SECRET_TOKEN" not in r.stdout
    lines = r.stdout.splitlines()
    for line in lines[:5]:
        assert line.endswith("denied"), line
    # /proc/1 is the sandbox's own init (bubblewrap), started with a scrubbed environment.
    assert lines[5] in ("/proc/1/environ denied", "/proc/1/environ READ b'PATH=/usr/bin:/bin\\x00'"), lines[5]
    assert "ENV ['HOME', 'LANG', 'PATH', 'PWD', 'PYTHONDONTWRITEBYTECODE']" in r.stdout or "ENV ['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE']" in r.stdout


def test_root_filesystem_is_read_only(pool):
    code = ("import os\n"
            "for p in ['/usr/evil', '/evil', '/opt/vmpool/agent.py']:\n"
            "    try:\n"
            "        open(p, 'w').write('x'); print('WROTE', p)\n"
            "    except OSError: print('denied', p)\n")
    r = run(pool, code)
    assert "WROTE" not in r.stdout and r.stdout.count("denied") == 3


def test_ptrace_and_mount_are_denied(pool):
    code = ("import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n"  # PTRACE_ATTACH to init
            "print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())\n"
            "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n")  # CLONE_NEWUSER
    r = run(pool, code)
    assert r.status is Status.OK, r.stderr
    assert r.stdout.splitlines() == ["ptrace -1 1", "mount -1 1", "unshare -1 1"]


def test_programs_cannot_see_earlier_programs_files(pool):
    plant = ("import os\nopen('left-behind.txt', 'w').write('secret')\n"
             "os.makedirs('/tmp/shared', exist_ok=True)\nopen('/dev/shm/note', 'w').write('secret')\n")
    look = ("import os\nprint(os.listdir('.'), os.path.exists('/tmp/shared'), os.path.exists('/dev/shm/note'),\n"
            "      [p for p in os.listdir('/tmp') if not p.startswith('run')])\n")
    # Plant in every sandbox of the pool, then look from every sandbox.
    planted = pool.map([ExecRequest(code=plant, limits=FAST)] * 4)
    assert all(r.status is Status.OK for r in planted), [r.stderr for r in planted]
    for r in pool.map([ExecRequest(code=look, limits=FAST)] * 4):
        assert r.stdout == "[] False False []\n", r.stdout


def test_random_state_differs_between_programs(pool):
    outs = {run(pool, "import random; print(random.random())").stdout for _ in range(4)}
    assert len(outs) == 4


def test_filling_the_tmpfs_fails_the_program_not_the_sandbox(pool):
    code = ("import os\n"
            "for i in range(100):\n"
            "    with open(f'f{i}', 'wb') as f:\n"
            "        f.write(b'z' * (8 << 20))\n")
    r = run(pool, code, limits=Limits(wall_s=10.0, file_size_bytes=16 << 20))
    assert r.status is Status.RUNTIME_ERROR and "No space left on device" in r.stderr
    after = pool.map([ExecRequest(code="open('x', 'wb').write(b'y' * (4 << 20)); print('ok')", limits=FAST)] * 4)
    assert [a.stdout for a in after] == ["ok\n"] * 4


def test_program_cannot_signal_other_sandboxes(pool):
    # Each sandbox has its own pid namespace and host uid: pids outside are not even visible.
    code = ("import os\n"
            "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
            "print(len(pids) <= 5, max(pids) < 100)\n")  # init, agent, program zygote, tester, itself
    r = run(pool, code)
    assert r.stdout == "True True\n", r.stdout


def test_standalone_sandbox_is_a_context_manager(no_leaks):
    from vmpool import NamespaceSandbox
    with NamespaceSandbox() as sb:
        r = sb.execute(ExecRequest(code="print('alone')", limits=FAST))
        assert r.stdout == "alone\n"
        pid = sb.pid
    assert not sb.alive()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/status").read().find("State:\tZ") >= 0


def test_cached_code_runs_with_fresh_state_each_time(pool):
    code = "import os, sys\nprint(open('n').read(), len(sys.argv))"
    outs = [run(pool, code, files={"n": str(i)}, cache_code=True).stdout for i in range(5)]
    assert outs == [f"{i} 1\n" for i in range(5)]
    bad = run(pool, "def f(:\n", cache_code=True)
    assert bad.status is Status.RUNTIME_ERROR and "SyntaxError" in bad.stderr


WARM_MODULE = (
    "import sys, time\n"
    "print('top level ran')\n"
    "LOADED_AT = time.monotonic()\n"
    "def main():\n"
    "    print('entry', sys.argv[1:], __name__)\n"
)


def test_entry_runs_a_warm_modules_function_per_run(pool):
    # The top level runs once in the zygote (its output goes nowhere); every run only calls main().
    req = ExecRequest(code=WARM_MODULE, cache_code=True, entry="main", argv=["a"], limits=FAST)
    first, second = pool.run(req), pool.run(req)
    for r in (first, second):
        assert r.status is Status.OK and r.stdout == "entry ['a'] __vmpool_warm__\n", r


def test_entry_needs_cache_code_and_a_name():
    import pytest

    with pytest.raises(ValueError, match="entry"):
        ExecRequest(code="def main(): pass", entry="main")
    with pytest.raises(ValueError, match="entry"):
        ExecRequest(code="def main(): pass", cache_code=True, entry="not a name")


def test_companion_talks_to_the_program_and_reports_on_its_own_fd(pool):
    from vmpool import Companion

    tester = ("import os, sys\n"
              "data = sys.stdin.read()\n"
              "os.write(4, data.encode())\n"
              "reply = os.read(4, 100)\n"
              "os.write(3, b'report:' + reply + b':' + str(os.getuid()).encode())\n")
    program = ("import os\n"
               "msg = os.read(3, 100)\n"
               "print('program uid', os.getuid(), flush=True)\n"  # before the reply: killed once the tester is done
               "os.write(3, msg.upper())\n"
               "import time; time.sleep(30)\n")  # killed when the tester is done
    r = pool.run(ExecRequest(code=program, limits=FAST, companion=Companion(code=tester, stdin="ping")))
    assert r.status is Status.OK and r.exit_code is None, r  # ended by the harness, normally
    assert r.report == b"report:PING:65533" and r.stdout == "program uid 65534\n"
    assert r.companion is not None and r.companion.exit_code == 0
