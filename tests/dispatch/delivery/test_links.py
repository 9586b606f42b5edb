"""The links of a carrier and the one live carrier per connection, with no channel."""

from __future__ import annotations

import pytest

from tbone.dispatch.carriers import live_connections
from tbone.dispatch.testing import RecordingCarrier, RecordingLink


async def test_the_first_carrier_bound_for_a_connection_is_the_live_one() -> None:
    ws = object()
    first, second = RecordingCarrier(ws), RecordingCarrier(ws)
    before = live_connections()
    a, b = RecordingLink(first), RecordingLink(first)
    assert first.bind(a) is first
    assert second.bind(b) is first  # an equal carrier made later shares the first's outbox
    assert second.live() is first
    assert live_connections() == before + 1
    first.unbind(a)
    assert second.live() is first  # one link is left
    first.unbind(b)
    assert second.live() is None
    assert live_connections() == before


async def test_closing_tells_every_link_once_and_frees_the_connection() -> None:
    carrier = RecordingCarrier()
    links = [RecordingLink(carrier) for _ in range(3)]
    for link in links:
        carrier.bind(link)
    await carrier.close()
    assert [link.closed_how for link in links] == ["closed"] * 3
    assert carrier.live() is None
    with pytest.raises(ValueError, match="is closed"):
        carrier.bind(RecordingLink(carrier))
