"""The Python client's sans-I/O part: frames in, decisions out, no socket."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tbone.dispatch.events import Event
from tbone_asgi.client_state import Backoff, ClientState, Recovered


def frame(kind: str, payload: Any = None) -> str:
    return json.dumps({"type": kind, "payload": payload})


def test_an_event_counts_as_seen_only_once_queued() -> None:
    state = ClientState("ws://h/ws", ["a"], None)
    state.opened()
    found = state.receive(frame("event", {"name": "a", "data": 1, "id": "1-1", "channel": "c"}))
    assert isinstance(found, Event)
    assert (found.name, found.data, found.id, found.channel) == ("a", 1, "1-1", "c")
    assert state.connect_url() == "ws://h/ws?events=a"  # not seen before it is queued
    state.queued(found)
    assert (state.last_id, state.progress) == ("1-1", True)
    assert state.connect_url() == "ws://h/ws?events=a&since=1-1"


def test_a_recovered_frame_names_the_id_the_connection_resumed_from() -> None:
    state = ClientState("ws://h/ws", ["a"], "1-5")
    state.opened()
    found = state.receive(frame("recovered", {"channel": "c", "complete": False}))
    assert found == Recovered("c", False, "1-5")
    assert state.recoveries == [found]
    assert state.progress


def test_pongs_errors_and_junk() -> None:
    state = ClientState("ws://h/ws", None, None)
    assert state.receive(frame("pong")) == "pong"
    payload = {"code": "forbidden", "message": "no"}
    assert state.receive(frame("error", payload)) == payload
    assert state.errors == [payload]
    assert state.receive("not json") is None
    assert state.receive("[1]") is None


def test_an_unreadable_since_starts_over_from_now() -> None:
    state = ClientState("ws://h/ws", ["a"], "bad")
    state.opened()
    state.receive(frame("error", {"code": "bad_since", "message": "?"}))
    assert state.closed(1008) == "start over"
    assert state.last_id is None
    assert state.recoveries == [Recovered("", False, "bad")]
    state.opened()
    assert state.closed(1008) == "refused"  # no bad_since on this connection: a refusal


@pytest.mark.parametrize(
    ("code", "next_step"),
    [(1001, "retry"), (1013, "retry"), (None, "retry"), (1003, "refused"), (4001, "refused")],
)
def test_what_follows_a_close(code: int | None, next_step: str) -> None:
    state = ClientState("ws://h/ws", ["a"], None)
    state.opened()
    assert state.closed(code) == next_step


def test_changes_made_during_the_handshake_are_sent_on_open() -> None:
    state = ClientState("ws://h/ws", ["a", "b"], None)
    state.events = ["b", "c"]
    assert state.changes(["a", "b"]) == [
        {"type": "subscribe", "payload": {"events": ["c"]}},
        {"type": "unsubscribe", "payload": {"events": ["a"]}},
    ]


def test_backoff_doubles_with_jitter_and_counts_failures_in_a_row() -> None:
    backoff = Backoff((1.0, 4.0), retries=1)
    waits = [backoff.next_wait() for _ in range(4)]
    bounds = [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (2.0, 4.0)]
    assert all(lo <= w <= hi for w, (lo, hi) in zip(waits, bounds, strict=True)), waits
    backoff.worked()
    assert backoff.delay == 1.0
    backoff.failed()
    assert not backoff.exhausted()
    backoff.failed()
    assert backoff.exhausted()
    backoff.opened()
    assert not backoff.exhausted()
    with pytest.raises(TypeError, match="retries must be a whole number"):
        Backoff((1.0, 2.0), retries=1.5)  # type: ignore[arg-type]
