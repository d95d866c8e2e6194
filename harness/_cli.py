"""Command line: ``harness {grade,problems,demo,bench,config,image,serve}`` (also ``python -m harness``).

Exit codes: 0 success; 1 the demo's verdicts or the bench's checks were not as
expected; 2 bad usage, config or input (the message names file, line or key), and with
``grade --strict`` skipped input records; 3 the sandbox pool could not run
(infrastructure, e.g. bubblewrap missing). The handlers are in :mod:`harness._cli_commands`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from rewards import FORMATS

from ._config import BACKENDS
from ._errors import HarnessError

__all__ = ["build_parser", "main"]

REWARD_KINDS = ("binary", "fraction", "weighted")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("code-reward-harness")
    except metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown (not installed)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _ks(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected ks such as 1,2,5")
    return tuple(_positive_int(p) for p in parts)


def _add_pool_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="harness config file (default: built-in defaults)")
    parser.add_argument("--workers", type=_positive_int, metavar="N", help="sandboxes in the pool (pool.size)")
    parser.add_argument("--backend", choices=BACKENDS, help="sandbox backend (pool.backend)")
    parser.add_argument("--timeout", type=_positive_float, metavar="S",
                        help="time limit per program in CPU seconds (limits.cpu_s; a problem's own limit wins)")
    parser.add_argument("--memory-mb", type=_positive_int, metavar="N",
                        help="memory limit per program, MiB (limits.memory_mb)")
    parser.add_argument("--reward-kind", choices=REWARD_KINDS, help="reward shaping (reward.kind)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``harness`` / ``python -m harness``."""
    parser = argparse.ArgumentParser(prog="harness", description="Sandboxed grading of model-written programs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("grade", help="grade a samples file against problems; write one row per sample")
    g.add_argument("--problems", required=True, metavar="PATH",
                   help="problems file (native JSONL, HumanEval, MBPP, CodeContests, LiveCodeBench, HumanEval-X, "
                        "CodeContests in its own form)")
    g.add_argument("--samples", required=True, metavar="PATH",
                   help='samples JSONL, one {"task_id": ..., "completion": ...} per line; - reads standard input')
    g.add_argument("--out", required=True, metavar="PATH",
                   help="results file, .parquet or .jsonl (resumed if it exists); with --ray, a directory "
                        "ending in / for the Ray Data path")
    g.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                   help="problems file format (default: auto-detect)")
    g.add_argument("--no-resume", action="store_true",
                   help="start the output afresh: deletes the rows in --out (a whole --out directory on the "
                        "Ray Data path) instead of keeping the ones still valid")
    g.add_argument("--k", type=_ks, metavar="K,K,...", help="pass@k values to report, e.g. 1,2,5 (grading.ks; "
                   "default: every k the per-task sample count allows)")
    g.add_argument("--details", action="store_true",
                   help="rows also carry the extracted program (code) and per-test details (details: JSON with "
                        "input, expected and actual excerpts, the error) (grading.details)")
    g.add_argument("--strict", action="store_true",
                   help="exit with status 2 when input records were skipped (malformed lines, unknown tasks)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    g.add_argument("--ray", action="store_true",
                   help="grade on Ray pool actors (--workers = sandboxes per actor); an --out directory "
                        "(ending in /) streams the samples through Ray Data into Parquet files")
    g.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to join with --ray: auto, ray://host:10001 or host:port "
                        "(default: RAY_ADDRESS inside a Ray job, else an embedded local Ray)")
    _add_pool_options(g)

    p = sub.add_parser("problems", help="list a problems file's task ids, or convert it to the native schema")
    p.add_argument("path", metavar="PATH", help="problems file (any supported format)")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="its format (default: auto-detect)")
    p.add_argument("--native", action="store_true", help="write the problems as native JSONL instead of listing")
    p.add_argument("--out", metavar="PATH", help="with --native: the file to write (default: standard output)")

    d = sub.add_parser("demo", help="grade bundled HumanEval: canonical (must pass), wrong and hacking completions "
                                    "(must fail)")
    d.add_argument("--out", metavar="DIR", help="directory for samples and results (default: a new temp dir)")
    d.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N tasks")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_pool_options(d)

    b = sub.add_parser("bench", help="sandboxed grading throughput vs fork-per-program and python3 -c baselines")
    b.add_argument("--repeat", type=_positive_int, default=10, metavar="N",
                   help="copies of the 164 HumanEval programs (default 10)")
    b.add_argument("--latency-samples", type=int, default=164, metavar="N",
                   help="programs timed one at a time for the per-program overhead (default 164; 0 skips)")
    b.add_argument("--skip-naive", action="store_true", help="skip the slow python3 -c baseline")
    b.add_argument("--suite", choices=("throughput", "microvm", "ray", "reliability", "sessions", "serve", "languages"),
                   default="throughput",
                   help="throughput: sandboxed vs fork vs python3 -c (default); microvm: snapshot clones vs cold "
                        "boots; ray: RayGrader vs the local pool (throughput, GRPO reward latency, 1-2-4 simulated "
                        "nodes); reliability: soak (RELIABILITY_SOAK_N programs, default 2000), faults, hostile "
                        "programs, hacks; sessions: warm lease vs cold start, idle memory, a 10-turn episode; serve: "
                        "harness serve through the E2B SDK and verl's client vs the direct path "
                        "(SERVE_BENCH_LIVE live sandboxes, default 1000); languages: HumanEval-X in C++, Java, "
                        "JavaScript, Go, Rust with and without the build cache, build once vs per test case")
    b.add_argument("--json-out", metavar="PATH", help="also write the numbers as JSON")
    _add_pool_options(b)

    i = sub.add_parser("image", help="the microVM guest image: build it (or find it cached)")
    i.add_argument("action", choices=("build",), help="build: build the image, print its directory")
    i.add_argument("--config", metavar="YAML", help="image config file (default: built-in defaults)")
    i.add_argument("--json", action="store_true", help="print the image paths and cache state as JSON")

    s = sub.add_parser("serve", help="E2B- and SandboxFusion-compatible HTTP service (and POST /grade) on warm pools")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    s.add_argument("--token", action="append", default=[], metavar="T",
                   help="an API key clients must send (repeatable; also $HARNESS_SERVE_TOKEN)")
    s.add_argument("--session-backend", choices=("namespace", "microvm"), default="namespace",
                   help="what an E2B sandbox is: a namespace session (default) or a microVM session")
    s.add_argument("--warm", type=int, default=4, metavar="N", help="sessions kept started ahead of creates")
    s.add_argument("--max-sandboxes", type=_positive_int, default=2000, metavar="N",
                   help="live E2B sandboxes in the whole service")
    s.add_argument("--ray", action="store_true",
                   help="run on Ray Serve: a gateway routing each sandbox to the node that holds it, sessions on every node")
    s.add_argument("--address", metavar="A", help="with --ray: the cluster to join (default: $RAY_ADDRESS, else a local one)")
    s.add_argument("--replicas", type=_positive_int, metavar="N", help="with --ray: gateway replicas (default 2)")
    _add_pool_options(s)  # the grading stack behind /run_code and /grade

    c = sub.add_parser("config", help="print every config key with its value and help text")
    _add_pool_options(c)  # the config file to validate and show, and the flags that override it
    c.add_argument("--yaml", action="store_true", help="print it as a YAML config file to paste and edit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments (``sys.argv[1:]`` when None).

    Returns:
        The process exit code.
    """
    from . import _cli_commands

    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _quiet_ray(args.verbose)
    try:
        return _cli_commands.HANDLERS[args.command](args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`harness config | head`): not an error of ours, and no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted: results flushed so far are kept; re-run to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        # Infrastructure failures of the pool are reported, not dumped as tracebacks.
        from vmpool import VmpoolError

        if not isinstance(exc, VmpoolError):
            raise
        print(f"error: sandbox pool: {exc}", file=sys.stderr)
        return 3


def _quiet_ray(verbose: int) -> None:
    """Ray's own start-up chatter (and its workers' log lines) only with -v."""
    if verbose == 0:
        logging.getLogger("ray").setLevel(logging.ERROR)
        logging.getLogger("ray.data").setLevel(logging.ERROR)
