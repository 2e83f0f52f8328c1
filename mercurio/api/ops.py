"""For operators: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from mercurio.api.deps import NodeDep
from mercurio.api.errors import ApiError
from mercurio.auth import AuthError, bearer_token
from mercurio.errors import StoreUnavailable
from mercurio.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["meta"])

# A proxy on the same host makes every peer loopback: with these, the caller is unknown.
PROXY_HEADERS = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})
PING_TIMEOUT = 2.0
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is alive and its event loop turns (no I/O)."""
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


@router.get(
    "/readyz",
    responses={503: {"description": "Something this node needs is down; the body names it"}},
)
async def readyz(node: NodeDep) -> JSONResponse:
    """Ready for traffic: the database answers, and the broker is connected when MQ is on."""
    down: dict[str, str] = {}
    if not node.started:
        down["node"] = "not started or shutting down"
    elif node.hub.closing:
        down["node"] = "shutting down"
    else:
        try:
            await asyncio.wait_for(node.store.ping(), PING_TIMEOUT)
        except (StoreUnavailable, TimeoutError):
            # The driver's message may carry a host or a user name: not for an open endpoint.
            down["database"] = "unreachable"
    health = node.fanout.health()
    if health is not None and not health.connected:
        down["broker"] = "not connected"
    if down:
        return JSONResponse({"status": "unavailable", "down": down}, 503, headers=NO_STORE)
    return JSONResponse({"status": "ready"}, headers=NO_STORE)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, node: NodeDep) -> Response:
    """Prometheus metrics: a bearer key when MERCURIO_METRICS_TOKEN is set, else loopback only.

    Loopback means a 127.0.0.0/8 or ::1 peer that did not come through a proxy.
    """
    expected = node.settings.metrics_token
    if expected:
        given = _bearer(request.headers.get("authorization"))
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            challenge = {"WWW-Authenticate": "Bearer"}
            raise ApiError(401, "metrics need the metrics bearer key", challenge)
    elif _proxied(request.scope) or not _loopback(_client_host(request.scope)):
        raise ApiError(403, "metrics are served to loopback clients only")
    registry: Metrics = node.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE, headers=NO_STORE)


def _bearer(header: str | None) -> str | None:
    try:
        return bearer_token(header)
    except AuthError:
        return None


def _proxied(scope: Scope) -> bool:
    return any(name in PROXY_HEADERS for name, _ in scope["headers"])


def _loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _client_host(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""
