"""uvicorn's httptools protocol with limits it lacks: header and URL size, header and body time.

httptools buffers a header until it ends, so without a limit one 200 MiB header is 200 MiB
of server memory; a client that never finishes its headers holds a connection forever. The
checks are a few integer comparisons per read and per header: the stream path stays fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

MAX_URL_BYTES = 8 * 1024
LINGER = 1.0
"""Seconds a refused connection keeps reading (and dropping) before it closes: a close with
unread input resets the connection, and the client would lose the answer."""


@dataclass(frozen=True)
class Limits:
    """What one connection may send, and how slowly."""

    max_header_bytes: int = 16 * 1024
    max_url_bytes: int = MAX_URL_BYTES
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 50_000


CONNECTION = "mercurio.connection"
"""The scope key under which the protocol hands the application its Connection."""


class Connection:
    """A connection's limit-keeping state, and whom to tell when it is lost.

    An endpoint that asks to be notified hears of the loss as it happens, without a task
    parked on receive() to turn it into an http.disconnect: an open stream is one task, not two.
    """

    __slots__ = (
        "head_bytes",
        "header_bytes",
        "lost",
        "on_lost",
        "protocol",
        "reading_body",
        "reading_head",
        "refused",
        "timer",
    )

    def __init__(self) -> None:
        self.head_bytes = 0
        """Bytes read while the head was unfinished (httptools holds them)."""
        self.header_bytes = 0
        """Bytes of the headers parsed so far."""
        self.reading_head = False
        self.reading_body = False
        self.refused = False
        self.timer: asyncio.TimerHandle | None = None
        self.lost = False
        self.on_lost: Callable[[], None] | None = None
        self.protocol: GuardedProtocol | None = None

    def notify(self, callback: Callable[[], None] | None) -> None:
        """Call callback once the connection is lost (at once if it is); None: stop."""
        self.on_lost = callback
        if self.lost:
            self.gone()

    def write_now(self, chunk: bytes) -> bool:
        """Write a chunk of the streamed response at once, when nothing waits to go before it;
        False when it cannot (flow control, closing, not chunked): the caller sends it itself.

        The hub writes a live frame to an idle stream through this: one transport write, not
        a wake-up of the stream's task and a trip down the ASGI send chain (bench: that trip
        was most of the CPU of a delivery).
        """
        protocol = self.protocol
        cycle = protocol.cycle if protocol is not None else None
        if protocol is None or cycle is None or self.lost:
            return False
        if cycle.response_complete or not cycle.chunked_encoding or cycle.disconnected:
            return False
        transport = protocol.transport
        if protocol.flow.write_paused or transport.is_closing():
            return False
        if transport.get_write_buffer_size():
            return False  # bytes already queued go first, through flow control
        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        return True

    def outlive_request(self) -> None:
        """The response will long outlive its request (a stream): let the protocol free what
        only a next request on this connection would need."""
        if self.protocol is not None:
            self.protocol.retire_parser()

    def gone(self) -> None:
        """The connection was lost: tell whoever asked, once."""
        self.lost = True
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the answer is already chosen."""


class LeanEvent(asyncio.Event):
    """asyncio.Event keeping its waiters in a list: an empty deque is 0.6 KiB, and uvicorn
    holds two Events per open response (its cycle's and its flow control's), each with at
    most one waiter."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters = []  # type: ignore[assignment]


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests as a list: it only appendlefts and pops, and
    nearly always stays empty, where an empty deque is 0.6 KiB per connection."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


def refusal(status: int, message: str) -> bytes:
    """A complete HTTP response with a JSON error body that closes the connection."""
    body = orjson.dumps({"error": message})
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses oversized heads, slow heads and bodies, and excess
    connections, with a JSON error before the application sees the request."""

    limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One attribute, not seven: uvicorn's protocol already has 28, and past 30 an instance
        # dict stops sharing its keys with the class and grows from 0.3 to 1.6 KiB, per
        # connection (tracemalloc, bench/run.py --tracemalloc).
        self.guard = Connection()
        self.guard.protocol = self
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow._is_writable_event = LeanEvent()
        self.flow._is_writable_event.set()
        if len(self.connections) > self.limits.max_connections:
            self.refuse(503, "too many connections; retry later")
            return
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        self.guard.gone()

    def data_received(self, data: bytes) -> None:
        if self.guard.refused or self.parser is None:
            # Lingering after a refusal, or a stream's parser retired: read and drop what the
            # client still sends.
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            # A callback that raised _Refused has already answered.
            self.refuse(400, "invalid HTTP request")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self.guard.reading_head:
            # httptools holds an unfinished header in memory: count every byte of it.
            self.guard.head_bytes += len(data)
            if self.guard.head_bytes > self.limits.max_header_bytes:
                self.refuse(431, "request headers too large")
            elif self.guard.timer is None:
                # Armed only for a head that did not come whole: most requests arrive in one
                # read and would otherwise start and cancel a timer each.
                self._arm(self.limits.header_timeout)
        elif self.guard.reading_body and self.guard.timer is None:
            self._arm(self.limits.body_timeout)

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        guard = self.guard
        self.scope[CONNECTION] = guard  # type: ignore[literal-required]
        guard.head_bytes = guard.header_bytes = 0
        guard.reading_head = True

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url_bytes:
            self.refuse(414, "request URL too long")
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        guard = self.guard
        guard.header_bytes += len(name) + len(value) + 4
        if guard.header_bytes > self.limits.max_header_bytes:
            self.refuse(431, "request headers too large")
            raise _Refused
        # uvicorn's on_header, inlined: it runs for every header of every request.
        name = name.lower()
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.guard.reading_head = False
        self.guard.reading_body = True
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and not self.parser.should_upgrade():
            # The request is the application's now: what the protocol still holds of it
            # would live as long as the response (hours, for a stream). An upgrade still
            # needs its headers, for _should_upgrade().
            self.cycle.message_event = LeanEvent()
            self.headers = []
            self.url = b""

    def on_message_complete(self) -> None:
        self.guard.reading_body = False
        self._disarm()
        super().on_message_complete()

    def retire_parser(self) -> None:
        """Free the parser (0.9 KiB: httptools' state and a bound method per callback) of a
        connection whose request is read whole and whose response will last, and close the
        connection when that response ends, as nothing could parse a next request. A client
        pipelining one behind a stream gets no answer on this connection, and resends it on
        another (RFC 9112 9.3.2)."""
        cycle = self.cycle
        if cycle is None or cycle.more_body or self.pipeline or self.parser is None:
            return
        cycle.keep_alive = False
        self.parser = None  # type: ignore[assignment]

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        cycle.__class__ = OneWriteCycle  # built by uvicorn's on_headers_complete; same state
        super()._start_asgi_task(cycle, app)

    # -- refusals ---------------------------------------------------------------------------

    def refuse(self, status: int, message: str) -> None:
        """Answer status (unless a response is under way) and close after a short linger."""
        if self.guard.refused:
            return
        self.guard.refused = True
        self._disarm()
        transport = self.transport
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            if cycle is not None and not cycle.response_complete:
                # A body that came too slowly: the application sees a disconnect, and what
                # it still sends is dropped instead of following this answer.
                cycle.disconnected = True
                cycle.message_event.set()
            transport.write(refusal(status, message))
            if transport.can_write_eof():
                transport.write_eof()
            self.loop.call_later(LINGER, transport.close)
        else:
            # Mid-response (a stream): an error here would corrupt it; just end the connection.
            transport.close()

    def _timed_out(self) -> None:
        self.guard.timer = None
        if self.guard.reading_body:
            self.refuse(408, "request body not received in time")
        else:
            self.refuse(408, "request headers not received in time")

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.guard.timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self.guard.timer is not None:
            self.guard.timer.cancel()
            self.guard.timer = None


def guarded_protocol(limits: Limits) -> type[GuardedProtocol]:
    """A GuardedProtocol class carrying these limits (uvicorn builds protocols from a class)."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request cycle, but an answer of known length leaves in one write.

    uvicorn writes the head when the application starts the response and the body when it
    sends it: two send() calls, two TCP segments, for every JSON answer. Each loopback send
    costs the server several µs of kernel time (perf, bench unicast c=64), so the head of a
    Content-Length answer is held until its body and both go together. A streamed (chunked)
    answer's head goes at once, as before: an SSE client must see it before any event.
    """

    held: bytes | None = None

    async def send(self, message: ASGISendEvent) -> None:
        if self.held is not None:
            transport = self.transport
            prefixed = _Prefixed(transport, self.held)
            self.held = None
            self.transport = prefixed  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
                if not self.disconnected:
                    prefixed.flush()  # no body write came (an error): the head goes alone
            return
        if message["type"] != "http.response.start" or self.response_started:
            await super().send(message)
            return
        transport = self.transport
        captured = _Captured()
        self.transport = captured  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = transport
        if captured.data is None:
            return
        if self.chunked_encoding is False and self.scope["method"] != "HEAD":
            self.held = captured.data
        else:
            transport.write(captured.data)


class _Captured:
    """Stands in for the transport while uvicorn writes a head: keeps what it wrote."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None

    def write(self, data: bytes) -> None:
        self.data = data if self.data is None else self.data + data


class _Prefixed:
    """The transport, with a held head written in front of the next write."""

    __slots__ = ("head", "transport")

    def __init__(self, transport: asyncio.Transport, head: bytes) -> None:
        self.transport = transport
        self.head: bytes | None = head

    def write(self, data: bytes) -> None:
        head, self.head = self.head, None
        self.transport.write(data if head is None else head + data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def flush(self) -> None:
        """Write the head now if no write took it."""
        if self.head is not None:
            head, self.head = self.head, None
            self.transport.write(head)
