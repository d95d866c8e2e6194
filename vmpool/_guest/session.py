"""The session supervisor: one session family's sandbox, its branches and checkpoints (stdlib only).

It runs as uid 0 of the session sandbox's user namespace and never runs code of the
model's. Every session (a *branch*) is an interpreter in namespaces of its own nested in
this sandbox (``_vmpool_branch``); a checkpoint is a frozen fork of a branch's interpreter
(the *holder*) from which new branches are forked. The host speaks to this process only
(length-prefixed JSON on the fds it gave as stdin/stdout); requests name a branch:

* kernel ops (``exec``, ``shell``, ``write``, ``read``, ``list``, ``restart``, ``ping``) are
  forwarded to the branch's interpreter and its answer back (nothing in it is trusted);
* ``new``: a fresh branch; ``close``: kill a branch (its whole pid namespace);
* ``checkpoint``: freeze the branch, end its other processes, fork its interpreter into a
  holder, and go on as a new branch forked from it (the host's branch id stays);
* ``spawn`` (``checkpoint``, ``n``): n new branches from a checkpoint; ``release``: drop one;
* ``pause`` / ``resume``: SIGSTOP / SIGCONT every process of a branch.

Every new branch is checked from outside before the host gets it (:func:`verify`): its
namespaces and its ``/tmp`` are its own, it holds no capability, no shared mapping and no
descriptor but its channel and its own files.
"""

import fcntl
import os
import select
import signal
import socket
import sys
import time

_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, _HERE)
import _vmpool_branch as nsb  # noqa: E402
import _vmpool_kernel as kernel  # noqa: E402
import _vmpool_outside as out  # noqa: E402
import _vmpool_restore as restore  # noqa: E402
from _vmpool_chan import Channel, Conn  # noqa: E402

sys.path.remove(_HERE)

PROTOCOL = kernel.PROTOCOL
IN_MICROVM = os.environ.get("VMPOOL_GUEST") == "microvm"  # the guest agent started us on its channel
PROGRAM_UID = 65534
CONTROL_TIMEOUT_S = 30.0
WATCH_PERIOD_S = 0.05  # how often calls with CPU or memory limits are measured
KERNEL_OPS = ("exec", "shell", "write", "read", "list", "restart", "ping")


class Refused(Exception):
    """A control request that cannot be done; the message goes back to the host."""


def _wait(conn, deadline):
    try:
        return conn.wait_frame(deadline)
    except (ConnectionError, TimeoutError) as exc:
        raise Refused(str(exc)) from exc


class Node:
    """A branch (a live interpreter) or a checkpoint (its frozen holder), as this process sees it."""

    def __init__(self, conn, g_pid, i_pid, parent):
        self.conn = conn
        self.g_pid = g_pid  # the interpreter (a branch) or the holder (a checkpoint)
        self.i_pid = i_pid  # pid 1 of its pid namespace
        self.i_key = (i_pid, out.start_time(i_pid))
        self.pidns = out.ns(g_pid, "pid")
        self.devs = {out.mount_dev(g_pid, "/tmp"), out.mount_dev(g_pid, "/dev/shm")}
        self.parent = parent  # the checkpoint it was forked from, or None
        self.children = set()  # branches forked from it (a checkpoint)
        self.released = False
        self.paused = False


class Supervisor:
    def __init__(self, host, opts, ids):
        self.host = host
        self.opts = opts
        self.ids = ids  # (uid, gid) in this sandbox that a root branch's uid 0 maps to
        self.branches = {}
        self.checkpoints = {}
        self.pending = {}  # host request id -> branch id
        self.pending_ops = {}  # host request id -> its op (interrupt tells a cell from a command)
        self.watches = {}  # host request id -> a call's CPU and memory limits (see _watch)
        self.next_id = 0
        self.own_devs = {out.mount_dev("self", "/tmp"), out.mount_dev("self", "/dev/shm")}
        # (pid, start time) of the pid 1 of killed nodes, which may still be on their way out (a
        # pid and a namespace's inode are both reused once freed; the pair is not)
        self.gone = set()

    def _new_id(self, prefix):
        self.next_id += 1
        return f"{prefix}{self.next_id}"

    # ------------------------------------------------------------ branches
    def _adopt(self, sock, parent, deadline, siblings=()):
        """Wait for a new branch's hello on ``sock``, check it, and return its Node
        (``siblings``: branches of the same spawn, not registered yet). The branch's pid 1 is
        a child of the holder that forked it (of this sandbox's init for a fresh branch)."""
        conn = Conn(sock)
        try:
            hello = _wait(conn, deadline)
            if not hello.get("ready"):
                raise Refused(f"unexpected first message from a new branch: {str(hello)[:200]}")
            forker = parent.g_pid if parent is not None else 1
            known = {n.i_key for n in (*self.branches.values(), *self.checkpoints.values(), *siblings)}
            self.gone = {key for key in self.gone if out.start_time(key[0]) == key[1]}
            known |= self.gone
            while True:
                fresh = [pid for pid in out.inits_of(forker) if (pid, out.start_time(pid)) not in known]
                if len(fresh) == 1:
                    break
                if len(fresh) > 1:
                    raise Refused("a spawn produced more than one new branch")
                if time.monotonic() > deadline:
                    raise Refused("the new branch's processes are not to be seen")
                time.sleep(0.001)
            pidns = out.ns(fresh[0], "pid")
            members = out.members(pidns)
            inner = {i: p for p, i in members.items()}
            if set(inner) - {1, 2} or 2 not in inner or 1 not in inner:
                raise Refused(f"the new branch holds unexpected processes {sorted(inner)}")
            node = Node(conn, inner[2], inner[1], parent)
            problem = self.verify(node, siblings)
            if problem:
                out.signal_all([node.i_pid], signal.SIGKILL)
                raise Refused(f"the new branch failed its isolation check: {problem}")
            return node
        except BaseException:
            conn.close()
            raise

    def verify(self, node, siblings=()):
        """What is wrong with a new branch's isolation ("" when nothing is)."""
        others = [n for n in (*self.branches.values(), *self.checkpoints.values(), *siblings) if n is not node]
        return out.verify(node, others, self.own_devs)

    def new_root(self):
        ours, theirs = socket.socketpair()
        why_r, why_w = os.pipe()
        pid = os.fork()  # a child that takes the program uid before it builds the branch
        if pid == 0:
            fd = theirs.fileno()
            try:
                ours.close()
                os.close(why_r)
                os.setresgid(self.ids[1], self.ids[1], self.ids[1])
                os.setresuid(self.ids[0], self.ids[0], self.ids[0])
                if nsb.spawn(fd, self.opts, False, self.ids, why_w) == 0:
                    kernel.start(fd, self.opts)
            except BaseException as exc:
                os.write(why_w, f"branch setup failed: {exc}".encode())
            os._exit(0)
        theirs.close()
        os.close(why_w)
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        try:
            nsb.wait_child(pid, CONTROL_TIMEOUT_S, "a new branch's set-up")
        except OSError as exc:
            ours.close()
            os.close(why_r)
            raise Refused(str(exc)) from exc
        why = kernel.read_to_end(why_r, CONTROL_TIMEOUT_S)
        if why:
            ours.close()
            raise Refused(f"a new branch failed to start: {why}")
        return self._adopt(ours, None, deadline)

    def spawn(self, cp, n):
        """n new branches forked from checkpoint ``cp``, one at a time (each is told apart from
        the others by its new pid namespace); the holder runs only meanwhile."""
        nodes = []
        try:
            for _ in range(n):
                deadline = time.monotonic() + CONTROL_TIMEOUT_S
                out.signal_all([cp.g_pid], signal.SIGCONT)
                try:
                    cp.conn.queue({"op": "spawn", "n": 1, "id": self._new_id("s")})
                    reply = _wait(cp.conn, deadline)
                    fds = cp.conn.take_fds()
                finally:
                    out.signal_all([cp.g_pid], signal.SIGSTOP)
                if reply.get("error") or len(fds) != 1:
                    for fd in fds:
                        out.close(fd)
                    raise Refused(str(reply.get("error") or "the checkpoint did not hand over its fork"))
                node = self._adopt(socket.socket(fileno=fds[0]), cp, deadline, nodes)
                nodes.append(node)
                cp.children.add(node)
        except BaseException:
            for node in nodes:
                cp.children.discard(node)
                self._kill_node(node)
            raise
        return nodes

    def checkpoint(self, bid):
        """Turn branch ``bid`` into a checkpoint and give the host's id a fresh branch from it."""
        node = self.branches[bid]
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        members = out.freeze(node.pidns)
        if out.status(node.g_pid).get("Threads") != "1":
            out.signal_all(members, signal.SIGCONT)
            raise Refused("a checkpoint needs the interpreter alone: a cell started threads that still run "
                          "(join them first)")
        out.kill_and_wait([p for p in members if p != node.g_pid], deadline)  # background processes end here
        out.signal_all([node.g_pid], signal.SIGCONT)
        rid = self._new_id("c")
        node.conn.queue({"op": "checkpoint", "id": rid})
        try:
            reply = _wait(node.conn, deadline)
        except Refused:
            self._kill_node(node)
            del self.branches[bid]
            raise
        if reply.get("error"):
            raise Refused(str(reply["error"]))
        holder = [p for p, i in out.members(node.pidns).items() if i != 1 and p != node.g_pid]
        if len(holder) != 1:
            self._kill_node(node)
            del self.branches[bid]
            raise Refused("the checkpoint's holder is not to be seen")
        # Stopped, the old interpreter can do nothing more: its SIGKILL need not be waited for
        # before the limits its branch had are lifted for the holder's forks.
        out.signal_all([*holder, node.g_pid], signal.SIGSTOP)
        out.signal_all([node.g_pid], signal.SIGKILL)
        self._raise_limits(holder[0])
        cp = node
        cp.g_pid = holder[0]
        cid = self._new_id("k")
        self.checkpoints[cid] = cp
        del self.branches[bid]
        try:
            (child,) = self.spawn(cp, 1)
        except Refused:
            self.release(cid)
            raise
        self.branches[bid] = child
        return cid

    def _raise_limits(self, holder):
        """A checkpoint's pid namespace holds its forks: lift the caps set for one branch, from a
        helper that joins the branch's user and pid namespaces (the holder has no capability)."""
        pid = os.fork()
        if pid == 0:
            try:
                for kind, flag in (("user", nsb.CLONE_NEWUSER), ("pid", nsb.CLONE_NEWPID)):
                    fd = os.open(f"/proc/{holder}/ns/{kind}", os.O_RDONLY)
                    nsb.setns(fd, flag)
                    os.close(fd)
                inner = os.fork()
                if inner == 0:
                    nsb.write_proc("/proc/sys/kernel/pid_max", nsb.PID_MAX_RETIRED)
                    nsb.write_proc("/proc/sys/user/max_user_namespaces", 4096)
                    os._exit(0)
                os._exit(0 if nsb.wait_child(inner, 10.0, "lifting the limits") == 0 else 1)
            except BaseException as exc:
                os.write(2, f"cannot lift a checkpoint's limits: {exc}\n".encode())
                os._exit(1)
        try:
            status = nsb.wait_child(pid, 15.0, "lifting the checkpoint's limits")
        except OSError as exc:
            raise Refused(str(exc)) from exc
        if status != 0:
            raise Refused("cannot lift the checkpoint's limits for its forks")

    def _kill_node(self, node):
        out.signal_all([node.i_pid], signal.SIGKILL)  # the whole pid namespace goes with its pid 1
        node.conn.close()
        self.gone.add(node.i_key)

    def close_branch(self, bid):
        node = self.branches.pop(bid, None)
        if node is None:
            return
        self._kill_node(node)
        self._fail_pending(bid, "the session was closed")
        self._collect(node.parent, node)

    def release(self, cid):
        cp = self.checkpoints.get(cid)
        if cp is None or cp.released:
            return
        cp.released = True
        out.signal_all([cp.g_pid], signal.SIGKILL)
        self._collect(None, None)

    def _collect(self, parent, child):
        """Free checkpoints that are released and have no live fork left (their pid 1 holds them)."""
        if parent is not None:
            parent.children.discard(child)
        changed = True
        while changed:
            changed = False
            for cid, cp in list(self.checkpoints.items()):
                if cp.released and not cp.children:
                    del self.checkpoints[cid]
                    self._kill_node(cp)
                    if cp.parent is not None:
                        cp.parent.children.discard(cp)
                    changed = True

    def pause(self, bid, on):
        node = self.branches[bid]
        if on:
            out.freeze(node.pidns)
        else:
            out.signal_all(out.members(node.pidns), signal.SIGCONT)
        node.paused = on

    def interrupt(self, bid):
        """Stop the branch's running call as its timeout would: a cell gets SIGALRM (its kernel then
        kills what the cell started), a command's processes are killed. False when nothing ran."""
        node = self.branches[bid]
        ops = [self.pending_ops.get(rid) for rid, owner in self.pending.items() if owner == bid]
        if not ops or node.paused:
            return False
        if "exec" in ops:
            out.signal_all([node.g_pid], signal.SIGALRM)
        else:
            out.signal_all(out.descendants(node.pidns, node.g_pid), signal.SIGKILL)
        return True

    def _fail_pending(self, bid, why):
        for rid, owner in list(self.pending.items()):
            if owner == bid:
                del self.pending[rid]
                self.pending_ops.pop(rid, None)
                self.watches.pop(rid, None)
                self.host.send({"id": rid, "lost": why})

    # ------------------------------------------------------------ the loop
    def control(self, req):
        op = req.get("op")
        if op == "new":
            bid = self._new_id("b")
            self.branches[bid] = self.new_root()
            return {"branch": bid}
        if op == "spawn":
            cp = self.checkpoints.get(str(req.get("checkpoint")))
            if cp is None or cp.released:
                raise Refused("no such checkpoint (released?)")
            out = []
            for node in self.spawn(cp, max(1, min(int(req.get("n", 1)), 64))):
                bid = self._new_id("b")
                self.branches[bid] = node
                out.append(bid)
            return {"branches": out}
        if op == "resume" and "seed" in req:  # a restored microVM: the host's clock and fresh entropy
            return {"resumed": restore.resume(req)}
        if op == "release":
            self.release(str(req.get("checkpoint")))
            return {"released": True}
        bid = str(req.get("branch"))
        if bid not in self.branches:
            raise Refused("no such session (closed?)")
        if op == "close":
            self.close_branch(bid)
            return {"closed": True}
        if op == "interrupt":
            return {"interrupted": self.interrupt(bid)}
        if any(owner == bid for owner in self.pending.values()):
            raise Refused("the session is busy with another call")
        if op == "checkpoint":
            if self.branches[bid].paused:
                raise Refused("the session is paused: resume it first")
            return {"checkpoint": self.checkpoint(bid)}
        if op in ("pause", "resume"):
            self.pause(bid, op == "pause")
            return {"paused": op == "pause"}
        raise Refused(f"unknown op {op!r}")

    def on_host(self, req):
        op, rid = req.get("op"), req.get("id")
        if op in KERNEL_OPS:
            bid = str(req.get("branch"))
            node = self.branches.get(bid)
            if node is None:
                self.host.send({"id": rid, "lost": "no such session (closed?)"})
            elif node.paused:
                self.host.send({"id": rid, "error": "the session is paused: resume it first"})
            else:
                self.pending[rid] = bid
                self.pending_ops[rid] = op
                if req.get("cpu_s") or req.get("memory_mb"):
                    self._watch(rid, node, req)
                node.conn.queue({k: v for k, v in req.items() if k != "branch"})
            return
        try:
            reply = self.control(req)
        except Refused as exc:
            reply = {"error": str(exc)}
        except (OSError, ValueError, KeyError) as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        reply["id"] = rid
        self.host.send(reply)

    def on_branch(self, bid, node):
        node.conn.fill()
        while True:
            msg = node.conn.frame()
            if msg is None:
                break
            for fd in node.conn.take_fds():  # an interpreter has no descriptor to give us
                out.close(fd)
            rid = msg.get("id")
            if rid is not None and self.pending.get(rid) == bid:
                if "stream" not in msg:  # output while the call runs; the answer ends it
                    del self.pending[rid]
                    self.pending_ops.pop(rid, None)
                    watch = self.watches.pop(rid, None)
                    if watch is not None:
                        watch.mark(msg)
                self.host.send(msg)
        if node.conn.eof:
            self.branches.pop(bid, None)
            self._kill_node(node)
            self._fail_pending(bid, "the session's interpreter exited")
            self._collect(node.parent, node)

    def _watch(self, rid, node, req):
        """Hold a call to its CPU seconds and memory from outside the branch (what the model's
        code cannot reach, it cannot lift; its own rlimits it could)."""
        self.watches[rid] = out.CallWatch(node.pidns, node.g_pid, req.get("op"), req.get("cpu_s"),
                                          req.get("memory_mb"))

    def run(self, host_fd):
        while True:
            conns = {node.conn.fileno(): (bid, node) for bid, node in self.branches.items()}
            wants_write = [fd for fd, (_, node) in conns.items() if node.conn.outbuf]
            readable, writable, _ = select.select([host_fd, *conns], wants_write, [],
                                                  WATCH_PERIOD_S if self.watches else None)
            for watch in self.watches.values():
                watch.check()
            for fd in writable:
                conns[fd][1].conn.flush()
            for fd in readable:
                if fd == host_fd:
                    req = self.host.recv()
                    if req is None:
                        if IN_MICROVM:  # a virtio port reads EOF while no host is connected (a restore)
                            time.sleep(0.001)
                            continue
                        return
                    self.on_host(req)
                elif fd in conns and conns[fd][0] in self.branches:
                    self.on_branch(*conns[fd])


def main():
    argv = sys.argv[1:]
    raw = dict(zip(argv[::2], argv[1::2]))
    opts = {"memory_mb": 1024, "max_processes": 64, "disk_mb": 256, "file_size": 16 << 20, "output_bytes": 1 << 20,
            "family_processes": 8192}
    opts.update({k.lstrip("-").replace("-", "_"): int(v) for k, v in raw.items()})
    rfd, wfd = os.dup(0), os.dup(1)
    for fd in (rfd, wfd):
        os.set_inheritable(fd, False)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    fcntl.fcntl(rfd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
    host = Channel(rfd, wfd)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        nsb.prepare_sandbox(opts)
        # Where the sandbox maps a program uid, branches run as it; else everything shares one.
        ids = (PROGRAM_UID, PROGRAM_UID) if nsb.uid_mapped(PROGRAM_UID) else (os.geteuid(), os.getegid())
    except OSError as exc:
        host.send({"ready": False, "error": f"cannot prepare the session sandbox: {exc}"})
        return
    host.send({"ready": True, "protocol": kernel.PROTOCOL, "pid": os.getpid(), "python": sys.version.split()[0],
               "uid_separation": ids[0] != os.geteuid(), "session": True, "supervisor": True})
    Supervisor(host, opts, ids).run(rfd)


if __name__ == "__main__":
    main()
