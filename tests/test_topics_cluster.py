"""Topics across two node processes on one PostgreSQL and a broker: a subscribe made on one
node reaches the hub of the node holding the stream, whichever node publishes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import PUBLISHER, bearer, new_client_id
from tests.helpers import until
from tests.test_brokers import reachable
from tests.test_cluster_nodes import Nodes, Watch

pytestmark = [pytest.mark.timeout(90), pytest.mark.postgres]


@pytest.fixture(params=["redis", "amqp"])
async def nodes(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> AsyncIterator[Nodes]:
    made = Nodes(tmp_path, postgres_url, await reachable(str(request.param)))
    try:
        yield made
    finally:
        await made.close()


async def publish_topic(nodes: Nodes, node: int, topic: str, data: str) -> int:
    answer = await nodes.http.post(
        f"{nodes.url(node)}/api/events/topic",
        json={"topic": topic, "sourceID": "test", "data": data},
        headers=PUBLISHER,
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


async def change(nodes: Nodes, node: int, method: str, client: str, topic: str) -> None:
    answer = await nodes.http.request(
        method, f"{nodes.url(node)}/api/clients/{client}/topics/{topic}", headers=bearer(client)
    )
    assert answer.status_code == 200, answer.text


async def received(nodes: Nodes, watch: Watch, ids: list[int]) -> None:
    await until(lambda: watch.ids == ids, 15, lambda: f"{ids}, got {watch.ids}\n{nodes.logs()}")


async def test_subscribe_on_one_node_stream_on_the_other_publish_on_either(nodes: Nodes) -> None:
    await nodes.start(2)
    topic = f"t-{uuid.uuid4().hex[:8]}"
    before, after, outsider = new_client_id(), new_client_id(), new_client_id()
    await change(nodes, 0, "PUT", before, topic)  # subscribed before its stream opens
    on_b = await nodes.watch(1, before)
    late = await nodes.watch(1, after)
    stranger = await nodes.watch(1, outsider)
    await change(nodes, 0, "PUT", after, topic)  # while its stream is open on the other node

    from_a = await publish_topic(nodes, 0, topic, "from node0")
    from_b = await publish_topic(nodes, 1, topic, "from node1")
    await received(nodes, on_b, [from_a, from_b])
    await received(nodes, late, [from_a, from_b])

    # An unsubscribe on node0 stops node1's live delivery; a unicast fences the stream.
    await change(nodes, 0, "DELETE", after, topic)
    quiet = await publish_topic(nodes, 0, topic, "only for the one still subscribed")
    sentinel = await nodes.unicast(0, after)
    await received(nodes, late, [from_a, from_b, sentinel])
    await received(nodes, on_b, [from_a, from_b, quiet])
    own = await nodes.unicast(1, outsider)
    await received(nodes, stranger, [own])

    # Resuming on the other node replays the same, from the store.
    # From just before the first: the shared database holds other tests' announcements.
    again = await nodes.watch(0, before, last_event_id=from_a - 1)
    await received(nodes, again, [from_a, from_b, quiet])
