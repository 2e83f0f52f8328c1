"""POST /api/events/unicast without the framework's layers, for the common, valid request.

Unicast is the publish back ends send most. Through FastAPI it spent two thirds of its CPU in
routing, dependency solving and middleware frames (py-spy, bench/run.py unicast c=64). This
path validates with the very same pydantic model, authenticates with the same Authenticator
and applies the same rate limit; any request it is not sure about (bad JSON, a refused token,
a plain user) goes on to the framework unchanged, so every error answer stays the framework's.
"""

from __future__ import annotations

import time

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercurio.api.errors import ApiError, send_error
from mercurio.api.events import UnicastIn, admit, conflict, items_for
from mercurio.auth import AuthError, bearer_token, single_authorization
from mercurio.errors import EventConflict, StoreUnavailable
from mercurio.limits import PublishBudget
from mercurio.node import Node
from mercurio.stats import PublishStats

PATH = "/api/events/unicast"
JSON = (b"content-type", b"application/json")


class FastUnicast:
    """Serves valid unicasts from publishers directly; hands everything else on."""

    def __init__(
        self, app: ASGIApp, node: Node, budget: PublishBudget, stats: PublishStats
    ) -> None:
        self.app = app
        self.node = node
        self.budget = budget
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        message = await receive()  # BodyLimit has read the whole body into one message
        body = message.get("body", b"") if message["type"] == "http.request" else b""
        request = self._accept(scope, body) if not message.get("more_body") else None
        if request is None:
            await self.app(scope, _replay(message, receive), send)
            return
        await self._publish(request[0], request[1], send)

    def _accept(self, scope: Scope, body: bytes) -> tuple[UnicastIn, str] | None:
        try:
            # The one Authorization header: OneAuthorization, outside, refuses repeats.
            token = bearer_token(single_authorization(scope["headers"]))
            principal = self.node.auth.verify(token) if token else None
            if principal is None or not principal.is_publisher:
                return None
            return UnicastIn.model_validate_json(body), principal.user_id
        except (AuthError, ValidationError):
            return None

    async def _publish(self, request: UnicastIn, publisher: str, send: Send) -> None:
        started = time.perf_counter()
        try:
            items = items_for(request, [request.destinationID], publisher)
            admit(self.budget, self.node.settings.publish_max_bytes_per_request, publisher, items)
            stored = await self.node.publish(items)
        except StoreUnavailable:
            await send_error(send, 503, "store unavailable, retry later", [(b"retry-after", b"1")])
            return
        except EventConflict as exc:
            await _send_api_error(send, conflict(exc))
            return
        except ApiError as exc:
            await _send_api_error(send, exc)
            return
        self.stats.record("unicast", len(stored), time.perf_counter() - started)
        answer = orjson.dumps({"notificationID": stored[0].id, "eventID": stored[0].event_id})
        headers = [JSON, (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


async def _send_api_error(send: Send, exc: ApiError) -> None:
    headers = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    await send_error(send, exc.status, exc.message, headers)


def _replay(first: Message, receive: Receive) -> Receive:
    pending: Message | None = first

    async def replay() -> Message:
        nonlocal pending
        if pending is not None:
            message, pending = pending, None
            return message
        return await receive()

    return replay
