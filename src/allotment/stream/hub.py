"""One worker's side of the change stream: ONE journal reader fanning out to its clients.

The bus journals every customer and policy change to a Redis stream after commit
(kit/bus.py, `Journal`); its ids order the changes of every worker. Each worker runs one
reader task (`XREAD BLOCK` on a connection of its own) and hands each entry to the bounded
queue of every connected client it concerns; each client's response (endpoints.py) writes
its own queue. Nothing a client does (reading slowly, not at all, going away) ever makes the
reader or another client wait: a queue that fills is dropped for a `resync` event.

Ids are `<epoch>:<position>` (ids.py). The epoch is the journal's token (a random value the
first writer after a loss of data creates with SET NX) and the Redis server's run id, so a
Redis that lost its data, or restarted at all (whatever it kept), starts a new epoch.

Resync (the client must refetch the state it holds; live events follow) is the answer
whenever the journal cannot prove that nothing was missed:

    malformed    the Last-Event-ID is not one this service sends
    epoch        it is from another epoch
    trimmed      the journal no longer reaches back to it
    unknown      it is past the journal's end
    unavailable  Redis cannot be asked (down, or this worker's reader not attached yet)
    overflow     the client fell `client_queue` events behind
    reconnected  the reader re-attached and cannot continue where it was (a new epoch, or
                 entries after its position trimmed meanwhile)
    gap          a publisher could not journal some changes (the bus's marker)

Redis stays a bus: the journal is a convenience for resuming, never a store of record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis, RedisCluster

from allotment.invalidation import CUSTOMER_TOPIC, POLICY_TOPIC
from allotment.kit.bus import RESYNC_TOPIC, Journal
from allotment.stream import events, ids
from allotment.stream.ids import Position
from allotment.stream.metrics import STREAM_CLIENTS, STREAM_LAG

log = structlog.get_logger("allotment.stream")

READ_BLOCK_MS = 1000  # the reader checks the epoch (and stopping) at least this often
READ_COUNT = 1000  # entries per XREAD
REPLAY_PAGE = 500  # entries per XRANGE of a resume
CLOSE_GRACE_S = 1.0  # at shutdown, for writes to clients to finish


@dataclass(frozen=True, slots=True)
class Item:
    """One event as every client it concerns receives it (the frame is built once)."""

    event: str
    frame: bytes
    epoch: str | None
    position: Position | None
    customer: str | None = None  # customer.changed: whose; None: every client's
    reason: str | None = None  # resync: why
    committed: float | None = None  # commit time (seconds since the epoch), for the lag


def resync(reason: str, epoch: str | None, at: Position | None) -> Item:
    event_id = ids.event_id(epoch, at) if epoch is not None and at is not None else None
    frame = events.frame(events.RESYNC, {"reason": reason}, event_id)
    return Item(events.RESYNC, frame, epoch, at, reason=reason)


def entry_item(epoch: str, at: Position, fields: dict[bytes, bytes]) -> Item | None:
    """The event of a journal entry (None: an entry this version does not stream)."""
    try:
        message = orjson.loads(fields[b"m"])
        topic = message.get("t")
        if topic == RESYNC_TOPIC:
            return resync("gap", epoch, at)
        payload = str(message.get("p", ""))
        head, _, stamp = payload.partition(" ")
        committed = float(stamp) if stamp else None
        data = message.get("d")
        if topic == CUSTOMER_TOPIC:
            if not isinstance(data, dict):  # from a version before the journal carried data
                data = {"customer": head, "state_version": None}
            name, customer = events.CUSTOMER_CHANGED, str(data["customer"])
            body = {"customer": customer, "state_version": data.get("state_version")}
        elif topic == POLICY_TOPIC:
            if not isinstance(data, dict):
                data = {"version": None, "rollback": False}
            name, customer = events.POLICY_PUBLISHED, None
            body = {"version": data.get("version"), "rollback": bool(data.get("rollback"))}
        else:
            return None
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
        log.warning("stream_entry_unreadable", position=ids.redis_id(at))
        return None
    body["committed_at"] = events.committed_at(committed)
    frame = events.frame(name, body, ids.event_id(epoch, at))
    return Item(name, frame, epoch, at, customer=customer, committed=committed)


class Client:
    """One connected stream: its filter and its bounded queue of events to write."""

    __slots__ = ("customer", "limit", "items", "wake", "closed", "floor", "sent", "task")

    def __init__(self, customer: str | None, limit: int) -> None:
        self.customer = customer
        self.limit = limit
        self.items: deque[Item] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        # Events at or before `floor` reached this client otherwise (the opening id, a
        # replay): skipped when the reader hands them over too.
        self.floor: tuple[str, Position] | None = None
        self.sent: tuple[str, Position] | None = None  # the last id the client was given
        self.task: asyncio.Task[None] | None = None  # its writer (endpoints.py)

    def wants(self, item: Item) -> bool:
        return item.customer is None or self.customer is None or item.customer == self.customer

    def offer(self, item: Item) -> None:
        if len(self.items) >= self.limit:
            # Too slow to keep up: drop the backlog; the client refetches instead.
            self.items.clear()
            self.items.append(resync("overflow", item.epoch, item.position))
        else:
            self.items.append(item)
        self.wake.set()

    def stale(self, item: Item) -> bool:
        """Already delivered by other means (a resync is never skipped)."""
        floor = self.floor
        return (
            floor is not None
            and item.reason is None
            and item.epoch == floor[0]
            and item.position is not None
            and item.position <= floor[1]
        )

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class Hub:
    """The worker's journal reader and its connected clients."""

    def __init__(
        self,
        *,
        redis: Redis | RedisCluster,
        reader: Redis | RedisCluster,
        journal: Journal,
        client_queue: int,
    ) -> None:
        self.redis = redis  # the app's client (short timeouts): resumes
        self.reader = reader  # a client of the reader's own, its timeout above READ_BLOCK_MS
        self.journal = journal
        self.client_queue = client_queue
        self.clients: set[Client] = set()
        self.epoch: str | None = None
        self.position: Position | None = None  # the last entry handed to the clients
        self.attached = False  # the reader is reading (Redis reachable)
        self.closing = False
        self._token: bytes | None = None
        self._journal_node: str | None = None  # on a Redis Cluster: the journal's master
        self._task: asyncio.Task[None] | None = None
        self._attached = asyncio.Event()  # set at the first attach

    # -- clients ---------------------------------------------------------------------------

    def register(self, customer: str | None) -> Client:
        """A new client; from now on it is handed every entry after `position`."""
        client = Client(customer, self.client_queue)
        if self.epoch is not None and self.position is not None:
            client.floor = client.sent = (self.epoch, self.position)
        client.closed = self.closing  # shutting down since its request came in: ends at once
        self.clients.add(client)
        STREAM_CLIENTS.inc()
        return client

    def unregister(self, client: Client) -> None:
        if client in self.clients:
            self.clients.remove(client)
            STREAM_CLIENTS.dec()
        client.items.clear()

    def resync_now(self, client: Client, reason: str) -> Item:
        """A resync for `client` at the hub's position (what follows arrives live)."""
        if self.epoch is not None and self.position is not None:
            client.floor = (self.epoch, self.position)
        return resync(reason, self.epoch, self.position)

    async def replay(self, client: Client, last_event_id: str) -> list[Item]:
        """What `client` (registered already) missed after `last_event_id`, from the journal;
        or one resync, when the journal cannot say."""
        parsed = ids.parse(last_event_id)
        if parsed is None:
            return [self.resync_now(client, "malformed")]
        epoch, after = parsed
        if not self.attached or self.epoch is None:
            return [self.resync_now(client, "unavailable")]
        if epoch != self.epoch:
            return [self.resync_now(client, "epoch")]
        key = self.journal.key
        found: list[Item] = []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xrange(key, "-", "+", count=1)
                pipe.xrevrange(key, "+", "-", count=1)
                first, last = await pipe.execute()
            if not first or ids.position(first[0][0]) > after:
                return [self.resync_now(client, "trimmed")]
            if ids.position(last[0][0]) < after:
                return [self.resync_now(client, "unknown")]
            cursor = after
            while True:
                page: Any = await self.redis.xrange(
                    key, f"({ids.redis_id(cursor)}", "+", count=REPLAY_PAGE
                )
                for raw_id, fields in page:
                    cursor = ids.position(raw_id)
                    item = entry_item(epoch, cursor, fields)
                    if item is not None and client.wants(item):
                        found.append(item)
                if len(page) < REPLAY_PAGE:
                    break
        except Exception as exc:  # Redis gone mid-way (or its answer unreadable): start over
            log.info("stream_replay_failed", error=str(exc))
            return [self.resync_now(client, "unavailable")]
        if epoch != self.epoch:  # the reader moved to another epoch meanwhile
            return [self.resync_now(client, "epoch")]
        client.floor = (epoch, cursor)
        return found

    def close(self) -> None:
        """End every stream now (the server is shutting down); refuse new ones. A stream
        whose writer is still stuck CLOSE_GRACE_S later (a client that stopped reading) is
        cancelled."""
        if self.closing:
            return
        self.closing = True
        for client in list(self.clients):
            client.close()
        if self.clients:
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._cancel_writers)

    def _cancel_writers(self) -> None:
        for client in list(self.clients):
            if client.task is not None:
                client.task.cancel()

    # -- the reader --------------------------------------------------------------------------

    async def start(self, *, attach_within_s: float = 2.0) -> None:
        """Start the reader, and give it a moment to attach: a client that connects before
        it does gets a resync when it does (Redis down at startup: it attaches later)."""
        self._task = asyncio.create_task(self._read(), name="allotment-stream")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attached.wait(), attach_within_s)

    async def stop(self) -> None:
        self.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2.0)
            self._task = None
        with contextlib.suppress(Exception):
            await self.reader.aclose()

    async def _read(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._attach()
                delay = 0.1
                while await self._poll():
                    pass
            except asyncio.CancelledError:
                self.attached = False
                raise
            except Exception as exc:
                if self.attached:
                    log.warning("stream_reader_detached", error=str(exc))
                self.attached = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _attach(self) -> None:
        """Read the epoch and the journal's ends; go on from `position` when the journal
        proves nothing after it was lost, else resync every client from the journal's end."""
        journal = self.journal
        reader = self.reader
        async with reader.pipeline(transaction=False) as pipe:
            pipe.set(journal.epoch_key, journal.new_epoch(), nx=True)
            pipe.get(journal.epoch_key)
            pipe.xrange(journal.key, "-", "+", count=1)
            pipe.xrevrange(journal.key, "+", "-", count=1)
            if not isinstance(reader, RedisCluster):
                pipe.info("server")
            _, token, first, last, *rest = await pipe.execute()
        if isinstance(reader, RedisCluster):
            # The run id of the master holding the journal: a failover to its replica (which
            # may lack the last entries) starts a new epoch, as a restart does.
            await reader.nodes_manager.initialize()  # the slot map anew: a failover moves it
            node = reader.get_node_from_key(journal.key)
            info = await reader.info("server", target_nodes=node)
            self._journal_node = node.name if node is not None else None
        else:
            info = rest[0]
        epoch = token.decode() + str(info.get("run_id", ""))[:8]
        first_at = ids.position(first[0][0]) if first else None
        last_at = ids.position(last[0][0]) if last else ids.ORIGIN
        at = self.position
        seamless = (
            epoch == self.epoch
            and at is not None
            and at <= last_at
            and (first_at <= at if first_at is not None else at == ids.ORIGIN)
        )
        self._token = token
        if not seamless:
            known = self.epoch is not None
            self.epoch, self.position = epoch, last_at
            for client in list(self.clients):
                client.offer(resync("reconnected", epoch, last_at))
            if known or self.clients:
                log.info("stream_resync", clients=len(self.clients), epoch=epoch)
        elif not self.attached:
            log.info("stream_reader_reattached", epoch=epoch)
        self.attached = True
        self._attached.set()

    async def _poll(self) -> bool:
        """One XREAD BLOCK (with the epoch token read just before it); False: re-attach."""
        assert self.position is not None and self.epoch is not None
        journal = self.journal
        async with self.reader.pipeline(transaction=False) as pipe:
            pipe.get(journal.epoch_key)
            pipe.xread(
                {journal.key: ids.redis_id(self.position)}, count=READ_COUNT, block=READ_BLOCK_MS
            )
            token, found = await pipe.execute()
        if token != self._token:  # the data went (FLUSHALL, a new server): a new epoch
            return False
        if isinstance(self.reader, RedisCluster) and self._journal_moved(self.reader):
            # The cluster client followed a failover on its own: the promoted replica may
            # lack the last entries (asynchronous replication), so re-attach: a new epoch.
            return False
        epoch = self.epoch
        for _stream, entries in found or ():
            for raw_id, fields in entries:
                at = ids.position(raw_id)
                item = entry_item(epoch, at, fields)
                self.position = at
                if item is not None:
                    self._fan_out(item)
        return True

    def _journal_moved(self, reader: RedisCluster) -> bool:
        node = reader.get_node_from_key(self.journal.key)
        return node is None or node.name != self._journal_node

    def _fan_out(self, item: Item) -> None:
        for client in self.clients:
            if client.wants(item):
                client.offer(item)
        if item.committed is not None:
            STREAM_LAG.observe(max(0.0, time.time() - item.committed))
