"""Adversarial tests of the program/tester process boundary (see rewards/_sandbox_side.py).

Assert- and call-kind tests run in a tester process (its own uid) that calls the
program's functions through proxies; only plain data crosses. Each test below is one
attack class, parametrised over variations written by someone who has read that code;
every variation runs through the real :class:`rewards.Grader` on bundled problems
(HumanEval/MBPP) or small native ones, next to a known-good control that must pass,
and must end with ``passed is False`` (never True, never None) and a binary reward of
0.0. The last class (a program trying to reach ``passed=None``) runs on a pool of one
sandbox of its own and grades a correct solution after every attack.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vmpool
from rewards import (
    AssertTests,
    CallCase,
    CallTests,
    Grader,
    Outcome,
    Problem,
    RewardConfig,
    StdioCase,
    StdioTests,
    Verdict,
    compute_reward,
    load_problems,
    problem_from_dict,
    reference_solutions,
)
from rewards._runner import build_request
from vmpool import ExecRequest, Limits, Status

DATA = Path(__file__).resolve().parents[2] / "rewards" / "data"
HE_PATH, MBPP_PATH = DATA / "humaneval.jsonl", DATA / "mbpp_sanitized.jsonl"
PROBLEMS = {p.task_id: p for path in (HE_PATH, MBPP_PATH) for p in load_problems(path)}
REFS = {**reference_solutions(HE_PATH), **reference_solutions(MBPP_PATH)}


def top(code: str) -> str:
    """A HumanEval completion that ends the prompt's function and goes on at top level
    (where it may redefine the entry point, the prompt's helpers, anything)."""
    return "    pass\n\n" + textwrap.dedent(code)


def prog(code: str) -> str:
    return textwrap.dedent(code)


def _problem(p: str | Problem) -> Problem:
    return PROBLEMS[p] if isinstance(p, str) else p


def _assert_failed(verdict: Verdict) -> None:
    assert verdict.passed is False, verdict
    assert verdict.outcome is not Outcome.SANDBOX_ERROR, verdict
    assert verdict.exec_status is not Status.SANDBOX_ERROR, verdict
    reward = compute_reward(verdict, RewardConfig())
    assert isinstance(reward, float) and reward == 0.0, (reward, verdict)


def _grade_hack(grader: Grader, problem: str | Problem, hack: str, good: str | None = None) -> Verdict:
    """Grade a control (the reference, or ``good``) and the hack in one batch; return the hack's verdict."""
    problem = _problem(problem)
    good = good if good is not None else REFS[problem.task_id]
    control, verdict = grader.grade_batch([(problem, good), (problem, hack)])
    assert control.passed is True, control
    _assert_failed(verdict)
    return verdict


# A native problem whose test calls the program through map(): a program exception that
# a C iterator mistakes for its end must not end the test early.
MAP = Problem(task_id="map-double", entry_point="double", tests=AssertTests(code=(
    "assert all(map(lambda x: double(x) == 2 * x, [1, 2, 3]))",
    "assert not any(map(lambda x: double(x) != 2 * x, [4, 5]))",
    "assert list(map(double, [1, 2])) == [2, 4]",
)))
MAP_GOOD = "def double(x):\n    return 2 * x\n"

# ============================================================== 1. universal value objects
UNIVERSAL = {
    "partial(is_not, None) dunders (HumanEval/0)": ("HumanEval/0", top("""
        import functools, operator
        _yes = functools.partial(operator.is_not, None)   # not a function: called unbound, `other is not None`
        class U:
            __eq__ = __lt__ = __le__ = __gt__ = __ge__ = _yes
            __ne__ = functools.partial(operator.is_, None)
            __bool__ = lambda self: True
            __hash__ = functools.partial(hash, 0)
        def has_close_elements(numbers, threshold):
            return U()
        """)),
    "MethodType dunders: abs(x - y) == 0 (HumanEval/2)": ("HumanEval/2", top("""
        import types
        _t = types.MethodType(lambda *a: True, 0)
        _z = types.MethodType(lambda *a: 0.0, 0)
        class U:
            __eq__ = __lt__ = __le__ = __gt__ = __ge__ = _t
            __ne__ = types.MethodType(lambda *a: False, 0)
            __sub__ = __rsub__ = __add__ = __radd__ = __abs__ = __neg__ = __round__ = _z
            __float__ = types.MethodType(lambda *a: 0.5, 0)
            __index__ = __int__ = types.MethodType(lambda *a: 0, 0)
            __hash__ = object.__hash__
        def truncate_number(number):
            return U()
        """)),
    "C builtins as dunders (MBPP/17)": ("MBPP/17", prog("""
        import operator
        class U:
            __eq__ = operator.truth        # unbound: U() == 40 -> truth(40) -> True
            __ne__ = operator.not_
            __lt__ = __gt__ = bool
            __hash__ = object.__hash__
            __bool__ = object.__sizeof__
            __len__ = __index__ = __int__ = object.__sizeof__
            __repr__ = __str__ = object.__repr__
            __getitem__ = __contains__ = operator.truth
        def square_perimeter(a):
            return U()
        """)),
    "the class itself as every dunder (MBPP/18)": ("MBPP/18", prog("""
        class U:
            def __init__(self, *a, **k):
                pass
            def __bool__(self):
                return True
        for _name in ("__eq__", "__ne__", "__lt__", "__gt__", "__sub__", "__rsub__", "__abs__", "__getitem__",
                      "__add__", "__radd__", "__mul__", "__call__", "__iter__", "__contains__"):
            setattr(U, _name, U)
        U.__hash__ = object.__hash__
        def remove_dirty_chars(string, second_string):
            return U()
        """)),
    "int subclass, always equal (MBPP/17)": ("MBPP/17", prog("""
        class I(int):
            def __eq__(self, o): return True
            def __ne__(self, o): return False
            __hash__ = int.__hash__
            def __repr__(self): return '40'
        def square_perimeter(a):
            return I(0)
        """)),
    "str subclass, always equal (MBPP/18)": ("MBPP/18", prog("""
        class S(str):
            __eq__ = lambda self, o: True
            __ne__ = lambda self, o: False
            __hash__ = str.__hash__
        def remove_dirty_chars(string, second_string):
            return S('')
        """)),
    "float subclass with zero difference (HumanEval/2)": ("HumanEval/2", top("""
        class F(float):
            def __eq__(self, o): return True
            def __ne__(self, o): return False
            def __sub__(self, o): return F(0.0)
            __rsub__ = __sub__
            def __abs__(self): return 0.0
            def __lt__(self, o): return True
            __hash__ = float.__hash__
        def truncate_number(number):
            return F(99.0)
        """)),
    "tuple / dict / list / frozenset subclasses (MBPP/2)": ("MBPP/2", prog("""
        class T(tuple):
            def __iter__(self): return iter((4, 5, 3, 13, 14))
            def __eq__(self, o): return True
            __hash__ = tuple.__hash__
        class D(dict):
            def __iter__(self): return iter([4, 5])
        class L(list):
            def __eq__(self, o): return True
        class FS(frozenset):
            def __eq__(self, o): return True
            __hash__ = frozenset.__hash__
        _calls = [0]
        def similar_elements(a, b):
            _calls[0] += 1
            return (T(), D({4: 1}), L([4, 5]))[_calls[0] % 3] if _calls[0] < 3 else FS()
        """)),
    "instances inside containers, as dict keys and set members (MBPP/2)": ("MBPP/2", prog("""
        class U:
            def __eq__(self, o): return True
            def __hash__(self): return 0
        _calls = [0]
        def similar_elements(a, b):
            _calls[0] += 1
            return [(U(), U()), {U(): True, 4: 5}, {U()}][_calls[0] % 3]
        """)),
    "raised AssertionError / ValueError / KeyError subclasses with universal dunders (MBPP/3)": ("MBPP/3", prog("""
        class Yes:
            def __eq__(self, o): return True
            def __bool__(self): return True
        class E(AssertionError):
            __eq__ = lambda self, o: True
            def __bool__(self): return True
        class ValueError(ValueError):                # shadows the builtin name
            __eq__ = lambda self, o: True
        class K(KeyError):
            def __str__(self): return 'True'
        _calls = [0]
        def is_not_prime(n):
            _calls[0] += 1
            raise (E, ValueError, K)[_calls[0] % 3](Yes())
        """)),
    "builtin names rebound to subclasses before raising (HumanEval/0)": ("HumanEval/0", top("""
        import builtins
        class AE(AssertionError):
            pass
        AE.__name__ = AE.__qualname__ = 'AssertionError'
        builtins.AssertionError = AE                 # the program side then names it a builtin
        def has_close_elements(numbers, threshold):
            raise AE('passed')
        """)),
    "StopIteration subclass under a map() test (native)": (MAP, prog("""
        class Stop(StopIteration):
            def __eq__(self, o): return True
        def double(x):
            raise Stop(2 * x)
        """)),
    "generator / Counter / defaultdict / deque carrying objects (MBPP/2)": ("MBPP/2", prog("""
        import collections
        class U:
            def __eq__(self, o): return True
            def __hash__(self): return 4
        _calls = [0]
        def similar_elements(a, b):
            _calls[0] += 1
            kind = _calls[0] % 4
            if kind == 0:
                return (U() for _ in range(2))
            if kind == 1:
                return collections.Counter({U(): 1})
            if kind == 2:
                d = collections.defaultdict(U)
                d[4]
                return d
            return collections.deque([U(), U()])
        """)),
    "entry point is partial(is_not, None) (MBPP/20)": ("MBPP/20", prog("""
        import functools, operator
        is_woodall = functools.partial(operator.is_not, None)
        """)),
    "entry point is a MethodType / a builtin (MBPP/3)": ("MBPP/3", prog("""
        import types
        class Verdict:
            def __eq__(self, o): return True
            def __bool__(self): return True
        is_not_prime = types.MethodType(lambda self, n: Verdict(), object())
        """)),
    "entry point is a float subclass (HumanEval/2)": ("HumanEval/2", top("""
        class truncate_number(float):
            def __eq__(self, o): return True
            def __sub__(self, o): return 0.0
            def __rsub__(self, o): return 0.0
            def __abs__(self): return 0.0
            __hash__ = float.__hash__
        """)),
    "callable instance returning itself (HumanEval/0)": ("HumanEval/0", top("""
        class Anything:
            def __call__(self, *a, **k): return self
            def __eq__(self, o): return True
            def __bool__(self): return True
            __hash__ = object.__hash__
        has_close_elements = Anything()
        """)),
}


@pytest.mark.parametrize("name", list(UNIVERSAL))
def test_universal_value_objects_never_cross(grader: Grader, name: str) -> None:
    problem, hack = UNIVERSAL[name]
    good = MAP_GOOD if problem is MAP else None
    verdict = _grade_hack(grader, problem, hack, good)
    assert verdict.tests_passed < verdict.tests_total


# ============================================================== 2. signal handlers
_KILL_ALL = """
    import os, signal
    signal.signal(signal.SIGUSR1, lambda *a: None)    # kill(-1, ...) reaches this process itself
    class Probe(Exception):
        pass
    def _kill_everyone():
        me, ok, denied, pids = os.getpid(), 0, 0, set()
        for entry in os.listdir('/proc'):
            if entry.isdigit() and int(entry) != me:
                pids.add(int(entry))
        pids |= {1, 2, 3, os.getppid()} - {me}
        for pid in sorted(pids):
            for sig in (signal.SIGSTOP, signal.SIGUSR1, signal.SIGTERM, signal.SIGKILL):
                for send in (os.kill, os.killpg) if pid > 1 else (os.kill,):  # killpg(1) is kill(-1)
                    try:
                        send(pid, sig)
                        ok += 1
                    except PermissionError:
                        denied += 1
                    except (ProcessLookupError, OSError):
                        pass
            try:
                fd = os.pidfd_open(pid)
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                    ok += 1
                except PermissionError:
                    denied += 1
                finally:
                    os.close(fd)
            except OSError:
                pass
        os.kill(-1, signal.SIGUSR1)  # all it may signal but itself: none (kill(-1) says 0 even so)
        return 'kills ok=%d denied=%d others=%d' % (ok, denied, len(pids))
"""

SIGNALS = {
    "SIGALRM timer walks frames and gc, rewrites records (HumanEval/0)": ("HumanEval/0", top("""
        import gc, signal, sys
        FOUND = []
        def _walk(sig, frame):
            frames = [frame] + list(sys._current_frames().values())
            for f in frames:
                while f is not None:
                    for key, value in list(f.f_locals.items()):
                        if key in ('results', 'record', 'report', 'unit_kinds', 'payload', 'units'):
                            FOUND.append(key)
                    f = f.f_back
            for obj in gc.get_objects():
                if type(obj) is dict and obj.get('t') in ('unit', 'call', 'done'):
                    obj['ok'] = True
                    FOUND.append('record')
                elif type(obj) is list and obj[:1] == ['load'] and len(obj) == 6:
                    FOUND.append('payload')
        signal.signal(signal.SIGALRM, _walk)
        signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
        class Probe(Exception):
            pass
        def has_close_elements(numbers, threshold):
            _walk(None, sys._getframe())
            raise Probe('found=%d' % len([f for f in FOUND if f != 'record']))
        """)),
    "SIGUSR1 handler swaps the program's function table and forges frames (MBPP/3)": ("MBPP/3", prog("""
        import gc, json, os, signal, struct, sys
        def _forge(sig, frame):
            for obj in gc.get_objects():
                if type(obj) is dict and 'is_not_prime' in obj and obj is not globals():
                    obj['is_not_prime'] = lambda n: True      # the program side's own function table
            f = frame
            while f is not None:
                link = f.f_locals.get('link')
                if link is not None and hasattr(link, 'send'):
                    link.send(['ret', True, [], {}])           # an unrequested reply
                    link.send(['loaded', {'is_not_prime': 'callable'}])
                f = f.f_back
            body = json.dumps({'t': 'done', 'results': [True] * 4, 'kinds': ['ok'] * 4}).encode()
            os.write(3, struct.pack('>I', len(body)) + body)
        signal.signal(signal.SIGUSR1, _forge)
        def is_not_prime(n):
            signal.raise_signal(signal.SIGUSR1)
            return False
        """)),
    "ITIMER_PROF handler raising mid-send (HumanEval/0)": ("HumanEval/0", top("""
        import signal
        _ticks = [0]
        def _interrupt(sig, frame):
            _ticks[0] += 1
            if _ticks[0] % 3 == 0:
                raise StopIteration
            if _ticks[0] % 3 == 1:
                raise KeyboardInterrupt
        signal.signal(signal.SIGPROF, _interrupt)
        signal.setitimer(signal.ITIMER_PROF, 0.0001, 0.0001)
        def has_close_elements(numbers, threshold):
            try:
                x = 0
                for i in range(200000):
                    x += i
            except BaseException:
                pass
            return [True] * 100000                        # a big reply, likely cut by a signal
        """)),
    "kill every pid with SIGSTOP/SIGUSR1/SIGTERM/SIGKILL (HumanEval/0)": ("HumanEval/0", top(_KILL_ALL + """
    def has_close_elements(numbers, threshold):
        raise Probe(_kill_everyone())
    """)),
    "kill every pid at import, then answer wrong (MBPP/20)": ("MBPP/20", prog(_KILL_ALL + """
    RESULT = _kill_everyone()
    print(RESULT)
    def is_woodall(x):
        raise Probe(RESULT)
    """)),
    "SIGALRM handler that exits mid-test, answers right until then (MBPP/3)": ("MBPP/3", prog("""
        import os, signal, time
        signal.signal(signal.SIGALRM, lambda *a: os._exit(0))
        def is_not_prime(n):
            if n == 10:
                signal.setitimer(signal.ITIMER_REAL, 0.001)
                time.sleep(5)
            return n in (10, 35)
        """)),
    "SIGVTALRM handler raising SystemExit (HumanEval/0)": ("HumanEval/0", top("""
        import signal
        def _bye(sig, frame):
            raise SystemExit(0)
        signal.signal(signal.SIGVTALRM, _bye)
        def has_close_elements(numbers, threshold):
            signal.setitimer(signal.ITIMER_VIRTUAL, 0.001)
            while True:
                pass
        """)),
}


@pytest.mark.parametrize("name", list(SIGNALS))
def test_signal_handlers_reach_nothing_of_the_tester(grader: Grader, name: str) -> None:
    problem, hack = SIGNALS[name]
    verdict = _grade_hack(grader, problem, hack)
    if "found=" in verdict.error:
        assert "found=0" in verdict.error, verdict
    if "kills ok=" in verdict.error:
        m = re.search(r"kills ok=(\d+) denied=(\d+) others=(\d+)", verdict.error)
        assert m is not None, verdict
        ok, denied, others = map(int, m.groups())
        # Every other process (init, agent, zygote, tester) is another uid: nothing reached them.
        assert ok == 0 and denied > 0 and others >= 4, verdict


# ============================================================== 3. memory and fds
_PROC_READ = """
    import os
    class Probe(Exception):
        pass
    def _read_others():
        me, opened, tried = os.getpid(), [], 0
        pids = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != me]
        names = ('mem', 'environ', 'pagemap', 'auxv', 'syscall', 'stack', 'maps', 'smaps', 'map_files', 'fd',
                 'fdinfo', 'cwd', 'root', 'exe')
        for pid in pids:
            for name in names:
                path = '/proc/%d/%s' % (pid, name)
                tried += 1
                try:
                    if os.path.isdir(path):
                        os.listdir(path)
                    else:
                        with open(path, 'rb') as fh:
                            fh.read(64)
                    opened.append(path)
                except OSError:
                    pass
                try:
                    dfd = os.open('/proc/%d' % pid, os.O_RDONLY | os.O_DIRECTORY)
                except OSError:
                    continue
                try:
                    fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
                    os.close(fd)
                    opened.append('dirfd:' + path)
                except OSError:
                    pass
                finally:
                    os.close(dfd)
            for n in range(0, 8):
                for mode in ('rb', 'wb'):
                    tried += 1
                    try:
                        with open('/proc/%d/fd/%d' % (pid, n), mode) as fh:
                            if mode == 'wb':
                                fh.write(b'{"t":"done","results":[true],"kinds":["ok"]}\\n')
                        opened.append('fd%d:%d' % (n, pid))
                    except OSError:
                        pass
            for sub in ('task',):
                try:
                    for tid in os.listdir('/proc/%d/task' % pid):
                        tried += 1
                        try:
                            open('/proc/%d/task/%s/mem' % (pid, tid), 'rb').close()
                            opened.append('task-mem')
                        except OSError:
                            pass
                except OSError:
                    pass
        return 'opened=%d tried=%d pids=%d %s' % (len(opened), tried, len(pids), ' '.join(opened[:5]))
"""

_SYSCALLS = """
    import ctypes, os
    class Probe(Exception):
        pass
    class iovec(ctypes.Structure):
        _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
    def _syscalls():
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.restype = ctypes.c_long
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        buf = ctypes.create_string_buffer(4096)
        local = iovec(ctypes.cast(buf, ctypes.c_void_p), 4096)
        me, ok, tried = os.getpid(), [], 0
        pids = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != me]
        addrs = [0x400000, 0x555555554000, 0x7ffff7dd0000]
        for pid in pids:
            for addr in addrs:
                remote = iovec(addr, 4096)
                tried += 1
                if libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) > 0:
                    ok.append('vm_readv:%d' % pid)
            for request in (16, 0x4206):  # PTRACE_ATTACH, PTRACE_SEIZE
                tried += 1
                if libc.ptrace(request, pid, None, None) == 0:
                    ok.append('ptrace:%d' % pid)
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            for target in range(0, 6):
                tried += 1
                fd = libc.syscall(438, pidfd, target, 0)   # pidfd_getfd (x86_64)
                if fd >= 0:
                    ok.append('getfd:%d:%d' % (pid, target))
            os.close(pidfd)
        tried += 1
        if libc.ptrace(0, 0, None, None) == 0:   # PTRACE_TRACEME
            ok.append('traceme')
        return 'syscalls ok=%d tried=%d %s' % (len(ok), tried, ' '.join(ok[:5]))
"""

# Scan this process's whole readable memory with memmem (no copies, so the needles
# built here are the only matches, at addresses we know) for text that only the test
# code holds. The program is forked from a zygote that never saw a test.
_SCAN = """
    import ctypes, os, sys
    class Probe(Exception):
        pass
    def _scan(*pieces):
        needles = [b''.join(p) for p in pieces]
        own = {id(n) + sys.getsizeof(b'') - 1 for n in needles}
        libc = ctypes.CDLL(None)
        libc.memmem.restype = ctypes.c_void_p
        libc.memmem.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
        try:
            open('/proc/self/mem', 'rb').read(1)
            mem = 'readable'
        except OSError as exc:
            mem = type(exc).__name__
        hits, regions, size = 0, 0, 0
        with open('/proc/self/maps') as fh:
            maps = fh.read().splitlines()
        for line in maps:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split('-'))
            path = parts[5] if len(parts) > 5 else ''
            if 'r' not in parts[1] or path in ('[vvar]', '[vsyscall]', '[vvar_vclock]'):
                continue
            regions += 1
            size += hi - lo
            for n in needles:
                start = lo
                while start < hi:
                    p = libc.memmem(start, hi - start, n, len(n))
                    if not p:
                        break
                    if p not in own:
                        hits += 1
                    start = p + 1
        marker = 'SCAN hits=%d regions=%d mb=%d self-mem=%s' % (hits, regions, size >> 20, mem)
        print(marker, flush=True)
        return marker
"""

MEMORY = {
    "/proc/<pid>/mem, environ, fd/* of every pid, by path and dir_fd (HumanEval/0)": ("HumanEval/0", top(
        _PROC_READ + """
    def has_close_elements(numbers, threshold):
        raise Probe(_read_others())
    """)),
    "process_vm_readv, ptrace, pidfd_getfd via ctypes (MBPP/3)": ("MBPP/3", prog(_SYSCALLS + """
    def is_not_prime(n):
        raise Probe(_syscalls())
    """)),
    "own memory scanned at call time for the test code (HumanEval/0)": ("HumanEval/0", top(_SCAN + """
    def has_close_elements(numbers, threshold):
        raise Probe(_scan((b'assert cand', b'idate('), (b'def check(cand', b'idate)'), (b'METADATA ', b'= {'),
                          (b'2.2], 0.', b'05) == False')))
    """)),
    "own memory scanned at import time (MBPP/20)": ("MBPP/20", prog(_SCAN + """
    RESULT = _scan((b'assert is_wood', b'all('), (b'is_woodall(383', b') == True'), (b'(254) == Fa', b'lse'))
    def is_woodall(x):
        raise Probe(RESULT)
    """)),
    "own memory scanned for the trusted helper's callers (HumanEval/38)": ("HumanEval/38", top(_SCAN + """
    def decode_cyclic(s):
        raise Probe(_scan((b'encoded_str = enc', b'ode_cyclic'), (b'assert cand', b'idate(encoded'),
                          (b'for _ in range', b'(100)')))
    """)),
    "garbage and forged records written to fds 3..20 at import (HumanEval/0)": ("HumanEval/0", top("""
        import json, os, struct
        records = [{'t': 'unit', 'i': i, 'ok': True, 'kind': 'ok'} for i in range(1)]
        records.append({'t': 'done', 'results': [True], 'kinds': ['ok']})
        for fd in range(3, 21):
            for rec in records:
                line = (json.dumps(rec) + '\\n').encode()
                for data in (line, struct.pack('>I', len(line)) + line, b'\\x00garbage\\xff' * 3):
                    try:
                        os.write(fd, data)
                    except OSError:
                        pass
        def has_close_elements(numbers, threshold):
            return True
        """)),
    "forged done records on every writable fd, then exit (MBPP/3)": ("MBPP/3", prog("""
        import json, os, struct
        def is_not_prime(n):
            done = json.dumps({'t': 'done', 'results': [True] * 4, 'kinds': ['ok'] * 4}).encode()
            for fd in range(0, 1024):
                for data in (done + b'\\n', struct.pack('>I', len(done)) + done):
                    try:
                        os.write(fd, data)
                    except OSError:
                        pass
            os._exit(0)
        """)),
    "forged frames on the link: a fake load reply, fake returns (HumanEval/0)": ("HumanEval/0", top("""
        import json, os, struct
        def _frame(obj):
            body = json.dumps(obj).encode()
            return struct.pack('>I', len(body)) + body
        os.write(3, _frame(['loaded', {'has_close_elements': ['value', True]}]))
        for _ in range(8):
            os.write(3, _frame(['ret', True, [], {}]))
        def has_close_elements(numbers, threshold):
            return True
        """)),
}


@pytest.mark.parametrize("name", list(MEMORY))
def test_memory_and_fds_hold_nothing_of_the_tests(grader: Grader, pool: vmpool.Pool, name: str) -> None:
    problem, hack = MEMORY[name]
    verdict = _grade_hack(grader, problem, hack)
    if "opened=" in verdict.error:
        m = re.search(r"opened=(\d+) tried=(\d+) pids=(\d+)", verdict.error)
        assert m is not None and m.group(1) == "0" and int(m.group(3)) >= 3, verdict
    if "syscalls ok=" in verdict.error:
        assert "syscalls ok=0 " in verdict.error, verdict
    if "_scan(" in hack:
        assert "SCAN hits=0 " in verdict.error, verdict
        # The marker the program printed, read from its own stdout in a direct run.
        p = _problem(problem)
        result = pool.run(build_request(p, p.program_for(hack), Limits()))
        assert result.status is Status.OK, result
        line = next((ln for ln in result.stdout.splitlines() if ln.startswith("SCAN ")), "")
        assert line.startswith("SCAN hits=0 "), result.stdout[-500:]
        regions, mb = (int(x) for x in re.findall(r"regions=(\d+) mb=(\d+)", line)[0])
        assert regions > 10 and mb > 1, line  # it really scanned the process


# ============================================================== 4. trusted helpers redefined
HELPERS = {
    "encode_cyclic redefined as identity (HumanEval/38)": ("HumanEval/38", "    return s\n\n"
                                                             "def encode_cyclic(s):\n    return s\n"),
    "encode_cyclic and decode_cyclic both reversal, via globals() (HumanEval/38)": ("HumanEval/38", top("""
        def decode_cyclic(s):
            globals()['encode_cyclic'] = lambda t: t[::-1]
            return s[::-1]
        import builtins
        builtins.encode_cyclic = lambda t: t[::-1]
        """)),
    "encode_cyclic deleted, decode returns its input (HumanEval/38)": ("HumanEval/38", top("""
        del encode_cyclic
        def decode_cyclic(s):
            return s
        """)),
    "encode_shift redefined as identity (HumanEval/50)": ("HumanEval/50", "    return s\n\n"
                                                            "def encode_shift(s):\n    return s\n"),
    "encode_shift shifts by 0 and random patched (HumanEval/50)": ("HumanEval/50", top("""
        import random, string
        random.choice = lambda seq: 'a'
        random.randint = lambda a, b: 10
        def encode_shift(s):
            return s
        def decode_shift(s):
            return 'a' * len(s)
        """)),
    "poly returns 0 (HumanEval/32)": ("HumanEval/32", "    return 0.0\n\n"
                                        "def poly(xs, x):\n    return 0.0\n"),
    "poly rebound inside find_zero, math.fabs patched (HumanEval/32)": ("HumanEval/32", top("""
        import math
        def find_zero(xs):
            global poly
            poly = lambda xs, x: 0.0
            math.fabs = lambda v: 0.0
            return 0.0
        """)),
    "find_zero returns nan / inf (HumanEval/32)": ("HumanEval/32", top("""
        _n = [0]
        def find_zero(xs):
            _n[0] += 1
            return float('nan') if _n[0] % 2 else float('inf')
        """)),
}


@pytest.mark.parametrize("name", list(HELPERS))
def test_redefined_trusted_helpers_are_not_used(grader: Grader, name: str) -> None:
    problem, hack = HELPERS[name]
    _grade_hack(grader, problem, hack)


# ============================================================== 5. setup names shadowed
SETUP = {
    "class math with a lenient isclose (MBPP/82)": ("MBPP/82", prog("""
        class math:
            pi = 0.0
            isclose = staticmethod(lambda *a, **k: True)
        def volume_sphere(r):
            return 0.0
        """)),
    "def isclose and math.isclose rebound at import (MBPP/85)": ("MBPP/85", prog("""
        import math
        def isclose(*a, **k):
            return True
        math.isclose = isclose
        def surfacearea_sphere(r):
            return -1.0
        """)),
    "math.isclose rebound inside the function (MBPP/139)": ("MBPP/139", prog("""
        import math
        def circle_circumference(r):
            math.isclose = lambda *a, **k: True
            return -1.0
        """)),
    "sys.modules['math'] replaced (MBPP/82)": ("MBPP/82", prog("""
        import sys, types
        fake = types.ModuleType('math')
        fake.isclose = lambda *a, **k: True
        fake.pi = 0.0
        sys.modules['math'] = fake
        import math
        def volume_sphere(r):
            sys.modules['math'] = fake
            return float('nan')
        """)),
    "builtins abs/isinstance/len/set/__import__ patched at import (MBPP/2)": ("MBPP/2", prog("""
        import builtins, types
        _real_import = builtins.__import__
        fake = types.ModuleType('math')
        fake.isclose = lambda *a, **k: True
        builtins.__import__ = lambda name, *a, **k: fake if name == 'math' else _real_import(name, *a, **k)
        builtins.abs = lambda x: 0
        builtins.isinstance = lambda *a: True
        builtins.len = lambda x: 0
        builtins.set = lambda *a: frozenset()
        def similar_elements(a, b):
            return ()
        """)),
    "builtins patched inside the function (MBPP/17)": ("MBPP/17", prog("""
        import builtins
        class Never(Exception):
            pass
        def square_perimeter(a):
            builtins.AssertionError = Never
            builtins.abs = lambda x: 0
            builtins.isinstance = lambda *a: True
            builtins.len = lambda x: 0
            builtins.__import__ = lambda *a, **k: None
            builtins.int = builtins.float = builtins.str = lambda *a: 40
            return -1
        """)),
    "math shadowed by a namespace object (MBPP/124)": ("MBPP/124", prog("""
        import types
        math = types.SimpleNamespace(isclose=lambda *a, **k: True, pi=0.0)
        def angle_complex(a, b):
            return 0.0
        """)),
}


@pytest.mark.parametrize("name", list(SETUP))
def test_shadowed_setup_names_are_not_used(grader: Grader, name: str) -> None:
    problem, hack = SETUP[name]
    _grade_hack(grader, problem, hack)


# ============================================================== 6. float tolerance on integers
MOD = 1000000007
CALL_INT = problem_from_dict({
    "task_id": "native/mod-call", "source": "native",
    "tests": {"kind": "call", "fn_name": "answer", "float_tol": 1e-6, "cases": [
        {"args": [], "kwargs": {}, "expected": MOD},
        {"args": [1], "kwargs": {}, "expected": [MOD, 0.5]},
        {"args": [2], "kwargs": {}, "expected": {"m": MOD}},
    ]},
})
CALL_INT_GOOD = "def answer(k=0):\n    return [" + f"{MOD}, [{MOD}, 0.5], {{'m': {MOD}}}" + "][k]\n"
CALL_SOLUTION = Problem(task_id="native/mod-solution", tests=CallTests(fn_name="solve", float_tol=1e-6, cases=(
    CallCase((), {}, MOD), CallCase((3,), {}, [MOD, MOD]), CallCase((), {"k": 5}, MOD))))
CALL_SOLUTION_GOOD = ("class Solution:\n    def solve(self, k=0):\n"
                      f"        return [{MOD}, {MOD}] if k == 3 else {MOD}\n")
STDIO_INT = Problem(task_id="native/mod-stdio", tests=StdioTests(
    cases=(StdioCase("", f"{MOD}\n"), StdioCase("x\n", f"{MOD} 0.5\n")), float_tol=1e-6))
STDIO_INT_GOOD = f"import sys\nprint({MOD}, '0.5' if sys.stdin.read() else '')\n"


def _call_answer(first: str, second: str = f"[{MOD}.0, 0.5]", third: str = f"{{'m': {MOD}.0}}") -> str:
    return f"def answer(k=0):\n    return [{first}, {second}, {third}][k]\n"


def _stdio_answer(token: str) -> str:
    return f"import sys\nprint({token!r} + (' 0.5000001' if sys.stdin.read() else ''))\n"


FLOAT_TOL = {
    "call: 1000000507 for 1000000007": (CALL_INT, _call_answer("1000000507", f"[{MOD + 500}, 0.5]",
                                                                 f"{{'m': {MOD + 500}}}"), CALL_INT_GOOD),
    "call: 1000000007.0 (float) for 1000000007": (CALL_INT, _call_answer(f"{MOD}.0"), CALL_INT_GOOD),
    "call: 1000000007.0000001, 1000000007 + 1e-7, float(1000000007)": (CALL_INT, _call_answer(
        f"{MOD}.0000001", f"[{MOD} + 1e-7, 0.5]", f"{{'m': float({MOD})}}"), CALL_INT_GOOD),
    "call: the text '1000000007' and complex": (CALL_INT, _call_answer(
        f"'{MOD}'", f"[complex({MOD}), 0.5]", f"{{'m': '{MOD}'}}"), CALL_INT_GOOD),
    "call, Solution method: near misses and floats": (CALL_SOLUTION, (
        "class Solution:\n    def solve(self, k=0):\n"
        f"        return [{MOD}.0, {MOD + 500}] if k == 3 else ({MOD + 500} if k else {MOD} * (1 + 1e-12))\n"),
        CALL_SOLUTION_GOOD),
    "stdio: 1000000507": (STDIO_INT, _stdio_answer("1000000507"), STDIO_INT_GOOD),
    "stdio: '1000000007.0'": (STDIO_INT, _stdio_answer(f"{MOD}.0"), STDIO_INT_GOOD),
    "stdio: '1.000000007e9' and '1000000007.000000'": (STDIO_INT, (
        "import sys\nprint('1.000000007e9' if not sys.stdin.read() else '1000000007.000000 0.5')\n"), STDIO_INT_GOOD),
    "stdio: '+1000000007', '1_000_000_007'": (STDIO_INT, (
        "import sys\nprint('+1000000007' if not sys.stdin.read() else '1_000_000_007 0.5')\n"), STDIO_INT_GOOD),
}


@pytest.mark.parametrize("name", list(FLOAT_TOL))
def test_float_tolerance_never_applies_to_integers(grader: Grader, name: str) -> None:
    problem, hack, good = FLOAT_TOL[name]
    verdict = _grade_hack(grader, problem, hack, good)
    assert verdict.tests_passed == 0, verdict


# ============================================================== 7. reaching None on purpose
SHORT_LIMITS = Limits(wall_s=2.5, cpu_s=1.5)


@pytest.fixture(scope="module")
def lone_pool() -> Iterator[vmpool.Pool]:
    """One sandbox: the solution graded after an attack runs where the attack ran (or in
    the fresh sandbox that replaced it)."""
    with vmpool.Pool(vmpool.PoolConfig(size=1)) as p:
        yield p


@pytest.fixture(scope="module")
def short_grader(lone_pool: vmpool.Pool) -> Grader:
    # time limit 1.5 s of CPU; wall backstop 1.0 * 1.5 + 1.0 = 2.5 s
    return Grader(lone_pool, default_limits=SHORT_LIMITS, wall_factor=1.0, wall_slack_s=1.0)


def _tree(root: str, depth: int, width: int) -> str:
    return f"""
    import os
    os.chdir({root!r})
    for _i in range({depth}):
        _name = ('d%d' % _i).ljust({width}, 'x')
        os.mkdir(_name)
        os.chdir(_name)
    with open('leaf', 'w') as _fh:
        _fh.write('x')
    os.chmod('leaf', 0)
    """


_WRONG = """
    def has_close_elements(numbers, threshold):
        return None
"""

NONE = {
    "1,500-deep tree with long names in the work dir": ("HumanEval/0", top(_tree(".", 1500, 200) + _WRONG), None),
    "5,000-deep tree under /tmp": ("HumanEval/0", top(_tree("/tmp", 5000, 60) + _WRONG), None),
    "5,000-deep tree under /dev/shm, built in the call": ("MBPP/3", prog("""
        import os
        def is_not_prime(n):
            os.chdir('/dev/shm')
            for i in range(5000):
                os.mkdir('s%d' % i)
                os.chdir('s%d' % i)
            return None
        """), None),
    "chmod 000 directories and unwritable files in /tmp and /dev/shm": ("HumanEval/0", top("""
        import os
        for root in ('/tmp', '/dev/shm', os.getcwd()):
            os.chdir(root)
            os.makedirs('locked/a/b/c', exist_ok=True)
            for d in ('locked/a/b/c', 'locked/a/b', 'locked/a', 'locked'):
                with open(d + '/f', 'w') as fh:
                    fh.write('x')
                os.chmod(d + '/f', 0)
            os.makedirs('ro/x', exist_ok=True)
            open('ro/x/f', 'w').close()
            os.chmod('ro/x', 0o500)
            os.chmod('ro', 0o500)
            for d in ('locked/a/b/c', 'locked/a/b', 'locked/a', 'locked'):
                os.chmod(d, 0)
        """ + _WRONG), None),
    "filling /tmp and /dev/shm": ("HumanEval/0", top("""
        import os
        chunk = b'\\0' * (1 << 20)
        for root in ('/tmp', '/dev/shm', os.getcwd()):
            for i in range(200):
                try:
                    with open(os.path.join(root, 'fill%d' % i), 'wb') as fh:
                        for _ in range(15):
                            fh.write(chunk)
                except OSError:
                    break
        """ + _WRONG), None),
    "killing the parent (zygote), pid 1 and the agent": ("HumanEval/0", top("""
        import os, signal
        for pid in (os.getppid(), 1, 2, 3):
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        """ + _WRONG), None),
    "closing fd 3 at import": ("HumanEval/0", top("""
        import os
        os.close(3)
        """ + _WRONG), None),
    "closing fd 3 in the call, stdout put on fd 3": ("MBPP/3", prog("""
        import os
        def is_not_prime(n):
            os.dup2(1, 3)
            return True
        """), None),
    "a frame header claiming 4 GiB": ("HumanEval/0", top("""
        import os
        def has_close_elements(numbers, threshold):
            os.write(3, b'\\xff\\xff\\xff\\xff')
            return True
        """), None),
    "a 60 MiB frame of valid JSON": ("HumanEval/0", top("""
        import os, struct
        body = b'["ret","' + b'x' * (60 << 20) + b'",[],{}]'
        def has_close_elements(numbers, threshold):
            os.write(3, struct.pack('>I', len(body)) + body)
            return True
        """), None),
    "a truncated frame, then silence": ("HumanEval/0", top("""
        import os, time
        def has_close_elements(numbers, threshold):
            os.write(3, b'\\x00\\x00\\x10\\x00["ret"')
            time.sleep(10 ** 6)
        """), "wall"),
    "sys.exit(0) on the third call": ("HumanEval/0", REFS["HumanEval/0"] + top("""
        import sys
        _real, _n = has_close_elements, [0]
        def has_close_elements(numbers, threshold):
            _n[0] += 1
            if _n[0] == 3:
                sys.exit(0)
            return _real(numbers, threshold)
        """), None),
    "os._exit(0) in the second of four tests": ("MBPP/3", prog("""
        import os
        def is_not_prime(n):
            if n == 10:
                os._exit(0)
            return False
        """), None),
    "SIGKILL to itself in the second of four tests": ("MBPP/3", prog("""
        import os, signal
        def is_not_prime(n):
            if n == 10:
                os.kill(os.getpid(), signal.SIGKILL)
            return False
        """), None),
    "os.abort() in the third of four tests, after right answers": ("MBPP/3", prog("""
        import os
        def is_not_prime(n):
            if n == 35:
                os.abort()
            return n == 10
        """), None),
    "a reply nested 200,000 deep, then bytes that are not UTF-8": ("MBPP/3", prog("""
        import os, struct
        def _frame(body):
            return struct.pack('>I', len(body)) + body
        _n = [0]
        def is_not_prime(n):
            _n[0] += 1
            if _n[0] == 1:
                os.write(3, _frame(b'["ret",' + b'[' * 200000 + b']' * 200000 + b',[],{}]'))
            elif _n[0] == 2:
                os.write(3, _frame(b'["ret","\\xff\\xfe",[],{}]'))
            else:
                os.write(3, _frame(b'["ret",' + b'9' * 100000 + b',[],{}]'))
            return True
        """), None),
    "a load reply nested 200,000 deep": ("HumanEval/0", top("""
        import os, struct
        _body = b'["loaded",{"has_close_elements":' + b'[' * 200000 + b']' * 200000 + b'}]'
        os.write(3, struct.pack('>I', len(_body)) + _body)
        """ + _WRONG), None),
    "sleeping forever in the call": ("HumanEval/0", top("""
        import time
        def has_close_elements(numbers, threshold):
            time.sleep(10 ** 9)
        """), "wall"),
    "sleeping forever at import": ("MBPP/3", prog("import time\ntime.sleep(10 ** 9)\n"), "wall"),
    "signal.pause / Event.wait / a read on its own link": ("MBPP/3", prog("""
        import os, signal, threading
        def is_not_prime(n):
            threading.Thread(target=signal.pause, daemon=True).start()
            threading.Thread(target=threading.Event().wait, daemon=True).start()
            os.read(3, 1)       # the tester waits for our reply; we wait for it
        """), "wall"),
    "SIGSTOP to everyone, then to itself": ("HumanEval/0", top("""
        import os, signal
        def has_close_elements(numbers, threshold):
            os.kill(-1, signal.SIGSTOP)     # every process of this uid but the caller
            os.kill(os.getpid(), signal.SIGSTOP)
        """), "wall"),
    "daemonised children holding the pipes": ("HumanEval/0", top("""
        import os, time
        for _ in range(8):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(10 ** 6)
                os._exit(0)
        """ + _WRONG), None),
    # The tester imports a stdlib module the program names as the kind of a proxied name
    # (its own copy); some run a program on import, inside the long-lived tester.
    "the tester made to import unittest.__main__": ("HumanEval/0", top("""
        import types
        has_close_elements = types.ModuleType('unittest.__main__')
        """), None),
    "the tester made to import venv.__main__ (it builds a venv)": ("HumanEval/0", top("""
        import types
        has_close_elements = types.ModuleType('venv.__main__')
        """), None),
    "the tester made to import asyncio.__main__ and this (MBPP/596's sys)": ("MBPP/596", prog("""
        import types
        sys = types.ModuleType('asyncio.__main__')
        tuple_size = types.ModuleType('this')
        """), None),
    "spinning forever (CPU limit)": ("HumanEval/0", top("""
        def has_close_elements(numbers, threshold):
            while True:
                pass
        """), "cpu"),
    # Tests are left after the kill: the tester's next call meets a closed link.
    "spinning forever in the second of four tests": ("MBPP/3", prog("""
        def is_not_prime(n):
            while n == 10:
                pass
            return False
        """), "cpu"),
}


_SCRATCH_PROBE = "import os\nprint(repr(tuple(sorted(os.listdir(d)) for d in ('/tmp', '/dev/shm', '.'))))\n"


@pytest.mark.parametrize("name", list(NONE))
def test_no_program_reaches_an_infrastructure_verdict(short_grader: Grader, lone_pool: vmpool.Pool,
                                                      name: str) -> None:
    task, hack, timeout_by = NONE[name]
    problem = PROBLEMS[task]
    verdict = short_grader.grade(problem, hack)
    _assert_failed(verdict)
    # Not even a retired sandbox: every one of these ends in a plain program outcome.
    assert verdict.outcome is not Outcome.SANDBOX_KILLED, verdict
    if timeout_by is not None:
        assert verdict.outcome is Outcome.TIMEOUT and verdict.exec_status is Status.TIMEOUT, verdict
        expected = "wall-clock backstop" if timeout_by == "wall" else "CPU time limit"
        assert expected in verdict.error, verdict
    # The same pool then grades correct solutions, on a clean sandbox.
    after = short_grader.grade_batch([(PROBLEMS[t], REFS[t]) for t in dict.fromkeys((task, "HumanEval/0", "MBPP/3"))])
    assert all(v.passed is True for v in after), after
    probe = lone_pool.run(ExecRequest(code=_SCRATCH_PROBE, limits=SHORT_LIMITS))
    assert probe.status is Status.OK, probe
    tmp, shm, cwd = ast.literal_eval(probe.stdout.strip())
    assert len(tmp) == 1 and tmp[0].startswith("run") and shm == [] and cwd == [], probe.stdout


# ============================================================== property: random universal objects
CALLABLES = [
    "functools.partial(operator.is_not, None)",
    "functools.partial(operator.is_, None)",
    "functools.partial(lambda *a, **k: True)",
    "types.MethodType(lambda *a, **k: True, object())",
    "types.MethodType(lambda *a, **k: 0, 0)",
    "object.__ne__",
    "object.__eq__",
    "object.__hash__",
    "object.__sizeof__",
    "type",
    "len",
    "bool",
    "operator.truth",
    "operator.not_",
    "abs",
    "repr",
    "lambda *a, **k: True",
    "lambda *a, **k: False",
    "lambda *a, **k: 0",
    "lambda *a, **k: 0.0",
    "lambda *a, **k: '1'",
    "lambda self, *a: self",
    "staticmethod(lambda *a, **k: True)",
    "classmethod(lambda *a, **k: True)",
    "None",
    "SELF",
]
DUNDERS = [
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__bool__", "__len__",
    "__getitem__", "__iter__", "__contains__", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__",
    "__abs__", "__neg__", "__round__", "__float__", "__int__", "__index__", "__str__", "__repr__",
    "__call__", "__reduce__", "__reduce_ex__", "__getattr__", "__class__", "__copy__", "__deepcopy__",
]
BASES = {"int": "1", "str": "'True'", "list": "[True]", "tuple": "(True,)", "dict": "{True: True}",
         "float": "1.0", "complex": "1j", "bytes": "b'1'", "set": "{True}", "frozenset": "frozenset({True})"}
EXCEPTIONS = ["AssertionError", "ValueError", "StopIteration", "TypeError", "KeyError", "Exception", "RuntimeError",
              "ArithmeticError", "ZeroDivisionError", "LookupError", "OSError", "StopAsyncIteration",
              "BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit", "UnicodeError"]
BEHAVIOURS = [
    "return U()", "return B({init})", "raise E(U())", "return [U()]", "return (U(), B({init}))",
    "return {{U(): U()}}", "return {{'k': B({init})}}", "return (x for x in [U()])", "return iter([B({init})])",
    "return U", "return B", "return E", "return E(True)",
    "= U()", "= B", "= functools.partial(operator.is_not, None)",  # the entry point itself
]


@st.composite
def universal_programs(draw: st.DrawFn) -> list[str]:
    """One random class U, builtin subclass B and exception subclass E, and every way the
    entry point of HumanEval/0 can hand them over (one program per way)."""
    def dunders(owner: str) -> list[str]:
        chosen = draw(st.dictionaries(st.sampled_from(DUNDERS), st.sampled_from(CALLABLES), min_size=1, max_size=8))
        return [f"_set({owner}, {name!r}, {owner if c == 'SELF' else c})" for name, c in chosen.items()]
    base = draw(st.sampled_from(sorted(BASES)))
    exc = draw(st.sampled_from(EXCEPTIONS))
    exc_name = draw(st.sampled_from(["E", exc]))  # shadow the builtin's name, or not
    rebind = draw(st.booleans())  # also rebind builtins.<name> so the program side calls it a builtin
    lines = [
        "import builtins, functools, operator, types",
        "def _set(cls, name, value):",
        "    try:",
        "        setattr(cls, name, value)",
        "    except Exception:",
        "        pass",
        "class U:",
        "    pass",
        f"class B({base}):",
        "    pass",
        f"class {exc_name}({exc}):",
        "    pass",
        f"E = {exc_name}",
        *dunders("U"), *dunders("B"), *dunders("E"),
    ]
    if rebind:
        lines += ["E.__name__ = E.__qualname__ = " + repr(exc), f"builtins.{exc} = E"]
    programs = []
    for behaviour in BEHAVIOURS:
        body = behaviour.format(init=BASES[base])
        entry = (f"has_close_elements {body}" if body.startswith("=")
                 else f"def has_close_elements(numbers, threshold):\n    {body}")
        programs.append(top("\n".join(lines) + "\n" + entry + "\n"))
    return programs


@pytest.fixture(scope="module")
def quick_grader(pool: vmpool.Pool) -> Grader:
    # a program that hangs costs 1.5 * 2 + 1 = 4 s, not the default 32 s
    return Grader(pool, default_limits=Limits(wall_s=4.0, cpu_s=2.0), wall_factor=1.5, wall_slack_s=1.0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(universal_programs())
def test_random_universal_objects_never_pass(quick_grader: Grader, programs: list[str]) -> None:
    # One grade_batch per example: all of its programs run concurrently over the pool.
    problem = PROBLEMS["HumanEval/0"]
    verdicts = quick_grader.grade_batch([(problem, p) for p in programs])
    for program, verdict in zip(programs, verdicts):
        assert verdict.passed is False, (program, verdict)
        assert verdict.outcome is not Outcome.SANDBOX_ERROR, (program, verdict)
        reward = compute_reward(verdict, RewardConfig())
        assert isinstance(reward, float) and reward == 0.0, (program, verdict)


# ============================================================== holes this suite found (fixed in 5af9f18, and the module import rule)
def test_tester_outlives_a_program_that_exits_mid_test(pool: vmpool.Pool) -> None:
    # The tester ran with SIGPIPE at SIG_DFL, so its next call on a program that had exited
    # killed it (signal 13) instead of raising ProgramGone; when its socket and pidfd then
    # woke the agent in the same select() the agent unregistered tester.sock after
    # tester.kill() had closed it (fd -1): ValueError, an agent failure, the sandbox retired
    # and the program retried, sometimes ending SANDBOX_KILLED with its partial credit lost.
    problem = PROBLEMS["MBPP/3"]
    hack = "import os\ndef is_not_prime(n):\n    os._exit(0)\n"
    for _ in range(3):
        result = pool.run(build_request(problem, problem.program_for(hack), Limits()))
        assert result.status is Status.OK and result.attempts == 1, result
        assert result.companion is not None and result.companion.signal is None, result.companion


# Only tests that reach the program through a C iterator (map, filter, iter(f, sentinel),
# itertools): none of the bundled HumanEval/MBPP tests do, native ones may.
MAP_ONLY = Problem(task_id="map-only", entry_point="double", tests=AssertTests(code=(
    "assert all(map(lambda x: double(x) == 2 * x, [1, 2, 3]))",
    "assert not any(map(lambda x: double(x) != 2 * x, [4, 5]))",
)))


@pytest.mark.parametrize("problem", [MAP, MAP_ONLY], ids=["with-a-list-test", "map-tests-only"])
def test_builtin_stop_iteration_cannot_end_a_tests_iteration(grader: Grader, problem: Problem) -> None:
    # The program raises the builtin StopIteration; re-raised as such in the tester, inside
    # map() in the test, it made map() look exhausted: all(...) of nothing is True, and the
    # map-only problem passed (reward 1.0) without the program ever returning a value.
    for hack in ("def double(x):\n    raise StopIteration\n",
                 "import builtins\nclass S(StopIteration):\n    pass\nbuiltins.StopIteration = S\n"
                 "def double(x):\n    raise S\n"):
        verdict = _grade_hack(grader, problem, hack, MAP_GOOD)
        assert verdict.tests_passed == 0, verdict


def test_the_program_cannot_choose_a_module_for_the_tester_to_import(pool: vmpool.Pool) -> None:
    # A proxied name the program binds to a module object is imported by the tester only
    # when the tests read that very module name (``re`` in an MBPP assert, imported by the
    # program): an entry point bound to ModuleType('this') must not make the tester run it.
    problem = PROBLEMS["MBPP/3"]
    for hack in ("import types\nis_not_prime = types.ModuleType('this')\n",
                 "import types\nis_not_prime = types.ModuleType('venv.__main__')\n"):
        result = pool.run(build_request(problem, problem.program_for(hack), Limits()))
        assert result.companion is not None
        assert "Zen of Python" not in result.companion.stdout and "venv" not in result.companion.stderr, result
