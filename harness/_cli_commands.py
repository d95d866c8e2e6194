"""The handlers of the ``harness`` command line (:mod:`harness._cli` parses and dispatches)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ._config import HarnessConfig, config_to_yaml, describe_config, load_config
from ._errors import ConfigError
from ._summary import format_summary

if TYPE_CHECKING:
    from .serve import ServeConfig

__all__ = ["HANDLERS"]


def _config(args: argparse.Namespace) -> HarnessConfig:
    """The config file (or the defaults) with the command line's overrides applied."""
    config = load_config(args.config) if args.config else HarnessConfig()
    return config.with_overrides(
        workers=getattr(args, "workers", None), backend=getattr(args, "backend", None),
        timeout_s=getattr(args, "timeout", None), memory_mb=getattr(args, "memory_mb", None),
        reward_kind=getattr(args, "reward_kind", None), ks=getattr(args, "k", None),
        details=True if getattr(args, "details", False) else None)


def _cmd_grade(args: argparse.Namespace) -> int:
    from ._grading import grade

    if args.address and not args.ray:
        raise ConfigError("--address needs --ray", key="address")
    options = {"config": _config(args), "progress": not args.no_progress, "resume": not args.no_resume,
               "problem_format": args.format}
    if args.ray:
        from .ray import grade_ray

        summary = grade_ray(args.problems, args.samples, args.out, address=args.address, **options)
    else:
        summary = grade(args.problems, args.samples, args.out, **options)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else format_summary(summary))
    if args.strict and summary.input_issues:
        print(f"error: {len(summary.input_issues)} input record(s) were skipped (--strict); the first: "
              f"{summary.input_issues[0]}", file=sys.stderr)
        return 2
    return 0


def _cmd_problems(args: argparse.Namespace) -> int:
    from rewards import problem_to_dict

    from ._inputs import load_problem_file

    loaded = load_problem_file(args.path, args.format)
    for err in loaded.errors:
        print(f"skipped: {err}", file=sys.stderr)
    if args.native:
        lines = "".join(json.dumps(problem_to_dict(p), ensure_ascii=False) + "\n" for p in loaded)
        if args.out:
            Path(args.out).write_text(lines, encoding="utf-8")
            print(f"{len(loaded)} problems ({loaded.fmt}) written to {args.out} as native JSONL", file=sys.stderr)
        else:
            sys.stdout.write(lines)
        return 0
    print(f"# {args.path}: {len(loaded)} problems, format {loaded.fmt}; task_id, test kind, tests")
    for problem in loaded:
        kind = type(problem.tests).__name__.removesuffix("Tests").lower()
        print(f"{problem.task_id}\t{kind}\t{problem.tests.count}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import format_demo, run_demo

    out_dir = args.out or tempfile.mkdtemp(prefix="harness-demo-")
    report = run_demo(out_dir, _config(args), limit=args.limit, progress=not args.no_progress)
    print(format_summary(report.summary))
    print()
    print(format_demo(report))
    return 0 if report.ok else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    # The suites live in the source tree beside the packages (bench/), not in the install.
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "bench" / "__init__.py").is_file():
        print("error: the benchmark suites are the source tree's bench/ package, and this harness is not "
              "installed from a checkout: clone the repository and run harness bench there", file=sys.stderr)
        return 2
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from bench import Options, run_suite

    options = Options(config=_config(args), repeat=args.repeat, workers=args.workers, backend=args.backend,
                      latency_samples=args.latency_samples, naive=not args.skip_naive,
                      soak_n=int(os.environ.get("RELIABILITY_SOAK_N", "2000")))
    report = run_suite(args.suite, options)
    print(report.format())
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2)
    return 0 if report.ok else 1


def _cmd_image(args: argparse.Namespace) -> int:
    from vmpool import ImageConfig, ImageConfigError, build_image, load_image_config

    try:
        config = load_image_config(args.config) if args.config else ImageConfig()
    except ImageConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = build_image(config)
    state = "cached" if paths.cached else "built"
    if args.json:
        print(json.dumps({"dir": str(paths.dir), "vmlinux": str(paths.vmlinux), "initramfs": str(paths.initramfs),
                          "manifest": str(paths.manifest), "cached": paths.cached}))  # fmt: skip
    else:
        print(f"{paths.dir} ({state})")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.yaml:
        sys.stdout.write(config_to_yaml(config))
        return 0
    print(f"# {args.config or 'built-in defaults'}: valid")
    for key, _default, help_text in describe_config():
        section, name = key.split(".", 1)
        value = getattr(getattr(config, section), name)
        print(f"{key} = {value!r}\n    {help_text}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from vmpool import SessionConfig

    from .serve import ServeConfig

    tokens = tuple(args.token) + tuple(t for t in os.environ.get("HARNESS_SERVE_TOKEN", "").split(",") if t)
    try:
        session = SessionConfig(backend=args.session_backend)
    except ValueError as exc:
        raise ConfigError(str(exc), key="--session-backend") from exc
    config = ServeConfig(host=args.host, port=args.port, tokens=tokens, session=session, warm_sessions=args.warm,
                         max_sandboxes=args.max_sandboxes, harness=_config(args))
    if args.ray:
        return _serve_on_ray(config, args.address, 2 if args.replicas is None else args.replicas)
    if args.address is not None or args.replicas is not None:
        raise ConfigError("only means something with --ray (the Ray cluster and the gateway replicas)",
                          key="--address" if args.address is not None else "--replicas")
    from .serve import run

    run(config, log_level="info" if args.verbose else "warning")
    return 0


def _serve_on_ray(config: ServeConfig, address: str | None, replicas: int) -> int:
    """Deploy on Ray Serve, then wait for SIGINT or SIGTERM and take the app and every node's
    sandboxes down. The app and the node services are detached actors: a driver killed with
    SIGKILL leaves them serving, and ``harness serve --ray`` run again takes them over."""
    import signal
    import threading

    from .serve._ray_serve import deploy, shutdown

    url = deploy(config, address=address, replicas=replicas)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"harness serve on Ray Serve at {url} ({replicas} gateway replicas); Ctrl-C or SIGTERM stops it",
          flush=True)
    stop.wait()
    print("harness serve: stopping (every sandbox closes)", flush=True)
    shutdown()
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "grade": _cmd_grade, "problems": _cmd_problems, "demo": _cmd_demo, "bench": _cmd_bench,
    "config": _cmd_config, "image": _cmd_image, "serve": _cmd_serve,
}
