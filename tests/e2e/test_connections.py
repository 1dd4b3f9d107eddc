"""Connections that send nothing, or send their request head a byte at a time, are closed: a live
`daguerre serve` with short timeouts, driven through raw sockets."""

from __future__ import annotations

import socket
import time

import pytest

from support.helpers import scripted_models, start_server

HEAD_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("connections")
    live = start_server(
        tmp / "data",
        scripted_models(tmp / "models.toml"),
        workers=0,
        DAGUERRE_HTTP_HEAD_TIMEOUT_S=str(HEAD_TIMEOUT_S),
        DAGUERRE_HTTP_KEEP_ALIVE_S="1",
    )
    yield live
    live.stop()


def connect(server) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer: its head, then as many body bytes as its Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes `sock` (reading and dropping whatever it answers)."""
    started = time.monotonic()
    while sock.recv(65536):
        pass
    return time.monotonic() - started


def test_a_connection_that_never_sends_is_closed(server):
    with connect(server) as sock:
        assert closed_after(sock) < HEAD_TIMEOUT_S + 3


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(server):
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with connect(server) as sock:
        started = time.monotonic()
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)  # the whole head would take 12 s
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(10)
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed, never answered
        assert time.monotonic() - started < HEAD_TIMEOUT_S + 3


def test_a_prompt_request_is_answered_and_then_the_idle_connection_closed(server):
    with connect(server) as sock:
        for _ in range(2):  # the deadline is per request: a kept-alive connection serves several
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}'), answer
            time.sleep(0.5)
        assert closed_after(sock) < 3  # keep-alive of 1 s
