"""Both ends of an assert- or call-kind test run inside a sandbox (stdlib only, standalone).

The grader sends these two halves twice in one request, as one text (see :mod:`rewards._runner`:
the wire they speak, :mod:`rewards._sandbox_wire`, then this module, the program half, then
:mod:`rewards._sandbox_tester`, the tester half): as the
program (``argv[1] == "program"``), run by vmpool as the model's process under the
program uid, and as its companion (``argv[1] == "tester"``), run by vmpool as a separate
process under another uid, which the program can neither signal, ptrace nor read. They
talk over one socket (program fd 3, tester fd 4); only the tester can write the report
(its fd 3).

The boundary is the process, not anything in this file: the program half holds no
secret and trusts nothing (a program may rewrite it at will), and the tester half
believes only what it decodes with :func:`decode`, which builds fresh objects of exactly
these types: ``None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset``
(depth and size capped). Test code, expected values, the problem's trusted helpers
(HumanEval prompt functions) and its setup names live only in the tester; the names the
tests call on the program are :class:`Proxy` objects there. So:

* a value that is not plain data (an instance of a program class, whatever its dunders, a
  builtin subclass, a function) makes that call fail;
* a generator or a builtin iterator returned by the program is materialised (in the
  program, under its limits, at most ``MAX_ITEMS`` items) and reaches the test as an
  iterator over that list; likewise, by rule, ``collections.Counter``, ``OrderedDict`` and
  ``defaultdict`` reach it as a plain ``dict``, a ``deque`` as a ``list``, and an
  ``re.Match`` as ``True`` (the test can only ask whether there was a match). Each rule
  only chooses which plain data the program sends: the tester decodes plain data only;
* ``complex`` crosses as well (a builtin scalar, like float);
* list, dict and set arguments are copied back after the call, so tests that check an
  in-place change see it;
* a builtin exception raised by the program is raised in the test as the same builtin
  type with its message; any other (a program-defined class, ``SystemExit``, and
  ``StopIteration``, which would end a ``map()`` in the test as if it were exhausted) is a
  :class:`ProgramFailure`, which ``except Exception`` in a test does not catch.

Report records (JSON lines on the tester's fd 3): ``{"t": "load", "err"}`` when the
program did not load; ``{"t": "unit", "i", "ok", "kind", "err"}`` per assert unit;
``{"t": "call", "i", "ok", "kind", "value", "err"}`` per call case (``value`` in the wire
format; compared on the host); ``{"t": "done", "results", "kinds"}`` at the end.
``kind`` is ``ok``, ``failed`` (an assertion or a wrong/unusable value), ``error`` (another
exception), ``memory`` (MemoryError), or ``died`` (the program process ended).
"""

import base64
import builtins
import marshal
import os
import sys
import types

if __name__ == "rewards._sandbox_side":  # on the host; in the sandbox _sandbox_wire.py's text comes first
    from ._sandbox_wire import ERR_CHARS, Link, ProgramGone, WireError, decode, encode


# ------------------------------------------------------------------ program side
def _describe(exc):
    """``Type: message (line N)`` of an exception, as plain text."""
    try:
        name = type(exc).__name__
        text = str(exc)
    except BaseException:
        return "an exception that cannot be described"
    line = ""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<solution>":
            line = f" (line {tb.tb_lineno})"
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) and exc.lineno:
        line = f" (line {exc.lineno})"
    return f"{name}: {text}"[:ERR_CHARS] + line


def _exc_name(exc):
    """The builtin exception class name to re-raise in the test, or ``!name``."""
    t = type(exc)
    name = t.__name__
    return name if getattr(builtins, name, None) is t else "!" + str(name)[:100]


def _resolve(P, name, mode):
    v = P.get(name)
    if v is None and mode == "call" and isinstance(P.get("Solution"), type):
        v = getattr(P["Solution"](), name, None)
    return v


def _kind(v):
    if v is None:
        return "missing"
    if type(v) is types.ModuleType:
        return ["module", str(v.__name__)]
    if callable(v):
        return "callable"
    try:
        return ["value", encode(v)]
    except WireError:
        return "other"


def program_main():
    link = Link(3)
    # What to load comes on stdin (from the request, not from the tester), so the program
    # loads at once and its "loaded" reply is waiting when the tester first reads: one
    # round trip less. Read to the end: the model's code then sees an empty stdin.
    chunks = []
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
    setup, program, names, mode, magic, code = read_load(b"".join(chunks))
    P = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        if setup:
            exec(compile(setup, "<setup>", "exec", dont_inherit=True), P)
        exec(_program_code(program, magic, code), P)
        fns = {name: _resolve(P, name, mode) for name in names}
        kinds = {name: _kind(v) for name, v in fns.items()}
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included: it did not load
        link.send(["load_error", _describe(exc)])
        return
    link.send(["loaded", kinds])
    while True:
        try:
            msg = link.recv()
        except ProgramGone:
            return
        if msg[0] == "batch":
            # Calls the tester knows it will make, in the order it will make them (see
            # rewards._runner.call_plan): answered one after the other, each reply sent
            # as soon as it is computed, so a call that never returns leaves the earlier
            # replies readable, as live calls would.
            for name, enc_args, enc_kwargs in msg[1]:
                link.send(_serve(fns, name, enc_args, enc_kwargs))
        else:
            _, name, enc_args, enc_kwargs = msg
            link.send(_serve(fns, name, enc_args, enc_kwargs))


def read_load(data):
    """``(setup, program, names, mode, magic, code)`` from the program's load message (see
    rewards._runner.load_message): marshal of plain data in base64, whatever the
    interpreter; ``code`` is marshal bytes of the program's code object, or None."""
    return marshal.loads(base64.b64decode(data))


def _program_code(program, magic, code):
    """The code object of the model's program: the host's compilation of this very text
    (``code``, marshal bytes: the host compiled it to look for syntax errors, so it is not
    compiled twice) when it was made for this interpreter's bytecode (``magic``), else
    the text compiled here."""
    if code is not None and magic == _MAGIC:
        return marshal.loads(code)
    return compile(program, "<solution>", "exec", dont_inherit=True, optimize=0)


_MAGIC = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER


def _serve(fns, name, enc_args, enc_kwargs):
    """One call of a program function, as the reply the tester decodes."""
    fn = fns.get(name)
    try:
        args = decode(enc_args)
        kwargs = decode(enc_kwargs)
        value = encode(fn(*args, **kwargs), materialize=True)
        # A container argument goes back only when the call changed it (its encoding
        # differs from the one received): the tester then copies it into its own.
        after = []
        for i, a in enumerate(args):
            enc = encode(a) if type(a) in (list, dict, set) else None
            after.append(None if enc is None or enc == enc_args[i + 1] else enc)
        after_kw = {k: encode(a) for k, a in kwargs.items() if type(a) in (list, dict, set)}
        return ["ret", value, after, after_kw]
    except WireError as exc:
        return ["bad", str(exc)[:ERR_CHARS]]
    except BaseException as exc:
        return ["exc", _exc_name(exc), _describe(exc)]
