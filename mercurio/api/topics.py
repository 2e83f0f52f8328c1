"""Topics: a client's subscriptions (by itself or a publisher on its behalf) and their counts.

Publishing to a topic is in api/events.py with the other publishes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mercurio.api.deps import NodeDep, OwnClientOrPublisher, Publisher
from mercurio.api.errors import ApiError
from mercurio.api.events import TOPIC_RULE
from mercurio.model import TOPIC_PATTERN

router = APIRouter(tags=["topics"])

NOT_SUBSCRIBED = "not subscribed to this topic"


def check_topic(value: str) -> str:
    """The path's topic, or 400 when it is not a slug."""
    if not TOPIC_PATTERN.fullmatch(value):
        raise ApiError(400, f"topic {TOPIC_RULE}")
    return value


@router.put("/api/clients/{clientID}/topics/{topic}")
async def subscribe(
    clientID: str, topic: str, _: OwnClientOrPublisher, node: NodeDep
) -> dict[str, Any]:
    """Subscribe the client: it gets the topic's notifications published from now on."""
    await node.subscribe(clientID, check_topic(topic))
    return {"clientID": clientID, "topic": topic, "status": "subscribed"}


@router.delete("/api/clients/{clientID}/topics/{topic}")
async def unsubscribe(
    clientID: str, topic: str, _: OwnClientOrPublisher, node: NodeDep
) -> dict[str, Any]:
    """Unsubscribe the client; what it already received stays in its inbox."""
    if not await node.unsubscribe(clientID, check_topic(topic)):
        raise ApiError(404, NOT_SUBSCRIBED)
    return {"clientID": clientID, "topic": topic, "status": "unsubscribed"}


@router.get("/api/clients/{clientID}/topics")
async def list_topics(clientID: str, _: OwnClientOrPublisher, node: NodeDep) -> dict[str, Any]:
    """The topics the client follows now, in name order."""
    return {"clientID": clientID, "topics": sorted(await node.store.topics_of(clientID))}


@router.get("/api/topics/{topic}")
async def topic_info(topic: str, _: Publisher, node: NodeDep) -> dict[str, Any]:
    """How many clients follow the topic now (publishers only)."""
    count = await node.store.subscriber_count(check_topic(topic))
    return {"topic": topic, "subscribers": count}
