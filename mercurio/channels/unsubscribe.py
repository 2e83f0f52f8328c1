"""Signed one-click unsubscribe links (RFC 8058): the signature is the capability, no login.

HMAC-SHA256 over "unsubscribe:" + client id, with a key kept in server_secrets so that a link
one node wrote is honoured by every other. The link does not expire: mail is read months later.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from urllib.parse import urlencode

from mercurio.store.engines import EngineSource
from mercurio.store.secrets import shared_secret

SECRET_NAME = "unsubscribe"


class UnsubscribeLinks:
    """Makes and checks the links; the key is read (or made) on first use."""

    def __init__(self, engines: EngineSource, base_url: str) -> None:
        self._engines = engines
        self.base_url = base_url
        self._key: bytes | None = None
        self._lock = asyncio.Lock()

    async def _secret(self) -> bytes:
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    self._key = (await shared_secret(self._engines, SECRET_NAME)).encode()
        return self._key

    async def signature(self, client_id: str) -> str:
        digest = hmac.new(
            await self._secret(), f"unsubscribe:{client_id}".encode(), hashlib.sha256
        ).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    async def link(self, client_id: str) -> str:
        """The URL a mail client POSTs to (List-Unsubscribe) and a person opens."""
        query = urlencode({"c": client_id, "s": await self.signature(client_id)})
        return f"{self.base_url}/api/email/unsubscribe?{query}"

    async def verify(self, client_id: str, signature: str) -> bool:
        expected = await self.signature(client_id)
        return hmac.compare_digest(expected.encode(), signature.encode())
