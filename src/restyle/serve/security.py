"""Request guards: an optional API key and a request body size limit."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException

Scope = dict[str, Any]


def require_key(api_key: str | None) -> Callable[[Request], None]:
    """A dependency: with a key configured, requests need `X-API-Key: KEY` or `Authorization: Bearer KEY`."""

    def check(request: Request) -> None:
        if not api_key:
            return
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(
                401,
                "missing or wrong API key: send it as X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


class BodyLimit:
    """ASGI middleware: bodies over `max_bytes` get 413 before they are read into memory."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send)
            return
        seen = 0

        async def limited_receive() -> dict:
            # A body without (or lying about) Content-Length is counted as it streams in.
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited_receive, send)

    @property
    def message(self) -> str:
        return f"body: request body is over the {self.max_bytes / 1024 / 1024:g} MB limit"

    async def _reject(self, send: Callable) -> None:
        body = json.dumps({"error": "too_large", "field": "body", "message": self.message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
