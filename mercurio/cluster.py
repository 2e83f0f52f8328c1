"""Many nodes as one service: this node's commits go out on the broker, everyone's come in
through a sequencer that hands them to the local hub strictly in id order.

The sequencer (mercurio/sequencer.py) says why arrival order proves nothing and how the store,
which is the ledger, fills every hole; an outage loses nothing (DESIGN.md invariant 5).

What goes over the broker is in mercurio/wire.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence

import orjson
import structlog

from mercurio.brokers import Broker, create_broker
from mercurio.config import Settings
from mercurio.errors import BrokerUnavailable
from mercurio.fanout import Fanout, Ledger, LinkHealth
from mercurio.hub import Hub
from mercurio.model import Notification
from mercurio.sequencer import Sequencer
from mercurio.wire import (
    decode_notes,
    doorbells,
    encode_head,
    encode_muted,
    encode_read_state,
    encode_topic,
)

log = structlog.get_logger("mercurio.cluster")

NOTES_PER_MESSAGE = 1000
CONTROL_BACKLOG = 1000
"""Read-state and mute messages kept while the link is down, sent when it is back."""
OUTBOX_LIMIT = 50_000
"""Notifications waiting for the broker; beyond this the doorbell is replaced by a head."""


class Cluster(Fanout):
    """Publishes this node's commits and events, sequences everyone's into the local hub."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        *,
        broker: Broker | None = None,
        debounce: float = 0.005,
        beacon: float = 1.0,
    ) -> None:
        self.node_id = settings.node_id
        self.beacon = beacon
        self._beacon_timer: asyncio.TimerHandle | None = None
        super().__init__(hub)
        self.store: Ledger | None = None
        self.broker = self._link(settings, broker)
        self.sequencer = Sequencer(self._fetch, hub.deliver, debounce=debounce)
        self._outbox: deque[Sequence[Notification]] = deque()
        self._outbox_size = 0
        self._controls: deque[bytes] = deque(maxlen=CONTROL_BACKLOG)
        self._owed = 0
        self._local_last = 0
        self._wake = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self.messages_in = 0
        self.messages_out = 0
        self.publish_failures = 0

    def _link(self, settings: Settings, broker: Broker | None) -> Broker:
        """The broker of settings, or the one given (a test's), wired to this cluster."""
        if broker is None:
            return create_broker(
                settings.mq_conn,
                topic=settings.mq_topic,
                routing_key=settings.mq_routing_key,
                node_id=self.node_id,
                on_message=self._received,
                on_reconnect=self._reconnected,
            )
        broker.on_message = self._received
        broker.on_reconnect = self._reconnected
        return broker

    @property
    def connected(self) -> bool:
        return self.broker.connected

    def health(self) -> LinkHealth:
        return LinkHealth(self.broker.connected, max(0, self.broker.connects - 1))

    async def start(self, ledger: Ledger, *, connect_timeout: float = 5.0) -> None:
        """Start after what the store holds now; wait a while for the broker, not forever."""
        self.store = ledger
        self.sequencer.start(await ledger.last_id())
        self._publisher = asyncio.create_task(self._publish_loop(), name="mercurio-cluster-out")
        await self.broker.start(wait=connect_timeout)
        if not self.broker.connected:
            log.warning("cluster.broker_unreachable", url=self.broker.redacted_url)

    async def close(self, *, flush: float = 2.0) -> None:
        """Send what is queued (for at most `flush` seconds), then drop the link."""
        await self.sequencer.close()
        for timer in (self._retry_timer, self._beacon_timer):
            if timer is not None:
                timer.cancel()
        if self._outbox or self._controls or self._owed:
            self._wake.set()
            deadline = asyncio.get_running_loop().time() + flush
            while (self._outbox or self._controls) and self.broker.connected:
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.01)
        for task in (self._publisher, self._refresh):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._publisher = self._refresh = None
        await self.broker.close()
        log.info("cluster.stats", **self.stats())

    def stats(self) -> dict[str, int]:
        """Counters of this node's side of the cluster since it started."""
        return {
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "publish_failures": self.publish_failures,
            "store_reads": self.sequencer.fetches,
            "read_from_store": self.sequencer.fetched,
            "connects": self.broker.connects,
        }

    # -- outgoing ---------------------------------------------------------------------------

    def committed(self, fresh: list[Notification]) -> None:
        """This node's writer committed fresh (in id order): deliver here, ring the others."""
        self._local_last = fresh[-1].id
        self.sequencer.offer(fresh)
        if not self.broker.connected or self._outbox_size >= OUTBOX_LIMIT:
            # Nobody hears a doorbell now; the head sent after the reconnect stands for it.
            self._owed = self._local_last
        else:
            self._outbox.append(fresh)
            self._outbox_size += len(fresh)
        self._wake.set()
        if self._beacon_timer is None:
            loop = asyncio.get_running_loop()
            self._beacon_timer = loop.call_later(self.beacon, self._ring_beacon)

    def _ring_beacon(self) -> None:
        # A doorbell the broker lost without the link breaking (a queue cap, a socket that died
        # with a message in flight) shows as a hole only when a later one arrives. A second
        # after a burst, the head names how far this node got, so a quiet period heals too.
        self._beacon_timer = None
        if self._outbox:
            loop = asyncio.get_running_loop()
            self._beacon_timer = loop.call_later(self.beacon, self._ring_beacon)
            return
        self._owed = max(self._owed, self._local_last)
        self._wake.set()

    def read_state(self, client_id: str, frame: bytes) -> None:
        """The client's read state changed: its streams here and on other nodes hear of it."""
        self.hub.push_event(client_id, frame)
        self._control(encode_read_state(self.node_id, client_id, frame), "read_state", client_id)

    def muted(self, client_id: str, muted: frozenset[str]) -> None:
        """The client's muted categories changed: this node and the others apply them."""
        self.hub.set_muted(client_id, muted)
        self._control(encode_muted(self.node_id, client_id, muted), "muted", client_id)

    def topic(
        self, client_id: str, topic: str, since: int | None, until: int | None = None
    ) -> None:
        """The client's subscription changed: this node's hub and the others' follow it."""
        self.hub.set_topic(client_id, topic, since, until)
        body = encode_topic(self.node_id, client_id, topic, since, until)
        self._control(body, "topic", client_id)

    def _control(self, body: bytes, kind: str, client_id: str) -> None:
        limit = self.broker.max_message_bytes
        if limit is not None and len(body) > limit:
            # Unlike a notification, no head can stand for it: the store keeps no log of read
            # states and mutes to read one back from. The other nodes miss this one.
            log.error(
                "cluster.control_too_large",
                kind=kind,
                client_id=client_id,
                size=len(body),
                limit=limit,
            )
            return
        self._controls.append(body)
        self._wake.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.broker.connected:
                continue  # _reconnected wakes us again
            try:
                await self._send_all()
            except BrokerUnavailable as exc:
                self.publish_failures += 1
                log.warning("cluster.publish_failed", error=str(exc))
                # The doorbells are gone; a head makes up for them once the broker takes
                # messages again (the link may look up while only the sending side broke).
                self._owed = max(self._owed, self._local_last)
                self._outbox.clear()
                self._outbox_size = 0
                loop = asyncio.get_running_loop()
                self._retry_timer = loop.call_later(1.0, self._wake.set)
            except Exception as exc:
                # The broker refused a message it will always refuse (an engine's own limit):
                # retrying would loop forever, and a dead publisher would ring nobody again.
                # Notifications are healed by a head; the controls queued now are lost, loudly.
                self.publish_failures += 1
                log.error(
                    "cluster.publish_refused",
                    error=f"{type(exc).__name__}: {exc}",
                    controls_dropped=len(self._controls),
                )
                self._controls.clear()
                self._owed = max(self._owed, self._local_last)
                self._outbox.clear()
                self._outbox_size = 0
                self._wake.set()

    async def _send_all(self) -> None:
        broker = self.broker
        if self._owed:
            owed = self._owed
            await broker.publish(encode_head(self.node_id, owed))
            self.messages_out += 1
            if self._owed == owed:
                self._owed = 0
        while self._controls:
            await broker.publish(self._controls[0])
            self.messages_out += 1
            self._controls.popleft()
        while self._outbox:
            # Coalesce what queued up while the previous message was sent.
            batch: list[Notification] = []
            while self._outbox and len(batch) < NOTES_PER_MESSAGE:
                notes = self._outbox.popleft()
                self._outbox_size -= len(notes)
                batch.extend(notes)
            for start in range(0, len(batch), NOTES_PER_MESSAGE):
                chunk = batch[start : start + NOTES_PER_MESSAGE]
                for body in doorbells(self.node_id, chunk, broker.max_message_bytes):
                    await broker.publish(body)
                    self.messages_out += 1

    # -- incoming ---------------------------------------------------------------------------

    def _received(self, body: bytes) -> None:
        try:
            message = orjson.loads(body)
            if message["n"] == self.node_id:
                # Our own commits entered the sequencer before they were sent.
                return
            self.messages_in += 1
            kind = message["k"]
            if kind == "n":
                self.sequencer.offer(decode_notes(message["b"]))
            elif kind == "h":
                self.sequencer.observe(int(message["i"]))
            elif kind == "r":
                self.hub.push_event(str(message["c"]), str(message["f"]).encode())
            elif kind == "m":
                self.hub.set_muted(str(message["c"]), frozenset(map(str, message["m"])))
            elif kind == "t":
                since, until = message["s"], message.get("u")
                self.hub.set_topic(
                    str(message["c"]),
                    str(message["t"]),
                    None if since is None else int(since),
                    None if until is None else int(until),
                )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            log.warning("cluster.bad_message", error=f"{type(exc).__name__}: {exc}")

    def _reconnected(self) -> None:
        # Whatever the others published while we were away never reached us: read the store.
        self.sequencer.resync()
        # And ours may not have reached them: tell them how far we got.
        if self._local_last:
            self._owed = max(self._owed, self._local_last)
        self._wake.set()
        if self.broker.connects > 1 and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._refresh_muted(), name="mercurio-muted")

    async def _refresh_muted(self) -> None:
        # Mute and topic changes made elsewhere while the link was down were lost with their
        # messages: read them back for every client with a stream here.
        assert self.store is not None
        for client_id in self.hub.connected_clients():
            try:
                self.hub.set_muted(client_id, await self.store.muted_categories(client_id))
                self._refresh_topics(client_id, await self.store.topics_of(client_id))
            except Exception as exc:
                log.warning("cluster.muted_refresh_failed", error=type(exc).__name__)
                return

    def _refresh_topics(self, client_id: str, stored: dict[str, int]) -> None:
        known = self.hub.topics_of(client_id) or {}
        for topic in known.keys() - stored.keys():
            self.hub.set_topic(client_id, topic, None)
        for topic, since in stored.items():
            self.hub.set_topic(client_id, topic, since)

    async def _fetch(self, after: int, limit: int) -> list[Notification]:
        assert self.store is not None, "cluster not started"
        return await self.store.committed_after(after, limit=limit)
