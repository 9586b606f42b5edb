"""Command line: ``python -m tbone_asgi listen URL --events a,b``.

Prints each event as one JSON line on stdout, ``{"name", "data", "id", "channel"}``, flushed at
once so it can be piped (``| jq``). Reconnects and resumes like :mod:`tbone_asgi.client`;
notes go to stderr, one line each, starting with ``#``: each connection that opens
(``# connected to URL (events: a, b)``, then ``# reconnected to ...``), each drop and the
delay before the next attempt, and ``recovered`` frames. ``--retries N`` retries a failed
connection N times in a row, so it gives up after N + 1 failed attempts; without it, after
:data:`NOTE_AFTER` failed attempts in a row a note says that nothing answers and what
``--retries`` does. Exit status: 0 after ``--count`` events or Ctrl-C, 1 when the server
refuses the subscription or stays unreachable, 2 for bad arguments or a missing extra (one
line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

__all__ = ["NOTE_AFTER", "main"]

#: Failed attempts in a row after which ``listen`` (retrying forever) says nothing answers.
NOTE_AFTER = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tbone_asgi",
        description="Tools for tbone subscribe endpoints.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listen = commands.add_parser(
        "listen",
        help="print a subscribe endpoint's events as JSON lines",
        description="Print the events of a subscribe endpoint as JSON lines, reconnecting "
        "and resuming after the last event id when the connection drops.",
    )
    listen.add_argument("url", help="websocket URL, e.g. ws://127.0.0.1:8000/ws")
    listen.add_argument(
        "--events",
        default="",
        help="comma-separated event names (default: the route's own events)",
    )
    listen.add_argument("--since", default=None, help="resume after this event id")
    listen.add_argument(
        "--count", type=int, default=None, help="exit after printing this many events"
    )
    listen.add_argument("--origin", default=None, help="Origin header to send")
    listen.add_argument(
        "--retries",
        type=_at_least_zero,
        default=None,
        metavar="N",
        help="retry a failed connection N times in a row, then exit with status 1: N + 1 "
        "attempts in all, counted again after each connection that opens (default: retry "
        "forever)",
    )
    return parser


def _at_least_zero(text: str) -> int:
    # argparse prints "argument --retries: <this message>" and exits with status 2.
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return number


async def listen(
    url: str,
    events: list[str],
    *,
    since: str | None = None,
    count: int | None = None,
    origin: str | None = None,
    retries: int | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print events from ``url`` as JSON lines on ``out`` until ``count`` (or forever).

    Returns the exit status: 0 when ``count`` events were printed, 1 when the subscription
    was refused or lost (the reason is printed on ``err``).
    """
    from tbone_asgi.client import (
        Recovered,
        Subscription,
        SubscriptionError,
        SubscriptionLost,
        subscribe,
    )

    def on_connected(sub: Subscription) -> None:
        again = "re" if sub.connections > 1 else ""
        asked = ", ".join(sub.events) if sub.events else "the route's own"
        resuming = f"; resuming after {sub.last_id}" if sub.last_id else ""
        print(f"# {again}connected to {url} (events: {asked}{resuming})", file=err, flush=True)

    def on_recovered(rec: Recovered) -> None:
        # An incomplete resume and error frames are logged by the client itself (see main).
        if rec.complete:
            print(f"# resumed after {rec.since or '(start)'} on {rec.channel}: complete", file=err)

    printed = 0
    if count is not None and count <= 0:
        return 0
    try:
        async with subscribe(
            url,
            events or None,
            since=since,
            origin=origin,
            retries=retries,
            on_connected=on_connected,
            on_recovered=on_recovered,
        ) as sub:
            async for event in sub:
                line = {
                    "name": event.name,
                    "data": event.data,
                    "id": event.id,
                    "channel": event.channel,
                }
                print(json.dumps(line, ensure_ascii=False), file=out, flush=True)
                printed += 1
                if count is not None and printed >= count:
                    return 0
    except SubscriptionLost as exc:
        # The library's message speaks Python (retries=None); this one speaks command line.
        last = f"{type(exc.last_error).__name__}: {exc.last_error}"
        print(
            f"error: {url}: could not connect after {exc.attempts} "
            f"attempt{'s' if exc.attempts != 1 else ''} in a row (--retries {retries}); "
            f"last error: {last}. Is the server up? Leave out --retries to keep trying.",
            file=err,
        )
        return 1
    except SubscriptionError as exc:
        print(f"error: {exc}", file=err)
        return 1
    return 0


class _Notes(logging.StreamHandler):  # type: ignore[type-arg]
    """The client's log lines on stderr, and a note when nothing answers for a while."""

    def __init__(self, url: str, retries: int | None) -> None:
        super().__init__(sys.stderr)
        self.url = url
        self.retries = retries

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self.retries is None and getattr(record, "failed_in_a_row", 0) == NOTE_AFTER:
            self.stream.write(
                f"# nothing answers at {self.url}: {NOTE_AFTER} attempts in a row failed. "
                "Still trying, with longer waits (Ctrl-C stops); --retries N gives up after "
                "N + 1 failed attempts in a row, with exit status 1\n"
            )
            self.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        import tbone_asgi.client  # noqa: F401 - its ImportError names the extra to install
    except ImportError as exc:
        print(f"python -m tbone_asgi: error: {exc}", file=sys.stderr)
        return 2
    # Reconnects and gaps are worth seeing when debugging a deployment: the client logs them.
    handler = _Notes(args.url, args.retries)
    handler.setFormatter(logging.Formatter("# %(message)s"))
    client_log = logging.getLogger("tbone_asgi.client")
    level = client_log.level
    client_log.addHandler(handler)
    client_log.setLevel(logging.INFO)
    events = [e.strip() for e in args.events.split(",") if e.strip()]
    try:
        return asyncio.run(
            listen(
                args.url,
                events,
                since=args.since,
                count=args.count,
                origin=args.origin,
                retries=args.retries,
            )
        )
    except ValueError as exc:  # a bad URL or event name: say so like argparse does
        print(f"python -m tbone_asgi: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        # main() may run more than once in one process (tests): leave logging as it was.
        client_log.removeHandler(handler)
        client_log.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
