"""The tester half of an assert- or call-kind test run (stdlib only, standalone; see
:mod:`rewards._sandbox_side` for both halves and the boundary between them).

It holds the test code, the trusted helpers and setup names, calls the program through
:class:`Proxy` objects over the link, believes only what :func:`decode` rebuilds, and
writes the report on its fd 3. In the sandbox its text comes last, after the wire's and the
program half's, so the entry dispatch at the end of this file sees both halves.
"""

import builtins
import collections
import json
import os
import sys
import traceback

if __name__ == "rewards._sandbox_tester":  # on the host; in the sandbox the wire's text comes first
    from ._sandbox_side import program_main
    from ._sandbox_wire import _DUMPS, ERR_CHARS, Link, ProgramFailure, ProgramGone, WireError, decode, encode


# Builtin exceptions a program's call may raise in the test as themselves. Not the ones
# that steer control flow inside C code: a StopIteration raised through map(), iter(f, x)
# or next(it, default) would end the test's iteration early, as if it had run to the end.
_CONTROL_FLOW = (StopIteration, StopAsyncIteration)
_REBUILT = {name: getattr(builtins, name) for name in dir(builtins)
            if isinstance(getattr(builtins, name), type) and issubclass(getattr(builtins, name), Exception)
            and not issubclass(getattr(builtins, name), _CONTROL_FLOW)}


def _copy_back(original, enc):
    """Apply a program's in-place change of a list, dict or set argument to the test's own object."""
    if enc is None:
        return
    new = decode(enc)
    t = type(original)
    if t is not type(new):
        raise WireError("an argument changed type during the call")
    if t is list:
        original[:] = new
    else:
        original.clear()
        original.update(new)


def _call_key(call):
    """A call's exact identity: its JSON text (``True`` and ``1`` differ there, unlike ``==``)."""
    return _DUMPS(call)


class Ahead:
    """Calls sent to the program before the test makes them (one ``batch`` message), whose
    replies are still to be read, in order. A call the test then makes is served from
    here only when it is exactly the next one sent (same function, same encoded
    arguments); on any other call the rest are read and dropped first, so every reply is
    matched to the call it answers, and the test sees what live calls would give it."""

    __slots__ = ("link", "keys")

    def __init__(self, link):
        self.link = link
        self.keys = collections.deque()

    def send(self, calls):
        """Send ``calls`` ([name, encoded args, encoded kwargs] each) in one message."""
        if calls:
            self.link.send(["batch", calls])
            self.keys.extend(map(_call_key, calls))

    def take(self, call):
        """True when the reply to ``call`` ([name, encoded args, encoded kwargs]) is the next
        on the link (it was sent ahead)."""
        keys = self.keys
        if not keys:
            return False
        if keys[0] == _call_key(call):
            keys.popleft()
            return True
        while keys:  # the test went another way: those replies answer nothing it asks
            keys.popleft()
            self.link.recv()
        return False


class Proxy:
    """Stands in the tester for a function of the program: each call crosses the link
    (or was sent ahead, see :class:`Ahead`)."""

    __slots__ = ("_link", "_ahead", "__name__")

    def __init__(self, link, name, ahead=None):
        self._link = link
        self._ahead = ahead
        self.__name__ = name

    def __repr__(self):
        return f"<program function {self.__name__}>"

    def __call__(self, *args, **kwargs):
        try:
            call = [self.__name__, encode(args), encode(kwargs)]
        except WireError as exc:
            raise ProgramFailure(f"the test passes a value the program cannot receive: {exc}") from None
        ahead = self._ahead
        if ahead is None or not ahead.take(call):
            self._link.send(["call", *call])
        reply = self._link.recv()
        if type(reply) is not list or not reply:
            raise ProgramFailure("malformed reply from the program")
        tag = reply[0]
        try:
            if tag == "ret" and len(reply) == 4 and type(reply[2]) is list and type(reply[3]) is dict:
                value = decode(reply[1])
                for original, enc in zip(args, reply[2]):
                    if type(original) in (list, dict, set):
                        _copy_back(original, enc)
                for key, enc in reply[3].items():
                    if type(kwargs.get(key)) in (list, dict, set):
                        _copy_back(kwargs[key], enc)
                return value
        except WireError as exc:
            raise ProgramFailure(f"{self.__name__} returned {exc}") from None
        if tag == "exc" and len(reply) == 3 and type(reply[1]) is str and type(reply[2]) is str:
            cls = _REBUILT.get(reply[1])
            message = reply[2][:ERR_CHARS]
            if cls is not None:
                try:
                    exc = cls(message)
                except Exception:  # UnicodeError and friends want more arguments
                    exc = ProgramFailure(message)
                raise exc
            raise ProgramFailure(f"{self.__name__} raised {message}")
        if tag == "bad" and len(reply) == 2 and type(reply[1]) is str:
            raise ProgramFailure(f"{self.__name__} returned {reply[1][:ERR_CHARS]}")
        raise ProgramFailure("malformed reply from the program")


class Report:
    def __init__(self, fd):
        self.fd = fd

    def emit(self, record):
        data = (_DUMPS(record) + "\n").encode("utf-8", "surrogatepass")
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]


def _unit_failure(exc, source, filename):
    """(kind, error text) of a failed unit; the error shows the test's own failing line."""
    line = ""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            lines = source.splitlines()
            if 0 < tb.tb_lineno <= len(lines):
                line = lines[tb.tb_lineno - 1].strip()
        tb = tb.tb_next
    if isinstance(exc, ProgramGone):
        kind = "died"
        text = "the program exited during the test"
    elif isinstance(exc, MemoryError):
        kind, text = "memory", "MemoryError"
    elif isinstance(exc, AssertionError):
        kind, text = "failed", "AssertionError"
    elif isinstance(exc, (ProgramFailure, WireError)):
        kind, text = "failed", str(exc)
    else:
        kind = "error"
        text = f"{type(exc).__name__}: {exc}"
    if line:
        text = f"{text[:ERR_CHARS]} in: {line}"
    return kind, text[:ERR_CHARS]


def _load(link):
    """The program's first message (it loads on its own at start); returns (kinds, None) or (None, error text)."""
    try:
        reply = link.recv()
    except ProgramGone:
        return None, "the program exited while loading"
    except WireError as exc:
        return None, f"the program sent {exc}"
    if type(reply) is list and len(reply) == 2 and reply[0] == "loaded" and type(reply[1]) is dict:
        return reply[1], None
    if type(reply) is list and len(reply) == 2 and reply[0] == "load_error" and type(reply[1]) is str:
        return None, reply[1][:ERR_CHARS]
    return None, "malformed load reply from the program"


# The tester process serves one run after another (vmpool keeps it, and runs this module's
# top level once: ``entry``): code objects of the trusted text (setup, prompt, test units)
# are kept across runs, keyed by their source, so the samples of one problem compile its
# tests once. Only trusted text is ever compiled here.
_COMPILED = {}
_COMPILED_MAX = 512


def _compile_trusted(source, filename):
    key = (source, filename)
    code = _COMPILED.get(key)
    if code is None:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        code = _COMPILED[key] = compile(source, filename, "exec", dont_inherit=True)
    return code


def _tester_namespace(payload, kinds, link, ahead):
    T = {"__name__": "__tester__", "__builtins__": builtins}
    exec(_compile_trusted(payload.get("setup") or "", "<setup>"), T)
    prelude = payload.get("prelude") or ""
    if prelude:
        exec(_compile_trusted(prelude, "<prompt>"), T)
    for name, kind in kinds.items():
        if name not in payload["proxies"] or type(name) is not str:
            continue
        T.pop(name, None)
        if kind == "callable":
            T[name] = Proxy(link, name, ahead)
        elif type(kind) is list and len(kind) == 2 and kind[0] == "value":
            T[name] = decode(kind[1])
        elif type(kind) is list and len(kind) == 2 and kind[0] == "module" and kind[1] == name \
                and name in sys.stdlib_module_names:
            # The tests read a stdlib module the program imported (``re`` in an MBPP assert):
            # the tester's own, unpatched copy. Only under the name the tests use, so the
            # program cannot choose what the tester imports.
            T[name] = __import__(name)
    return T


def _send_ahead(ahead, plans, i, T):
    """Send the planned calls of units ``i..j-1`` (the run of units from ``i`` that have a
    plan, see rewards._runner.call_plan) in one batch; returns ``j``. Only calls of names
    that are program functions here go ahead; any other name and the run is left live."""
    calls, j = [], i
    while j < len(plans) and type(plans[j]) is list:
        calls += plans[j]
        j += 1
    if j == i:
        return i + 1
    if len(calls) > 1 and all(type(c) is list and len(c) == 3 and type(T.get(c[0])) is Proxy for c in calls):
        ahead.send(calls)
    return j


# Parsed assert-mode payloads by their text (every sample of a problem sends the same):
# nothing below changes one. Call-mode payloads are parsed per run, since the arguments
# of a case get the program's in-place changes copied back into them.
_PAYLOADS = {}


def tester_main():
    text = sys.stdin.read()
    payload = _PAYLOADS.get(text)
    if payload is None:
        payload = json.loads(text)
        if payload["mode"] == "assert":
            if len(_PAYLOADS) >= _COMPILED_MAX:
                _PAYLOADS.clear()
            _PAYLOADS[text] = payload
    report = Report(3)
    link = Link(4)
    mode = payload["mode"]
    n = len(payload["units"]) if mode == "assert" else len(payload["cases"])
    kinds, load_error = _load(link)
    if load_error is not None:
        report.emit({"t": "load", "err": load_error})
        report.emit({"t": "done", "results": [False] * n, "kinds": ["died" if "exited" in load_error else "error"] * n})
        return
    results, unit_kinds = [], []
    ahead = Ahead(link)
    if mode == "assert":
        T = _tester_namespace(payload, kinds, link, ahead)
        plans = payload.get("plan") or []
        sent_to = 0  # units before this one had their planned calls sent
        for i, source in enumerate(payload["units"]):
            if i >= sent_to:
                sent_to = _send_ahead(ahead, plans, i, T)
            filename = f"<test-{i}>"
            record = {"t": "unit", "i": i, "ok": False}
            try:
                exec(_compile_trusted(source, filename), dict(T))
                record["ok"], record["kind"] = True, "ok"
            except BaseException as exc:
                record["kind"], record["err"] = _unit_failure(exc, source, filename)
            results.append(record["ok"])
            unit_kinds.append(record["kind"])
            report.emit(record)
    else:
        fn = Proxy(link, payload["fn_name"], ahead)
        callable_ok = kinds.get(payload["fn_name"]) == "callable"
        if callable_ok:
            calls = []
            for args, kwargs in payload["cases"]:
                try:
                    calls.append([payload["fn_name"], encode(tuple(args)), encode(kwargs)])
                except WireError:
                    break  # that case fails when it is made; only those before it go ahead
            if len(calls) > 1:
                ahead.send(calls)
        for i, case in enumerate(payload["cases"]):
            record = {"t": "call", "i": i, "ok": False}
            if not callable_ok:
                record["kind"], record["err"] = "error", f"no callable named {payload['fn_name']}"
            else:
                args, kwargs = case
                try:
                    value = fn(*args, **kwargs)
                    record["value"] = encode(value, materialize=True)  # our own iterator over decoded data
                    record["ok"], record["kind"] = True, "ok"
                except BaseException as exc:
                    record["kind"], record["err"] = _unit_failure(exc, "", "")
            results.append(record["ok"])
            unit_kinds.append(record["kind"])
            report.emit(record)
    report.emit({"t": "done", "results": results, "kinds": unit_kinds})


def tester_entry():
    try:
        tester_main()
    except BaseException:
        traceback.print_exc()
        raise SystemExit(3) from None


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "tester":
        tester_entry()
    elif role == "program":
        program_main()
    else:
        raise SystemExit("usage: tester|program")
