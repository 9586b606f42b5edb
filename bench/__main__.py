"""``python -m bench [NAME ...] [--quick]``: run benchmarks and print their tables.

Names: signals, channel, fanout, idle, slow, redis, server_settings (default: all, in that
order). ``--quick`` runs tiny sizes (seconds in all: what the smoke test uses); ``--runs``
overrides the number of runs; ``--landed REV`` picks the commit whose tbone fanout runs as
"tbone (landed)".
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time
from collections.abc import Callable

from bench._landed import REVISION

__all__ = ["BENCHMARKS", "main"]


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


def _fanout(quick: bool, runs: int | None, landed: str = REVISION) -> str:
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


BENCHMARKS: dict[str, Callable[[bool, int | None], str]] = {
    "signals": _signals,
    "channel": _channel,
    "fanout": _fanout,
    "idle": _idle,
    "slow": _slow,
    "redis": _redis,
    "server_settings": _server_settings,
}


def machine() -> str:
    """One line on where the numbers come from: CPU, cores, Python, library versions."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = []
    for name in (
        "uvicorn",
        "uvloop",
        "starlette",
        "websockets",
        "orjson",
        "broadcaster",
        "blinker",
        "django",
        "redis",
    ):
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} -")
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; " + ", ".join(versions)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"{', '.join(BENCHMARKS)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement")
    parser.add_argument(
        "--landed",
        default=REVISION,
        metavar="REV",
        help="the commit whose tbone fanout runs as 'tbone (landed)' (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    runners: dict[str, Callable[[bool, int | None], str]] = {
        **BENCHMARKS,
        "fanout": functools.partial(_fanout, landed=args.landed),
    }
    command = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# python -m bench {command}".rstrip() + "\n\n" + machine() + "\n", flush=True)
    for name in names:
        start = time.perf_counter()
        try:
            table = runners[name](args.quick, args.runs)
        except ImportError as exc:
            raise ImportError(
                f"benchmark {name!r} needs {exc.name or exc}: pip install 'tbone-asgi[bench]'"
            ) from exc
        print(table, flush=True)
        print(f"({name}: {time.perf_counter() - start:.1f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
