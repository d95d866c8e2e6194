"""Namespace plumbing of session branches (stdlib + ctypes; runs inside the session sandbox).

A branch is one session's interpreter with namespaces of its own, nested in the session
sandbox: a user namespace (its uid 0 is no one else's: it holds no capability over a
sibling, the parent session or the supervisor), pid, mount, network, IPC and UTS
namespaces, a private ``/tmp`` and ``/dev/shm`` (tmpfs, copied from the process it was
forked from) and a fresh ``/proc`` that shows its own processes only. Its pid 1 is a
reaper that leaves the branch's user namespace at once; pid 2 is the interpreter, which
drops every capability, locks the securebits and sets ``no_new_privs`` before any code
of the model runs, after capping the branch's processes (``pid_max`` of its pid
namespace) and forbidding new user namespaces in it (``max_user_namespaces`` = 0).

The supervisor (``session.py``) checks each new branch from outside (``/proc``) before
it hands it to the host: see ``verify`` there. It prepares the session sandbox itself once
with :func:`prepare_sandbox` (and asks :func:`uid_mapped` whether branches get a uid of
their own).
"""

import ctypes
import errno
import os
import shutil
import signal
import stat
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
BRANCH_NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_MOVE, MS_REC, MS_PRIVATE = 2, 4, 8, 8192, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 28, 38
# NOROOT, NO_SETUID_FIXUP and KEEP_CAPS off, each locked: uid 0 of the branch never regains a capability.
SECUREBITS_LOCKED = 0x2F
STAGE = "/vmpool-stage"  # an empty mount point in the sandbox's read-only root
PID_MAX_FLOOR = 301  # the kernel refuses a smaller pid_max (RESERVED_PIDS + 1)
PID_MAX_RETIRED = 4 << 20
INNER_ID = 1000  # the uid and gid the model's processes have inside their branch

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags):
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd, nstype=0):
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source, target, fstype, flags, data=None):
    enc = [s.encode() if s is not None else None for s in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def umount(target, flags=MNT_DETACH):
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def prctl(option, arg=0):
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), f"prctl {option}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities():
    """Empty the bounding, effective, permitted, inheritable and ambient sets, for good."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0 and ctypes.get_errno() != 22:
            raise OSError(ctypes.get_errno(), f"cannot drop capability {cap} from the bounding set")
    prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    _check(_libc.capset(ctypes.byref(header), (_CapData * 2)()), "capset")
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def wait_child(pid, timeout, what):
    """waitpid with a deadline: a child stuck in set-up is killed and reported, never waited on forever.
    Returns the wait status."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise OSError(f"{what} did not finish within {timeout:g} s")
        time.sleep(0.0005)


def write_proc(path, value):
    with open(path, "w") as fh:
        fh.write(str(value))


def _copy_tree(source, target):
    """Copy the files of one private tmpfs into another (symlinks as symlinks, modes kept)."""
    for entry in os.scandir(source):
        src, dst = entry.path, os.path.join(target, entry.name)
        if entry.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif entry.is_dir():
            shutil.copytree(src, dst, symlinks=True)
        elif entry.is_file():
            shutil.copy2(src, dst)
        # sockets, fifos and devices of a cell are not state a fork can share: left behind


def _open_files_under(dev_ids):
    """The fds of this process that are regular files on a tmpfs about to be replaced, with
    what it takes to reopen them on the copy: (fd, path, flags, position)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            st = os.fstat(fd)
            if st.st_dev not in dev_ids or not stat.S_ISREG(st.st_mode):
                continue
            path = os.readlink(f"/proc/self/fd/{fd}")
            with open(f"/proc/self/fdinfo/{fd}") as fh:
                info = dict(line.split(":", 1) for line in fh if ":" in line)
            found.append((fd, path, int(info["flags"].strip(), 8), int(info["pos"].strip())))
        except (OSError, KeyError, ValueError):
            continue
    return found


def _close_fds_except(keep):
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _fresh_tmpfs(target, size_mb, copy_from_current):
    """Replace the tmpfs at ``target`` with a new one holding a copy of its files."""
    mount("tmpfs", STAGE, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_mb}m,mode=1777")
    if copy_from_current:
        _copy_tree(target, STAGE)
    # On top of the old one, which is locked to this namespace's root (the kernel refuses to
    # unmount a mount inherited from a more privileged namespace): hidden, out of reach.
    mount(STAGE, target, None, MS_MOVE)


_CLONE_SYSCALL = {"x86_64": 56, "aarch64": 220}
SIGCHLD = 17


def fork_into(flags=0):
    """fork(2) through the raw ``clone`` syscall, into new namespaces when ``flags`` says so.

    No at-fork handler runs (none a cell registered runs in our set-up code), and with
    ``CLONE_NEWPID`` the child is pid 1 of its new pid namespace. Only for single-threaded
    callers (a checkpoint holder, the supervisor, a branch being built). Returns 0 in the
    child, the child's pid in the parent.
    """
    import platform

    number = _CLONE_SYSCALL.get(platform.machine())
    if number is None:
        raise OSError(f"no clone syscall number for {platform.machine()}")
    call = _libc.syscall
    call.restype = ctypes.c_long
    # x86_64: clone(flags, stack, parent_tid, child_tid, tls); aarch64: (flags, stack, parent_tid, tls, child_tid)
    pid = call(ctypes.c_long(number), ctypes.c_ulong(flags | SIGCHLD), None, None, None, None)
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid


def spawn(sock_fd, opts, copy_files, ids, report_fd):
    """Make a new branch from this process's state (a checkpoint holder's, or the supervisor's
    child's); returns the branch's pid 1 here, and 0 in the branch's interpreter (pid 2 of the
    new pid namespace), ready for the kernel's loop.

    Set-up errors of the branch reach ``report_fd`` (closed by the branch once it is ready: the
    caller reads it to its end).

    Args:
        sock_fd: the branch's channel to the supervisor (the only descriptor kept, besides
            files under ``/tmp`` and ``/dev/shm`` that are reopened on the copies).
        opts: ``disk_mb``, ``max_processes``, ``memory_mb``, ``file_size`` (see SessionConfig).
        copy_files: copy ``/tmp`` and ``/dev/shm`` (a fork) rather than start them empty.
        ids: the (uid, gid) of this process that ``INNER_ID`` of the new user namespace maps to.
        report_fd: where the branch's set-up reports a failure.
    """
    tmp_devs = {os.stat(p).st_dev for p in ("/tmp", "/dev/shm")}
    reopen = _open_files_under(tmp_devs) if copy_files else []
    cwd = os.getcwd()
    prctl(PR_SET_DUMPABLE, 1)  # a uid change cleared it: /proc/self would then belong to root
    pid = fork_into(BRANCH_NAMESPACES)
    if pid:
        return pid
    try:
        _close_fds_except({0, 1, 2, sock_fd, report_fd, *(fd for fd, _, _, _ in reopen)})
        _enter(opts, copy_files, ids, reopen, cwd)
        ready_r, ready_w = os.pipe()
        if fork_into() == 0:  # the interpreter, pid 2
            os.close(ready_w)
            if os.read(ready_r, 1) != b"1":
                raise OSError("the branch's pid 1 did not leave its user namespace")
            os.close(ready_r)
            _interpreter_setup(opts)
            os.close(report_fd)
            return 0
        os.close(ready_r)
        _close_fds_except({ready_w})
        os.setsid()
        unshare(CLONE_NEWUSER)  # out of the branch's user namespace: no capability over it
        os.write(ready_w, b"1")
        os.close(ready_w)
    except BaseException:
        import traceback

        try:
            os.write(report_fd, traceback.format_exc()[-2000:].encode())
        finally:
            os._exit(1)
    _reap_forever()


def _enter(opts, copy_files, ids, reopen, cwd):
    """In the new namespaces: map the ids, build the branch's own /tmp and /dev/shm."""
    write_proc("/proc/self/setgroups", "deny")
    # The model's uid inside is not 0: mapping 0 would need CAP_SETFCAP outside, which a
    # fork's parent (a checkpoint holder without capabilities) does not have.
    uid, gid = ids
    write_proc("/proc/self/uid_map", f"{INNER_ID} {uid} 1")
    write_proc("/proc/self/gid_map", f"{INNER_ID} {gid} 1")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    _fresh_tmpfs("/tmp", int(opts["disk_mb"]), copy_files)
    _fresh_tmpfs("/dev/shm", 8, copy_files)
    for fd, path, flags, pos in reopen:
        try:
            new = os.open(path, flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC))
            os.lseek(new, pos, os.SEEK_SET)
            os.dup2(new, fd, inheritable=False)
            os.close(new)
        except OSError:  # gone from the copy (a deleted file): the handle reads as /dev/null
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, fd, inheritable=False)
            os.close(null)
    try:
        os.chdir(cwd)  # the same directory, on the copy (the old one stays behind, out of reach)
    except OSError:
        os.chdir("/tmp")


def set_all_signals(disposition):
    """Every catchable signal's handler set to ``disposition(sig)``."""
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, disposition(sig))
        except (OSError, ValueError):
            pass


def _reap_forever():
    """pid 1 of the branch: reap orphans, nothing else (it left the branch's user namespace
    before the interpreter started, so it holds no capability over the branch)."""
    set_all_signals(lambda sig: signal.SIG_DFL if sig == signal.SIGCHLD else signal.SIG_IGN)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            signal.pause()
        except InterruptedError:
            continue


def _interpreter_setup(opts):
    """pid 2, still with every capability of the branch: mount its /proc, cap its
    processes, forbid user namespaces, then drop every capability for good."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    import resource

    try:
        write_proc("/proc/sys/kernel/pid_max", max(PID_MAX_FLOOR, int(opts["max_processes"]) + 2))
    except OSError:  # a kernel before 6.14 has one pid_max (a microVM guest's): count processes instead
        n = int(opts["max_processes"])
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
    write_proc("/proc/sys/user/max_user_namespaces", 0)
    import socket

    socket.sethostname("sandbox")
    drop_capabilities()

    mem = int(opts["memory_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    size = int(opts["file_size"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def shared_in(maps):
    """The shared mappings listed in a ``/proc/PID/maps`` text that a fork would share with
    its parent: any but read-only ones of the read-only /usr (glibc maps its gconv cache so)."""
    found = []
    for line in maps:
        parts = line.split()
        if len(parts) < 2 or not parts[1].endswith("s"):
            continue
        path = " ".join(parts[5:])
        if parts[1][1] == "w" or not path.startswith("/usr/"):
            found.append(path or parts[0])
    return found


def shared_mappings():
    """:func:`shared_in` of this process."""
    with open("/proc/self/maps") as fh:
        return shared_in(fh)


# ------------------------------------------------------------------ the session sandbox itself
def uid_mapped(uid):
    """Whether the sandbox's user namespace maps ``uid`` (a program uid of its own)."""
    try:
        with open("/proc/self/uid_map") as fh:
            for line in fh:
                inside, _, count = (int(x) for x in line.split())
                if inside <= uid < inside + count:
                    return True
    except (OSError, ValueError):
        pass
    return False


def prepare_sandbox(opts):
    """Once, as uid 0 of the sandbox: let branches mount a /proc of their own (the kernel
    wants every proc mount fully visible: bubblewrap covers two of its directories), and
    cap the processes of the whole session family."""
    for path in ("/proc/irq", "/proc/bus"):
        try:
            umount(path)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise
    write_proc("/proc/sys/kernel/pid_max", max(PID_MAX_FLOOR, int(opts["family_processes"])))
    os.makedirs(STAGE, exist_ok=True)  # bubblewrap made it; a microVM's root is writable
