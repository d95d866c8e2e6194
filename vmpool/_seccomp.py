"""The seccomp filter every sandboxed process runs under, compiled to BPF once per process.

bubblewrap installs it (``--seccomp FD``) right before it executes the agent, so
the agent and every program it forks inherit it and cannot remove it. Default
allow, with a deny list: the syscalls a graded program never needs and that widen
the kernel attack surface or let it reach outside its sandbox.
"""

from __future__ import annotations

import errno
import functools
import logging
import tempfile

from ._errors import BackendUnavailableError

logger = logging.getLogger(__name__)

# Denied with EPERM. Why each group: debugging other processes; (re)mounting and
# namespace games; loading kernels/modules/BPF; kernel keyrings; perf counters;
# io_uring (its operations bypass seccomp checks on the syscalls they replace);
# userfaultfd (a classic exploitation primitive).
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "move_mount", "open_tree",
    "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf",
    "keyctl", "add_key", "request_key",
    "perf_event_open", "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "iopl", "ioperm",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "settimeofday", "clock_settime",
    "adjtimex", "clock_adjtime", "vhangup",
)
AF_UNIX = 1
CLONE_NEWUSER = 0x10000000


# What a session supervisor needs to nest a branch's namespaces (mount its /tmp and /proc,
# join a branch to lift its caps). The kernel still refuses each of them to the sessions'
# own code: a branch holds no capability and may create no user namespace (its
# max_user_namespaces is 0), and these calls need one or the other.
NAMESPACE_SYSCALLS = ("mount", "umount2", "unshare", "setns")


@functools.lru_cache(maxsize=4)
def seccomp_bpf(block_userns: bool = False, namespaces: bool = False) -> bytes:
    """Return the compiled filter as raw BPF (what bwrap's --seccomp reads).

    Args:
        block_userns: also refuse new user namespaces (``clone`` with CLONE_NEWUSER;
            ``clone3``, whose flags live in memory a filter cannot read, fails with
            ENOSYS so libc falls back to ``clone``). Needed where bwrap's own
            ``--disable-userns`` cannot be used (a uid map written by the host).
        namespaces: allow ``NAMESPACE_SYSCALLS`` (a session family's sandbox).

    Raises:
        BackendUnavailableError: libseccomp (pyseccomp) is not usable here.
    """
    try:
        import pyseccomp as sc
    except Exception as exc:  # ImportError, or OSError when libseccomp.so is missing
        raise BackendUnavailableError(f"seccomp filter needs pyseccomp + libseccomp: {exc}") from exc
    filt = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED_SYSCALLS:
        if namespaces and name in NAMESPACE_SYSCALLS:
            continue
        try:
            filt.add_rule(sc.ERRNO(errno.EPERM), name)
        except Exception:  # syscall unknown to this libseccomp: nothing to deny
            logger.debug("seccomp: syscall %s unknown to libseccomp, skipped", name)
    # Sockets: only AF_UNIX (needed by some stdlib internals); no TCP/UDP/raw/netlink.
    filt.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, AF_UNIX))
    if block_userns:
        filt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
        filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as fh:
        filt.export_bpf(fh)
        fh.seek(0)
        return fh.read()
