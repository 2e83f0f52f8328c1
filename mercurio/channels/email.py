"""E-mail digests: what a user left unread for MERCURIO_EMAIL_DELAY seconds, in one message.

EmailEnqueuer (a durable consumer) owes one "email" delivery per notification to each recipient
with a usable address, due MERCURIO_EMAIL_DELAY after the notification was made. When one of a
client's rows is due, the outbox leases all of that client's free rows (whole_client), and
EmailChannel sends one digest of those still unread, not deleted and not muted. The dispatcher
deletes every row of the group once the server accepted the message: nothing goes twice.

The one window left: the SMTP server accepted the message (250 to DATA) and this node died
before deleting the rows, a few milliseconds. The rows' lease then runs out (or the restarted
node releases it) and the same digest is sent again with the same Message-ID, derived from
the client and the row ids, so the copies are recognisably one message (many mail systems
drop the second).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from mercurio.channels.digest import Digest, compose, message_domain
from mercurio.channels.dispatcher import SENT, Outcome, Result
from mercurio.channels.smtp import Failure, SendError, SmtpSender
from mercurio.channels.unsubscribe import UnsubscribeLinks
from mercurio.consumers import Consumer
from mercurio.model import Notification
from mercurio.schema import notifications
from mercurio.store import Store
from mercurio.store.contacts import Contacts, anyone_reachable, reachable
from mercurio.store.outbox import Delivery, enqueue
from mercurio.store.reads import row_to_notification, unread, visible

log = structlog.get_logger("mercurio.email")

CHANNEL = "email"


class EmailEnqueuer(Consumer):
    """Owes a digest line to each reachable recipient of every notification (every reachable
    contact, for an announcement), in the transaction that moves the consumer's cursor."""

    name = "email-digest"

    def __init__(self, delay: float, committed: Callable[[], None]) -> None:
        self.delay = delay
        self._ring = committed

    async def handle(self, conn: AsyncConnection, notes: list[Notification]) -> None:
        clients = {note.client_id for note in notes if not note.is_announcement}
        everyone = any(note.is_announcement for note in notes)
        known = await reachable(conn, clients, everyone)
        targets = set(known)
        rows = []
        for note in notes:
            due = note.created_at.timestamp() + self.delay
            owners = known if note.is_announcement else [note.client_id]
            for client_id in owners:
                if client_id in targets:
                    rows.append({"client_id": client_id, "notification_id": note.id, "due_at": due})
        await enqueue(conn, CHANNEL, rows)

    async def wants(self, reader: AsyncConnection) -> bool:
        return await anyone_reachable(reader)

    def committed(self, notes: list[Notification]) -> None:
        self._ring()


class EmailChannel:
    """Sends one client's digest: what its leased rows still owe, in one message."""

    name = CHANNEL
    whole_client = True

    def __init__(
        self,
        store: Store,
        contacts: Contacts,
        links: UnsubscribeLinks,
        sender: SmtpSender,
        *,
        sender_address: str,
        app_url: str,
    ) -> None:
        self.store = store
        self.contacts = contacts
        self.links = links
        self.sender = sender
        self.sender_address = sender_address
        self.app_url = app_url

    async def deliver(self, group: Sequence[Delivery]) -> Outcome:
        client_id = group[0].client_id
        contact = await self.contacts.get(client_id)
        if contact is None or not contact.reachable or contact.email is None:
            return Outcome(Result.DROPPED, "no_address")
        owed = await self.owed(client_id, [delivery.notification_id for delivery in group])
        if not owed:
            return Outcome(Result.DROPPED, "settled")  # all read, deleted or muted meanwhile
        digest = Digest(
            to=contact.email,
            sender=self.sender_address,
            notes=owed,
            app_url=self.app_url,
            unsubscribe_url=await self.links.link(client_id),
            message_id=message_id(client_id, group, message_domain(self.sender_address)),
        )
        try:
            await self.sender.send(compose(digest))
        except SendError as exc:
            if exc.failure is Failure.PERMANENT:
                log.warning("email.rejected", client=client_id, reason=exc.reason)
                return Outcome(Result.FAILED, exc.reason)
            log.info("email.not_sent", client=client_id, reason=exc.reason)
            return Outcome(Result.RETRY, exc.reason)
        log.info("email.sent", client=client_id, notifications=len(owed))
        return SENT

    async def owed(self, client_id: str, ids: list[int]) -> list[Notification]:
        """The notifications among ids the client can still see, has not read nor muted
        (everywhere or for e-mail); newest first."""
        n = notifications
        query = unread(visible(client_id)).where(n.c.id.in_(sorted(set(ids))))
        async with self.store.read_engine().connect() as conn:
            rows = (await conn.execute(query.order_by(n.c.id.desc()))).all()
        chosen = await self.store.preferences(client_id)
        muted = chosen.muted | chosen.email_muted  # muted everywhere, or for e-mail
        notes = [row_to_notification(row) for row in rows]
        return [note for note in notes if still_owed(note, muted)]


def still_owed(note: Notification, muted: frozenset[str]) -> bool:
    """Whether an unread, visible notification belongs in a digest (an expired one is not
    visible: the query left it out)."""
    return note.category not in muted


def message_id(client_id: str, group: Sequence[Delivery], domain: str) -> str:
    """The same for the same client and rows: a resend after a crash is the same message."""
    ids = ",".join(str(delivery.id) for delivery in sorted(group, key=lambda d: d.id))
    digest = hashlib.sha256(f"{client_id}\n{ids}".encode()).hexdigest()[:32]
    return f"<digest.{digest}@{domain}>"
