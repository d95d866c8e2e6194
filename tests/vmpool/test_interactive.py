"""``ExecRequest.interactive``: the program's stdin and stdout are its end of the companion link,
so it talks to the companion with plain reads and prints (an interactive problem's solution)."""

from __future__ import annotations

import time

import pytest

from vmpool import Companion, ExecRequest, Limits, Status

FAST = Limits(wall_s=5.0, cpu_s=2.0)

# Asks the program to double two numbers over the link (its fd 4), reports the answers on fd 3.
DOUBLER = ("import os, socket\n"
           "link = socket.socket(fileno=4).makefile('rw', encoding='utf-8', newline='\\n')\n"
           "answers = []\n"
           "for n in (21, 50):\n"
           "    link.write(f'{n}\\n'); link.flush()\n"
           "    answers.append(link.readline().strip())\n"
           "os.write(3, ' '.join(answers).encode())\n")


def test_a_python_program_reads_and_prints_to_its_companion(pool) -> None:
    program = ("import sys\n"
               "for _ in range(2):\n"
               "    print(int(input()) * 2, flush=True)\n"
               "print('to stderr', file=sys.stderr)\n")
    res = pool.run(ExecRequest(code=program, limits=FAST, companion=Companion(code=DOUBLER), interactive=True))
    assert res.status is Status.OK, res
    assert res.report == b"42 100"
    assert res.stdout == ""  # what it printed went to the companion
    assert res.companion is not None and res.companion.exit_code == 0


def test_a_command_talks_to_its_companion_and_keeps_a_captured_stderr(pool) -> None:
    script = "read a; echo $((a * 2)); read b; echo $((b * 2)); echo done >&2; sleep 0.2"
    res = pool.run(ExecRequest(code="", command=["/bin/sh", "-c", script], limits=FAST,
                               companion=Companion(code=DOUBLER), interactive=True))
    assert res.status is Status.OK and res.report == b"42 100", res
    assert res.stdout == ""


def test_a_program_that_floods_its_stdout_blocks_until_the_companion_ends_the_run(pool) -> None:
    reader = ("import os\n"
              "got = os.read(4, 1000)\n"
              "os.write(3, b'read %d' % len(got))\n")
    flood = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    started = time.monotonic()
    res = pool.run(ExecRequest(code=flood, limits=FAST, companion=Companion(code=reader), interactive=True))
    assert time.monotonic() - started < FAST.wall_s
    assert res.status is Status.OK and res.report.startswith(b"read "), res  # the companion ended it
    assert res.stdout == "" and not res.stdout_truncated


def test_a_program_that_never_answers_ends_at_the_wall_backstop(pool) -> None:
    waiter = "import os\nos.write(4, b'1\\n')\nos.write(3, os.read(4, 10))\n"
    limits = Limits(wall_s=1.5, cpu_s=1.0)
    res = pool.run(ExecRequest(code="import time\ntime.sleep(60)\n", limits=limits,
                               companion=Companion(code=waiter), interactive=True))
    assert res.status is Status.TIMEOUT and res.timeout_by == "wall", res
    assert res.report == b""
    assert pool.run(ExecRequest(code="print('next')")).stdout == "next\n"  # the sandbox goes on


def test_the_program_can_still_print_normally_once_not_interactive(pool) -> None:
    # The same companion, not interactive: stdout is a pipe again, the link is fd 3 only.
    tester = "import os\nos.write(3, os.read(4, 10))\n"
    program = "import os\nprint('hello', flush=True)\nos.write(3, b'hi')\n"  # flushed: the companion's end ends the run
    res = pool.run(ExecRequest(code=program, limits=FAST, companion=Companion(code=tester)))
    assert res.status is Status.OK and res.stdout == "hello\n" and res.report == b"hi", res


def test_interactive_needs_a_companion_and_no_stdin() -> None:
    with pytest.raises(ValueError, match="needs a companion"):
        ExecRequest(code="print(1)", interactive=True)
    with pytest.raises(ValueError, match="stdin"):
        ExecRequest(code="print(1)", stdin="x", companion=Companion(code="pass"), interactive=True)
