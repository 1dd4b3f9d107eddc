"""A small client of a Luma-compatible server, for `daguerre generate` and `daguerre generations`.

It speaks the public API only (the Files API, `POST /v1/generations`, `GET` and, where the server
has them, daguerre's extensions: the events stream, cancel and list), so it works against daguerre
and, with polling instead of events, against any server that speaks Luma's API.

    with Client(server, key) as client:
        source = client.image_ref("photo.png")          # uploaded through the Files API
        generation = client.create({"prompt": "make it blue", "type": "image_edit", "source": source})
        for event in client.follow(generation["id"]):   # ("queue", {...}) ("progress", {...}) ...
            ...
"""

from __future__ import annotations

import json
import mimetypes
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8000/v1"
TERMINAL = ("completed", "failed")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
POLL_S = 1.0


class ClientError(Exception):
    """A request the server refused, or a server that could not be reached; the message is one line."""


Event = tuple[str, dict[str, Any]]
"""("generation", Generation) | ("queue", {"position": n}) | ("progress", {"step": i, "total": n}) |
("preview", {"step", "total", "media_type", "data"})."""


class Client:
    def __init__(self, server: str, key: str, timeout: float = 60.0) -> None:
        self.server = server.rstrip("/")
        self.http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {key}", "User-Agent": "daguerre-cli"},
            timeout=timeout,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object, tb: TracebackType | None = None) -> None:
        self.http.close()

    # Requests -------------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ClientError(f"cannot reach {self.server}: {error}") from None
        if response.status_code >= 400:
            raise ClientError(f"{method} {path}: HTTP {response.status_code}: {_detail(response)}")
        return response.json() if response.content else None

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        generation: dict[str, Any] = self.request("POST", "/generations", json=body)
        return generation

    def get(self, generation_id: str) -> dict[str, Any]:
        generation: dict[str, Any] = self.request("GET", f"/generations/{generation_id}")
        return generation

    def cancel(self, generation_id: str) -> dict[str, Any]:
        generation: dict[str, Any] = self.request("POST", f"/generations/{generation_id}/cancel")
        return generation

    def list(self, **params: Any) -> dict[str, Any]:
        page: dict[str, Any] = self.request(
            "GET", "/generations", params={k: v for k, v in params.items() if v is not None}
        )
        return page

    def download(self, url: str, path: Path) -> Path:
        """The output at a (presigned) URL, saved to `path`; no credentials are sent with it."""
        try:
            response = httpx.get(url, timeout=self.http.timeout, follow_redirects=False)
        except httpx.HTTPError as error:
            raise ClientError(f"cannot download the output: {error}") from None
        if response.status_code != 200:
            raise ClientError(f"cannot download the output: HTTP {response.status_code}")
        path.write_bytes(response.content)
        return path

    # Image references ---------------------------------------------------------------------------

    def image_ref(self, reference: str, purpose: str = "input") -> dict[str, Any]:
        """An ImageRef for a local file (uploaded through the Files API), an http(s) URL, or the id
        of an earlier generation."""
        if reference.startswith(("http://", "https://")):
            return {"url": reference}
        path = Path(reference).expanduser()
        if path.is_file():
            return {"file_id": self.upload(path, purpose)}
        if UUID.fullmatch(reference):
            return {"generation_id": reference}
        raise ClientError(f"{reference}: not a file, an http(s) URL or a generation id")

    def upload(self, path: Path, purpose: str) -> str:
        """Upload a file inline (multipart) and wait until the server has checked it."""
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as handle:
            created = self.request(
                "POST",
                "/files",
                files={"file": (path.name, handle, media_type)},
                data={"purpose": purpose, "filename": path.name},
            )
        file = created.get("file", created)
        deadline = time.monotonic() + 60
        while file["state"] not in ("ready", "failed"):
            if time.monotonic() > deadline:
                raise ClientError(f"{path}: the server did not finish checking the upload")
            time.sleep(0.2)
            file = self.request("GET", f"/files/{file['id']}")
        if file["state"] == "failed":
            reason = file.get("failure_reason") or file.get("failure_code") or "rejected"
            raise ClientError(f"{path}: {reason}")
        return str(file["id"])

    # Following a generation -----------------------------------------------------------------------

    def follow(self, generation_id: str) -> Iterator[Event]:
        """Events until the generation ends, the last one ("generation", ended Generation). Uses
        the server's events stream; a server without one (404) is polled."""
        try:
            yield from self._stream(generation_id)
        except _NoStream:
            yield from self._poll(generation_id)

    def _stream(self, generation_id: str) -> Iterator[Event]:
        path = f"/generations/{generation_id}/events"
        timeout = httpx.Timeout(self.http.timeout.connect, read=None)
        try:
            with self.http.stream("GET", path, timeout=timeout) as response:
                if response.status_code in (404, 405):
                    raise _NoStream
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(f"GET {path}: HTTP {response.status_code}: {_detail(response)}")
                name, data = "message", ""
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
                    elif not line and data:
                        event = (name, json.loads(data))
                        name, data = "message", ""
                        yield event
                        if event[0] == "generation" and event[1].get("state") in TERMINAL:
                            return
        except httpx.HTTPError as error:
            raise ClientError(f"lost the events stream: {error}") from None
        # The stream ended early (a proxy closed it): read the generation as it is now.
        yield from self._poll(generation_id)

    def _poll(self, generation_id: str) -> Iterator[Event]:
        state = None
        while True:
            generation = self.get(generation_id)
            if generation["state"] != state or generation["state"] in TERMINAL:
                state = generation["state"]
                yield "generation", generation
            if state in TERMINAL:
                return
            time.sleep(POLL_S)


class _NoStream(Exception):
    pass


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else json.dumps(detail)[:300]
