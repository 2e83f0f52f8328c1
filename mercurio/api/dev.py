"""Development helpers: mint a token for any user, only in development and test."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from mercurio.api.deps import NodeDep, check_client_id
from mercurio.api.errors import ApiError

router = APIRouter(prefix="/api/dev", tags=["development"])

DEV_TOKEN_TTL = 12 * 3600


class DevTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    userID: str
    publisher: bool = False


@router.post("/token")
async def dev_token(body: DevTokenIn, node: NodeDep) -> dict[str, Any]:
    """A token for any user (and the publisher role) so the web app can be tried locally."""
    if node.settings.env == "production":
        raise ApiError(404, "not found")
    check_client_id(body.userID)
    token = node.auth.mint_token(body.userID, publisher=body.publisher, ttl=DEV_TOKEN_TTL)
    return {"token": token, "expiresIn": DEV_TOKEN_TTL}
