"""The channels a node runs, built from the settings: consumers to enqueue, dispatchers to send."""

from __future__ import annotations

from dataclasses import dataclass, field

from mercurio.channels import vapid
from mercurio.channels.dispatcher import Dispatcher
from mercurio.channels.endpoints import EndpointPolicy
from mercurio.channels.push import CHANNEL as PUSH
from mercurio.channels.push import PushChannel, PushEnqueuer
from mercurio.channels.webpush import WebPushSender
from mercurio.config import Settings
from mercurio.consumers import Consumer
from mercurio.store import Store
from mercurio.store.outbox import Outbox
from mercurio.store.subscriptions import Subscriptions


@dataclass
class Channels:
    """The node's channels; push_key is None when Web Push is off."""

    subscriptions: Subscriptions
    endpoints: EndpointPolicy
    push_key: str | None = None
    consumers: list[Consumer] = field(default_factory=list)
    dispatchers: dict[str, Dispatcher] = field(default_factory=dict)
    _senders: list[WebPushSender] = field(default_factory=list)

    async def start(self) -> None:
        for dispatcher in self.dispatchers.values():
            await dispatcher.start()

    async def close(self) -> None:
        for dispatcher in self.dispatchers.values():
            await dispatcher.close()
        for sender in self._senders:
            await sender.close()


def build_channels(settings: Settings, store: Store) -> Channels:
    channels = Channels(Subscriptions(store), EndpointPolicy(settings.push_endpoint_hosts))
    key = vapid.load(settings)
    if key is not None:
        sender = WebPushSender(key, vapid.subject(settings))
        channel = PushChannel(store, channels.subscriptions, sender, channels.endpoints)
        dispatcher = Dispatcher(channel, Outbox(store, PUSH, settings.node_id))
        channels.push_key = vapid.public_key_b64(key)
        channels.consumers.append(PushEnqueuer(settings.push_delay, dispatcher.wake))
        channels.dispatchers[PUSH] = dispatcher
        channels._senders.append(sender)
    return channels
