"""A client's inbox: list, get, read, unread, delete, preferences and stream tickets."""

from __future__ import annotations

from typing import Annotated, Any

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
from mercurio.store import PreferenceChanges, Preferences

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
    if note.expires_at is not None:
        out["expiresAt"] = rfc3339(note.expires_at)
    if note.topic is not None:
        out["topic"] = note.topic
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
    muted: str | None = None,
) -> JSONBytes:
    """The client's notifications, newest first, with paging; muted categories are left out
    (of the list and the unread count) unless muted=include."""
    if status not in ("all", "read", "unread"):
        raise ApiError(400, "invalid status: use all, read or unread")
    page = await node.store.page(
        clientID,
        status=status,  # type: ignore[arg-type]
        limit=_limit(limit),
        before=parse_notification_id(before) if before is not None else None,
        category=check_category(category) if category is not None else None,
        with_muted=_with_muted(muted),
    )
    return _json(
        {
            "clientID": clientID,
            "notifications": [notification_json(note) for note in page.notifications],
            "unreadCount": page.unread_count,
            "nextBefore": page.next_before,
        }
    )


def _with_muted(raw: str | None) -> bool:
    if raw is None or raw == "exclude":
        return False
    if raw == "include":
        return True
    raise ApiError(400, "invalid muted: use include or exclude")


@router.get("/notifications/unread-count", responses=answers.UNREAD_COUNT)
async def unread_count(
    clientID: OwnClient, node: NodeDep, muted: str | None = None
) -> dict[str, Any]:
    """How many of the client's notifications are unread (muted ones only with muted=include)."""
    count = await node.store.unread_count(clientID, with_muted=_with_muted(muted))
    return {"clientID": clientID, "unreadCount": count}


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


MAX_MUTED = 100
Categories = Annotated[list[str], Field(max_length=MAX_MUTED)]


def _no_default(schema: dict[str, Any]) -> None:
    # A field left out keeps what is stored: its placeholder default is no value to document.
    schema.pop("default", None)


UNCHANGED: dict[str, Any] = {"json_schema_extra": _no_default}
"""Field options of a field that may be left out (which were given: model_fields_set)."""


class ChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = Field(True, **UNCHANGED)
    mutedCategories: Categories = Field(default_factory=list, **UNCHANGED)


class ChannelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    push: ChannelIn = Field(default_factory=ChannelIn, **UNCHANGED)
    email: ChannelIn = Field(default_factory=ChannelIn, **UNCHANGED)


class PreferencesIn(BaseModel):
    """Fields left out keep the stored value, those given replace it (null is refused)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    mutedCategories: Categories = Field(default_factory=list, **UNCHANGED)
    channels: ChannelsIn = Field(default_factory=ChannelsIn, **UNCHANGED)


def preferences_json(client_id: str, chosen: Preferences) -> dict[str, Any]:
    return {
        "clientID": client_id,
        "mutedCategories": sorted(chosen.muted),
        "channels": {
            "push": {"enabled": not chosen.push_off, "mutedCategories": sorted(chosen.push_muted)},
            "email": {
                "enabled": not chosen.email_off,
                "mutedCategories": sorted(chosen.email_muted),
            },
        },
    }


def _given(model: BaseModel, field: str) -> Any:
    """The field's value when the body has it, else None."""
    return getattr(model, field) if field in model.model_fields_set else None


def _categories(model: BaseModel, where: str) -> frozenset[str] | None:
    values: list[str] | None = _given(model, "mutedCategories")
    if values is None:
        return None
    for value in values:
        try:
            check_category(value, f"{where}mutedCategories item")
        except ApiError as exc:
            raise ApiError(422, exc.message) from None  # a bad body, like pydantic's refusals
    return frozenset(values)


def _off(channel: ChannelIn) -> bool | None:
    enabled: bool | None = _given(channel, "enabled")
    return None if enabled is None else not enabled


def preference_changes(body: PreferencesIn) -> PreferenceChanges:
    """What the body changes, checked; 422 when it is nothing or has a bad category."""
    push, email = body.channels.push, body.channels.email
    change = PreferenceChanges(
        muted=_categories(body, ""),
        push_off=_off(push),
        push_muted=_categories(push, "channels.push."),
        email_off=_off(email),
        email_muted=_categories(email, "channels.email."),
    )
    if change == PreferenceChanges():
        raise ApiError(
            422, "nothing to change: give mutedCategories, or channels.push or channels.email"
        )
    return change


@router.get("/preferences", responses=answers.PREFERENCES)
async def get_preferences(clientID: OwnClient, node: NodeDep) -> dict[str, Any]:
    """The client's muted categories (everywhere), and per channel: on or off, and muted."""
    return preferences_json(clientID, await node.store.preferences(clientID))


@router.put("/preferences", responses=answers.PREFERENCES)
async def put_preferences(
    clientID: OwnClient, body: PreferencesIn, node: NodeDep
) -> dict[str, Any]:
    """Replace the preferences the body gives, keep the others. Categories muted everywhere
    are stored but not pushed live, nor by Web Push, nor e-mailed; a channel's own muted
    categories and its switch apply to that channel alone."""
    chosen = await node.update_preferences(clientID, preference_changes(body))
    return preferences_json(clientID, chosen)


@router.post("/stream-tickets", responses=answers.TICKET)
async def stream_ticket(
    clientID: OwnClient, node: NodeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """A single-use ticket to open this client's stream with a native EventSource."""
    ticket, ttl = node.auth.mint_ticket(principal, clientID)
    return {"ticket": ticket, "expiresIn": ttl}
