"""Optional API keys (``GAN_API_KEYS``): checked before any work is queued, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from service.config import Settings


def api_key_dependency(settings: Settings):
    """A dependency that admits requests carrying one of the keys (all requests when none is configured)."""
    keys = [key.get_secret_value().encode() for key in settings.api_keys]
    scheme = APIKeyHeader(
        name=settings.api_key_header,
        auto_error=False,
        description="Required when the server has GAN_API_KEYS set.",
    )

    async def require_key(request: Request, supplied: str | None = Security(scheme)) -> None:
        if not keys:
            return
        candidate = (supplied or "").encode()
        # compare against every key so the time taken does not reveal which one (or whether any) matched
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise HTTPException(
                401,
                detail=f"missing or invalid API key in header {settings.api_key_header}",
                headers={"WWW-Authenticate": "ApiKey"},
            )

    return require_key
