"""A local HTTP and HTTPS server for URL-ingestion tests (loopback only, stopped by the test).

Routes: /image.png, /page.html, /missing (404), /slow (trickles bytes), /endless (never stops),
/redirect?to=<url> (302), and /big.png (Content-Length over 50 MB).
"""

from __future__ import annotations

import io
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PIL import Image


def png_bytes(size: tuple[int, int] = (40, 20), colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    image = png_bytes((160, 80))

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/image.png":
            self._send(200, self.image, "image/png")
        elif url.path == "/page.html":
            self._send(200, b"<html><body>not an image</body></html>", "text/html")
        elif url.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", parse_qs(url.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        elif url.path == "/endless":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            chunk = b"\0" * 65536
            try:
                while True:
                    self.wfile.write(chunk)
            except OSError:
                pass
        elif url.path == "/big.png":
            self._send(200, b"", "image/png", length=60 * 1024 * 1024)
        else:
            self._send(404, b"not found", "text/plain")


@dataclass
class Servers:
    http: str
    https: str
    https_port: int
    ca_file: Path


@contextmanager
def image_servers(tmp: Path) -> Iterator[Servers]:
    import trustme

    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost", "127.0.0.2")
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    plain = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    secure = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certificate.configure_cert(context)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (plain, secure)]
    for thread in threads:
        thread.start()
    try:
        yield Servers(
            http=f"http://127.0.0.1:{plain.server_address[1]}",
            https=f"https://127.0.0.1:{secure.server_address[1]}",
            https_port=int(secure.server_address[1]),
            ca_file=ca_file,
        )
    finally:
        for server in (plain, secure):
            server.shutdown()
            server.server_close()
