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
        if declared is not None and not declared.isdigit():
            await self._reject(send, 400, "body: the Content-Length header is not a number")
            return
        if declared is not None and int(declared) > self.max_bytes:
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
        size = self.max_bytes
        limit = f"{size / 1024 / 1024:g} MB" if size >= 1024 * 1024 else f"{size:,} bytes"
        return f"body: request body is over the {limit} limit"

    async def _reject(self, send: Callable, status: int = 413, message: str | None = None) -> None:
        kind = "too_large" if status == 413 else "invalid_body"
        body = json.dumps({"error": kind, "field": "body", "message": message or self.message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
