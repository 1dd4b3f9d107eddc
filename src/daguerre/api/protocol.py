"""uvicorn's HTTP protocol with a deadline for every request's head.

uvicorn closes a keep-alive connection that stays idle after an answer (`timeout_keep_alive`),
but a connection that never sends a request, or sends its request line and headers a byte at a
time, is held open for ever: a few hundred such sockets exhaust a server. Here every request's
head (request line and headers) must arrive within `head_timeout_s` of the connection opening or
of the request's first byte; otherwise the connection is closed. Bodies are not timed here:
their size is capped by the body-size middleware, and a client uploading 50 MB slowly is normal.

    config = uvicorn.Config(app, http=protocol_with_head_timeout(10.0), timeout_keep_alive=5)
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadDeadlineProtocol(HttpToolsProtocol):
    head_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # the first request must begin, and its head end, in time

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_deadline is None:  # a later request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.logger.info(
                "closing a connection whose request head did not arrive in %gs", self.head_timeout_s
            )
            self.transport.close()


def protocol_with_head_timeout(head_timeout_s: float) -> type[HeadDeadlineProtocol]:
    """The protocol class to give uvicorn (`Config(http=...)`), with this deadline."""
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"head_timeout_s": head_timeout_s})
