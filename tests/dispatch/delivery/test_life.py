"""A carrier's life: the enum's transitions, and which close path leads where. No server."""

from __future__ import annotations

import pytest

from tbone.dispatch.carriers import InvalidTransition, Life, wait_closing
from tbone.dispatch.delivery.life import LifeCycle
from tbone.dispatch.testing import RecordingCarrier, RecordingLink


class Bare(LifeCycle):
    __slots__ = ()

    def __init__(self) -> None:
        self._life = Life.OPEN
        self._close_code = None


def test_the_life_goes_open_closing_closed_and_nowhere_else() -> None:
    life = Bare()
    assert (life.life, life.closed, life.close_code) == (Life.OPEN, False, None)
    life._advance(Life.CLOSING)
    assert life.closed
    life._advance(Life.CLOSED)
    assert life.life is Life.CLOSED


@pytest.mark.parametrize(
    ("path", "new"),
    [
        ((), Life.CLOSED),  # closed without leaving its channels first
        ((), Life.OPEN),
        ((Life.CLOSING,), Life.OPEN),  # no carrier reopens
        ((Life.CLOSING,), Life.CLOSING),  # nor closes twice
        ((Life.CLOSING, Life.CLOSED), Life.CLOSING),
    ],
)
def test_any_other_step_raises_and_names_both_states(path: tuple[Life, ...], new: Life) -> None:
    life = Bare()
    for state in path:
        life._advance(state)
    before = life.life
    with pytest.raises(InvalidTransition, match=f"from {before.name} to {new.name}") as caught:
        life._advance(new)
    assert (caught.value.current, caught.value.new) == (before, new)
    assert life.life is before


async def test_close_leaves_then_closes_the_connection() -> None:
    carrier = RecordingCarrier()
    link = RecordingLink(carrier)
    carrier.bind(link)
    await carrier.close(4000, "bye")
    assert (carrier.life, carrier.close_code, carrier.closed_with) == (
        Life.CLOSED,
        4000,
        (4000, "bye"),
    )
    assert link.closed_how == "closed"
    await carrier.close()  # again: nothing left to change, no error
    assert (carrier.life, carrier.close_code) == (Life.CLOSED, 4000)


async def test_close_soon_leaves_at_once_and_closes_with_1013_in_the_background() -> None:
    carrier = RecordingCarrier()
    link = RecordingLink(carrier)
    carrier.bind(link)
    carrier.close_soon("too slow")
    assert (carrier.life, carrier.close_code, link.closed_how) == (Life.CLOSING, 1013, "slow")
    await wait_closing()
    assert (carrier.life, carrier.closed_with) == (Life.CLOSED, (1013, "too slow"))


async def test_close_soon_for_lost_events_is_not_counted_as_slow() -> None:
    carrier = RecordingCarrier()
    link = RecordingLink(carrier)
    carrier.bind(link)
    carrier.close_soon("resume", slow=False)
    assert link.closed_how == "closed"
    await wait_closing()


async def test_a_failed_send_leaves_with_no_close_code_and_no_handshake() -> None:
    carrier = RecordingCarrier(fail_after=0)
    link = RecordingLink(carrier)
    carrier.bind(link)
    assert carrier.offer("{}") is False
    assert (carrier.life, carrier.close_code, link.closed_how) == (Life.CLOSING, None, "failed")
    assert carrier.closed_with is None
    assert carrier.offer("{}") is False  # closed: nothing more is taken
