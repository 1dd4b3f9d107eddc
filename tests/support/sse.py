"""A plain Server-Sent Events reader for the tests (httpx streaming, the format parsed by hand as
the specification says): what a client of `GET /v1/generations/{id}/events` sees."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    name: str
    data: Any
    id: str | None
    at: float
    """time.monotonic() when it arrived."""


def read_events(response: httpx.Response) -> Iterator[Event]:
    """The events of a streaming response until the server ends it (comments are skipped)."""
    name, data, event_id = "message", [], None
    for line in response.iter_lines():
        if not line:
            if data:
                yield Event(name, json.loads("\n".join(data)), event_id, time.monotonic())
            name, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value


def follow(base_url: str, generation_id: str, headers: dict[str, str], timeout_s: float = 60) -> list[Event]:
    """Every event of the generation's stream, to its end."""
    with (
        httpx.Client(base_url=base_url, timeout=timeout_s) as http,
        http.stream("GET", f"/v1/generations/{generation_id}/events", headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(read_events(response))
