"""Events: frames encoded once, and events made from stored JSON text without decoding it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tbone.dispatch import jsonenc
from tbone.dispatch.events import Event

# What jsonenc encodes the same with the standard library and orjson: no NaN, no integers
# beyond 64 bits, no lone surrogates (not UTF-8).
texts = st.text(st.characters(exclude_categories=("Cs",)))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63) + 1, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=16,
)


@given(name=texts, data=json_values, id=texts, channel=texts)
def test_an_event_from_json_is_the_event_of_its_decoded_data(
    name: str, data: Any, id: str, channel: str
) -> None:
    eager = Event(name, data, id, channel)
    payload = jsonenc.dumps_bytes(data)
    for lazy in (
        Event.from_json(name, payload, id, channel),
        Event.from_json(name, payload.decode(), id, channel),  # MongoDB gives str
    ):
        assert lazy.frame == eager.frame
        assert lazy.size == eager.size == len(eager.frame.encode())
        assert lazy.data == data
        assert lazy == eager
        assert lazy.to_dict() == eager.to_dict()


def test_data_is_decoded_on_first_read_and_only_once(parsed: list[str]) -> None:
    event = Event.from_json("e", b'{"a":[1,"\xc3\xa9"]}', "1-1", "c")
    assert (
        event.frame
        == '{"type":"event","payload":{"name":"e","data":{"a":[1,"é"]},"id":"1-1","channel":"c"}}'
    )
    assert event.size == len(event.frame.encode())
    assert parsed == []  # the frame was built without decoding
    assert event.data == {"a": [1, "é"]}
    assert event.data is event.data
    assert event == Event("e", {"a": [1, "é"]}, "1-1", "c")
    assert parsed == ['{"a":[1,"é"]}']


def test_data_given_with_the_json_is_kept_as_is(parsed: list[str]) -> None:
    value = {"when": "2024-01-01"}
    event = Event.from_json("e", jsonenc.dumps_bytes(value), "1", "c", data=value)
    assert event.data is value
    assert parsed == []


def test_json_that_does_not_parse_fails_when_data_is_read() -> None:
    event = Event.from_json("e", b"{not json", "1", "c")
    assert event.size == len(event.frame)
    with pytest.raises(ValueError, match=r"line 1 column 2"):
        event.data  # noqa: B018


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(UnicodeDecodeError):
        Event.from_json("e", b'"\xff"', "1", "c")


def test_an_event_has_no_instance_dict() -> None:
    # Channels hold thousands of events: slots only, and lazy data needs none more.
    assert not hasattr(Event("e", 1, "1", "c"), "__dict__")
    assert not hasattr(Event.from_json("e", b"1", "1", "c"), "__dict__")
    # name, id, channel, data, frame and size, and the prepared wire frames (None until asked).
    assert len(Event.__slots__) == 7
