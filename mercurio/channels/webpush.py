"""One Web Push request: encrypt (RFC 8291, pywebpush), sign (RFC 8292, py-vapid), POST (httpx).

pywebpush sends with requests or aiohttp; we take only its encryption and send with the httpx
client the rest of Mercurio uses, so pushes share one pool and one set of timeouts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from py_vapid import Vapid
from pywebpush import WebPusher

SIGNATURE_LIFETIME = 12 * 3600  # RFC 8292: at most 24 hours
SIGNATURE_REUSE = 3600


@dataclass(frozen=True, slots=True)
class PushAnswer:
    status: int
    retry_after: float | None = None


class WebPushSender:
    def __init__(self, vapid: Vapid, subject: str, *, timeout: float = 10.0) -> None:
        self.vapid = vapid
        self.subject = subject
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._signed: dict[str, tuple[float, str]] = {}

    async def close(self) -> None:
        await self.client.aclose()

    async def send(
        self,
        subscription: dict[str, object],
        payload: bytes,
        *,
        ttl: int,
        urgency: str = "normal",
        topic: str | None = None,
    ) -> PushAnswer:
        """POST one encrypted push; the push service's answer (timeouts raise httpx errors)."""
        endpoint = str(subscription["endpoint"])
        body = WebPusher(subscription).encode(payload, content_encoding="aes128gcm")["body"]
        headers = {
            "Authorization": self._authorization(endpoint),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(ttl),
            "Urgency": urgency,
        }
        if topic is not None:
            headers["Topic"] = topic
        response = await self.client.post(endpoint, content=body, headers=headers)
        return PushAnswer(response.status_code, _retry_after(response.headers.get("retry-after")))

    def _authorization(self, endpoint: str) -> str:
        """The VAPID header for the endpoint's origin, signed again once an hour."""
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._signed.get(audience)
        if cached is not None and cached[0] > now:
            return cached[1]
        claims = {"aud": audience, "sub": self.subject, "exp": int(now) + SIGNATURE_LIFETIME}
        header = str(self.vapid.sign(claims)["Authorization"])
        self._signed[audience] = (now + SIGNATURE_REUSE, header)
        return header


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is read as 'soon': rarely sent by push)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None
