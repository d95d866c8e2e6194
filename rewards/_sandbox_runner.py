"""Trusted test runner executed INSIDE the sandbox (stdlib only, Python 3.11, standalone).

The grader sends this file as ``ExecRequest.code`` and the work in ``payload.json``::

    {"nonce": str, "mode": "assert" | "call", "setup": str, "program": str,
     "units": [str, ...],                                  # assert mode: test code units
     "fn_name": str, "cases": [json-encoded [args, kwargs], ...]}   # call mode

It reports JSON lines on the private report channel (inherited as fd 3), every record
carrying the grader's nonce: ``load`` (program did not load), ``unit`` / ``call`` (one per test)
and finally ``done`` with every unit's result. The grader counts a pass ONLY from a ``done``
record with the right nonce; a run that exits early (``sys.exit(0)``, ``os._exit(0)``,
``raise SystemExit``), crashes or times out has no ``done`` and is not a pass, whatever its
exit code or stdout.

What this runner guarantees (the program runs in this very process, so this is defence
in depth, not a security boundary - the sandbox is the boundary):

* Forged records: the channel is moved from fd 3 to a random high fd and fd 3 is closed;
  the writer lives only in a closure; records need the nonce, which the program cannot read
  (payload file deleted and its path denied, frames/gc/``__code__``/``__defaults__`` access
  denied, ``/proc/*/mem`` denied, ctypes/cffi imports denied, ``code.__new__`` and
  ``function.__new__`` denied). Writing garbage to any fd can only make the run fail.
* Early exit: ``SystemExit``/``KeyboardInterrupt``/any ``BaseException`` from the program or a
  test unit fails that unit (or the load); ``os._exit`` leaves no ``done``.
* ``__eq__`` hacking: test code is AST-rewritten so comparisons (all but ``is``/``is not``),
  arithmetic operands and truth tests go through guards that refuse values whose type is not
  exactly a builtin scalar/container (recursively) - objects with an always-True ``__eq__`` and
  subclasses of int/str/list fail. Results of calls to program-defined callables must be such
  values too (program generators are wrapped so each item is checked); instances of
  program-defined classes may not be passed to C builtins (``float(x)``, ``math.isclose``...).
  The guards are referenced from the test code objects' constants, not from names, so the
  program cannot rebind them.
* Patched builtins/graders: the ``builtins`` module is restored from a snapshot before every
  unit, and test code resolves builtins from a private copy (checked for tampering after
  each unit). Each unit runs in a fresh namespace copied from the program's, so a program
  overwriting ``check`` or globals at test time does not reach the test code.
* Patched stdlib: right before the program runs, the namespaces of the stdlib modules the test
  code can reach (named in the units, imported or bound by setup code, and the modules those
  use), the Python classes in the directly named ones and their ``sys.modules`` entries are
  snapshotted; before every unit whatever differs is put back, and setup-bound names the program
  rebinds (other than with its own ``def``/``class`` of that name) are restored in the unit's
  namespace. Records are serialised by the C JSON encoder, not by patchable ``json`` code.
* Reading the answers: ``sys._getframe``, ``sys._current_frames``, traceback/generator/
  coroutine frames (``tb_frame``, ``gi_frame``, ``f_code``...), ``sys.settrace``/``setprofile``,
  ``gc.get_objects``/``get_referrers``/``get_referents`` and code objects of functions are denied
  while untrusted code runs; call-kind expected values never enter the sandbox.

What it cannot guarantee: Python 3.11 audits only some attribute reads - ``f_back``,
``f_globals``, ``__globals__`` and ``__closure__`` are not audited, so a frame or function
obtained some unaudited way (e.g. a test that passes one of its own lambdas to the program:
``lam.__globals__``) exposes the test namespace; thread creation is not audited in 3.11 (the
runner only removes ``_thread.start_new_thread``); a signal handler can run program code at
any bytecode boundary; crafted bytecode via ``marshal`` or an interpreter memory-safety bug can
read memory. Tests using ``map``/``sum`` over program objects inside C code bypass the guards.
A stdlib patch made by a program call inside a unit is seen by the rest of that unit; modules
first imported by the program and state inside C objects (``decimal.getcontext()``) are not
restored.
Assert-kind tests necessarily run inside the program's process; stdio and call kinds
compare outside the sandbox and are the stronger choice where a problem allows.
"""


# Every function below resolves builtins from this private copy, not from the builtins module
# that the program can monkeypatch (functions bind their builtins when they are defined).
globals()["__builtins__"] = dict(__import__("builtins").__dict__)


GUARD_NAMES = ("call", "cmp", "bin", "unary", "truth")


def placeholder_names(token, _names=GUARD_NAMES):
    """Guard name -> the string constant standing for that guard in rewritten test code."""
    return {name: "rw-" + name + "-" + token for name in _names}


def make_rewriter(ast, ph):
    """The AST transformer that routes test code through the guards (pure: no runner state).

    Each guard call is ``Call(func=Constant(placeholder))``; the runner swaps the placeholder
    strings in the compiled code's constants for the guard functions. Also used by the host
    (rewards._runner) to rewrite and compile test units ahead of time.
    """
    class Rewriter(ast.NodeTransformer):
        def _guard(self, name, args, node):
            return ast.copy_location(ast.Call(func=ast.Constant(ph[name]), args=args, keywords=[]), node)

        def _truth(self, node):
            return self._guard("truth", [node], node)

        def visit_Compare(self, node):
            self.generic_visit(node)
            ops = tuple(type(op).__name__ for op in node.ops)
            if all(op in ("Is", "IsNot") for op in ops):
                return node
            return self._guard("cmp", [ast.Constant(ops), node.left, *node.comparators], node)

        def visit_BinOp(self, node):
            self.generic_visit(node)
            return self._guard("bin", [ast.Constant(type(node.op).__name__), node.left, node.right], node)

        def visit_UnaryOp(self, node):
            self.generic_visit(node)
            if isinstance(node.op, ast.Not):
                node.operand = self._truth(node.operand)
                return node
            return self._guard("unary", [ast.Constant(type(node.op).__name__), node.operand], node)

        def visit_BoolOp(self, node):
            self.generic_visit(node)
            node.values = [self._truth(v) for v in node.values]
            return node

        def _test(self, node):
            self.generic_visit(node)
            node.test = self._truth(node.test)
            return node

        visit_Assert = visit_If = visit_While = visit_IfExp = _test

        def visit_comprehension(self, node):
            self.generic_visit(node)
            node.ifs = [self._truth(i) for i in node.ifs]
            return node

        def visit_Call(self, node):
            self.generic_visit(node)
            node.func = self._guard("call", [node.func], node)
            return node

    return Rewriter


def _stdlib_dirs(sys):
    """sysconfig's "stdlib" and "platstdlib" paths. sysconfig.get_paths() costs milliseconds in
    a fresh process (it loads and expands the build configuration); the interpreter already
    knows its stdlib directory, so use that whenever sysconfig would agree with it."""
    stdlib = getattr(sys, "_stdlib_dir", None)
    if (stdlib and sys.prefix == sys.base_prefix == sys.exec_prefix == sys.base_exec_prefix
            and stdlib == "%s/%s/python%d.%d" % (sys.base_prefix, sys.platlibdir, *sys.version_info[:2])):
        return (stdlib,)
    import sysconfig
    paths = sysconfig.get_paths()
    return tuple(sorted({p for p in (paths.get("stdlib"), paths.get("platstdlib")) if p}))


def _runner_main(stdlib_dirs=_stdlib_dirs, make_rewriter=make_rewriter, placeholder_names=placeholder_names,
                 GUARD_NAMES=GUARD_NAMES):  # noqa: C901 - one closure on purpose: nothing of it lives in module globals
    # Nothing of the runner stays reachable from module globals.
    globals().pop("_runner_main", None)
    for _name in ("_stdlib_dirs", "make_rewriter", "placeholder_names", "GUARD_NAMES"):
        globals().pop(_name, None)

    import gc
    import sys

    # Everything alive now (the zygote's preloaded modules, shared copy-on-write with it) moves
    # to the permanent generation: a full collection in this short-lived process would otherwise
    # walk, and so copy, every page of it. O(1); collection of new objects is unchanged.
    gc.freeze()

    import ast
    import binascii
    import builtins
    import json
    import marshal
    import operator
    import os
    import resource
    import signal
    import types
    import warnings
    MAGIC = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER

    # Pre-import what programs commonly need so that no import has to compile stdlib sources
    # while the audit hook is armed (the sandbox zygote normally has them all loaded already).
    _loaded = sys.modules
    for _name in ("collections", "functools", "itertools", "heapq", "bisect", "math", "string", "re",
                  "typing", "fractions", "decimal", "statistics", "copy", "random", "dataclasses",
                  "datetime", "enum", "abc", "numbers", "inspect", "io", "textwrap", "hashlib", "array",
                  "threading", "queue", "cmath", "unicodedata", "struct", "time", "traceback"):
        if _name not in _loaded:
            try:
                __import__(_name)
            except Exception:
                pass

    _write = os.write
    _exit = os._exit
    _loads = json.loads

    # ---------------------------------------------------------------- payload and channel
    fd = os.open("payload.json", os.O_RDONLY)  # no io stack: cheaper than open()
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    payload = _loads(b"".join(chunks))
    payload_path = os.path.join(os.getcwd(), "payload.json")  # getcwd() is already symlink-free
    os.unlink("payload.json")
    nonce = payload["nonce"]

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if 0 < soft < 4096 else 4096
    low = max(10, limit // 2)
    channel = low + int.from_bytes(os.urandom(2), "little") % max(1, limit - low)
    try:
        os.dup2(3, channel, inheritable=False)
    except OSError:
        channel = os.dup(3)
    os.close(3)

    # Records are serialised by the C encoder alone: json.dumps looks up json._default_encoder
    # and JSONEncoder.encode at call time, and the program can patch both.
    import _json

    def no_default(o):
        raise TypeError("not JSON serialisable")

    encoder = _json.make_encoder(None, no_default, _json.encode_basestring_ascii, None, ": ", ", ",
                                 False, False, True)

    def emit(record, _fd=channel, _nonce=nonce, _w=_write, _enc=encoder, _join="".join):
        record["n"] = _nonce
        data = (_join(_enc(record, 0)) + "\n").encode()
        while data:
            written = _w(_fd, data)
            data = data[written:]

    # ---------------------------------------------------------------- trusted snapshots
    builtins_dict = builtins.__dict__
    builtins_snapshot = dict(builtins_dict)
    stdlib_prefixes = stdlib_dirs(sys)
    func_code = types.FunctionType.__dict__["__code__"].__get__
    type_mro = type.__dict__["__mro__"].__get__
    type_dict = type.__dict__["__dict__"].__get__
    type_flags = type.__dict__["__flags__"].__get__
    sm_func = staticmethod.__dict__["__func__"].__get__
    cm_func = classmethod.__dict__["__func__"].__get__
    meth_func = types.MethodType.__dict__["__func__"].__get__
    prop_get = property.__dict__["fget"].__get__
    prop_set = property.__dict__["fset"].__get__
    prop_del = property.__dict__["fdel"].__get__
    # The C function: signal.pthread_sigmask wraps it to turn every signal number of the old
    # mask into a Signals enum member, which costs ~60 microseconds a call.
    sigmask = __import__("_signal").pthread_sigmask
    all_signals = set(signal.valid_signals())

    HEAPTYPE = 1 << 9
    # Python-level classes are heap types without IMMUTABLETYPE; C types (static, or heap and
    # immutable like re.Match) have fixed behaviour the program cannot change.
    PYCLASS_MASK = HEAPTYPE | (1 << 8)
    FunctionType = types.FunctionType
    MethodType = types.MethodType
    CodeType = types.CodeType
    C_CALLABLES = frozenset({types.BuiltinFunctionType, types.MethodWrapperType, types.WrapperDescriptorType,
                             types.MethodDescriptorType, types.ClassMethodDescriptorType})
    EXACT_SCALARS = frozenset({int, float, complex, bool, str, bytes, type(None)})
    EXACT_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})
    ITERATOR_TYPES = frozenset({types.GeneratorType, map, filter, zip, enumerate, reversed,
                                type(iter([])), type(iter(())), type(iter("")), type(iter(range(0))),
                                type(iter({})), type(iter({}.values())), type(iter({}.items())),
                                type(iter(set())), type(iter(b""))})
    FRAME_PROBES = frozenset({"locals", "globals", "vars", "dir", "eval", "exec", "super", "breakpoint"})
    frame_builtins = frozenset(id(builtins_snapshot[n]) for n in FRAME_PROBES if n in builtins_snapshot)

    # state[0]: hook armed; state[1]: the runner itself is reading a function's __code__.
    state = [False, False]
    trusted_codes = set()   # ids of code objects of test units and setup code
    keep_alive = []          # keeps those code objects (and their ids) alive

    class Denied(AttributeError, TypeError, ValueError):
        """Raised by the audit hook; derives from the types stdlib callers already catch."""

    class UntrustedValue(AssertionError):
        """A test guard met a value whose type the grader does not trust."""

    # ---------------------------------------------------------------- audit hook
    DENY = frozenset({
        "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.addaudithook",
        "code.__new__", "function.__new__", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec",
        "os.spawn", "os.system", "subprocess.Popen", "pty.spawn", "sys.setrecursionlimit",
        "ctypes.dlopen", "ctypes.dlsym", "ctypes.addressof", "ctypes.string_at",
    })
    BAD_IMPORTS = frozenset({"ctypes", "_ctypes", "cffi", "_cffi_backend", "gc_hacks"})
    PROTECTED_ATTRS = frozenset({"__code__", "__defaults__", "__kwdefaults__", "__globals__", "__closure__"})

    # Every event the hook acts on; anything else (builtins.id, exec, os.listdir...) returns at once.
    WATCHED = DENY | {"object.__getattr__", "object.__setattr__", "object.__delattr__", "import", "open", "compile"}

    def hook(event, args, _watched=WATCHED, _state=state, _deny=DENY, _bad=BAD_IMPORTS, _prot=PROTECTED_ATTRS,
             _Denied=Denied, _realpath=os.path.realpath, _payload=payload_path, _channel=channel,
             _prefixes=stdlib_prefixes, _str=str, _bytes=bytes, _int=int, _type=type, _fsdecode=os.fsdecode):
        if event not in _watched or not _state[0]:
            return
        if event in _deny:
            raise _Denied("denied by the grader: " + event)
        if event == "object.__getattr__":
            if _state[1] and args[1] == "__code__":
                return
            raise _Denied("denied by the grader: attribute " + _str(args[1]))
        if event == "object.__setattr__" or event == "object.__delattr__":
            if args[1] in _prot:
                raise _Denied("denied by the grader: setting " + _str(args[1]))
            return
        if event == "import":
            if _type(args[0]) is _str and args[0].partition(".")[0] in _bad:
                raise ImportError("import of " + args[0] + " is denied by the grader")
            return
        if event == "open":
            path = args[0]
            if _type(path) is _int:
                if path == _channel:
                    raise PermissionError("denied by the grader: the report channel")
                return
            if _type(path) is _bytes:
                path = _fsdecode(path)
            if _type(path) is not _str:
                return
            real = _realpath(path)
            if real == _payload or (real.startswith("/proc/") and (real.endswith("/mem") or
                                                                    real.endswith("/fd/" + _str(_channel)))):
                raise PermissionError("denied by the grader: " + path)
            return
        if event == "compile":
            name = args[1]
            if _type(name) is _bytes:
                name = _fsdecode(name)
            if _type(name) is _str and (name.startswith(_prefixes) or name.startswith("<rewards-")):
                raise _Denied("denied by the grader: compiling as " + name)

    sys.addaudithook(hook)
    for _name in BAD_IMPORTS:
        sys.modules[_name] = None  # "import ctypes" now fails even before the hook sees it

    def no_threads(*args, _Denied=Denied, **kwargs):
        raise _Denied("denied by the grader: threads in graded code")

    import _thread
    import threading
    _thread.start_new_thread = no_threads
    _thread.start_new = no_threads
    threading._start_new_thread = no_threads

    # ---------------------------------------------------------------- trust classification
    def code_of(f, _state=state, _mask=sigmask, _all=all_signals, _get=func_code, _block=signal.SIG_BLOCK,
                _setmask=signal.SIG_SETMASK):
        # Signals are blocked while the hook lets __code__ through, so no program signal
        # handler can run inside that window.
        old = _mask(_block, _all)
        try:
            _state[1] = True
            try:
                return _get(f)
            finally:
                _state[1] = False
        finally:
            _mask(_setmask, old)

    def code_trusted(code, _codes=trusted_codes, _prefixes=stdlib_prefixes, _id=id, _type=type, _str=str):
        if _id(code) in _codes:
            return True
        name = code.co_filename
        return _type(name) is _str and name.startswith(_prefixes)

    def class_trusted(cls, _mro=type_mro, _dict=type_dict, _flags=type_flags, _HEAP=HEAPTYPE, _MASK=PYCLASS_MASK, _type=type,
                      _F=FunctionType, _code_of=code_of, _code_trusted=code_trusted, _sm=sm_func, _cm=cm_func,
                      _pg=prop_get, _ps=prop_set, _pd=prop_del, _staticmethod=staticmethod,
                      _classmethod=classmethod, _property=property, _id=id):
        """A class is trusted when every Python-level function in it, its MRO and its
        metaclass comes from test code, setup code or the standard library."""
        pending = [cls]
        seen = set()
        while pending:
            klass = pending.pop()
            if _id(klass) in seen:
                continue
            seen.add(_id(klass))
            for base in _mro(klass):
                if not _flags(base) & _MASK == _HEAP:
                    continue
                meta = _type(base)
                if meta is not _type and _id(meta) not in seen:
                    pending.append(meta)
                for value in _dict(base).values():
                    vt = _type(value)
                    funcs = ()
                    if vt is _F:
                        funcs = (value,)
                    elif vt is _staticmethod:
                        funcs = (_sm(value),)
                    elif vt is _classmethod:
                        funcs = (_cm(value),)
                    elif vt is _property:
                        funcs = (_pg(value), _ps(value), _pd(value))
                    elif _flags(vt) & _MASK == _HEAP:
                        pending.append(vt)  # a Python-level descriptor object: its class must be trusted too
                        continue
                    for fn in funcs:
                        if fn is None:
                            continue
                        if _type(fn) is _F:
                            if not _code_trusted(_code_of(fn)):
                                return False
                        elif _flags(_type(fn)) & _MASK == _HEAP:
                            return False
        return True

    import collections
    # Stdlib dict subclasses a program may legitimately return (e.g. collections.Counter).
    # Trusted only while their class dicts are untouched (a program could monkeypatch them).
    STDLIB_DICTS = {t: dict(type_dict(t)) for t in (collections.Counter, collections.OrderedDict,
                                                    collections.defaultdict)}

    def stdlib_dict_ok(t, _snaps=STDLIB_DICTS, _tdict=type_dict, _len=len):
        snap = _snaps.get(t)
        if snap is None:
            return False
        current = _tdict(t)
        if _len(current) != _len(snap):
            return False
        for k, v in snap.items():
            if current.get(k) is not v:
                return False
        return True

    def trusted_value(v, _scalars=EXACT_SCALARS, _containers=EXACT_CONTAINERS, _type=type, _id=id,
                      _dict=dict, _stdlib_ok=stdlib_dict_ok):
        """True when v is an exact builtin scalar, or an exact builtin container (or an untouched
        Counter/OrderedDict/defaultdict) of such, recursively."""
        stack = [v]
        seen = set()
        while stack:
            x = stack.pop()
            t = _type(x)
            if t in _scalars:
                continue
            if t not in _containers:
                if not _stdlib_ok(t):
                    return False
                t = _dict
            if _id(x) in seen:
                continue
            seen.add(_id(x))
            if t is _dict:
                stack.extend(_dict.keys(x))
                stack.extend(_dict.values(x))
            else:
                stack.extend(x)
        return True

    def classify(f, _type=type, _F=FunctionType, _M=MethodType, _C=C_CALLABLES, _code_of=code_of,
                 _code_trusted=code_trusted, _class_trusted=class_trusted, _meth=meth_func,
                 _flags=type_flags, _HEAP=HEAPTYPE, _MASK=PYCLASS_MASK):
        """'c' (C callable), 'trusted', 'ufn' (program function/callable) or 'ucls' (program class)."""
        for _ in range(8):
            t = _type(f)
            if t is _F:
                return "trusted" if _code_trusted(_code_of(f)) else "ufn"
            if t is _M:
                f = _meth(f)
                continue
            if t in _C:
                return "c"
            if isinstance(f, _type):
                return "trusted" if _class_trusted(f) else "ucls"
            return "ufn"  # partial objects, callable instances...: results are checked
        return "ufn"

    def checked_iter(it, _trusted=trusted_value, _U=UntrustedValue, _type=type):
        for item in it:
            if not _trusted(item):
                raise _U("program iterator yielded a " + _type(item).__name__)
            yield item

    def g_call(f, _classify=classify, _trusted=trusted_value, _U=UntrustedValue, _type=type,
               _iters=ITERATOR_TYPES, _checked_iter=checked_iter, _class_trusted=class_trusted,
               _flags=type_flags, _HEAP=HEAPTYPE, _MASK=PYCLASS_MASK, _frame_builtins=frame_builtins, _id=id):
        """Guard for every call in test code: returns the callable the test code then calls."""
        kind = _classify(f)
        if kind == "trusted":
            return f
        if kind == "c":
            if _id(f) in _frame_builtins:
                return f  # frame-sensitive builtins must be called from the test's own frame

            def c_call(*args, **kwargs):
                for a in (*args, *kwargs.values()):
                    t = _type(a)
                    if _flags(t) & _MASK == _HEAP and not isinstance(a, _type) and not _class_trusted(t):
                        raise _U("a " + t.__name__ + " object (program-defined class) passed to a builtin")
                return f(*args, **kwargs)
            return c_call

        def program_call(*args, **kwargs):
            result = f(*args, **kwargs)
            if _trusted(result):
                return result
            t = _type(result)
            if t in _iters:
                return _checked_iter(result)
            if not _flags(t) & _MASK == _HEAP:
                return result  # a C type (re.Match...): fixed behaviour; compare/arith guards still apply
            if kind == "ucls" and t is f:
                return result  # an honest constructor call: an opaque input object for the program
            raise _U("program returned a " + t.__name__ + ", not a plain builtin value")
        return program_call

    OPS = {"Eq": operator.eq, "NotEq": operator.ne, "Lt": operator.lt, "LtE": operator.le,
           "Gt": operator.gt, "GtE": operator.ge, "Is": operator.is_, "IsNot": operator.is_not,
           "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b,
           "Add": operator.add, "Sub": operator.sub, "Mult": operator.mul, "Div": operator.truediv,
           "FloorDiv": operator.floordiv, "Mod": operator.mod, "Pow": operator.pow,
           "LShift": operator.lshift, "RShift": operator.rshift, "BitOr": operator.or_,
           "BitXor": operator.xor, "BitAnd": operator.and_, "MatMult": operator.matmul,
           "USub": operator.neg, "UAdd": operator.pos, "Invert": operator.invert}

    def value_ok(v, _trusted=trusted_value, _type=type, _flags=type_flags, _HEAP=HEAPTYPE, _MASK=PYCLASS_MASK,
                 _class_trusted=class_trusted):
        # Exact builtin values, or instances of test/stdlib-defined classes (e.g. Fraction).
        if _trusted(v):
            return True
        t = _type(v)
        return bool(_flags(t) & _MASK == _HEAP) and _class_trusted(t) and not isinstance(v, (int, str, list, tuple, dict,
                                                                                   set, frozenset, float, bytes))

    def g_cmp(ops, left, *rights, _ops=OPS, _ok=value_ok, _U=UntrustedValue, _type=type):
        a = left
        for name, b in zip(ops, rights):
            if name != "Is" and name != "IsNot":
                if not _ok(a):
                    raise _U("comparison with an untrusted " + _type(a).__name__)
                if not _ok(b):
                    raise _U("comparison with an untrusted " + _type(b).__name__)
            if not _ops[name](a, b):
                return False
            a = b
        return True

    def g_bin(name, a, b, _ops=OPS, _ok=value_ok, _U=UntrustedValue, _type=type):
        if not _ok(a) or not _ok(b):
            raise _U("arithmetic on an untrusted " + (_type(a) if not _ok(a) else _type(b)).__name__)
        return _ops[name](a, b)

    def g_unary(name, a, _ops=OPS, _ok=value_ok, _U=UntrustedValue, _type=type):
        if not _ok(a):
            raise _U("arithmetic on an untrusted " + _type(a).__name__)
        return _ops[name](a)

    def g_truth(v, _type=type, _flags=type_flags, _HEAP=HEAPTYPE, _MASK=PYCLASS_MASK, _class_trusted=class_trusted,
                _U=UntrustedValue):
        t = _type(v)
        if _flags(t) & _MASK == _HEAP and not _class_trusted(t):
            raise _U("truth value of an untrusted " + t.__name__)
        return v

    # ---------------------------------------------------------------- test-code rewriting
    guards = {"call": g_call, "cmp": g_cmp, "bin": g_bin, "unary": g_unary, "truth": g_truth}
    token = os.urandom(8).hex()
    ph = placeholder_names(token)
    placeholders = {ph[name]: guards[name] for name in GUARD_NAMES}
    rewriter = []  # built on first use: units the host compiled ahead of time do not need it

    def swap_consts(code, _map=placeholders):
        consts = []
        for c in code.co_consts:
            if type(c) is str and c in _map:
                consts.append(_map[c])
            elif type(c) is CodeType:
                consts.append(swap_consts(c, _map))
            else:
                consts.append(c)
        return code.replace(co_consts=tuple(consts))

    def remember(code):
        keep_alive.append(code)
        trusted_codes.add(id(code))
        for c in code.co_consts:
            if type(c) is CodeType:
                remember(c)

    def compile_trusted(source, filename, rewrite):
        if not rewrite:
            code = compile(source, filename, "exec", dont_inherit=True)
            remember(code)
            return code
        if not rewriter:
            rewriter.append(make_rewriter(ast, ph))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "'str' object is not callable" on the placeholders
            tree = rewriter[0]().visit(ast.parse(source, filename))
            ast.fix_missing_locations(tree)
            code = swap_consts(compile(tree, filename, "exec", dont_inherit=True))
        remember(code)
        return code

    def to_json(v, _depth=0, _type=type, _U=UntrustedValue, _str=str):
        """Strict serialisation of a call result: exact builtin types only, tuples become lists."""
        t = _type(v)
        if t is int or t is float or t is bool or t is _str or v is None:
            return v
        if _depth > 200:
            raise _U("return value nested too deeply")
        if t is list or t is tuple:
            return [to_json(x, _depth + 1) for x in v]
        if t is dict:
            out = {}
            for k, x in v.items():
                if _type(k) is not _str:
                    raise _U("dict key of type " + _type(k).__name__ + " in the return value")
                out[k] = to_json(x, _depth + 1)
            return out
        raise _U("return value of type " + t.__name__ + " is not a plain JSON value")

    def describe(exc, _type=type, _str=str):
        # Formatting an exception may run program code (__str__): guarded, and cut short.
        try:
            name = _type(exc).__name__
        except BaseException:
            name = "exception"
        try:
            text = _str(exc)
        except BaseException:
            text = ""
        lines = []
        tb = getattr(exc, "__traceback__", None)
        try:
            while tb is not None and len(lines) < 8:
                lines.append(tb.tb_lineno)
                tb = tb.tb_next
        except BaseException:
            pass
        where = (" (test lines " + ",".join(_str(n) for n in lines[:3]) + ")") if lines else ""
        return (name + (": " + text if text else "") + where)[:300]

    def restore_builtins(_d=builtins_dict, _snap=builtins_snapshot):
        _d.clear()
        _d.update(_snap)

    # ---------------------------------------------------------------- shared stdlib state
    # The program and the tests share stdlib modules (and the classes in them). Right before the
    # program runs, the runner snapshots the namespaces of the stdlib modules the test code can
    # reach (named in the units or bound by setup code, plus the modules those refer to) and
    # the Python-level classes in them; before every unit, whatever differs is put back.
    ModuleType = types.ModuleType
    IMPORT_NAME = __import__("opcode").opmap["IMPORT_NAME"]
    EXTENDED_ARG = __import__("opcode").opmap["EXTENDED_ARG"]
    NO_PREIMPORT = frozenset({"this", "antigravity", "idlelib", "tkinter", "turtle", "turtledemo", "test",
                              "__hello__", "__phello__", "ensurepip", "venv", "lib2to3", "pydoc", "webbrowser"})
    # Identity checks use operator.is_ through map (C code only): id() is an audited event,
    # and every event costs a call of the hook.
    shared_mods = []      # (module name, module dict, snapshot, keys, values)
    shared_classes = []   # (class, class dict proxy, snapshot, keys, values)
    shared_entries = []   # (name, module): sys.modules entries
    graveyard = []        # displaced values stay alive: no finalizer runs inside a restore

    def code_names(code, names, imports, _imp=IMPORT_NAME, _ext=EXTENDED_ARG, _Code=CodeType, _type=type):
        """Every co_names entry of code (recursively) into names; IMPORT_NAME targets into imports."""
        co_names = code.co_names
        names.update(co_names)
        b = code.co_code
        i = b.find(_imp)
        while i != -1:
            if not i & 1:
                arg, j, shift = b[i + 1], i, 8
                while j >= 2 and b[j - 2] == _ext:
                    arg |= b[j - 1] << shift
                    shift += 8
                    j -= 2
                if arg < len(co_names):
                    imports.add(co_names[arg])
            i = b.find(_imp, i + 1)
        for c in code.co_consts:
            if _type(c) is _Code:
                code_names(c, names, imports)

    def is_stdlib_module(m, _type=type, _str=str, _prefixes=stdlib_prefixes, _M=ModuleType):
        if _type(m) is not _M or m is builtins or m is sys.modules.get("__main__"):
            return False
        f = m.__dict__.get("__file__")
        return f is None or (_type(f) is _str and f.startswith(_prefixes))

    def protect_shared(names, bound, _loaded=sys.modules, _M=ModuleType, _type=type, _id=id, _flags=type_flags,
                       _tdict=type_dict, _HEAP=HEAPTYPE, _MASK=PYCLASS_MASK, _TYPE=1 << 31, _list=list,
                       _dict=dict, _ok=is_stdlib_module):
        """Snapshot (before the program runs) what restore_shared puts back."""
        mods = {}
        for n in names:
            m = _loaded.get(n)
            if _ok(m):
                mods[_id(m)] = m
        for v in bound:
            if _ok(v):
                mods[_id(v)] = v
        direct = _list(mods.values())
        for m in direct:  # one level further: the modules those modules use
            for v in m.__dict__.values():
                if _type(v) is _M and _id(v) not in mods and _ok(v):
                    mods[_id(v)] = v
        for m in mods.values():
            d = m.__dict__
            name = d.get("__name__")
            if _type(name) is str and _loaded.get(name) is m:
                shared_entries.append((name, m))
            shared_mods.append((name, d, _dict(d), _list(d), _list(d.values())))
        seen = set()
        for m in direct:  # classes defined or imported in the modules test code names
            for v in m.__dict__.values():
                if _flags(_type(v)) & _TYPE and _flags(v) & _MASK == _HEAP and _id(v) not in seen:
                    seen.add(_id(v))
                    proxy = _tdict(v)
                    shared_classes.append((v, proxy, _dict(proxy), _list(proxy), _list(proxy.values())))

    def restore_shared(_loaded=sys.modules, _M=ModuleType, _type=type, _len=len, _map=map, _all=all,
                       _is=operator.is_, _dict=dict, _str=str, _set=type.__setattr__, _del=type.__delattr__,
                       _grave=graveyard.append):
        for name, d, snap, keys, values in shared_mods:
            if _len(d) == _len(keys) and _all(_map(_is, d, keys)) and _all(_map(_is, d.values(), values)):
                continue
            old = _dict(d)
            _grave(old)
            d.clear()
            d.update(snap)
            if _type(name) is _str:  # submodules imported meanwhile stay attributes of their package
                for k, v in old.items():
                    if _type(k) is _str and _type(v) is _M and k not in snap and _loaded.get(name + "." + k) is v:
                        d[k] = v
        for cls, proxy, snap, keys, values in shared_classes:
            if _len(proxy) == _len(keys) and _all(_map(_is, proxy, keys)) and _all(_map(_is, proxy.values(), values)):
                continue
            _grave(_dict(proxy))
            for k in [k for k in proxy if k not in snap]:
                try:
                    _del(cls, k)
                except BaseException:
                    pass
            for k, v in snap.items():
                if proxy.get(k) is not v:
                    try:
                        _set(cls, k, v)
                    except BaseException:
                        pass
        for name, m in shared_entries:
            if _loaded.get(name) is not m:
                _grave(_loaded.get(name))
                _loaded[name] = m

    func_name = FunctionType.__dict__["__name__"].__get__
    type_name = type.__dict__["__name__"].__get__

    def setup_restorable(v, _type=type, _M=ModuleType, _scalars=EXACT_SCALARS):
        """Setup-bound values that test code gets back if the program rebinds their names."""
        t = _type(v)
        return t is _M or t in _scalars or classify(v) in ("c", "trusted")

    def defined_by_program(name, v, _type=type, _F=FunctionType):
        """The program's own def/class of that name (it may be the entry point the tests call)."""
        try:
            kind = classify(v)
            if kind == "ufn" and _type(v) is _F:
                return func_name(v) == name
            if kind == "ucls":
                return type_name(v) == name
        except BaseException:
            pass
        return False

    # ---------------------------------------------------------------- run
    mode = payload["mode"]
    results = []
    load_error = None
    try:
        setup_code = compile_trusted(payload.get("setup") or "", "<rewards-setup>", rewrite=False)
        units = []
        if mode == "assert":
            # Units the host already rewrote and compiled (marshalled code whose guard placeholders
            # use the host's token), when its bytecode format is this interpreter's; any other
            # unit is rewritten and compiled here.
            pre = payload.get("pre") or {}
            pre_units = pre.get("units") or ()
            pre_map = None
            if pre_units and pre.get("magic") == MAGIC.hex() and type(pre.get("tok")) is str and pre["tok"]:
                host_ph = placeholder_names(pre["tok"])
                pre_map = {host_ph[name]: guards[name] for name in GUARD_NAMES}
            for i, unit in enumerate(payload["units"]):
                blob = pre_units[i] if pre_map is not None and i < len(pre_units) else None
                if type(blob) is str:
                    code = marshal.loads(binascii.a2b_base64(blob))
                    if type(code) is CodeType:
                        code = swap_consts(code, pre_map)
                        remember(code)
                        units.append(code)
                        continue
                try:
                    units.append(compile_trusted(unit, f"<rewards-test-{i}>", rewrite=True))
                except SyntaxError as exc:
                    units.append(describe(exc))
        program_code = compile(payload["program"], "<solution>", "exec", dont_inherit=True)
        test_names, test_imports = set(), set()
        code_names(setup_code, test_names, test_imports)
        for code in units:
            if type(code) is CodeType:
                code_names(code, test_names, test_imports)
        for _name in test_imports:  # loaded now, so that restore_shared knows the originals
            if type(_name) is str and _name not in _loaded and _name.partition(".")[0] in sys.stdlib_module_names \
                    and _name.partition(".")[0] not in NO_PREIMPORT:
                try:
                    __import__(_name)
                except Exception:
                    pass
    except SyntaxError as exc:
        emit({"t": "load", "err": "SyntaxError: " + describe(exc)})
        emit({"t": "done", "mode": mode, "results": [], "load_error": "syntax"})
        _exit(0)

    P = {"__name__": "__solution__", "__builtins__": builtins}
    sys.stdout.flush()
    state[0] = True  # --------------- from here on untrusted code may run: the hook is armed
    try:
        exec(setup_code, P)
        setup_bound = [(k, v) for k, v in P.items() if type(k) is str and k != "__builtins__" and setup_restorable(v)]
        protect_shared(test_names, [v for _k, v in setup_bound])
        exec(program_code, P)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included: the program did not load
        load_error = describe(exc)
    if load_error is not None:
        emit({"t": "load", "err": load_error})

    if mode == "assert":
        for i, code in enumerate(units):
            ok, err = False, None
            if load_error is not None:
                err = "program did not load"
            elif type(code) is str:
                err = "test unit does not compile: " + code
            else:
                restore_builtins()
                restore_shared()
                private = dict(builtins_snapshot)
                ns = dict(P)
                for k, v in setup_bound:
                    if k not in ns or (ns[k] is not v and not defined_by_program(k, ns[k])):
                        ns[k] = v
                ns["__builtins__"] = private
                try:
                    exec(code, ns)
                    ok = True
                except BaseException as exc:
                    err = describe(exc)
                if ok and (private.keys() != builtins_snapshot.keys() or
                           any(private[k] is not v for k, v in builtins_snapshot.items())):
                    ok, err = False, "test builtins were tampered with"
            results.append(ok)
            emit({"t": "unit", "i": i, "ok": ok, "err": err})
    elif mode == "call":
        fn = None
        if load_error is None:
            try:
                fn = P.get(payload["fn_name"])
                if fn is None and "Solution" in P:
                    fn = getattr(P["Solution"](), payload["fn_name"])
                if fn is None or not callable(fn):
                    load_error = "no callable named " + payload["fn_name"]
            except BaseException as exc:
                load_error = describe(exc)
            if load_error is not None:
                emit({"t": "load", "err": load_error})
        for i, raw in enumerate(payload["cases"]):
            record = {"t": "call", "i": i, "ok": False}
            if load_error is not None:
                record["err"] = "program did not load"
            else:
                restore_builtins()
                args, kwargs = _loads(raw)
                try:
                    record["value"] = to_json(fn(*args, **kwargs))
                    record["ok"] = True
                except BaseException as exc:
                    record["err"] = describe(exc)
            results.append(record["ok"])
            emit(record)
    emit({"t": "done", "mode": mode, "results": results, "load_error": load_error})
    _exit(0)


if __name__ == "__main__":  # the host imports this file for make_rewriter (see rewards._runner)
    _runner_main()
