"""The channels a node runs, built from the settings: consumers to enqueue, dispatchers to send."""

from __future__ import annotations

from dataclasses import dataclass, field

from mercurio.channels import vapid
from mercurio.channels.dispatcher import Dispatcher
from mercurio.channels.email import CHANNEL as EMAIL
from mercurio.channels.email import EmailChannel, EmailEnqueuer
from mercurio.channels.endpoints import EndpointPolicy
from mercurio.channels.push import CHANNEL as PUSH
from mercurio.channels.push import PushChannel, PushEnqueuer
from mercurio.channels.smtp import SmtpSender, parse_smtp_url
from mercurio.channels.unsubscribe import UnsubscribeLinks
from mercurio.channels.webpush import WebPushSender
from mercurio.config import Settings
from mercurio.consumers import Consumer
from mercurio.store import Store
from mercurio.store.contacts import Contacts
from mercurio.store.outbox import Outbox
from mercurio.store.subscriptions import Subscriptions


@dataclass
class Channels:
    """The node's channels; push_key is None when Web Push is off."""

    subscriptions: Subscriptions
    endpoints: EndpointPolicy
    contacts: Contacts
    unsubscribe: UnsubscribeLinks
    """Kept with e-mail off too: a link in an old digest still works."""
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
    channels = Channels(
        Subscriptions(store),
        EndpointPolicy(settings.push_endpoint_hosts),
        Contacts(store),
        UnsubscribeLinks(store, settings.base_url),
    )
    key = vapid.load(settings)
    if key is not None:
        sender = WebPushSender(key, vapid.subject(settings))
        channel = PushChannel(store, channels.subscriptions, sender, channels.endpoints)
        dispatcher = Dispatcher(channel, Outbox(store, PUSH, settings.node_id))
        channels.push_key = vapid.public_key_b64(key)
        channels.consumers.append(PushEnqueuer(settings.push_delay, dispatcher.wake))
        channels.dispatchers[PUSH] = dispatcher
        channels._senders.append(sender)
    if settings.email_enabled:
        add_email(channels, settings, store)
    return channels


def add_email(channels: Channels, settings: Settings, store: Store) -> None:
    """E-mail digests: a consumer owes them, a dispatcher sends them over SMTP."""
    channel = EmailChannel(
        store,
        channels.contacts,
        channels.unsubscribe,
        SmtpSender(parse_smtp_url(settings.smtp_url)),
        sender_address=settings.email_sender,
        app_url=f"{settings.base_url}/app/",
    )
    # A few SMTP connections at a time: mail servers throttle a client that opens many.
    dispatcher = Dispatcher(channel, Outbox(store, EMAIL, settings.node_id), concurrency=4)
    channels.consumers.append(EmailEnqueuer(settings.email_delay, dispatcher.wake))
    channels.dispatchers[EMAIL] = dispatcher
