"""Where each client's e-mail digests go: an address set through the API or a token's claim.

An "api" row always wins over a token claim: a client who deleted its address keeps a row
without one, so the next request with the same token does not bring the address back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.ext.asyncio import AsyncConnection

from mercurio.model import utc
from mercurio.schema import contacts
from mercurio.store.engines import EngineSource
from mercurio.store.state import insert_for

c = contacts
API, TOKEN = "api", "token"
SEEN_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Contact:
    client_id: str
    email: str | None
    source: str
    email_off: bool
    updated_at: datetime

    @property
    def reachable(self) -> bool:
        """Whether digests go out: an address, and e-mail not turned off."""
        return self.email is not None and not self.email_off


def normalize_email(value: str) -> str:
    """The address in its normal form, or ValueError saying what is wrong with it.

    An internationalized local part is refused: it needs SMTPUTF8 from every relay on the
    way, and a digest that no server takes would be retried for ever. An internationalized
    domain is kept in its ASCII (punycode) form, which any server takes.
    """
    try:
        valid = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return valid.ascii_email or valid.normalized


def _row(row: sa.Row[object]) -> Contact:
    return Contact(row.client_id, row.email, row.source, bool(row.email_off), utc(row.updated_at))


class Contacts:
    """The contacts table, and the token claims this process has already recorded."""

    def __init__(self, engines: EngineSource) -> None:
        self._engines = engines
        self._seen: dict[tuple[str, str], None] = {}

    async def get(self, client_id: str) -> Contact | None:
        async with self._engines.read_engine().connect() as conn:
            row = (await conn.execute(sa.select(c).where(c.c.client_id == client_id))).first()
        return _row(row) if row is not None else None

    async def put(self, client_id: str, email: str, *, by_client: bool) -> Contact:
        """Set the address. The client itself turns e-mail back on; a publisher's update
        keeps the client's unsubscribe."""
        now = datetime.now(UTC)
        values: dict[str, object] = {"email": email, "source": API, "updated_at": now}
        if by_client:
            values["email_off"] = False
        return await self._upsert(client_id, values)

    async def remove(self, client_id: str) -> Contact:
        """Forget the address, keeping an "api" row so a token claim does not restore it."""
        now = datetime.now(UTC)
        return await self._upsert(client_id, {"email": None, "source": API, "updated_at": now})

    async def turn_off(self, client_id: str) -> Contact:
        """The one-click unsubscribe: no more digests, whatever address comes later."""
        contact = await self.set_enabled(client_id, False)
        assert contact is not None  # turning off always leaves a row
        return contact

    async def set_enabled(self, client_id: str, enabled: bool) -> Contact | None:
        """Turn digests on or off (see set_email_enabled); the row, None when there is none."""
        async with self._engines.write_engine().begin() as conn:
            await set_email_enabled(conn, client_id, enabled)
            row = (await conn.execute(sa.select(c).where(c.c.client_id == client_id))).first()
        return _row(row) if row is not None else None

    async def note_token_email(self, client_id: str, email: str) -> None:
        """Record a token's email claim the first time this process sees it for this client,
        unless the client's address was set through the API (bad addresses are ignored)."""
        key = (client_id, email)
        if key in self._seen:
            return
        try:
            normal = normalize_email(email)
        except ValueError:
            normal = None
        if normal is not None:
            await self._from_token(client_id, normal)
        if len(self._seen) >= SEEN_CACHE_SIZE:
            self._seen.clear()
        self._seen[key] = None

    async def _from_token(self, client_id: str, email: str) -> None:
        now = datetime.now(UTC)
        async with self._engines.write_engine().begin() as conn:
            statement = insert_for(conn)(c).values(
                client_id=client_id, email=email, source=TOKEN, email_off=False, updated_at=now
            )
            # A newer claim replaces an older claim, never an address set through the API.
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[c.c.client_id],
                    set_={"email": email, "updated_at": now},
                    where=sa.and_(c.c.source == TOKEN, c.c.email.is_distinct_from(email)),
                )
            )

    async def _upsert(self, client_id: str, values: dict[str, object]) -> Contact:
        async with self._engines.write_engine().begin() as conn:
            statement = insert_for(conn)(c).values(client_id=client_id, **values)
            await conn.execute(
                statement.on_conflict_do_update(index_elements=[c.c.client_id], set_=values)
            )
            return await _read(conn, client_id)


async def _read(conn: AsyncConnection, client_id: str) -> Contact:
    return _row((await conn.execute(sa.select(c).where(c.c.client_id == client_id))).one())


async def set_email_enabled(conn: AsyncConnection, client_id: str, enabled: bool) -> None:
    """Turn the client's digests on or off, keeping its address.

    Off without a row makes one without an address (source "token", so a token's claim may
    still fill it in): the choice holds for whatever address comes later. On without a row
    changes nothing: digests are on by default, and no address is made up.
    """
    now = datetime.now(UTC)
    if enabled:
        await conn.execute(
            c.update().where(c.c.client_id == client_id).values(email_off=False, updated_at=now)
        )
        return
    statement = insert_for(conn)(c).values(
        client_id=client_id, email=None, source=TOKEN, email_off=True, updated_at=now
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[c.c.client_id], set_={"email_off": True, "updated_at": now}
        )
    )


async def email_enabled(conn: AsyncConnection, client_id: str) -> bool:
    """Whether the client left digests on (true without a row)."""
    query = sa.select(c.c.email_off).where(c.c.client_id == client_id)
    return not (await conn.execute(query)).scalar()


async def reachable(conn: AsyncConnection, client_ids: set[str], everyone: bool) -> Sequence[str]:
    """The clients among these (or of all, with everyone) that digests can reach."""
    query = sa.select(c.c.client_id).where(c.c.email.isnot(None), sa.not_(c.c.email_off))
    if not everyone:
        query = query.where(c.c.client_id.in_(sorted(client_ids)))
    return list((await conn.execute(query.order_by(c.c.client_id))).scalars())


async def anyone_reachable(conn: AsyncConnection) -> bool:
    """Whether any client at all has an address digests may go to."""
    query = sa.select(c.c.client_id).where(c.c.email.isnot(None), sa.not_(c.c.email_off))
    return (await conn.execute(query.limit(1))).first() is not None
