"""``python -m bench``: run benchmarks and print their tables (``--help`` says how).

Its help is plain text (:data:`USAGE`): argparse prints a description as it is written.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import time
from collections.abc import Callable

from bench import _report
from bench._landed import REVISION

__all__ = ["BENCHMARKS", "EXTRA", "USAGE", "main"]

INSTALL = "pip install 'tbone-asgi[bench]'"

USAGE = f"""\
Run benchmarks, in the order given, and print their tables (Markdown, medians
over several runs).

examples:
  python -m bench                  every benchmark, full sizes (minutes)
  python -m bench signals channel  two of them
  python -m bench --quick          tiny sizes, seconds in all: checks the harness
  python -m bench fanout --runs 9  more runs for steadier medians

Needs the bench extra: {INSTALL}. docs/performance.md keeps
the latest tables and how they were made.
"""

# What the bench extra installs, by import name: checked before anything runs, so a missing
# one is one line up front rather than a traceback in the middle of a run.
EXTRA = (
    "blinker",
    "django",
    "broadcaster",
    "starlette",
    "uvicorn",
    "websockets",
    "redis",
    "orjson",
)


def _signals(quick: bool, runs: int | None) -> str:
    from bench import signals

    if quick:
        return signals.run(runs=runs or 1, calls=200, budget=0.005)
    return signals.run(runs=runs or 5)


def _channel(quick: bool, runs: int | None) -> str:
    from bench import channel

    if quick:
        return channel.run(runs=runs or 1, subscribers=20, events=5)
    return channel.run(runs=runs or 5)


def _fanout(quick: bool, runs: int | None, landed: str | None = None) -> str:
    from bench import fanout

    if quick:
        return fanout.run(sizes=(5,), runs=runs or 1, events=3, landed=landed)
    return fanout.run(runs=runs or 5, landed=landed)


def _idle(quick: bool, runs: int | None) -> str:
    from bench import idle

    if quick:
        return idle.run(n=10, runs=runs or 1, procs=1)
    return idle.run(runs=runs or 1)


def _slow(quick: bool, runs: int | None) -> str:
    from bench import slow

    if quick:
        return slow.run(stuck=3, events=50, timeout=2.0, settle=0.0)
    return slow.run()


def _redis(quick: bool, runs: int | None) -> str:
    from bench import redis

    if quick:
        return redis.run(n=4, runs=runs or 1, events=3)
    return redis.run(runs=runs or 3)


def _server_settings(quick: bool, runs: int | None) -> str:
    from bench import server_settings

    if quick:
        return server_settings.run(
            n=3,
            size=1 << 20,
            grace=2.0,
            connections=20,
            events=3,
            runs=runs or 1,
            pingers=2,
            ping_interval=0.2,
            ping_timeout=0.2,
            ping_defaults=False,
        )
    return server_settings.run(runs=runs or 3)


def _gc(quick: bool, runs: int | None) -> str:
    from bench import gcstats

    if quick:
        return gcstats.run(n=5, runs=runs or 1, events=4)
    return gcstats.run(runs=runs or 3)


def _wire(quick: bool, runs: int | None) -> str:
    from bench import wire

    return wire.run(count=10 if quick else 200)


def _scale(quick: bool, runs: int | None) -> str:
    from bench import scale

    if quick:
        return scale.run(n=6, procs=2, events=1)
    return scale.run(events=runs or 7)


BENCHMARKS: dict[str, Callable[[bool, int | None], str]] = {
    "signals": _signals,
    "channel": _channel,
    "fanout": _fanout,
    "scale": _scale,
    "wire": _wire,
    "idle": _idle,
    "slow": _slow,
    "redis": _redis,
    "server_settings": _server_settings,
    "gc": _gc,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"{', '.join(BENCHMARKS)} (default: all, in that order)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement")
    parser.add_argument(
        "--landed",
        default=None,
        metavar="REV",
        help=(
            "a commit whose tbone runs as one more fanout row, 'tbone (landed)' (default: none; "
            f"{REVISION} is the fan-out before flow control)"
        ),
    )
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        return fail(f"the benchmarks need {', '.join(missing)}, not installed: {INSTALL}")
    runners: dict[str, Callable[[bool, int | None], str]] = {
        **BENCHMARKS,
        "fanout": functools.partial(_fanout, landed=args.landed),
    }
    command = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# python -m bench {command}".rstrip() + "\n\n" + _report.machine() + "\n", flush=True)
    for name in names:
        start = time.perf_counter()
        try:
            table = runners[name](args.quick, args.runs)
        except ImportError as exc:  # one the EXTRA check cannot see (a broken install)
            return fail(f"benchmark {name!r} cannot import {exc.name or exc}: {INSTALL}")
        print(table, flush=True)
        print(f"({name}: {time.perf_counter() - start:.1f} s)\n", flush=True)
    return 0


def fail(message: str) -> int:
    """Print ``message`` as the one line of a failed run; the exit status."""
    print(f"python -m bench: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
