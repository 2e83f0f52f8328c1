"""Web Push: the key browsers subscribe with, and each client's subscriptions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from mercurio.api.deps import NodeDep, OwnClient, PrincipalDep
from mercurio.api.errors import ApiError
from mercurio.channels.endpoints import EndpointRefused, check_keys
from mercurio.model import rfc3339
from mercurio.store.subscriptions import PushSubscription

router = APIRouter(tags=["push"])

PUSH_OFF = "web push is off on this server"
NOT_FOUND = "push subscription not found"


class SubscriptionKeys(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    p256dh: str = Field(min_length=1, max_length=128)
    auth: str = Field(min_length=1, max_length=64)


class SubscriptionIn(BaseModel):
    """What the browser's PushSubscription.toJSON() gives."""

    model_config = ConfigDict(extra="ignore", strict=True)

    endpoint: str = Field(min_length=1, max_length=2048)
    expirationTime: int | float | None = None
    keys: SubscriptionKeys


def _json(subscription: PushSubscription) -> dict[str, Any]:
    return {
        "id": subscription.id,
        "endpoint": subscription.endpoint,
        "createdAt": rfc3339(subscription.created_at),
    }


def _push_on(node: NodeDep) -> None:
    if node.channels.push_key is None:
        raise ApiError(404, PUSH_OFF)


@router.get("/api/push/vapid-public-key")
async def vapid_public_key(node: NodeDep, _: PrincipalDep) -> dict[str, str]:
    """The applicationServerKey for PushManager.subscribe(); 404 when Web Push is off."""
    _push_on(node)
    assert node.channels.push_key is not None
    return {"publicKey": node.channels.push_key}


@router.post("/api/clients/{clientID}/push-subscriptions", status_code=201)
async def add_subscription(clientID: OwnClient, body: SubscriptionIn, node: NodeDep) -> Any:
    """Keep this browser's subscription (the same endpoint again: the same one, updated)."""
    _push_on(node)
    try:
        node.channels.endpoints.check(body.endpoint)
        check_keys(body.keys.p256dh, body.keys.auth)
    except EndpointRefused as exc:
        raise ApiError(422, str(exc)) from None
    subscription = await node.channels.subscriptions.register(
        clientID, body.endpoint, body.keys.p256dh, body.keys.auth
    )
    return JSONResponse(_json(subscription), status_code=201)


@router.get("/api/clients/{clientID}/push-subscriptions")
async def list_subscriptions(clientID: OwnClient, node: NodeDep) -> dict[str, Any]:
    """The client's browsers that take pushes."""
    found = await node.channels.subscriptions.of_client(clientID)
    return {"clientID": clientID, "subscriptions": [_json(s) for s in found]}


@router.delete("/api/clients/{clientID}/push-subscriptions/{subscriptionID}")
async def delete_subscription(
    clientID: OwnClient, subscriptionID: str, node: NodeDep
) -> dict[str, str]:
    """Stop pushing to one of the client's browsers."""
    if not subscriptionID.isascii() or not subscriptionID.isdigit() or len(subscriptionID) > 18:
        raise ApiError(400, "subscription id must be a positive integer")
    if not await node.channels.subscriptions.remove(int(subscriptionID), clientID):
        raise ApiError(404, NOT_FOUND)
    return {"status": "deleted"}
