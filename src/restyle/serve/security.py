"""Request guards: an optional API key, a request body size limit, the Host and Content-Type checks."""

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


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"


def host_name(header: str) -> str:
    """The name part of a Host header: `[::1]:8080` -> `::1`, `Example.COM.:80` -> `example.com`."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _reply(status: int, kind: str, field: str | None, message: str) -> tuple[dict, dict]:
    body = json.dumps({"error": kind, "field": field, "message": message}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


class RequestGuard:
    """ASGI middleware for what every route shares.

    - Host: without an API key, only loopback host names (and `allowed_hosts`) are answered, so a web page
      on another name cannot reach the server through DNS rebinding. `allowed_hosts` containing "*"
      turns the check off (a gateway in front decides).
    - Content-Type: a request with a body must send JSON (415 names the header): a browser page can post
      text/plain or a form anywhere without asking; it cannot post JSON to another origin without CORS.
    - HEAD: answered like GET without a body (event streams excepted).
    """

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.allowed = (
            None
            if allowed_hosts is None or ANY_HOST in allowed_hosts
            else {host_name(h) for h in (*LOOPBACK_HOSTS, *allowed_hosts)}
        )

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        if self.allowed is not None:
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed and not host.endswith(".localhost"):
                shown = ", ".join(sorted(self.allowed))
                for message in _reply(
                    421,
                    "host_not_allowed",
                    "Host",
                    f"Host: {host or '(none)'} is not served: without an API key this server answers only "
                    f"{shown} (restyle serve --allow-host NAME, or set RESTYLE_API_KEY)",
                ):
                    await send(message)
                return
        method = scope["method"]
        if method in ("POST", "PUT", "PATCH") and _has_body(headers):
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json" and not kind.endswith(b"+json"):
                shown = kind.decode("latin-1") or "(none)"
                for message in _reply(
                    415,
                    "unsupported_media_type",
                    "Content-Type",
                    f"Content-Type: {shown}: send the body as JSON with Content-Type: application/json",
                ):
                    await send(message)
                return
        if method == "HEAD" and not scope["path"].endswith("/events"):
            await self.app({**scope, "method": "GET"}, receive, _without_body(send))
            return
        await self.app(scope, receive, send)


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    return b"transfer-encoding" in headers or (length is not None and length.strip() not in (b"", b"0"))


def _without_body(send: Callable) -> Callable:
    async def send_head(message: dict) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head
