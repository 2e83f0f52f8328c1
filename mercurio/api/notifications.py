"""A client's inbox: list, get, read, unread, delete, preferences and stream tickets."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from mercurio.api import answers
from mercurio.api.deps import (
    NodeDep,
    OwnClient,
    PrincipalDep,
    check_category,
    parse_notification_id,
)
from mercurio.api.errors import ApiError
from mercurio.model import Notification, rfc3339

router = APIRouter(prefix="/api/clients/{clientID}", tags=["notifications"])

NOT_FOUND = "notification not found"
MAX_LIMIT = 500


class JSONBytes(Response):
    """A JSON answer whose bytes are already made (stored data is embedded, not re-parsed)."""

    media_type = "application/json"


def notification_json(note: Notification) -> dict[str, Any]:
    out: dict[str, Any] = {
        "notificationID": note.id,
        "eventID": note.event_id,
        "sourceID": note.source_id,
        "data": orjson.Fragment(note.data_json),
        "category": note.category,
        "createdAt": rfc3339(note.created_at),
    }
    if note.read_at is not None:
        out["readAt"] = rfc3339(note.read_at)
    return out


def _json(value: Any) -> JSONBytes:
    return JSONBytes(orjson.dumps(value))


def _limit(raw: str | None) -> int:
    if raw is None:
        return 50
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


@router.get("/notifications", responses=answers.PAGE)
async def list_notifications(
    clientID: OwnClient,
    node: NodeDep,
    status: str = "all",
    limit: str | None = None,
    before: str | None = None,
    category: str | None = None,
) -> JSONBytes:
    """The client's notifications, newest first, with paging."""
    if status not in ("all", "read", "unread"):
        raise ApiError(400, "invalid status: use all, read or unread")
    page = await node.store.page(
        clientID,
        status=status,  # type: ignore[arg-type]
        limit=_limit(limit),
        before=parse_notification_id(before) if before is not None else None,
        category=check_category(category) if category is not None else None,
    )
    return _json(
        {
            "clientID": clientID,
            "notifications": [notification_json(note) for note in page.notifications],
            "unreadCount": page.unread_count,
            "nextBefore": page.next_before,
        }
    )


@router.get("/notifications/unread-count", responses=answers.UNREAD_COUNT)
async def unread_count(clientID: OwnClient, node: NodeDep) -> dict[str, Any]:
    """How many of the client's notifications are unread."""
    return {"clientID": clientID, "unreadCount": await node.store.unread_count(clientID)}


@router.put("/notifications/read", responses=answers.ALL_READ)
async def mark_all_read(
    clientID: OwnClient,
    node: NodeDep,
    category: str | None = None,
) -> dict[str, Any]:
    """Mark every notification (of one category) read."""
    chosen = check_category(category) if category is not None else None
    updated = await node.store.mark_all_read(clientID, chosen)
    await node.notify_read_state(clientID, notification_id=None, status="read", category=chosen)
    return {"status": "read", "updated": updated}


@router.get("/notifications/{notificationID}", responses=answers.ONE)
async def get_notification(clientID: OwnClient, notificationID: str, node: NodeDep) -> JSONBytes:
    """One of the client's notifications."""
    note = await node.store.get(clientID, parse_notification_id(notificationID))
    if note is None:
        raise ApiError(404, NOT_FOUND)
    return _json(notification_json(note))


async def _set_read(node: Any, client_id: str, raw_id: str, read: bool) -> dict[str, str]:
    note = await node.store.set_read(client_id, parse_notification_id(raw_id), read)
    if note is None:
        raise ApiError(404, NOT_FOUND)
    status = "read" if read else "unread"
    await node.notify_read_state(
        client_id, notification_id=note.id, status=status, category=note.category
    )
    return {"status": status}


@router.put("/notifications/{notificationID}/read", responses=answers.READ_STATE)
async def mark_read(clientID: OwnClient, notificationID: str, node: NodeDep) -> dict[str, str]:
    """Mark one notification read."""
    return await _set_read(node, clientID, notificationID, True)


@router.put("/notifications/{notificationID}/unread", responses=answers.READ_STATE)
async def mark_unread(clientID: OwnClient, notificationID: str, node: NodeDep) -> dict[str, str]:
    """Mark one notification unread."""
    return await _set_read(node, clientID, notificationID, False)


@router.delete("/notifications/{notificationID}", responses=answers.DELETED)
async def delete_notification(
    clientID: OwnClient, notificationID: str, node: NodeDep
) -> dict[str, str]:
    """Remove one notification from the client's inbox."""
    nid = parse_notification_id(notificationID)
    if not await node.store.delete(clientID, nid):
        raise ApiError(404, NOT_FOUND)
    await node.notify_read_state(clientID, notification_id=nid, status="deleted")
    return {"status": "deleted"}


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    mutedCategories: list[str] = Field(max_length=100)


@router.get("/preferences", responses=answers.PREFERENCES)
async def get_preferences(clientID: OwnClient, node: NodeDep) -> dict[str, Any]:
    """The client's muted categories."""
    muted = await node.store.muted_categories(clientID)
    return {"clientID": clientID, "mutedCategories": sorted(muted)}


@router.put("/preferences", responses=answers.PREFERENCES)
async def put_preferences(
    clientID: OwnClient, body: PreferencesIn, node: NodeDep
) -> dict[str, Any]:
    """Replace the client's muted categories: muted ones are stored but not pushed live."""
    for category in body.mutedCategories:
        check_category(category, "mutedCategories item")
    muted = await node.set_muted(clientID, body.mutedCategories)
    return {"clientID": clientID, "mutedCategories": sorted(muted)}


@router.post("/stream-tickets", responses=answers.TICKET)
async def stream_ticket(
    clientID: OwnClient, node: NodeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """A single-use ticket to open this client's stream with a native EventSource."""
    ticket, ttl = node.auth.mint_ticket(principal, clientID)
    return {"ticket": ticket, "expiresIn": ttl}
