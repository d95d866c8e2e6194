"""Both ends of an assert- or call-kind test run inside a sandbox (stdlib only, standalone).

The grader sends this file twice in one request (see :mod:`rewards._runner`): as the
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

Wire format of a value (JSON after tagging): ``null``, ``true``/``false``, numbers and
strings as JSON; ``["i", hex]`` for ints beyond 2**62; ``["c", real, imag]``; ``["b", base64]``; ``["l", ...]``,
``["t", ...]``, ``["s", ...]``, ``["f", ...]`` for list, tuple, set, frozenset;
``["d", k1, v1, k2, v2, ...]``; ``["g", ...]`` for a materialised iterator. Frames are a
4-byte big-endian length and the JSON text.

Report records (JSON lines on the tester's fd 3): ``{"t": "load", "err"}`` when the
program did not load; ``{"t": "unit", "i", "ok", "kind", "err"}`` per assert unit;
``{"t": "call", "i", "ok", "kind", "value", "err"}`` per call case (``value`` in the wire
format; compared on the host); ``{"t": "done", "results", "kinds"}`` at the end.
``kind`` is ``ok``, ``failed`` (an assertion or a wrong/unusable value), ``error`` (another
exception), ``memory`` (MemoryError), or ``died`` (the program process ended).
"""

import base64
import builtins
import collections  # noqa: F401  (loaded for the materialisation rules below)
import json
import os
import re  # noqa: F401  (loaded for the materialisation rules below)
import struct
import sys
import traceback
import types

MAX_DEPTH = 100
MAX_ITEMS = 1_000_000
MAX_FRAME = 64 << 20
BIG = 1 << 62
HEADER = struct.Struct(">I")
ERR_CHARS = 500


class WireError(Exception):
    """A value that cannot cross (not plain data, too deep, too big) or a malformed frame."""


class ProgramGone(Exception):
    """The program process closed the link (it exited, crashed or was killed)."""


class ProgramFailure(BaseException):
    """A call on the program failed in a way a test must not mistake for a builtin
    exception: a non-plain value, a program-defined exception, SystemExit. A
    BaseException, so ``except Exception`` in test code lets it through."""


# ------------------------------------------------------------------ the value codec
_ITERATORS = frozenset({
    types.GeneratorType, map, filter, zip, enumerate, reversed,
    type(iter([])), type(iter(())), type(iter(range(0))), type(iter(set())), type(iter("")),
    type(iter({})), type(iter({}.values())), type(iter({}.items())),
})


def _stdlib_types(spec):
    """Types by "module.name", where the module is already loaded (never import for it)."""
    found = set()
    for dotted in spec:
        module, _, name = dotted.rpartition(".")
        t = getattr(sys.modules.get(module), name, None)
        if isinstance(t, type):
            found.add(t)
    return frozenset(found)


_AS_DICT = _stdlib_types(("collections.Counter", "collections.OrderedDict", "collections.defaultdict"))
_AS_LIST = _stdlib_types(("collections.deque",))
_AS_TRUE = _stdlib_types(("re.Match",))


def encode(value, materialize=False):
    """Tag ``value`` for the wire. Raises WireError for anything not plain data.

    ``materialize``: turn generators and builtin iterators into ``["g", ...]`` (program side).
    """
    budget = [MAX_ITEMS]
    return _enc(value, 0, budget, materialize)


def _enc(v, depth, budget, materialize):
    t = type(v)
    if v is None or t is bool or t is float or t is str:
        return v
    if t is int:
        return v if -BIG < v < BIG else ["i", format(v, "x")]
    if depth >= MAX_DEPTH:
        raise WireError(f"value nested deeper than {MAX_DEPTH}")
    if t is bytes:
        budget[0] -= len(v) // 64
        return ["b", base64.b64encode(v).decode("ascii")]
    if t is list or t is tuple or t is set or t is frozenset:
        budget[0] -= len(v)
        if budget[0] < 0:
            raise WireError(f"value has more than {MAX_ITEMS} items")
        out = ["l" if t is list else "t" if t is tuple else "s" if t is set else "f"]
        for item in v:
            out.append(_enc(item, depth + 1, budget, materialize))
        return out
    if t is dict:
        budget[0] -= 2 * len(v)
        if budget[0] < 0:
            raise WireError(f"value has more than {MAX_ITEMS} items")
        out = ["d"]
        for key, item in v.items():
            out.append(_enc(key, depth + 1, budget, materialize))
            out.append(_enc(item, depth + 1, budget, materialize))
        return out
    if t is complex:
        return ["c", v.real, v.imag]
    if materialize and t in _AS_DICT:
        return _enc(dict(v), depth, budget, materialize)
    if materialize and t in _AS_LIST:
        return _enc(list(v), depth, budget, materialize)
    if materialize and t in _AS_TRUE:
        return True
    if materialize and t in _ITERATORS:
        out = ["g"]
        for item in v:
            budget[0] -= 1
            if budget[0] < 0:
                raise WireError(f"iterator yields more than {MAX_ITEMS} items")
            out.append(_enc(item, depth + 1, budget, materialize))
        return out
    raise WireError(f"a {_type_name(t)} (not plain data)")


def _type_name(t):
    try:
        name = type.__dict__["__name__"].__get__(t)
        module = type.__dict__["__module__"].__get__(t)
    except Exception:
        return "value of an unnamed type"
    name = name if type(name) is str else "?"
    return name if module == "builtins" else f"{module}.{name} object" if type(module) is str else name


def decode(x):
    """Fresh plain objects from a tagged wire value. Raises WireError on anything else."""
    budget = [MAX_ITEMS]
    return _dec(x, 0, budget)


def _dec(x, depth, budget):
    t = type(x)
    if x is None or t is bool or t is int or t is float or t is str:
        return x
    if t is not list or not x or type(x[0]) is not str:
        raise WireError("malformed value")
    if depth >= MAX_DEPTH:
        raise WireError(f"value nested deeper than {MAX_DEPTH}")
    tag = x[0]
    budget[0] -= len(x)
    if budget[0] < 0:
        raise WireError(f"value has more than {MAX_ITEMS} items")
    if tag == "i" and len(x) == 2 and type(x[1]) is str and len(x[1]) <= 1 << 20:
        try:
            return int(x[1], 16)
        except ValueError:
            raise WireError("malformed big integer") from None
    if tag == "c" and len(x) == 3 and type(x[1]) in (int, float) and type(x[2]) in (int, float):
        return complex(x[1], x[2])
    if tag == "b" and len(x) == 2 and type(x[1]) is str:
        try:
            return base64.b64decode(x[1], validate=True)
        except ValueError:
            raise WireError("malformed bytes") from None
    items = [_dec(item, depth + 1, budget) for item in x[1:]]
    try:
        if tag == "l":
            return items
        if tag == "t":
            return tuple(items)
        if tag == "s":
            return set(items)
        if tag == "f":
            return frozenset(items)
        if tag == "g":
            return iter(items)
        if tag == "d" and len(items) % 2 == 0:
            return dict(zip(items[0::2], items[1::2]))
    except TypeError as exc:  # an unhashable set element or dict key
        raise WireError(f"malformed value: {exc}") from None
    raise WireError(f"malformed value (tag {tag[:10]!r})")


# ------------------------------------------------------------------ framing
class Link:
    """Length-prefixed JSON frames over one stream socket fd."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray()

    def send(self, obj):
        body = json.dumps(obj, separators=(",", ":")).encode("utf-8", "surrogatepass")
        view = memoryview(HEADER.pack(len(body)) + body)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:  # the other side is gone
            raise ProgramGone(str(exc)) from None

    def _exact(self, n):
        """``n`` bytes: from what an earlier read brought first, then one read of up to 64 KiB at a time."""
        buf = self.buf
        while len(buf) < n:
            try:
                chunk = os.read(self.fd, max(n - len(buf), 1 << 16))
            except OSError as exc:
                raise ProgramGone(str(exc)) from None
            if not chunk:
                raise ProgramGone("the program closed the link")
            buf += chunk
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def recv(self):
        (size,) = HEADER.unpack(self._exact(HEADER.size))
        if size > MAX_FRAME:
            raise WireError(f"a reply of {size} bytes (more than {MAX_FRAME})")
        try:
            return json.loads(self._exact(size))
        except ValueError:
            raise WireError("a reply that is not JSON") from None


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
    msg = link.recv()
    _, setup, program, names, mode = msg
    P = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        exec(compile(setup, "<setup>", "exec", dont_inherit=True), P)
        exec(compile(program, "<solution>", "exec", dont_inherit=True), P)
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
        _, name, enc_args, enc_kwargs = msg
        fn = fns.get(name)
        try:
            args = decode(enc_args)
            kwargs = decode(enc_kwargs)
            value = encode(fn(*args, **kwargs), materialize=True)
            after = [encode(a) if type(a) in (list, dict, set) else None for a in args]
            after_kw = {k: encode(a) for k, a in kwargs.items() if type(a) in (list, dict, set)}
            reply = ["ret", value, after, after_kw]
        except WireError as exc:
            reply = ["bad", str(exc)[:ERR_CHARS]]
        except BaseException as exc:
            reply = ["exc", _exc_name(exc), _describe(exc)]
        link.send(reply)


# ------------------------------------------------------------------ tester side
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


class Proxy:
    """Stands in the tester for a function of the program: each call crosses the link."""

    __slots__ = ("_link", "__name__")

    def __init__(self, link, name):
        self._link = link
        self.__name__ = name

    def __repr__(self):
        return f"<program function {self.__name__}>"

    def __call__(self, *args, **kwargs):
        try:
            request = ["call", self.__name__, encode(args), encode(kwargs)]
        except WireError as exc:
            raise ProgramFailure(f"the test passes a value the program cannot receive: {exc}") from None
        self._link.send(request)
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
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8", "surrogatepass")
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


def _load(link, payload, names):
    """Ask the program to load; returns (kinds, None) or (None, error text)."""
    try:
        link.send(["load", payload.get("setup") or "", payload["program"], names, payload["mode"]])
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


def _tester_namespace(payload, kinds, link):
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
            T[name] = Proxy(link, name)
        elif type(kind) is list and len(kind) == 2 and kind[0] == "value":
            T[name] = decode(kind[1])
        elif type(kind) is list and len(kind) == 2 and kind[0] == "module" and kind[1] == name \
                and name in sys.stdlib_module_names:
            # The tests read a stdlib module the program imported (``re`` in an MBPP assert):
            # the tester's own, unpatched copy. Only under the name the tests use, so the
            # program cannot choose what the tester imports.
            T[name] = __import__(name)
    return T


def tester_main():
    payload = json.loads(sys.stdin.read())
    report = Report(3)
    link = Link(4)
    mode = payload["mode"]
    n = len(payload["units"]) if mode == "assert" else len(payload["cases"])
    names = list(payload["proxies"])
    kinds, load_error = _load(link, payload, names)
    if load_error is not None:
        report.emit({"t": "load", "err": load_error})
        report.emit({"t": "done", "results": [False] * n, "kinds": ["died" if "exited" in load_error else "error"] * n})
        return
    results, unit_kinds = [], []
    if mode == "assert":
        T = _tester_namespace(payload, kinds, link)
        for i, source in enumerate(payload["units"]):
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
        fn = Proxy(link, payload["fn_name"])
        callable_ok = kinds.get(payload["fn_name"]) == "callable"
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
        raise SystemExit("usage: _sandbox_side.py tester|program")
