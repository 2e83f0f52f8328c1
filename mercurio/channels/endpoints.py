"""Which push endpoints this service will POST to: the SSRF fence around Web Push.

A subscription's endpoint is a URL the browser hands us; without a fence any user could make
the server send requests into its own network. Only https on a listed host passes. Loopback
hosts may be listed (tests, a local push service), and then plain http is allowed for them.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

MAX_ENDPOINT = 2048


class EndpointRefused(ValueError):
    """The endpoint or keys may not be used; the message says why (safe to show)."""


class EndpointPolicy:
    def __init__(self, hosts: Iterable[str]) -> None:
        self.exact = frozenset(h.lower().strip("[]") for h in hosts if not h.startswith("*."))
        self.suffixes = tuple(h.lower()[1:] for h in hosts if h.startswith("*."))

    def check(self, endpoint: str) -> None:
        """Raise EndpointRefused unless the endpoint may be pushed to."""
        if len(endpoint) > MAX_ENDPOINT:
            raise EndpointRefused(f"endpoint is longer than {MAX_ENDPOINT} characters")
        try:
            parts = urlsplit(endpoint)
            host = (parts.hostname or "").lower()
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            raise EndpointRefused("endpoint is not a URL") from None
        if parts.username is not None or parts.password is not None:
            raise EndpointRefused("endpoint must not carry credentials")
        if not self._listed(host):
            raise EndpointRefused(
                f"endpoint host {host!r} is not a known push service (MERCURIO_PUSH_ENDPOINT_HOSTS)"
            )
        if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host)):
            return
        raise EndpointRefused("endpoint must be an https URL")

    def _listed(self, host: str) -> bool:
        return bool(host) and (host in self.exact or host.endswith(self.suffixes))


def check_keys(p256dh: str, auth: str) -> None:
    """The subscription's keys must be what RFC 8291 encrypts to: a P-256 point, 16 bytes."""
    point = _b64url(p256dh, "keys.p256dh")
    if len(point) != 65 or point[0] != 4:
        raise EndpointRefused("keys.p256dh must be an uncompressed P-256 point (65 bytes)")
    if len(_b64url(auth, "keys.auth")) != 16:
        raise EndpointRefused("keys.auth must be 16 bytes")


def _b64url(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise EndpointRefused(f"{what} is not base64url") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
