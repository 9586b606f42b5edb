"""RedisChannel's stream: its entries decoded into events, its ends and pages read by script,
history after an id, and what the stream lost.

An entry is ``{n: name, d: JSON data, v: "1"}``; one without ``v`` was written by something
else and its data is parsed before it is delivered; one that is not an event at all is skipped
(counted in ``bad_entries``, logged). History after an id is complete only when the stream still
holds that id and no entry after it was lost in a gap this process saw (:meth:`Stream.lost`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from tbone.dispatch.events import Event, History
from tbone.dispatch.extras import requires

with requires(__name__, "redis-py >= 5.0.1", extra="redis"):
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

__all__ = ["START", "Stream", "entries_of", "id_key", "text"]

logger = logging.getLogger("tbone.dispatch.channels.redis")

_STREAM_ID = re.compile(r"(\d+)-(\d+)")
NAME_FIELD = b"n"  # the event name, UTF-8
DATA_FIELD = b"d"  # the JSON text of the event data
# "1": ``d`` is tbone.dispatch.jsonenc's text, written by store(), spliced into frames as it is
# (never decoded on the way). An entry without it was written by something else: its ``d`` is
# parsed first, so text that is not JSON never reaches a client.
FORMAT_FIELD = b"v"
FORMAT = "1"
#: The position before any entry: an empty stream, or none at all.
START = "0-0"


# One history page, or one checked read of a reader that is behind: the entries after ARGV[1]
# ("-": from the start), at most ARGV[2] of them and ARGV[3] bytes of field values (the first
# one whatever its size). Answers {found, more, entries}: found is 1 when the entry ARGV[1] is
# still in the stream (so nothing after it was trimmed), more is 1 when entries were left out.
# Bounding the bytes here keeps what a reader holds bounded (XRANGE alone bounds the count);
# reading 16 entries at a time keeps Redis from copying far more than the page needs.
_PAGE_SCRIPT = """
local count = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local out, total, found = {}, 0, 0
local start, skip = ARGV[1], ARGV[1]
while true do
  local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 16)
  local first = 1
  if entries[1] ~= nil and skip ~= '-' and entries[1][1] == skip then
    first = 2
    if skip == ARGV[1] then found = 1 end
  end
  for i = first, #entries do
    local size = 0
    local fields = entries[i][2]
    for j = 2, #fields, 2 do size = size + #fields[j] end
    if #out >= count or (#out > 0 and total + size > budget) then
      return {found, 1, out}
    end
    total = total + size
    out[#out + 1] = entries[i]
  end
  if #entries < 16 then
    return {found, 0, out}
  end
  start = entries[#entries][1]
  skip = start
end
"""


# {first, last}: the id of the stream's oldest entry and its last-generated id ('' for none).
# Every new entry's id is above the last-generated one: when that is below the reader's
# position, the stream lost entries the reader had read or was about to read, and XREAD after
# the position would wait until new ids pass it. (XINFO, not the newest entry: deleting the
# newest entry leaves the last-generated id where it was.)
_ENDS_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'', ''} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local first, last = '', ''
for i = 1, #info, 2 do
  if info[i] == 'first-entry' and info[i + 1] then first = info[i + 1][1] end
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
return {first, last}
"""


class Stream:
    """The stream ``key`` of channel ``channel``: reads that are not the reader's loop."""

    def __init__(self, key: str, channel: str) -> None:
        self.key = key
        self.channel = channel
        #: bad_entries: foreign entries skipped; stream_resets: times the stream lost entries.
        self.counts = dict.fromkeys(("bad_entries", "stream_resets"), 0)
        # The newest position the stream lost (went back below, or no longer holds): history
        # after an older id misses events. Per process: a process started later cannot know.
        self._lost_upto: str | None = None

    # -- scripts -----------------------------------------------------------------------------

    async def script(self, client: aioredis.Redis | RedisCluster, script: str, *args: Any) -> Any:
        """Run ``script`` on the stream's key (its one KEYS entry), with ``args`` as ARGV.

        EVAL, not EVALSHA: a server without the script cached (restarted, promoted, a cluster
        master that never ran it) then needs no SCRIPT LOAD, which a cluster client sends to
        every master, and which fails while one of them is down.
        """
        return await client.execute_command("EVAL", script, 1, self.key, *args)

    async def ends(self, client: aioredis.Redis) -> tuple[str, str]:
        """The stream's oldest entry id and its last-generated id (:data:`START` for none)."""
        first, last = await self.script(client, _ENDS_SCRIPT)
        return text(first) or START, text(last) or START

    async def page(
        self, client: aioredis.Redis | RedisCluster, since: str, count: int, max_bytes: int
    ) -> tuple[bool, bool, list[Any]]:
        """(found, more, entries) of :data:`_PAGE_SCRIPT` after ``since``."""
        found, more, raw = await self.script(client, _PAGE_SCRIPT, since, count, max_bytes)
        entries = [(entry_id, _fields(fields)) for entry_id, fields in raw]
        return bool(found), bool(more), entries

    # -- history -----------------------------------------------------------------------------

    def check_id(self, since: str) -> None:
        """ValueError for an id that is not a stream id."""
        if _STREAM_ID.fullmatch(since) is None:
            raise ValueError(
                f"{since!r} is not an event id of channel {self.channel!r}: Redis stream ids "
                "look like '1700000000000-0'"
            )

    async def history(self, client: aioredis.Redis | RedisCluster, since: str | None) -> History:
        """``XRANGE`` from ``since``; complete when the stream still holds ``since`` itself."""
        if since is not None:
            self.check_id(since)
        entries = await client.xrange(self.key, since or "-", "+")
        events = self.events(entries or ())
        if since is None:
            return History(events, complete=True)
        if entries and text(entries[0][0]) == since:
            events = events[1:] if events and events[0].id == since else events
            return History(events, self.complete(since, True))
        # The stream lost ``since``: trimmed, deleted, or recreated after a restart.
        return History(events, complete=False)

    async def history_page(
        self, client: aioredis.Redis | RedisCluster, since: str | None, limit: int, max_bytes: int
    ) -> History:
        """One page of history, bounded in entries and bytes inside Redis (a Lua script).

        A page whose entries are all foreign (skipped) is read past: a page that says ``more``
        holds an event, or a reader paging on from its last event would read it forever.
        """
        if since is not None:
            self.check_id(since)
        found, more, entries = await self.page(client, since or "-", limit, max_bytes)
        events = self.events(entries)
        while more and not events and entries:
            _, more, entries = await self.page(client, text(entries[-1][0]), limit, max_bytes)
            events = self.events(entries)
        return History(events, complete=self.complete(since, found), more=more)

    # -- losses ------------------------------------------------------------------------------

    def lost(self, position: str) -> None:
        """The stream lost ``position``: history after an older id is incomplete."""
        if self._lost_upto is None or id_key(position) > id_key(self._lost_upto):
            self._lost_upto = position

    def complete(self, since: str | None, found: bool) -> bool:
        """Whether history after ``since`` misses nothing: the stream holds ``since``, and no
        entry after it was lost in a gap this process saw."""
        if since is None:
            return True
        lost = self._lost_upto
        return found and (lost is None or id_key(since) >= id_key(lost))

    # -- decoding ----------------------------------------------------------------------------

    def entry(self, name: str, payload: bytes) -> dict[Any, Any]:
        """The fields of the entry for an event ``name`` with the JSON ``payload``."""
        return {NAME_FIELD: name.encode(), DATA_FIELD: payload, FORMAT_FIELD: FORMAT}

    def events(self, entries: Iterable[Any]) -> list[Event]:
        """The events of stream entries ``(id, fields)``, foreign entries left out."""
        return [e for e in (self._decode(i, f) for i, f in entries) if e is not None]

    def _decode(self, entry_id: bytes | str | None, fields: Any) -> Event | None:
        stream_id = text(entry_id)
        try:
            if not stream_id or not isinstance(fields, dict):
                raise TypeError("entry without fields")
            name = text(fields.get(NAME_FIELD) or fields[NAME_FIELD.decode()])
            payload = _raw(fields.get(DATA_FIELD) or fields[DATA_FIELD.decode()])
            # The frame splices the stored JSON in; data is decoded only if someone reads it.
            event = Event.from_json(name, payload, stream_id, self.channel)
            if text(fields.get(FORMAT_FIELD) or fields.get(FORMAT_FIELD.decode())) != FORMAT:
                event.data  # noqa: B018 - not written by store(): check that it is JSON
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            # Written by something else: skip it (raising would stop the reader on it forever).
            self.counts["bad_entries"] += 1
            logger.error(
                "channel %r: skipped stream entry %s of %r, not a tbone event (%s: %s)",
                self.channel,
                stream_id,
                self.key,
                type(exc).__name__,
                exc,
            )
            return None
        return event


def text(value: bytes | str | None) -> str:
    """A reply as str: clients made with decode_responses=True answer str; ours answer bytes."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def id_key(stream_id: str) -> tuple[int, int]:
    """A stream id's sort key: (milliseconds, sequence)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def entries_of(reply: Any) -> list[Any]:
    """The entries of an XREAD reply: RESP2 answers [[key, entries]]; RESP3 {key: entries}."""
    pairs: Iterable[Any] = reply.items() if isinstance(reply, dict) else reply
    entries: list[Any] = []
    for _key, items in pairs:
        entries.extend(items)
    return entries


def _fields(raw: Any) -> Any:
    # A script answers an entry's fields as a flat list [name, value, ...]; XRANGE as a dict.
    if isinstance(raw, list):
        return dict(zip(raw[::2], raw[1::2], strict=True))
    return raw
