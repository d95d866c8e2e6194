"""The plain-data wire of the tester/program boundary (stdlib only, standalone).

Sent into the sandbox in front of :mod:`rewards._sandbox_side` (the grader joins the two texts,
see :data:`rewards._runner.SIDE_SOURCE`), and imported on the host, which decodes call-kind
values with the same :func:`decode`.

Wire format of a value (JSON after tagging): ``null``, ``true``/``false``, numbers and
strings as JSON; ``["i", hex]`` for ints beyond 2**62; ``["c", real, imag]``; ``["b", base64]``; ``["l", ...]``,
``["t", ...]``, ``["s", ...]``, ``["f", ...]`` for list, tuple, set, frozenset;
``["d", k1, v1, k2, v2, ...]``; ``["g", ...]`` for a materialised iterator. Frames are a
4-byte big-endian length and the JSON text.
"""

import base64
import collections  # noqa: F401  (loaded for the materialisation rules below)
import json
import os
import re  # noqa: F401  (loaded for the materialisation rules below)
import struct
import sys
import types

MAX_DEPTH = 100
MAX_ITEMS = 1_000_000
MAX_FRAME = 64 << 20
BIG = 1 << 62
HEADER = struct.Struct(">I")
ERR_CHARS = 500


def _not_json(value):
    raise TypeError(f"a {type(value).__name__} in a frame")


def _frame_encoder():
    """Compact JSON text of a frame's object, from one encoder made once: ``json.dumps``
    builds a new C encoder per call, which in a freshly forked program is a dozen pages
    written for one small message. Frames hold encode()d values only, which have no
    cycles: no circularity bookkeeping."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
    chunks = make(None, _not_json, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)

    def dumps(obj):
        return "".join(chunks(obj, 0))
    return dumps


_DUMPS = _frame_encoder()


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
        body = _DUMPS(obj).encode("utf-8", "surrogatepass")
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
