"""A TLS front for a plaintext server on loopback, as a production Temporal frontend has and the dev
server lacks: it speaks TLS (ALPN h2) with a certificate from a test CA, can require a client
certificate (mutual TLS), and forwards the bytes to the server. It also reads the HTTP/2 request
headers that pass through (with h2), so a test sees what a client sent, an API key included.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived
from h2.exceptions import H2Error


@dataclass
class Certificates:
    """A CA with a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    folder: Path
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.server = self.ca.issue_cert("127.0.0.1", "temporal.test")
        self.client = self.ca.issue_cert("daguerre-worker@test")
        self.ca_pem = self.folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.client_cert = self.folder / "client.pem"
        self.client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        self.client_key = self.folder / "client.key"
        self.client.private_key_pem.write_to_path(str(self.client_key))

    def server_context(self, require_client_cert: bool) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.configure_cert(context)
        context.set_alpn_protocols(["h2"])
        if require_client_cert:
            self.ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


class TLSProxy:
    def __init__(self, upstream: str, context: ssl.SSLContext) -> None:
        self.upstream_host, port = upstream.rsplit(":", 1)
        self.upstream_port = int(port)
        self.context = context
        self.requests: list[dict[str, str]] = []
        """The headers of every HTTP/2 request forwarded (gRPC calls: `:path`, `authorization`...)."""
        self.client_subjects: list[Any] = []
        """The subject of each verified client certificate (mutual TLS)."""
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tls-proxy", daemon=True)

    def __enter__(self) -> TLSProxy:
        self._thread.start()
        assert self._ready.wait(10), "the TLS proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        )
        self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        self._loop.run_forever()
        server.close()
        connections = asyncio.all_tasks(self._loop)
        for task in connections:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*connections, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        if peer:
            self.client_subjects.append(peer.get("subject"))
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            writer.close()
            return
        observer = _RequestHeaders(self.requests)
        try:
            await asyncio.gather(_pipe(reader, up_writer, observer.feed), _pipe(up_reader, writer, None))
        finally:
            for stream in (writer, up_writer):
                stream.close()


class _RequestHeaders:
    """Reads the client's side of an HTTP/2 connection as a server would, keeping request headers."""

    def __init__(self, requests: list[dict[str, str]]) -> None:
        self.requests = requests
        self.connection: H2Connection | None = H2Connection(
            H2Configuration(client_side=False, header_encoding="utf-8", validate_inbound_headers=False)
        )
        self.connection.initiate_connection()

    def feed(self, data: bytes) -> None:
        if self.connection is None:
            return
        try:
            for event in self.connection.receive_data(data):
                if isinstance(event, RequestReceived):
                    self.requests.append(dict(event.headers))  # type: ignore[arg-type]
                elif isinstance(event, DataReceived):
                    self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.connection.data_to_send()  # what a server would answer: the real one does
        except H2Error:
            self.connection = None  # past what this reader follows: keep forwarding, stop reading


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, observe: Any) -> None:
    try:
        while chunk := await reader.read(65536):
            if observe is not None:
                observe(chunk)
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.contextmanager
def tls_front(
    upstream: str, folder: Path, *, require_client_cert: bool
) -> Iterator[tuple[TLSProxy, Certificates]]:
    ca = Certificates(folder)
    with TLSProxy(upstream, ca.server_context(require_client_cert)) as proxy:
        yield proxy, ca
