"""A strict mock Web Push service on loopback: subscriptions with real keys, pushes checked
the way a real push service checks them (RFC 8030 push, RFC 8291 aes128gcm, RFC 8292 VAPID),
decrypted, and recorded for the test to read.

Answers, in the order the checks run:

- not POST → 405; a path that is not a known subscription → 404 (what real services answer
  for a gone subscription).
- VAPID (RFC 8292 §3): no `Authorization`, a scheme other than `vapid` (the legacy `WebPush`
  scheme included), a missing `t=` or `k=`, a `k=` that is not an uncompressed P-256 point,
  a JWT that is not ES256, a bad signature, an `aud` that is not the endpoint's origin, an
  `exp` missing, past or more than 24 h ahead, a `sub` that is not `mailto:`/`https:`, or one
  other than `expected_subject` → 401 (as Mozilla's autopush answers; one status for every
  token fault keeps the caller's handling simple). A valid token signed by a key other than
  the one given to `expect_vapid_key` → 403 (RFC 8292 §4.2: a mismatched key MUST be 403).
- `TTL` missing or not a non-negative integer, `Urgency` not very-low/low/normal/high,
  `Topic` empty, longer than 32 or outside the base64url alphabet → 400.
- a body over 4096 bytes → 413 (RFC 8030 §7.2).
- `Content-Encoding` not aes128gcm, no body, a header whose key id is not the sender's P-256
  point, more than one record (RFC 8291 §4), or a body that does not decrypt with the
  subscription's keys → 400.

Only then do `hold()` and `script()` apply, so a push that was held or answered a scripted
error was a correct one. `refused` lists the check failures above, never scripted answers;
`attempts` lists every answered push that reached a known subscription.

The HTTP/1.1 server is asyncio + h11 (keep-alive, chunked or sized bodies): no polling and
an immediate shutdown that also drops held requests, which uvicorn's graceful shutdown would
wait on.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import re
import secrets
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import h11
import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

MAX_PAYLOAD = 4096  # RFC 8030 §7.2: a push service MUST accept at least 4096 bytes, we take no more
MAX_READ = 65536  # a body past this is refused before it is read to the end
MAX_EXP_AHEAD = 24 * 3600  # RFC 8292 §2: exp MUST NOT be more than 24 hours from the request
URGENCIES = ("very-low", "low", "normal", "high")
TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
TTL = re.compile(r"[0-9]+")

Status = int | tuple[int, dict[str, str]]
T = TypeVar("T")


def b64url(data: bytes) -> str:
    """Base64url without padding, as browsers and VAPID write keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding; ValueError on anything else."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(eq=False)
class PushDevice:
    """A browser's subscription: its own P-256 key pair and 16-byte auth secret."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    auth: bytes = field(repr=False)

    @property
    def public_key(self) -> bytes:
        """The uncompressed P-256 point (65 bytes) the browser hands out as p256dh."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def subscription_json(self) -> dict[str, Any]:
        """What `PushSubscription.toJSON()` gives the page to send to the server."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(self.public_key), "auth": b64url(self.auth)},
        }


@dataclass
class Received:
    """One accepted push, decrypted."""

    device: PushDevice
    payload: bytes
    headers: dict[str, str]
    ttl: int
    urgency: str | None
    topic: str | None
    vapid_claims: dict[str, Any]
    vapid_public_key: str

    def json(self) -> Any:
        return json.loads(self.payload)


class Refusal(Exception):
    """A check failed: answer `status`, record `reason`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class MockPushService:
    """A strict push service on 127.0.0.1 (free port) in the running event loop."""

    def __init__(self) -> None:
        self.base_url = ""
        self.received: list[Received] = []
        self.refused: list[tuple[str, int, str]] = []
        self.attempts: list[tuple[PushDevice, int]] = []
        self.held: list[Received] = []
        self.expected_subject: str | None = None
        self._expected_key: bytes | None = None
        self._devices: dict[str, PushDevice] = {}
        self._scripts: dict[str, deque[Status]] = {}
        self._holding = False
        self._holding_for: set[str] = set()
        self._changed: asyncio.Condition | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def __aenter__(self) -> MockPushService:
        self._changed = asyncio.Condition()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Held requests never finish on their own: drop every connection, then wait them out.
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    # What the test controls.

    def device(self) -> PushDevice:
        """A new subscription on this service."""
        token = secrets.token_urlsafe(16)
        device = PushDevice(
            endpoint=f"{self.base_url}/push/{token}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth=secrets.token_bytes(16),
        )
        self._devices[f"/push/{token}"] = device
        return device

    def script(self, device: PushDevice, *statuses: Status) -> None:
        """The next correct pushes to `device` get these answers in order, then 201 again."""
        self._scripts.setdefault(_path(device.endpoint), deque()).extend(statuses)

    def hold(self, on: bool) -> None:
        """While on, correct pushes are read and never answered (they go to `held`)."""
        self._holding = on

    def hold_for(self, device: PushDevice) -> None:
        """Correct pushes to this device alone are read and never answered (held)."""
        self._holding_for.add(_path(device.endpoint))

    def expect_vapid_key(self, public_b64: str | None) -> None:
        """Answer 403 to a push signed by any other VAPID key (None: accept any key)."""
        self._expected_key = None if public_b64 is None else b64url_decode(public_b64)

    def forget(self, device: PushDevice) -> None:
        """The subscription is gone: pushes to it now get 404."""
        self._devices.pop(_path(device.endpoint), None)

    async def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """Wait until `count` pushes were received; TimeoutError says what came instead."""
        return await self._wait(lambda: self.received, count, timeout)

    async def wait_for_held(self, count: int, timeout: float = 10) -> list[Received]:
        """Wait until `count` pushes are being held unanswered."""
        return await self._wait(lambda: self.held, count, timeout)

    async def _wait(
        self, items: Callable[[], list[Received]], count: int, timeout: float
    ) -> list[Received]:
        assert self._changed is not None, "use `async with MockPushService()`"
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(items()) >= count)
        except TimeoutError:
            raise TimeoutError(
                f"{len(items())} of {count} pushes after {timeout} s; "
                f"received {len(self.received)}, held {len(self.held)}, "
                f"refused {self.refused}, attempts {[s for _, s in self.attempts]}"
            ) from None
        return list(items())

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # HTTP/1.1 over h11.

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_READ)
        try:
            while True:
                request = await _next_request(conn, reader)
                if request is None:
                    return
                head, body = request
                status, headers, content = await self._answer(head, body)
                if body is None:  # not read to the end: the connection cannot be reused
                    headers = {**headers, "Connection": "close"}
                writer.write(_response(conn, status, headers, content))
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, OSError):
            return
        except asyncio.CancelledError:
            # Only __aexit__ cancels a connection. Ending normally keeps asyncio's stream callback
            # from logging the cancel as an "exception in callback" at every shutdown.
            return
        finally:
            self._connections.pop(task, None)
            writer.transport.abort()

    async def _answer(
        self, head: h11.Request, body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        path = head.target.decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
        device = self._devices.get(path)
        try:
            if head.method != b"POST":
                raise Refusal(405, f"method {head.method.decode()} is not POST")
            if device is None:
                raise Refusal(404, f"no subscription at {path}")
            push = self._check(device, headers, body)
        except Refusal as refusal:
            self.refused.append((f"{self.base_url}{path}", refusal.status, refusal.reason))
            if device is not None and head.method == b"POST":
                self.attempts.append((device, refusal.status))
            return refusal.status, {}, json.dumps({"error": refusal.reason}).encode()
        if self._holding or path in self._holding_for:
            self.held.append(push)
            await self._notify()
            await asyncio.Future()  # never answered; cancelled when the service closes
        status, extra = self._scripted(path)
        self.attempts.append((device, status))
        if status != 201:
            return status, extra, json.dumps({"error": "scripted"}).encode()
        self.received.append(push)
        await self._notify()
        location = f"{self.base_url}/message/{secrets.token_urlsafe(12)}"
        return 201, {"Location": location, "TTL": str(push.ttl), **extra}, b""

    def _scripted(self, path: str) -> tuple[int, dict[str, str]]:
        script = self._scripts.get(path)
        answer: Status = script.popleft() if script else 201
        return answer if isinstance(answer, tuple) else (answer, {})

    # The checks.

    def _check(self, device: PushDevice, headers: dict[str, str], body: bytes | None) -> Received:
        claims, key = self._vapid(headers.get("authorization"), _origin(device.endpoint))
        ttl, urgency, topic = _push_headers(headers)
        if body is None or len(body) > MAX_PAYLOAD:
            raise Refusal(413, f"body over {MAX_PAYLOAD} bytes")
        payload = _decrypt(device, headers.get("content-encoding"), body)
        return Received(device, payload, headers, ttl, urgency, topic, claims, key)

    def _vapid(self, authorization: str | None, origin: str) -> tuple[dict[str, Any], str]:
        token, key_text, public_key = _vapid_parts(authorization)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public_key,
                algorithms=["ES256"],
                options={"require": ["exp", "aud", "sub"], "verify_aud": False},
            )
        except jwt.PyJWTError as error:
            raise Refusal(401, f"vapid: {type(error).__name__}: {error}") from None
        if claims["aud"] != origin:
            raise Refusal(401, f"vapid: aud {claims['aud']!r} is not the origin {origin!r}")
        exp = claims["exp"]
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise Refusal(401, f"vapid: exp {exp!r} is not a number")
        if exp > time.time() + MAX_EXP_AHEAD:
            raise Refusal(401, f"vapid: exp {claims['exp']!r} is more than 24 h ahead")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise Refusal(401, f"vapid: sub {sub!r} is not a mailto: or https: URI")
        if self.expected_subject is not None and sub != self.expected_subject:
            raise Refusal(401, f"vapid: sub {sub!r} is not {self.expected_subject!r}")
        if self._expected_key is not None and b64url_decode(key_text) != self._expected_key:
            raise Refusal(403, "vapid: k is not the expected application server key")
        return claims, key_text


def _vapid_parts(authorization: str | None) -> tuple[str, str, ec.EllipticCurvePublicKey]:
    """The JWT, the k= text and its key from `vapid t=<jwt>, k=<point>` (RFC 8292 §3)."""
    if not authorization:
        raise Refusal(401, "no Authorization header")
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise Refusal(401, f"Authorization scheme {scheme!r} is not vapid")
    params: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise Refusal(401, f"vapid: malformed parameter {item.strip()!r}")
        params[name.strip().lower()] = value.strip()
    if "t" not in params or "k" not in params:
        raise Refusal(401, "vapid: t= and k= are both required")
    try:
        point = b64url_decode(params["k"])
        if len(point) != 65 or point[0] != 4:
            raise ValueError("not an uncompressed point")
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as error:
        raise Refusal(401, f"vapid: k is not a P-256 public key ({error})") from None
    return params["t"], params["k"], public_key


def _push_headers(headers: dict[str, str]) -> tuple[int, str | None, str | None]:
    """TTL, Urgency and Topic (RFC 8030 §5.2, §5.3, §5.4), checked."""
    ttl = headers.get("ttl")
    if ttl is None or not TTL.fullmatch(ttl.strip()):
        raise Refusal(400, f"TTL {ttl!r} is not a non-negative integer")
    urgency = headers.get("urgency")
    if urgency is not None and urgency not in URGENCIES:
        raise Refusal(400, f"Urgency {urgency!r} is not one of {URGENCIES}")
    topic = headers.get("topic")
    if topic is not None and not TOPIC.fullmatch(topic):
        raise Refusal(400, f"Topic {topic!r} is not 1-32 base64url characters")
    return int(ttl), urgency, topic


def _decrypt(device: PushDevice, encoding: str | None, body: bytes) -> bytes:
    """The plaintext of an RFC 8291 aes128gcm body for this subscription."""
    if (encoding or "").strip().lower() != "aes128gcm":
        raise Refusal(400, f"Content-Encoding {encoding!r} is not aes128gcm")
    if len(body) < 21:
        raise Refusal(400, "no aes128gcm header")
    (rs,) = struct.unpack("!I", body[16:20])
    idlen = body[20]
    if idlen != 65 or body[21:22] != b"\x04":
        raise Refusal(400, "key id is not the sender's uncompressed P-256 point")
    if len(body) - 21 - idlen > rs:
        raise Refusal(400, "more than one record (RFC 8291 §4 wants one)")
    try:
        plaintext: bytes = http_ece.decrypt(
            body, private_key=device.private_key, auth_secret=device.auth, version="aes128gcm"
        )
    # Garbage can fail anywhere in the decoder (bad tag, short record, bad padding): every
    # failure means the same thing to the sender, it did not encrypt for this subscription.
    except Exception as error:
        raise Refusal(400, f"body does not decrypt: {type(error).__name__} {error}") from None
    return plaintext


async def _next_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request, bytes | None] | None:
    """The next request and its body (None when over MAX_READ), or None at end of stream."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_READ:
                assert head is not None
                return head, None
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None


def _response(conn: h11.Connection, status: int, headers: dict[str, str], body: bytes) -> bytes:
    fields = [(k, v) for k, v in headers.items()] + [("Content-Length", str(len(body)))]
    if body:
        fields.append(("Content-Type", "application/json"))
    out = conn.send(h11.Response(status_code=status, headers=fields)) or b""
    if body:
        out += conn.send(h11.Data(data=body)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


def _path(endpoint: str) -> str:
    return "/" + endpoint.split("/", 3)[3]


def _origin(endpoint: str) -> str:
    """scheme://host:port of an endpoint: what a VAPID aud must be."""
    return "/".join(endpoint.split("/", 3)[:3])


class ThreadedPushService:
    """MockPushService in its own thread and event loop, for sync tests (a `with` block)."""

    def __init__(self) -> None:
        self._service = MockPushService()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mock-push", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> ThreadedPushService:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None or self._loop is None:
            raise RuntimeError("mock push service did not start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with self._service:
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(main())
        except BaseException as error:
            self._error = error
            raise
        finally:
            self._ready.set()

    def _in_loop(self, call: Callable[[], T]) -> T:
        """Run `call` on the service's loop, so its state only ever changes on that thread."""
        assert self._loop is not None, "use `with ThreadedPushService()`"
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(call())
            except BaseException as error:
                future.set_exception(error)

        self._loop.call_soon_threadsafe(run)
        return future.result(10)

    @property
    def base_url(self) -> str:
        return self._service.base_url

    @property
    def received(self) -> list[Received]:
        return self._in_loop(lambda: list(self._service.received))

    @property
    def refused(self) -> list[tuple[str, int, str]]:
        return self._in_loop(lambda: list(self._service.refused))

    @property
    def attempts(self) -> list[tuple[PushDevice, int]]:
        return self._in_loop(lambda: list(self._service.attempts))

    @property
    def held(self) -> list[Received]:
        return self._in_loop(lambda: list(self._service.held))

    @property
    def expected_subject(self) -> str | None:
        return self._service.expected_subject

    @expected_subject.setter
    def expected_subject(self, value: str | None) -> None:
        self._in_loop(lambda: setattr(self._service, "expected_subject", value))

    def device(self) -> PushDevice:
        return self._in_loop(self._service.device)

    def script(self, device: PushDevice, *statuses: Status) -> None:
        self._in_loop(lambda: self._service.script(device, *statuses))

    def hold(self, on: bool) -> None:
        self._in_loop(lambda: self._service.hold(on))

    def expect_vapid_key(self, public_b64: str | None) -> None:
        self._in_loop(lambda: self._service.expect_vapid_key(public_b64))

    def forget(self, device: PushDevice) -> None:
        self._in_loop(lambda: self._service.forget(device))

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """Block until `count` pushes were received."""
        return self._blocking(self._service.wait_for(count, timeout), timeout)

    def wait_for_held(self, count: int, timeout: float = 10) -> list[Received]:
        """Block until `count` pushes are being held."""
        return self._blocking(self._service.wait_for_held(count, timeout), timeout)

    def _blocking(self, waiting: Any, timeout: float) -> list[Received]:
        assert self._loop is not None, "use `with ThreadedPushService()`"
        result: list[Received] = asyncio.run_coroutine_threadsafe(waiting, self._loop).result(
            timeout + 5
        )
        return result


async def _try_by_hand(server: str, client_id: str) -> None:
    """Subscribe a mock device for `client_id` on a development server, print what it gets."""
    import httpx

    async with MockPushService() as service, httpx.AsyncClient(base_url=server) as http:
        answer = await http.post("/api/dev/token", json={"userID": client_id})
        answer.raise_for_status()
        auth = {"Authorization": f"Bearer {answer.json()['token']}"}
        device = service.device()
        answer = await http.post(
            f"/api/clients/{client_id}/push-subscriptions",
            json=device.subscription_json(),
            headers=auth,
        )
        if answer.status_code != 201:
            raise SystemExit(f"registering the subscription: {answer.status_code} {answer.text}")
        print(f"subscribed {client_id} at {device.endpoint}; waiting for pushes (Ctrl-C stops)")
        seen = 0
        while True:
            received = await service.wait_for(seen + 1, timeout=86400)
            for push in received[seen:]:
                print(f"push (TTL {push.ttl}, Topic {push.topic}): {push.payload.decode()}")
            seen = len(received)


if __name__ == "__main__":
    # Web Push by hand, offline: run the server with MERCURIO_PUSH_ENDPOINT_HOSTS=127.0.0.1,
    # then `python -m tests.push_service [server] [clientID]` and publish to that client.
    import sys

    args = sys.argv[1:] + ["http://127.0.0.1:8000", "123"][len(sys.argv[1:]) :]
    try:
        asyncio.run(_try_by_hand(args[0], args[1]))
    except KeyboardInterrupt:
        pass
