"""Runs inside an E2B sandbox's Python context, never on the host: the part of IPython that
cells rewritten by :mod:`harness.serve._jupyter` call.

``get_ipython()`` answers ``system`` (``!cmd``), ``getoutput`` (``x = !cmd``), ``run_line_magic``
and ``run_cell_magic`` for the magics clients send (``%pip``, ``%time``, ``%timeit``, ``%cd``,
``%env``, ``%%bash``, ``%%writefile``...); ``display()`` and the cell's end (:func:`finish`)
turn values and the matplotlib figures a cell drew into E2B's result formats (text, html, png,
...). The service sends this file's text once per context; it is stdlib only and trusted by
nobody (the sandbox is the user's own computer: nothing here is a boundary).
"""

import base64
import builtins
import io
import os
import re
import subprocess
import sys
import time
import warnings

HOME = "/home/user"
# Single-threaded numeric libraries (a checkpoint or fork of the session needs one thread),
# figures rendered off-screen, pip that finds what the template has without a network.
ENV = {
    "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1",
    "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/.config/matplotlib", "PIP_NO_INDEX": "1",
    "PIP_BREAK_SYSTEM_PACKAGES": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
    "PIP_ROOT_USER_ACTION": "ignore", "PYTHONUNBUFFERED": "1", "PAGER": "cat", "TERM": "dumb",
}
FORMATS = (("html", "_repr_html_"), ("markdown", "_repr_markdown_"), ("svg", "_repr_svg_"), ("png", "_repr_png_"),
           ("jpeg", "_repr_jpeg_"), ("pdf", "_repr_pdf_"), ("latex", "_repr_latex_"), ("json", "_repr_json_"),
           ("javascript", "_repr_javascript_"))
FORMAT_CAP = 4 << 20  # characters of one format; a bigger one is left out (its text stays)
ALIASES = ("ls", "cat", "cp", "mv", "rm", "rmdir", "mkdir", "clear", "less", "more", "man")


class UsageError(Exception):
    """A magic that does not exist or was called wrongly (IPython's name for it)."""


class SList(list):
    """What ``x = !cmd`` gives: its output lines, with IPython's ``.s`` / ``.n`` / ``.l`` views."""

    @property
    def s(self):
        return " ".join(self)

    @property
    def n(self):
        return "\n".join(self)

    @property
    def l(self):  # noqa: E743 - IPython's name
        return list(self)


_saved_env = []
_displays = []


def setup(env):
    os.environ.update(ENV)
    os.environ.update({str(k): str(v) for k, v in (env or {}).items()})
    os.makedirs(os.environ["MPLCONFIGDIR"], exist_ok=True)
    warnings.filterwarnings("ignore", message=".*non-interactive.*")  # plt.show() under Agg: finish shows figures


def enter(cwd, env):
    """One execution's working directory and environment variables (undone by :func:`leave`)."""
    _saved_env.append(({k: os.environ.get(k) for k in (env or {})}, os.getcwd()))
    os.environ.update({str(k): str(v) for k, v in (env or {}).items()})
    if cwd:
        if not cwd.startswith("/"):  # relative to the home (E2B's /home/user)
            cwd = os.path.join(os.environ.get("HOME", HOME), cwd)
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)


def leave():
    saved, cwd = _saved_env.pop() if _saved_env else ({}, None)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if cwd:
        try:
            os.chdir(cwd)
        except OSError:
            pass


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _caller_ns(depth):
    frame = sys._getframe(depth + 1)
    return frame.f_globals, frame.f_locals


def _expand(cmd, depth):
    """IPython's ``{expr}`` and ``$name`` in shell lines, from the caller's variables."""
    glb, loc = _caller_ns(depth + 1)

    def value(expr):
        try:
            return str(eval(expr, glb, loc))
        except Exception:
            return None

    def brace(m):
        if m.group(0).startswith("{{"):
            return m.group(0)
        got = value(m.group(1))
        return m.group(0) if got is None else got

    def dollar(m):
        if m.group(0) == "$$":
            return "$"
        got = value(m.group(1))
        return m.group(0) if got is None else got

    cmd = re.sub(r"\{\{|\{([^{}]+)\}", brace, cmd)
    return re.sub(r"\$\$|\$([A-Za-z_][A-Za-z0-9_.]*)", dollar, cmd)


def _bash(script, capture=False):
    _flush()
    if capture:
        done = subprocess.run(["/bin/bash", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        return done.returncode, done.stdout.decode("utf-8", "replace")
    return subprocess.call(["/bin/bash", "-c", script], stdin=subprocess.DEVNULL), ""


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    value = fn()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    print(f"CPU times: total: {_units(cpu)}\nWall time: {_units(wall)}")
    return value


def _units(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _run_source(source, glb, loc):
    """Exec ``source``; the value of its last line when that is an expression (like a cell)."""
    import ast

    tree = ast.parse(source, "<magic>", "exec")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<magic>", "exec"), glb, loc)
    return eval(compile(ast.Expression(last.value), "<magic>", "eval"), glb, loc) if last is not None else None


def _timeit(source, glb, loc):
    code = compile(source, "<timeit>", "exec")
    number, total = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(number):
            exec(code, glb, loc)
        total = time.perf_counter() - start
        if total >= 0.2 or number >= 1_000_000:
            break
        number *= 10
    print(f"{_units(total / number)} per loop (mean of {number} loops)")


class Shell:
    """The ``get_ipython()`` object."""

    def system(self, cmd):
        glb, _ = _caller_ns(1)
        code, _ = _bash(_expand(cmd, 1))
        glb["_exit_code"] = code

    def getoutput(self, cmd):
        code, out = _bash(_expand(cmd, 1), capture=True)
        return SList(out.splitlines())

    def run_line_magic(self, name, line):
        glb, loc = _caller_ns(1)
        line = _expand(line, 1)
        if name in ("pip", "conda", "mamba"):
            if name != "pip":
                raise UsageError(f"%{name} is not available here: use %pip")
            _bash(f"{sys.executable} -m pip {line}")
            print("Note: you may need to restart the kernel to use updated packages.")
            return None
        if name in ALIASES:
            _bash(f"{name} {line}")
            return None
        if name == "time":
            return _timed(lambda: _run_source(line, glb, loc))
        if name == "timeit":
            return _timeit(line, glb, loc)
        if name == "cd":
            target = os.path.expanduser(line.strip() or HOME)
            os.chdir(target)
            print(os.getcwd())
            return None
        if name == "pwd":
            return os.getcwd()
        if name == "env":
            return self._env(line.strip())
        if name == "set_env":
            key, _, value = line.strip().partition(" ")
            os.environ[key] = value
            return None
        if name in ("matplotlib", "config", "load_ext", "reload_ext", "autoreload", "precision", "xmode"):
            return None  # display settings of a notebook front end: nothing to do without one
        if name in ("pinfo", "pinfo2"):
            obj = eval(line, glb, loc)
            print(f"Type:      {type(obj).__name__}\nString form: {obj!r}\nDocstring: {getattr(obj, '__doc__', '')}")
            return None
        if name == "who":
            print("  ".join(sorted(k for k in glb if not k.startswith("_") and k not in _HIDDEN)))
            return None
        raise UsageError(f"Line magic function `%{name}` not found.")

    def _env(self, arg):
        if not arg:
            return dict(os.environ)
        if "=" in arg or " " in arg:
            key, _, value = arg.replace("=", " ", 1).partition(" ")
            os.environ[key.strip()] = value.strip()
            print(f"env: {key.strip()}={value.strip()}")
            return None
        return os.environ.get(arg)

    def run_cell_magic(self, name, line, cell):
        glb, loc = _caller_ns(1)
        if name in ("bash", "sh", "script"):
            script = cell if name != "script" or line.strip() in ("bash", "sh", "") else None
            if script is None:
                raise UsageError(f"%%script {line}: only bash and sh are available")
            _bash(script)
            return None
        if name == "writefile":
            args = line.split()
            append = "-a" in args or "--append" in args
            path = [a for a in args if not a.startswith("-")]
            if not path:
                raise UsageError("%%writefile needs a file name")
            path = os.path.expanduser(path[0])
            with open(path, "a" if append else "w") as fh:
                fh.write(cell)
            print(f"{'Appending to' if append else 'Writing'} {path}")
            return None
        if name == "time":
            return _timed(lambda: _run_source(cell, glb, loc))
        if name == "timeit":
            return _timeit(cell, glb, loc)
        if name in ("capture", "python", "python3"):
            if name == "capture":
                with _Silenced():
                    _run_source(cell, glb, loc)
                return None
            return _run_source(cell, glb, loc)
        if name in ("html", "HTML", "markdown", "javascript", "js", "latex", "svg"):
            key = {"HTML": "html", "js": "javascript"}.get(name, name)
            _displays.append({key: cell, "text": f"<IPython.core.display.{key.upper()} object>"})
            return None
        raise UsageError(f"Cell magic `%%{name}` not found.")


class _Silenced:
    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = io.StringIO()

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self.saved


_SHELL = Shell()
_HIDDEN = ("get_ipython", "display", "In", "Out", "exit", "quit")


def get_ipython():
    return _SHELL


def formats(value):
    """E2B's result formats of ``value``: ``text`` (its repr) and each rich format it has."""
    out = {"text": repr(value)[:100_000]}
    figure = _figure_png(value)
    if figure:
        out["png"] = figure
    bundle = {}
    mimebundle = getattr(value, "_repr_mimebundle_", None)
    if callable(mimebundle) and not isinstance(value, type):
        try:
            got = mimebundle()
            bundle = got[0] if isinstance(got, tuple) else got or {}
        except Exception:
            bundle = {}
    mimes = {"text/html": "html", "text/markdown": "markdown", "image/svg+xml": "svg", "image/png": "png",
             "image/jpeg": "jpeg", "application/pdf": "pdf", "text/latex": "latex", "application/json": "json",
             "application/javascript": "javascript"}
    for mime, key in mimes.items():
        if mime in bundle:
            out[key] = _encode(bundle[mime])
    for key, method in FORMATS:
        fn = getattr(value, method, None)
        if key in out or not callable(fn) or isinstance(value, type):
            continue
        try:
            got = fn()
        except Exception:
            continue
        if isinstance(got, tuple):  # (data, metadata)
            got = got[0]
        if got is not None:
            out[key] = _encode(got)
    if "json" in out:  # plain data only: the cell's whole answer must be (see vmpool's kernel)
        import json

        try:
            out["json"] = json.loads(json.dumps(out["json"], default=str))
        except (TypeError, ValueError):
            del out["json"]
    return {k: v for k, v in out.items() if not isinstance(v, str) or len(v) <= FORMAT_CAP}


def _encode(data):
    if isinstance(data, bytes):
        return base64.b64encode(data).decode()
    return data


def _figure_png(value):
    mpl_figure = sys.modules.get("matplotlib.figure")
    if mpl_figure is None or not isinstance(value, mpl_figure.Figure):
        return None
    buf = io.BytesIO()
    value.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def display(*values, **kwargs):
    """Jupyter's ``display()``: each value becomes one result of the cell (not the main one)."""
    for value in values:
        _displays.append(formats(value))


def finish(value):
    """A cell's end: its main result (the trailing expression), what it displayed and the
    figures it left open (shown and closed, as the notebook's inline backend does)."""
    shown = list(_displays)
    del _displays[:]
    plt = sys.modules.get("matplotlib.pyplot")
    main = formats(value) if value is not None else None
    if plt is not None:
        for num in plt.get_fignums():
            fig = plt.figure(num)
            if fig is not value:
                shown.append(formats(fig))
        plt.close("all")
    builtins.__dict__.setdefault("display", display)
    return {"main": main, "displays": shown}
