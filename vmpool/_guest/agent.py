"""Guest agent: the zygote (fork server) that runs inside every sandbox.

This file is executed by the sandbox's own interpreter (``/usr/bin/python3 -I``), not
imported by the harness: it must stay standalone (stdlib only, no imports from the
project) so the same file can run inside a namespace sandbox or a microVM guest.

Protocol, on the two file descriptors it is started with (stdin/stdout of the
sandbox process, moved away from 0/1 at start so programs never inherit them):
every message is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON. The agent sends ``{"ready": true, ...}`` once, then answers each request
``{"id", "code", "stdin", "files", "limits", "argv"}`` with one result
``{"id", "status", "exit_code", "signal", "stdout", "stderr", ...}``.

Each program runs in a freshly forked child: own process group, own temp work dir,
rlimits, stdin/stdout/stderr pipes and a private report pipe on fd 3. The agent
enforces the wall deadline and output caps, kills the child's process group and
then every other process left in the sandbox's pid namespace (daemonised
grandchildren included), and removes the work dir. One program at a time.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import selectors
import shutil
import signal
import struct
import sys
import time
import traceback

# Modules most graded programs import: loaded once here so a program pays a fork,
# not an import. The list is the zygote's "template" state.
PRELOAD = (
    "abc array bisect builtins calendar cmath collections collections.abc copy dataclasses datetime "
    "decimal enum fractions functools hashlib heapq io itertools json math numbers operator random re "
    "statistics string struct sys textwrap types typing unicodedata ast traceback tokenize inspect "
    "sysconfig warnings threading queue time resource signal contextlib"
).split()

# Code objects of requests marked ``cache_code`` (harness-authored code such as a test
# runner, identical across many requests), compiled once here in the zygote so every
# child reuses them. Model-written code is never compiled in the zygote.
_CODE_CACHE: dict[str, object] = {}
_CODE_CACHE_MAX = 16

PROGRAM_UID = 65534  # nobody: what programs run as when the agent itself is root (microVM guest)
MEMORY_EXIT = 121  # exit code the child uses after an uncaught MemoryError
WORK_ROOT = "/tmp"
SCRATCH_DIRS = ("/tmp", "/dev/shm")  # the only writable mounts in the sandbox
# microVM guests only: a directory that survives from one program to the next when
# the host asked for a persistent session (an agent's workspace, carried into
# checkpoints and forks); wiped after every program otherwise, like the others.
STATE_DIR = "/state"
STATE_SIZE = "32m"
_SESSION = {"persist": False}
HEADER = struct.Struct(">I")
MAX_FRAME = 256 << 20


def _preload() -> list[str]:
    loaded = []
    for name in PRELOAD:
        try:
            __import__(name)
            loaded.append(name)
        except Exception:  # a missing optional module must not stop the zygote
            pass
    return loaded


class Channel:
    """Length-prefixed JSON frames over a pair of file descriptors."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd

    def _read_exact(self, n: int) -> bytes | None:
        chunks = []
        while n:
            chunk = os.read(self.rfd, min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> dict | None:
        head = self._read_exact(HEADER.size)
        if head is None:
            return None
        (size,) = HEADER.unpack(head)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
        body = self._read_exact(size)
        if body is None:
            return None
        return json.loads(body)

    def send(self, message: dict) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        data = HEADER.pack(len(body)) + body
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]


PF_KTHREAD = 0x00200000


def _is_kernel_thread(pid: int) -> bool:
    """True for a kernel thread (visible only where this agent runs in the initial pid
    namespace, i.e. as a microVM guest's pid 1): SIGKILL does not end those."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return bool(int(fields[6]) & PF_KTHREAD)
    except (OSError, IndexError, ValueError):
        return False


def _other_pids(keep: int = 0) -> list[int]:
    """Every process in this pid namespace except init (1), this agent, ``keep`` and kernel threads."""
    me = os.getpid()
    guest_init = me == 1
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            if pid != 1 and pid != me and pid != keep and not (guest_init and _is_kernel_thread(pid)):
                pids.append(pid)
    return pids


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _sweep(keep: int = 0) -> bool:
    """SIGKILL every process left in the sandbox but init and the agent. True if clean.

    Processes that called setsid() left the program's group; this catches them. A
    fork bomb can race the sweep, so repeat; RLIMIT_NPROC bounds how many there are.
    Orphans are reparented to pid 1 (bubblewrap's init), which reaps them, so a
    killed process may linger briefly as a zombie: wait for it to vanish. In a
    microVM guest the agent itself is pid 1, so it reaps them here (by pid, never
    ``keep``, which the caller waits for).
    """
    reaper = os.getpid() == 1
    for attempt in range(400):
        pids = _other_pids(keep)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if reaper:
            for pid in pids:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # not (yet) our child: its parent reaps it or dies
                    pass
        time.sleep(0.0002 if attempt < 20 else 0.005)
    return not _other_pids(keep)


def _wipe_scratch(roots: tuple[str, ...] = SCRATCH_DIRS) -> str:
    """Empty every writable place so no program sees files of an earlier one.

    Returns an anomaly description if something could not be removed.
    """
    for root in roots:
        try:
            entries = os.listdir(root)
        except OSError:
            continue
        for name in entries:
            path = os.path.join(root, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except OSError as exc:
                return f"cannot remove {path}: {exc}"
    return ""


def _set_limits(limits: dict) -> None:
    mem = int(limits["memory_mb"]) << 20
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["file_size_bytes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(limits["max_open_files"]),) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # NPROC counts every process of this uid in the sandbox's user namespace: the
    # init process and this agent are two of them.
    nproc = int(limits["max_processes"]) + 2
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _child(req: dict, workdir: str, fds: dict[str, int]) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        os.dup2(fds["stdin_r"], 0)
        os.dup2(fds["stdout_w"], 1)
        os.dup2(fds["stderr_w"], 2)
        os.dup2(fds["report_w"], 3)
        os.closerange(4, 1 << 16)
        os.chdir(workdir)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGXCPU):
            signal.signal(sig, signal.SIG_DFL)
        _set_limits(req["limits"])
        if os.geteuid() == 0:
            # Only in a microVM guest is the agent root: programs run as nobody, so
            # they cannot signal the agent, remount, or escape RLIMIT_NPROC.
            os.setgroups([])
            os.setgid(PROGRAM_UID)
            os.setuid(PROGRAM_UID)
        sys.argv = ["main.py", *req.get("argv", [])]
        sys.path[0:0] = [workdir]
        # The zygote's interpreter state must not leak into the program's view.
        sys.modules.pop("__main__", None)
        module_globals = {"__name__": "__main__", "__file__": os.path.join(workdir, "main.py"),
                          "__builtins__": __builtins__}
        try:
            compiled = _CODE_CACHE.get(req["code"]) if req.get("cache_code") else None
            if compiled is None:
                compiled = compile(req["code"], "main.py", "exec")
            exec(compiled, module_globals)
            code = 0
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code & 0xFF
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except MemoryError:
            traceback.print_exc()
            code = MEMORY_EXIT
        except BaseException:
            traceback.print_exc()
            code = 1
    except MemoryError:
        code = MEMORY_EXIT
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(code)


def _write_files(workdir: str, files: dict) -> None:
    for name, spec in files.items():
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = base64.b64decode(spec["b64"]) if "b64" in spec else spec["text"].encode()
        with open(path, "wb") as fh:
            fh.write(data)


def run_one(req: dict, seq: int) -> dict:
    limits = req["limits"]
    cap = int(limits["output_bytes"])
    workdir = os.path.join(WORK_ROOT, f"run{seq}")
    anomaly = ""
    try:
        os.mkdir(workdir, 0o700)
        _write_files(workdir, req.get("files") or {})
        if os.geteuid() == 0:
            for root, dirs, names in os.walk(workdir):
                for name in [*dirs, *names]:
                    os.chown(os.path.join(root, name), PROGRAM_UID, PROGRAM_UID)
            os.chown(workdir, PROGRAM_UID, PROGRAM_UID)
    except OSError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        return {"id": req["id"], "status": "sandbox_error", "error": f"cannot prepare work dir: {exc}",
                "anomaly": f"work dir: {exc}"}

    if req.get("cache_code") and req["code"] not in _CODE_CACHE:
        try:
            if len(_CODE_CACHE) >= _CODE_CACHE_MAX:
                _CODE_CACHE.pop(next(iter(_CODE_CACHE)))
            _CODE_CACHE[req["code"]] = compile(req["code"], "main.py", "exec")
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            pass  # the child compiles it again and reports the error as the program's

    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    report_r, report_w = os.pipe()
    fds = {"stdin_r": stdin_r, "stdout_w": stdout_w, "stderr_w": stderr_w, "report_w": report_w}
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(req, workdir, fds)
    for fd in fds.values():
        os.close(fd)
    try:
        os.setpgid(pid, pid)  # also set here: no race with the child's own setpgid
    except OSError:
        pass

    stdin_data = req.get("stdin", "").encode()
    sel = selectors.DefaultSelector()
    bufs = {stdout_r: bytearray(), stderr_r: bytearray(), report_r: bytearray()}
    truncated = {stdout_r: False, stderr_r: False, report_r: False}
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    os.set_blocking(stdin_w, False)
    if stdin_data:
        sel.register(stdin_w, selectors.EVENT_WRITE)
    else:
        os.close(stdin_w)
    pidfd = os.pidfd_open(pid)
    sel.register(pidfd, selectors.EVENT_READ)

    deadline = start + float(limits["wall_s"])
    verdict = None  # set when the agent itself ends the run
    exited = False
    stdin_off = 0
    open_pipes = 3
    while open_pipes or not exited:
        if exited and open_pipes:
            # The child is gone but something still holds its pipes (a daemonised
            # grandchild): end it now rather than wait for the deadline.
            _kill_group(pid)
            _sweep(keep=pid)  # the child is a zombie until reaped below
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            verdict = "timeout"
            break
        for key, _ in sel.select(timeout):
            fd = key.fd
            if fd == pidfd:
                exited = True
                sel.unregister(pidfd)
                continue
            if fd == stdin_w:
                try:
                    stdin_off += os.write(stdin_w, stdin_data[stdin_off:stdin_off + 65536])
                except BlockingIOError:
                    continue
                except BrokenPipeError:  # the program closed stdin or exited: stop feeding it
                    stdin_off = len(stdin_data)
                if stdin_off >= len(stdin_data):
                    sel.unregister(stdin_w)
                    os.close(stdin_w)
                    stdin_w = -1
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(fd)
                open_pipes -= 1
                continue
            buf = bufs[fd]
            room = cap - len(buf)
            if len(chunk) > room:
                buf += chunk[:max(room, 0)]
                truncated[fd] = True
                verdict = "output_limit"
            else:
                buf += chunk
        if verdict:
            break

    _kill_group(pid)
    _, wstatus, usage = os.wait4(pid, 0)
    clean = _sweep()
    wall = time.monotonic() - start
    # Drain what is left in the pipes (bounded by the cap) now that writers are dead.
    for fd in bufs:
        try:
            while len(bufs[fd]) <= cap:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                room = cap - len(bufs[fd])
                if len(chunk) > room:
                    bufs[fd] += chunk[:max(room, 0)]
                    truncated[fd] = True
                    break
                bufs[fd] += chunk
        except (BlockingIOError, OSError):
            pass
    sel.close()
    for fd in (stdout_r, stderr_r, report_r, pidfd, stdin_w):
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    anomaly = _wipe_scratch(SCRATCH_DIRS if _SESSION["persist"] else SCRATCH_DIRS + (STATE_DIR,))
    if not clean:
        anomaly = "processes survived the kill sweep"

    exit_code = os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else None
    sig = os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else None
    cpu = (usage.ru_utime + usage.ru_stime) if usage else 0.0
    stderr_text = bufs[stderr_r].decode("utf-8", "replace")
    if verdict is None:
        verdict = _classify(exit_code, sig, cpu, limits, stderr_text)
    return {
        "id": req["id"],
        "status": verdict,
        "exit_code": exit_code,
        "signal": sig,
        "stdout": bufs[stdout_r].decode("utf-8", "replace"),
        "stderr": stderr_text,
        "stdout_truncated": truncated[stdout_r],
        "stderr_truncated": truncated[stderr_r],
        "report": base64.b64encode(bytes(bufs[report_r])).decode(),
        "wall_s": wall,
        "cpu_s": cpu,
        "anomaly": anomaly,
    }


def _classify(exit_code: int | None, sig: int | None, cpu: float, limits: dict, stderr: str) -> str:
    if sig in (signal.SIGXCPU,) or (sig == signal.SIGKILL and cpu >= float(limits["cpu_s"]) - 0.05):
        return "timeout"
    tail = stderr[-2000:]
    if exit_code == MEMORY_EXIT or (exit_code != 0 and ("MemoryError" in tail or "Cannot allocate memory" in tail)):
        return "memory_limit"
    if sig is not None and "out of memory" in tail.lower():
        return "memory_limit"
    if exit_code == 0:
        return "ok"
    return "runtime_error"


def _make_state_dir() -> None:
    """Guest only: a size-capped tmpfs at STATE_DIR owned by the program uid."""
    import subprocess

    try:
        os.makedirs(STATE_DIR, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"nosuid,nodev,size={STATE_SIZE},mode=0755", "tmpfs",
                        STATE_DIR], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chown(STATE_DIR, PROGRAM_UID, PROGRAM_UID)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"vmpool agent: no {STATE_DIR}: {exc}", file=sys.stderr)


RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)


def _resume(req: dict) -> dict:
    """After a snapshot restore every clone holds the template's clock and RNG state:
    set the clock from the host and mix fresh host entropy into the kernel RNG (then
    force a reseed), so no two clones share random numbers. Children reseed Python's
    ``random`` from the kernel at fork."""
    import fcntl
    import random

    done = {}
    try:
        time.clock_settime(time.CLOCK_REALTIME, float(req["time"]))
        done["clock"] = True
    except (OSError, KeyError, ValueError) as exc:
        done["clock"] = f"{exc}"
    try:
        seed = bytes.fromhex(req["seed"])
        with open("/dev/urandom", "wb", buffering=0) as fh:
            try:
                info = struct.pack("ii", len(seed) * 8, len(seed)) + seed
                fcntl.ioctl(fh.fileno(), RNDADDENTROPY, info)
                fcntl.ioctl(fh.fileno(), RNDRESEEDCRNG)
            except OSError:  # not root (namespace sandbox): plain mixing still helps
                fh.write(seed)
        random.seed(seed)
        done["rng"] = True
    except (OSError, KeyError, ValueError) as exc:
        done["rng"] = f"{exc}"
    return done


def main() -> None:
    # Keep the protocol off fds 0/1 so no program ever inherits it.
    rfd = os.dup(0)
    wfd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    chan = Channel(rfd, wfd)
    # A dying program must not take the agent with it through a broken pipe or ^C.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getpid() == 1:
        _make_state_dir()
    loaded = _preload()
    chan.send({"ready": True, "pid": os.getpid(), "python": sys.version.split()[0], "preloaded": len(loaded)})
    seq = 0
    while True:
        req = chan.recv()
        if req is None:
            if os.getpid() != 1:
                return  # the host closed the channel: the sandbox is being torn down
            # In a microVM guest a virtio port reads EOF while no host is connected,
            # e.g. between a snapshot restore and the host's connect: wait for it.
            time.sleep(0.001)
            continue
        if req.get("op") == "persist":
            _SESSION["persist"] = bool(req.get("on"))
            chan.send({"id": req.get("id"), "persist": _SESSION["persist"]})
            continue
        if req.get("op") == "resume":
            chan.send({"id": req.get("id"), "resumed": _resume(req)})
            continue
        if req.get("op") == "ping":
            chan.send({"id": req.get("id"), "pong": True})
            continue
        seq += 1
        try:
            result = run_one(req, seq)
        except Exception as exc:  # report, never die silently: the host decides what to do
            result = {"id": req.get("id"), "status": "sandbox_error",
                      "error": f"agent failure: {exc!r}", "anomaly": traceback.format_exc()[-2000:]}
        chan.send(result)


if __name__ == "__main__":
    main()
