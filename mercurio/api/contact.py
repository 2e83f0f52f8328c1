"""Where a client's e-mail digests go, and the one-click unsubscribe their links lead to."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import HTMLResponse

from mercurio.api.deps import NodeDep, OwnClientOrPublisher, check_client_id
from mercurio.api.errors import ApiError
from mercurio.store.contacts import Contact, normalize_email

router = APIRouter(tags=["email"])

NO_CONTACT = "no contact address"
BAD_LINK = "this unsubscribe link is not valid"
UNSUBSCRIBE = "/api/email/unsubscribe"


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    email: str = Field(min_length=1, max_length=320)


def _json(contact: Contact) -> dict[str, Any]:
    return {
        "clientID": contact.client_id,
        "email": contact.email,
        "source": contact.source,
        "emailEnabled": contact.reachable,
    }


@router.put("/api/clients/{clientID}/contact")
async def put_contact(
    clientID: str, body: ContactIn, principal: OwnClientOrPublisher, node: NodeDep
) -> dict[str, Any]:
    """Send this client's digests to this address (the client itself also turns them on)."""
    try:
        email = normalize_email(body.email)
    except ValueError as exc:
        raise ApiError(422, f"email: {exc}") from None
    by_client = principal.user_id == clientID
    return _json(await node.channels.contacts.put(clientID, email, by_client=by_client))


@router.get("/api/clients/{clientID}/contact")
async def get_contact(clientID: str, _: OwnClientOrPublisher, node: NodeDep) -> dict[str, Any]:
    """Where this client's digests go; 404 when nowhere."""
    contact = await node.channels.contacts.get(clientID)
    if contact is None or contact.email is None:
        raise ApiError(404, NO_CONTACT)
    return _json(contact)


@router.delete("/api/clients/{clientID}/contact")
async def delete_contact(clientID: str, _: OwnClientOrPublisher, node: NodeDep) -> dict[str, str]:
    """Send this client no more digests (a token's email claim does not bring them back)."""
    await node.channels.contacts.remove(clientID)
    return {"status": "deleted"}


async def _check_link(node: NodeDep, c: str, s: str) -> None:
    check_client_id(c)
    if not s or len(s) > 128 or not await node.channels.unsubscribe.verify(c, s):
        raise ApiError(403, BAD_LINK)


@router.post(UNSUBSCRIBE)
async def unsubscribe(node: NodeDep, c: str = "", s: str = "") -> dict[str, str]:
    """RFC 8058 one-click: the mail client POSTs List-Unsubscribe=One-Click here; the
    signature in the link is the permission, no token."""
    await _check_link(node, c, s)
    await node.channels.contacts.turn_off(c)
    return {"status": "unsubscribed", "clientID": c}


@router.get(UNSUBSCRIBE, response_class=HTMLResponse)
async def unsubscribe_page(node: NodeDep, c: str = "", s: str = "") -> HTMLResponse:
    """A page with a button that POSTs: a GET changes nothing, since mail scanners open links."""
    try:
        await _check_link(node, c, s)
    except ApiError as exc:
        return HTMLResponse(_page(f"<p>{html.escape(exc.message)}.</p>"), status_code=exc.status)
    action = html.escape(f"{UNSUBSCRIBE}?{urlencode({'c': c, 's': s})}")
    form = (
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        "<p>Stop the e-mails about your unread notifications?</p>"
        '<button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(_page(form))


def _page(content: str) -> str:
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Unsubscribe</title>'
        '<meta name="viewport" content="width=device-width"></head>'
        f'<body style="font-family:sans-serif">{content}</body></html>'
    )
