"""Command line: ``python -m harness {grade,demo,bench,config,image}``.

Exit codes: 0 success; 1 the demo's verdicts or the bench's checks were not as
expected; 2 bad usage, config or input (the message names file, line or key);
3 the sandbox pool could not run (infrastructure, e.g. bubblewrap missing).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rewards import FORMATS

from ._config import BACKENDS, HarnessConfig, describe_config, load_config
from ._errors import ConfigError, HarnessError
from ._summary import format_summary

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_pool_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="harness config file (default: built-in defaults)")
    parser.add_argument(
        "--workers", type=_positive_int, metavar="N", help="sandboxes in the pool (overrides pool.size)"
    )
    parser.add_argument("--backend", choices=BACKENDS, help="sandbox backend (overrides pool.backend)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m harness``."""
    parser = argparse.ArgumentParser(
        prog="python -m harness", description="Sandboxed grading of model-written programs."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("grade", help="grade a samples file against problems; write one row per sample")
    g.add_argument(
        "--problems", required=True, metavar="PATH", help="problems file (HumanEval, MBPP, CodeContests, ...)"
    )
    g.add_argument(
        "--samples", required=True, metavar="PATH", help='samples JSONL: {"task_id": ..., "completion": ...} per line'
    )
    g.add_argument(
        "--out", required=True, metavar="PATH", help="results file, .parquet or .jsonl (resumed if it exists)"
    )
    g.add_argument(
        "--format", default="auto", choices=("auto", *FORMATS), help="problems file format (default: auto-detect)"
    )
    g.add_argument(
        "--no-resume", action="store_true", help="start the output afresh instead of skipping graded samples"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    g.add_argument(
        "--ray",
        action="store_true",
        help="grade on Ray pool actors (--workers = sandboxes per actor); an --out directory "
        "(ending in /) streams the samples through Ray Data into Parquet files",
    )
    g.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster to join with --ray: auto, ray://host:10001 or host:port "
        "(default: RAY_ADDRESS inside a Ray job, else an embedded local Ray)",
    )
    _add_pool_options(g)

    d = sub.add_parser(
        "demo", help="grade bundled HumanEval: canonical (must pass), wrong and hacking completions (must fail)"
    )
    d.add_argument("--out", metavar="DIR", help="directory for samples and results (default: a new temp dir)")
    d.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N tasks")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_pool_options(d)

    b = sub.add_parser("bench", help="sandboxed grading throughput vs fork-per-program and python3 -c baselines")
    b.add_argument(
        "--repeat",
        type=_positive_int,
        default=10,
        metavar="N",
        help="copies of the 164 HumanEval programs (default 10)",
    )
    b.add_argument(
        "--latency-samples",
        type=int,
        default=164,
        metavar="N",
        help="programs timed one at a time for the per-program overhead (default 164; 0 skips)",
    )
    b.add_argument("--skip-naive", action="store_true", help="skip the slow python3 -c baseline")
    b.add_argument(
        "--suite",
        choices=("throughput", "microvm", "ray", "reliability"),
        default="throughput",
        help="throughput: sandboxed vs fork vs python3 -c (default); microvm: snapshot clones vs cold boots; "
        "ray: RayGrader vs the local pool (throughput, GRPO reward latency, 1-2-4 simulated nodes); "
        "reliability: soak (RELIABILITY_SOAK_N programs, default 2000), faults, hostile programs, hacks",
    )
    b.add_argument("--json-out", metavar="PATH", help="also write the numbers as JSON")
    _add_pool_options(b)

    i = sub.add_parser("image", help="the microVM guest image: build it (or find it cached)")
    i.add_argument("action", choices=("build",), help="build: build the image, print its directory")
    i.add_argument("--config", metavar="YAML", help="image config file (default: built-in defaults)")
    i.add_argument("--json", action="store_true", help="print the image paths and cache state as JSON")

    c = sub.add_parser("config", help="print every config key with its value and help text")
    c.add_argument("--config", metavar="YAML", help="config file to validate and show (default: built-in defaults)")
    return parser


def _config(path: str | None) -> HarnessConfig:
    return load_config(path) if path else HarnessConfig()


def _cmd_grade(args: argparse.Namespace) -> int:
    from ._grading import grade

    if args.address and not args.ray:
        raise ConfigError("--address needs --ray", key="address")
    options = {
        "config": _config(args.config),
        "workers": args.workers,
        "backend": args.backend,
        "progress": not args.no_progress,
        "resume": not args.no_resume,
        "problem_format": args.format,
    }
    if args.ray:
        from .ray import grade_ray

        summary = grade_ray(args.problems, args.samples, args.out, address=args.address, **options)
    else:
        summary = grade(args.problems, args.samples, args.out, **options)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else format_summary(summary))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import format_demo, run_demo

    out_dir = args.out or tempfile.mkdtemp(prefix="harness-demo-")
    report = run_demo(
        out_dir,
        _config(args.config),
        workers=args.workers,
        backend=args.backend,
        limit=args.limit,
        progress=not args.no_progress,
    )
    print(format_summary(report.summary))
    print()
    print(format_demo(report))
    return 0 if report.ok else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    import os

    # The suites live in the source tree beside the packages (bench/), not in the install.
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "bench" / "__init__.py").is_file():
        print("error: the benchmark suites are the source tree's bench/ package, and this harness is not "
              "installed from a checkout: clone the repository and run python -m harness bench there",
              file=sys.stderr)
        return 2
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from bench import Options, run_suite
    options = Options(config=_config(args.config), repeat=args.repeat, workers=args.workers, backend=args.backend,
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
    config = _config(args.config)
    print(f"# {args.config or 'built-in defaults'}: valid")
    for key, _default, help_text in describe_config():
        section, name = key.split(".", 1)
        value = getattr(getattr(config, section), name)
        print(f"{key} = {value!r}\n    {help_text}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments (``sys.argv[1:]`` when None).

    Returns:
        The process exit code.
    """
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"grade": _cmd_grade, "demo": _cmd_demo, "bench": _cmd_bench, "config": _cmd_config,
                "image": _cmd_image}
    try:
        return handlers[args.command](args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # Infrastructure failures of the pool are reported, not dumped as tracebacks.
        from vmpool import VmpoolError

        if not isinstance(exc, VmpoolError):
            raise
        print(f"error: sandbox pool: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: results flushed so far are kept; re-run to resume", file=sys.stderr)
        return 130
