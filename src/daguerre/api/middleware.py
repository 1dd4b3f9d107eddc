"""Pure ASGI middleware: response headers every /v1 answer carries, the request-body cap, and the
500 answer to anything unexpected.

Written against ASGI directly (not BaseHTTPMiddleware) so they add microseconds, not a task per
request, and so the body cap can refuse a request before its body is read into memory.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daguerre.wire import API_VERSION, Detail

log = logging.getLogger(__name__)
_API_VERSION_HEADER = (b"x-api-version", API_VERSION.encode())
MAX_REQUEST_ID_CHARS = 200


def _request_id(scope: Scope) -> bytes:
    """The caller's X-Request-Id when it is short and printable ASCII, otherwise a new UUID."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            if 0 < len(value) <= MAX_REQUEST_ID_CHARS and all(0x20 < c < 0x7F for c in value):
                return bytes(value)
            break
    return str(uuid.uuid4()).encode()


class HeadersMiddleware:
    """Adds `X-Request-Id` (echoed or new) and `X-API-Version` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id.decode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k not in (b"x-request-id", b"x-api-version")
                ]
                headers += [(b"x-request-id", request_id), _API_VERSION_HEADER]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _TrackedSend:
    """`send`, noting whether the response has started (after which no other answer can be sent)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class InternalErrorMiddleware:
    """Answers any exception no handler took with 500 `Internal server error`, logged with the
    request id, and leaves the connection usable.

    Starlette's own ServerErrorMiddleware also answers 500, but then re-raises, and uvicorn closes
    the connection of a request whose application raised: a keep-alive client loses its
    connection (and, when the exception came after the answer, e.g. in a background task, the
    answer it already had looked like a broken connection). An exception after the answer has
    started is logged; what was sent stands, and a response cut short is closed by the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = _TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            log.info("client went away during %s %s", scope["method"], scope["path"])
        except Exception:
            request_id = scope.get("state", {}).get("request_id", "-")
            log.exception(
                "unhandled error on %s %s (request id %s)%s",
                scope["method"],
                scope["path"],
                request_id,
                "; the response had already started" if tracked.started else "",
            )
            if not tracked.started:
                await _send_json(send, 500, Detail.INTERNAL)


class _BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413 `Request body too large`: at once when
    Content-Length says so, otherwise as soon as the streamed body passes the cap."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await _send_413(send)
                    return
                break

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        tracked = _TrackedSend(send)
        try:
            await self.app(scope, limited_receive, tracked)
        except _BodyTooLarge:
            if not tracked.started:
                await _send_413(send)


async def _send_413(send: Send) -> None:
    await _send_json(send, 413, Detail.BODY_TOO_LARGE, close=True)


async def _send_json(send: Send, status: int, detail: str, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:  # the unread rest of the body would otherwise be taken for the next request
        headers.append((b"connection", b"close"))
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
