"""Optional API keys (``GAN_API_KEYS``): checked before any work is queued, compared in constant time.

Without keys the routes carry no auth dependency at all (and the OpenAPI schema no security scheme): FastAPI
solves every dependency on every request, and a no-op one still costs a measurable share of a small request.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, Security
from fastapi.params import Depends
from fastapi.security import APIKeyHeader

from service.config import Settings


class _KeyCheck(APIKeyHeader):
    """The header scheme (documented in OpenAPI) that also checks the key: one dependency per request."""

    def __init__(self, settings: Settings):
        description = "Required: the server has GAN_API_KEYS set."
        super().__init__(name=settings.api_key_header, auto_error=False, description=description)
        self.header = settings.api_key_header
        self.keys = [key.get_secret_value().encode() for key in settings.api_keys]

    async def __call__(self, request: Request) -> str:
        candidate = (request.headers.get(self.header) or "").encode()
        # compare against every key so the time taken does not reveal which one (or whether any) matched
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise HTTPException(
                401,
                detail=f"missing or invalid API key in header {self.header}",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        return candidate.decode()


def api_key_dependencies(settings: Settings) -> list[Depends]:
    """Route dependencies admitting only requests that carry one of the keys; none when no key is set."""
    return [Security(_KeyCheck(settings))] if settings.api_keys else []
