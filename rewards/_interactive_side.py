"""The companion of an interactive run (see :mod:`rewards._interactive`): harness-authored code
that vmpool runs as its tester uid beside the solution. Stdlib only: it runs on the sandbox's
Python, sent as the text of this file; nothing on the host imports it.

Per run (:func:`interactor_main`, the companion's ``entry``) it reads its payload from its stdin
(the interactor's artifact, its run command, the test's input: none of it ever enters the
solution's reach), writes the artifact and the input into a fresh directory of its own under
/tmp (mode 0700: the solution's uid can neither list, read nor replace anything in it), starts
the interactor there with its stdin and stdout on the link to the solution (fd 4) and the argv
``input output`` (testlib's), waits for it, and reports on fd 3 (out of the solution's reach)
one JSON object: ``exit_code`` / ``signal`` of the interactor, its ``stderr`` and ``output``
file (both capped), and ``error`` when it could not be started at all.

The interactor runs under its own limits (RLIMIT_CPU, and RLIMIT_AS in the address-space
memory mode), with SIGPIPE ignored (a solution that exits early makes its writes fail, never
kills it), no other fd than 0..2, and in the companion's process group (the sandbox kills it
with the companion). The companion keeps its own end of the link open until it reports, so
the solution never sees the end of its input because the interactor is done: the run ends
(and the solution is killed) once the companion is.
"""

import base64
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile

LINK = 4  # the companion's end of the link; the solution's stdin and stdout are the other end
REPORT = 3  # the report channel: only the companion holds it
EXEC_PATH = "/usr/local/bin:/usr/bin:/bin"
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _write(home: str, name: str, data: bytes, mode: int) -> None:
    if not name or "/" in name or name in (".", "..", "input", "output"):
        raise ValueError(f"bad interactor file name {name!r}")
    fd = os.open(os.path.join(home, name), _OPEN_NEW, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _rlimits(limits: dict) -> list:
    """What the interactor's process sets before it starts (vmpool's rules for a program)."""
    cpu = int(-(-float(limits["cpu_s"]) // 1)) + 1
    pairs = [(resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_CORE, (0, 0))]
    if limits.get("memory_mode", "address_space") == "address_space":
        mem = int(limits["memory_mb"]) << 20
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            mem = min(mem, hard)
        pairs.append((resource.RLIMIT_AS, (mem, mem)))
    return pairs


def _read_capped(stream, cap: int) -> tuple:
    """All of ``stream`` read (so its writer never blocks), the first ``cap`` bytes kept."""
    kept, cut = bytearray(), False
    while True:
        chunk = stream.read1(65536)
        if not chunk:
            return bytes(kept), cut
        room = cap - len(kept)
        if len(chunk) > room:
            cut = True
        kept += chunk[:max(room, 0)]


def _read_output(home: str, cap: int) -> tuple:
    """The interactor's output file (the first ``cap`` bytes), ``b""`` when it wrote none."""
    try:
        fd = os.open(os.path.join(home, "output"), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b"", False
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(cap + 1)
    return data[:cap], len(data) > cap


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def interactor_main() -> None:
    report: dict[str, object] = {"exit_code": None, "signal": None, "stderr": "", "output": "",
                                 "output_truncated": False, "error": ""}
    home, proc = "", None
    try:
        spec = json.loads(sys.stdin.read())
        home = tempfile.mkdtemp(prefix="interactor-", dir="/tmp")
        os.chmod(home, 0o700)
        executable = set(spec.get("executable") or ())
        for name, b64 in spec["files"].items():
            _write(home, name, base64.b64decode(b64), 0o700 if name in executable else 0o600)
        _write_input(home, spec["input"])
        limits = spec["limits"]
        pairs = _rlimits(limits)

        def apply_limits() -> None:
            for which, values in pairs:
                resource.setrlimit(which, values)

        env = {"PATH": EXEC_PATH, "HOME": home, "LANG": "C.UTF-8", **(spec.get("env") or {})}
        proc = subprocess.Popen([*spec["command"], "input", "output"], stdin=LINK, stdout=LINK,
                                stderr=subprocess.PIPE, cwd=home, env=env, close_fds=True,
                                restore_signals=False, preexec_fn=apply_limits)
        assert proc.stderr is not None
        with proc.stderr:
            err, _ = _read_capped(proc.stderr, int(spec["stderr_cap"]))
        rc = proc.wait()
        report["exit_code"], report["signal"] = (rc, None) if rc >= 0 else (None, -rc)
        report["stderr"] = _text(err)
        out, report["output_truncated"] = _read_output(home, int(spec["output_cap"]))
        report["output"] = _text(out)
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        if proc is not None and proc.returncode is None:  # cut short: never leave it running or unreaped
            proc.kill()
            proc.wait()
        if home:
            shutil.rmtree(home, ignore_errors=True)
        data = memoryview(json.dumps(report).encode())
        while data:
            data = data[os.write(REPORT, data):]


def _write_input(home: str, text: str) -> None:
    fd = os.open(os.path.join(home, "input"), _OPEN_NEW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(text.encode("utf-8", "surrogateescape"))
