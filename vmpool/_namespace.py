"""The namespace backend: a bubblewrap sandbox with a warm zygote inside.

What is isolated (and tested in tests/vmpool): new user, pid, network, mount, ipc,
uts and cgroup namespaces; no network interface but a down loopback; a read-only
``/usr`` from the host and nothing else of the host's filesystem (no ``/etc``,
``/root``, ``/home``, no project checkout); a size-capped private tmpfs for work
dirs; an empty environment; all capabilities dropped; a seccomp filter
(:mod:`vmpool._seccomp`); host uids of its own per sandbox (:mod:`vmpool._uids`);
rlimits per program set by the agent.

The sandbox's user namespace maps three uids: 0 (the agent, which keeps only the
capabilities it needs to drop children to other uids, kill them and clean up after
them, all confined to this namespace), 65533 (the trusted tester) and 65534 (programs).
bubblewrap creates the namespace and waits (``--userns-block-fd``) while the host writes
the maps (:mod:`vmpool._uids` says where the host uids come from). Run as root, each of
the three is a host uid of this sandbox's lease and this process writes the maps. Run
as an ordinary user with a subordinate uid range, the tester and programs get leased
subordinate uids (``newuidmap``/``newgidmap`` write the maps) and the agent runs as the
user. Run as an ordinary user without one, the namespace maps one uid and everything
in the sandbox shares it (the agent says so in its hello, this module logs it, and
:attr:`NamespaceSandbox.isolation_lost` says it): programs are then still isolated from
the host and from other sandboxes, not from their own tester.

What is not: the kernel is shared with the host (a kernel exploit escapes, which
is what the microvm backend is for); CPU time is bounded per program but not
shared fairly between sandboxes (no cgroup v2 controller on cgroup-v1 hosts).
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

from ._agent_client import AgentSandbox
from ._cpus import CpuLease, lease_cpu
from ._errors import BackendUnavailableError, SandboxError, SandboxStartError
from ._protocol import PROTOCOL_VERSION, FrameChannel, readable
from ._seccomp import seccomp_bpf
from ._uids import UidLease, lease_uid, uid_plan

logger = logging.getLogger(__name__)

GUEST_AGENT_PATH = "/opt/vmpool/agent.py"
TESTER_UID = 65533  # the agent's TESTER_UID and PROGRAM_UID, inside the sandbox
PROGRAM_UID = 65534
# What the agent (uid 0 of the sandbox's own user namespace) keeps: switching its
# children to the tester and program uids, killing them, and removing what they left
# in scratch directories whatever its mode. Capabilities in a user namespace reach
# only that namespace's uids and objects.
AGENT_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE")
# What a session supervisor keeps besides: giving each session namespaces of its own nested in
# the sandbox (mounts; CAP_SETFCAP: the kernel maps a new user namespace's ids only for a creator
# that holds it, where the supervisor's uid is the sandbox's only one), inspecting them from
# outside (/proc of other uids) and stopping them.
SESSION_CAPS = (*AGENT_CAPS, "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SETFCAP")
SESSION_STAGE = "/vmpool-stage"  # the mount point a session branch builds its new /tmp on
# Bound read-only when present: alternatives (the toolchains' /usr/bin names), fonts and
# matplotlib (E2B sessions), the JDK's configuration (java.security and friends).
ETC_PATHS = ("/etc/alternatives", "/etc/matplotlibrc", "/etc/fonts", "/etc/java-17-openjdk")


@functools.lru_cache(maxsize=1)
def _warn_shared_uid(why: str) -> None:
    logger.warning("%s", why)


def bwrap_path() -> str:
    """Locate bubblewrap. Raises BackendUnavailableError when it is not installed."""
    path = shutil.which("bwrap")
    if not path:
        raise BackendUnavailableError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    return path


def _reachable_by_anyone(path: Path) -> bool:
    """True when any uid can read ``path``'s files: every directory up to / searchable by others."""
    try:
        if any(not os.stat(f).st_mode & stat.S_IROTH for f in path.glob("*.py")):
            return False
        return all(os.stat(d).st_mode & stat.S_IXOTH for d in (path, *path.parents))
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def _guest_dir() -> Path:
    """Where bubblewrap binds the guest modules from.

    The sandbox's uids are unprivileged host uids, so they must be able to reach the
    files: an install under a private directory (a venv in ``/root`` or a 0700 home)
    is copied once per process to a fresh world-readable directory, removed at exit.
    """
    guest = Path(str(resources.files("vmpool._guest")))
    if _reachable_by_anyone(guest):
        return guest
    staged = Path(tempfile.mkdtemp(prefix="vmpool-guest-"))  # 0700 and ours alone until filled
    for source in guest.glob("*.py"):
        target = staged / source.name
        shutil.copyfile(source, target)
        target.chmod(0o444)
    staged.chmod(0o555)
    atexit.register(shutil.rmtree, staged, ignore_errors=True)
    if not _reachable_by_anyone(staged):
        raise SandboxStartError(f"the guest modules under {guest} and their copy in {staged} are private to their "
                                "owner: install the project where other uids can read it, or set TMPDIR to a "
                                "directory they can search")
    logger.info("guest modules under %s are private to their owner: sandboxes bind a copy in %s", guest, staged)
    return staged


SITE_DIR = "/site-packages"  # where PoolConfig.site_packages directories appear, one per index


def _package_dirs(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The site-packages directories to mount, checked: they exist and any uid can read them.

    Raises:
        BackendUnavailableError: one is missing or unreadable to the sandbox's uids.
    """
    out = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if not path.is_dir():
            raise BackendUnavailableError(f"pool.site_packages: {raw} is not a directory")
        if not _reachable_by_anyone(path):
            raise BackendUnavailableError(
                f"pool.site_packages: {raw} is not readable by other uids (the sandbox's programs run as uids "
                "of their own): make it and its parent directories world-readable (chmod o+rx)")
        out.append(str(path))
    return tuple(out)


def agent_module_binds() -> list[str]:
    """bwrap arguments that put the agent and its modules (``_guest/*.py``) at /opt/vmpool."""
    guest = _guest_dir()
    names = sorted(entry.name for entry in guest.iterdir() if entry.name.endswith(".py") and entry.name != "__init__.py")
    return [arg for name in names for arg in ("--ro-bind", str(guest / name), f"/opt/vmpool/{name}")]


class NamespaceSandbox(AgentSandbox):
    """One bubblewrap sandbox running the zygote agent; runs one program at a time.

    Args:
        python: interpreter inside the sandbox (from the host's read-only /usr).
        tmpfs_mb: size of the sandbox's /tmp, where work dirs live.
        start_timeout_s: how long to wait for the agent's ready message.
        transport_slack_s: extra time over a program's wall limit before the host
            declares the sandbox unresponsive and kills it.
        pin_cpu: run the sandbox on one CPU, leased machine-wide (:mod:`vmpool._cpus`).
        site_packages: host directories of Python packages (a venv's ``site-packages``, a
            ``pip install --target`` directory) mounted read-only and put on the programs'
            ``sys.path``; every uid must be able to read them.
        entry: the guest script bwrap runs (the grading agent; :mod:`vmpool._session` runs
            the session supervisor) and ``entry_args``, its arguments.
        session: a session family's sandbox: its supervisor nests a user namespace per
            session, so it keeps ``SESSION_CAPS`` and the filter lets it mount and unshare
            (each session then forbids new user namespaces and drops every capability:
            see ``_guest/_vmpool_branch.py``).

    Raises:
        BackendUnavailableError: bwrap or seccomp support is missing.
        SandboxStartError: the sandbox did not become ready in time.
    """

    backend = "namespace"

    def __init__(self, python: str = "/usr/bin/python3", tmpfs_mb: int = 64,
                 start_timeout_s: float = 30.0, transport_slack_s: float = 5.0, pin_cpu: bool = False,
                 site_packages: tuple[str, ...] = (), entry: str = "", entry_args: tuple[str, ...] = (),
                 session: bool = False) -> None:
        super().__init__(transport_slack_s)
        self._session = session
        self._entry = entry or GUEST_AGENT_PATH
        self._entry_args = entry_args
        self._site = _package_dirs(site_packages)
        self._proc: subprocess.Popen[bytes] | None = None
        self._cpu: CpuLease | None = None
        self._lease: UidLease | None = lease_uid()  # None: one uid for everything (see _uids)
        if pin_cpu:
            self._cpu = lease_cpu()
            if self._cpu is None:
                logger.info("namespace sandbox runs unpinned: no CPU lease to be had")
        self._stderr = tempfile.TemporaryFile()
        self.uid_separation = False
        self.isolation_lost = ""  # what this sandbox lacks compared with a root one ("" = nothing)
        try:
            self._start(python, tmpfs_mb, start_timeout_s)
        except BaseException:
            self.close()
            raise

    @property
    def uid(self) -> int:
        """The host uid of the agent (and of bwrap and the program zygote)."""
        if self._lease is not None and self._lease.plan.mode == "root":
            return self._lease.uid
        return os.getuid()

    @property
    def uids(self) -> tuple[int, ...]:
        """Every host uid this sandbox's processes may run as: the agent's, then the tester's and
        the programs' where they have their own."""
        if self._lease is None:
            return (os.getuid(),)
        if self._lease.plan.mode == "root":
            return self._lease.uids
        return (os.getuid(), *self._lease.uids)

    @property
    def cpu(self) -> int | None:
        """The CPU this sandbox is pinned to (None: unpinned)."""
        return self._cpu.cpu if self._cpu else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _command(self, python: str, tmpfs_mb: int, seccomp_fd: int, userns: tuple[int, int] | None) -> list[str]:
        caps = [arg for cap in (SESSION_CAPS if self._session else AGENT_CAPS) for arg in ("--cap-add", cap)]
        if userns is not None:
            # The host writes a three-uid map while bwrap waits; nested user namespaces
            # are refused by the seccomp filter instead of --disable-userns (which bwrap
            # cannot combine with a map written by its parent).
            block_fd, info_fd = userns
            identity = ["--userns-block-fd", str(block_fd), "--info-fd", str(info_fd), "--uid", "0", "--gid", "0",
                        *caps]
        elif self._session:
            identity = ["--uid", "0", "--gid", "0", *caps]  # one uid; sessions nest namespaces of their own
        else:
            identity = ["--disable-userns", "--uid", "1000", "--gid", "1000"]
        return [
            bwrap_path(),
            "--unshare-all", "--unshare-user", *identity, "--die-with-parent", "--new-session",
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
            # The few /etc entries libraries in /usr resolve through (Debian's BLAS/LAPACK alternatives
            # links for numpy, matplotlib's rc file, fontconfig): nothing else of the host's /etc.
            "--perms", "0755", "--dir", "/etc",
            *[arg for path in ETC_PATHS for arg in ("--ro-bind-try", path, path)],
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(tmpfs_mb << 20), "--tmpfs", "/tmp",
            "--size", str(8 << 20), "--tmpfs", "/dev/shm",
            *agent_module_binds(),
            *(["--dir", SESSION_STAGE] if self._session else []),
            # E2B's and Jupyter's home: a session's files at /home/user are its own /tmp/home.
            *(["--perms", "0755", "--dir", "/home", "--symlink", "/tmp/home", "/home/user"] if self._session else []),
            # World-searchable mount points (bwrap makes the parents of a bind 0700), so the
            # tester and program uids reach the packages.
            *(["--perms", "0755", "--dir", SITE_DIR] if self._site else []),
            *[arg for i, path in enumerate(self._site)
              for arg in ("--perms", "0755", "--dir", f"{SITE_DIR}/{i}", "--ro-bind", path, f"{SITE_DIR}/{i}")],
            "--remount-ro", "/",  # the root tmpfs bwrap builds: nothing may persist there
            "--chdir", "/tmp",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--seccomp", str(seccomp_fd),
            "--", python, "-I", "-B", self._entry, *self._entry_args,
            *(["--cpu", str(self._cpu.cpu)] if self._cpu else []),
            *[arg for i in range(len(self._site)) for arg in ("--path", f"{SITE_DIR}/{i}")],
        ]

    def _start(self, python: str, tmpfs_mb: int, start_timeout_s: float) -> None:
        mapped = self._lease is not None  # the host writes a three-uid map (root, or subordinate uids)
        is_root = mapped and self._lease is not None and self._lease.plan.mode == "root"
        bpf = seccomp_bpf(block_userns=mapped and not self._session, namespaces=self._session)
        rfd, wfd = os.pipe()
        # The filter is small (well under a pipe buffer), so writing it before the
        # reader starts cannot block.
        os.write(wfd, bpf)
        os.close(wfd)
        block_r, block_w = os.pipe() if mapped else (-1, -1)
        info_r, info_w = os.pipe() if mapped else (-1, -1)
        child_fds = (rfd, block_r, info_w) if mapped else (rfd,)
        try:
            self._proc = subprocess.Popen(
                self._command(python, tmpfs_mb, rfd, (block_r, info_w) if mapped else None),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                pass_fds=child_fds, env={"PATH": "/usr/bin:/bin"}, close_fds=True,
                # Root: drop to the leased uid so the sandbox owns nothing on the host.
                user=self.uid if is_root else None, group=self.uid if is_root else None,
                extra_groups=[] if is_root else None,
            )
        except OSError as exc:
            for fd in (block_w, info_r):
                if fd >= 0:
                    os.close(fd)
            raise SandboxStartError(f"cannot start bwrap: {exc}") from exc
        finally:
            for fd in child_fds:
                os.close(fd)
        if mapped:
            self._map_uids(info_r, block_w, time.monotonic() + start_timeout_s)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        chan = FrameChannel(self._proc.stdout.fileno(), self._proc.stdin.fileno())
        self._attach(chan, (self._proc.stdin, self._proc.stdout))
        try:
            hello = chan.recv(time.monotonic() + start_timeout_s)
        except SandboxError as exc:
            raise SandboxStartError(f"sandbox did not become ready: {exc}; {self._diagnostics()}") from exc
        if not hello.get("ready"):
            raise SandboxStartError(f"unexpected first message from agent: {hello!r}")
        if hello.get("protocol") != PROTOCOL_VERSION:
            raise SandboxStartError(f"agent speaks protocol {hello.get('protocol')!r}, expected {PROTOCOL_VERSION}")
        self.uid_separation = bool(hello.get("uid_separation"))
        if not self.uid_separation:
            self.isolation_lost = uid_plan().lost or "the sandbox's agent runs without uid separation"
            _warn_shared_uid(self.isolation_lost)
        logger.debug("namespace sandbox ready: uids %s, python %s", self.uids, hello.get("python"))

    def _map_uids(self, info_r: int, block_w: int, deadline: float) -> None:
        """Write the sandbox's uid/gid maps while bwrap waits for them, then let it go on."""
        try:
            data = b""
            while b"}" not in data:
                ready = readable(info_r, deadline - time.monotonic())
                chunk = os.read(info_r, 4096) if ready else b""
                if not chunk:
                    raise SandboxStartError(f"bwrap did not report its namespace: {self._diagnostics()}")
                data += chunk
            child = int(json.loads(data[: data.index(b"}") + 1])["child-pid"])
            lease = self._lease
            assert lease is not None
            if lease.plan.mode == "root":
                agent, tester, program = lease.uids
                mapping = f"0 {agent} 1\n{TESTER_UID} {tester} 1\n{PROGRAM_UID} {program} 1\n"
                for name in ("uid_map", "gid_map"):
                    with open(f"/proc/{child}/{name}", "w") as fh:
                        fh.write(mapping)
            else:
                # Subordinate ids: the setuid helpers check them against /etc/subuid and
                # /etc/subgid. The agent keeps the user's own id: bwrap, running as it, must
                # stay mapped to build the sandbox's root.
                for tool, own, (tester, program) in (("newuidmap", os.getuid(), lease.uids),
                                                      ("newgidmap", os.getgid(), lease.gids)):
                    done = subprocess.run([tool, str(child), "0", str(own), "1", str(TESTER_UID), str(tester), "1",
                                           str(PROGRAM_UID), str(program), "1"], capture_output=True, text=True,
                                          timeout=max(1.0, deadline - time.monotonic()))
                    if done.returncode != 0:
                        raise OSError(f"{tool} failed: {done.stderr.strip() or done.returncode}")
            os.write(block_w, b"1")
        except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
            raise SandboxStartError(f"cannot map the sandbox's uids: {exc}") from exc
        finally:
            os.close(info_r)
            os.close(block_w)

    def _diagnostics(self) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 2000))
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"sandbox stderr: {text}" if text else ""

    def _process_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.warning("bwrap pid %d did not exit after SIGKILL", proc.pid)

    def _release(self) -> None:
        if self._lease is not None:
            # Backstop: anything that still runs under this sandbox's uid dies here.
            self._lease.release()
            self._lease = None
        if self._cpu is not None:
            self._cpu.release()
            self._cpu = None
        self._stderr.close()
