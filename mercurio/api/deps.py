"""Request dependencies: the node, the caller, and what the caller may touch.

They are all `async def`: FastAPI runs a plain `def` dependency in a worker thread, and the
thread hops cost more than the work itself.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request

from mercurio.api.errors import ApiError
from mercurio.auth import AuthError, Principal, bearer_token
from mercurio.model import CATEGORY_PATTERN, CLIENT_ID_PATTERN
from mercurio.node import Node


class RestApp(FastAPI):
    """The FastAPI application, holding its node as a typed attribute.

    Chosen over app.state (an untyped bag) and over a closure bound through
    dependency_overrides (a per-request lookup the route signatures do not show): the routers
    stay module-level, and mypy checks every `.node` read.
    """

    def __init__(self, node: Node, **options: Any) -> None:
        super().__init__(**options)
        self.node = node


async def get_node(request: Request) -> Node:
    app: RestApp = request.app  # Starlette puts the application in the scope it serves
    return app.node


NodeDep = Annotated[Node, Depends(get_node)]


async def get_principal(
    node: NodeDep, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    # One header at most: the app's OneAuthorization layer refuses repeated ones.
    token = bearer_token(authorization)
    if token is None:
        raise AuthError(401, "missing bearer token (Authorization: Bearer <token>)")
    principal = node.auth.verify(token)
    await node.first_seen.note(principal.user_id)  # a set lookup after the first time
    if principal.email is not None:
        # Where the user's digests go when no address was set through the API; a dict
        # lookup after the first request of this (user, address) in this process.
        await node.channels.contacts.note_token_email(principal.user_id, principal.email)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def check_client_id(client_id: str) -> str:
    """The path's client id, or 400 when it is not one."""
    if not CLIENT_ID_PATTERN.fullmatch(client_id):
        raise ApiError(400, "clientID must be 1-128 letters, digits, '_', '.', ':', '@' or '-'")
    return client_id


async def own_client(clientID: str, principal: PrincipalDep) -> str:
    """The client id of the path, when the caller is that client."""
    check_client_id(clientID)
    if principal.user_id != clientID:
        raise ApiError(403, "this token may not access another client's notifications")
    return clientID


OwnClient = Annotated[str, Depends(own_client)]


async def own_client_or_publisher(clientID: str, principal: PrincipalDep) -> Principal:
    """The caller, when it is the path's client or a publisher (who may act for any client)."""
    check_client_id(clientID)
    if principal.user_id != clientID and not principal.is_publisher:
        raise ApiError(403, "this token may not change another client's settings")
    return principal


OwnClientOrPublisher = Annotated[Principal, Depends(own_client_or_publisher)]


async def require_publisher(principal: PrincipalDep) -> Principal:
    if not principal.is_publisher:
        raise ApiError(403, "this token may not publish (needs the publisher role)")
    return principal


Publisher = Annotated[Principal, Depends(require_publisher)]


def parse_notification_id(value: str) -> int:
    """A notification id from the path or query, or 400."""
    if not value.isascii() or not value.isdigit() or len(value) > 18 or int(value) < 1:
        raise ApiError(400, "notification id must be a positive integer")
    return int(value)


def check_category(value: str, what: str = "category") -> str:
    if not CATEGORY_PATTERN.fullmatch(value):
        raise ApiError(
            400,
            f"{what} must be a slug: 1-32 of a-z, 0-9, '-' or '_', starting with a letter or digit",
        )
    return value
