"""The shapes of the inbox's JSON answers, declared for the OpenAPI document only.

The routes build their answers themselves (the list embeds stored data as it is, without
re-parsing it), so these models describe the answers and never validate them: they are
declared as `responses={200: {"model": ...}}`, not as response_model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, JsonValue


class NotificationOut(BaseModel):
    """One notification of a client's inbox."""

    notificationID: int
    eventID: str
    sourceID: str
    data: JsonValue
    category: str
    createdAt: str = Field(description="RFC 3339, UTC")
    readAt: str | None = Field(default=None, description="RFC 3339, UTC; absent when unread")
    expiresAt: str | None = Field(
        default=None, description="RFC 3339, UTC; absent when it never expires"
    )


class NotificationPage(BaseModel):
    """A page of the inbox, newest first; pass nextBefore as `before` for the next one."""

    clientID: str
    notifications: list[NotificationOut]
    unreadCount: int
    nextBefore: int | None


class UnreadCount(BaseModel):
    clientID: str
    unreadCount: int


class ReadState(BaseModel):
    status: Literal["read", "unread"]


class AllRead(BaseModel):
    status: Literal["read"]
    updated: int = Field(description="How many notifications changed")


class Deleted(BaseModel):
    status: Literal["deleted"]


class ChannelPreferences(BaseModel):
    enabled: bool
    mutedCategories: list[str] = Field(description="Muted for this channel only")


class ChannelsPreferences(BaseModel):
    push: ChannelPreferences
    email: ChannelPreferences


class Preferences(BaseModel):
    clientID: str
    mutedCategories: list[str] = Field(description="Muted everywhere")
    channels: ChannelsPreferences


class StreamTicket(BaseModel):
    ticket: str
    expiresIn: int = Field(description="Seconds until the ticket expires")


def _answer(model: type[BaseModel], description: str) -> dict[int | str, dict[str, object]]:
    return {200: {"model": model, "description": description}}


PAGE = _answer(NotificationPage, "A page of the client's notifications")
ONE = _answer(NotificationOut, "The notification")
UNREAD_COUNT = _answer(UnreadCount, "The client's unread count")
READ_STATE = _answer(ReadState, "The notification's new state")
ALL_READ = _answer(AllRead, "Every (matching) notification is read")
DELETED = _answer(Deleted, "The notification is gone")
PREFERENCES = _answer(Preferences, "The client's muted categories and channel switches")
TICKET = _answer(StreamTicket, "A single-use ticket for ?ticket= on the stream")
