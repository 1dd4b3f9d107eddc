"""Fetching input images from URLs, safely (server-side request forgery is the threat).

By default, as Luma documents for its own fetcher:

* `https://` only, and no redirect from https to http;
* every hop's host must resolve only to public addresses: no loopback, private, link-local (which
  includes cloud metadata at 169.254.169.254), CGNAT, multicast, reserved or unspecified ones,
  in IPv4 or IPv6; IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4, IPv4-compatible,
  Teredo) are judged by the IPv4 address they reach, and site-local `fec0::/10` is refused;
* the connection goes to the address that was checked (the resolver is not asked twice), so a
  DNS answer that changes between the check and the connect (DNS rebinding) cannot redirect it;
* a 2xx answer with an `image/*` content type, streamed and cut off past 50 MB;
* 18 seconds in total, redirects included.

A deployment may allow http and private networks (for offline or internal use), or only some
networks (`allowed_networks`), or switch URL ingestion off. Refusals are `ApiError`s carrying
Luma's 413 / 422 details.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore
import httpx

from daguerre.errors import ApiError
from daguerre.wire import MAX_INPUT_IMAGE_BYTES, Detail

MAX_REDIRECTS = 5
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local-use translation, never public
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
USER_AGENT = "daguerre-fetch/1"


@dataclass(frozen=True)
class UrlPolicy:
    """What the fetcher may do. The defaults are the safe ones."""

    allow_http: bool = False
    allow_private: bool = False
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    timeout_s: float = 18.0
    max_bytes: int = MAX_INPUT_IMAGE_BYTES
    ca_bundle: str | None = None

    @classmethod
    def build(
        cls,
        *,
        allow_http: bool = False,
        allow_private: bool = False,
        allowed_networks: Iterable[str] = (),
        timeout_s: float = 18.0,
        ca_bundle: str | None = None,
    ) -> UrlPolicy:
        return cls(
            allow_http=allow_http,
            allow_private=allow_private,
            allowed_networks=tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks),
            timeout_s=timeout_s,
            ca_bundle=ca_bundle,
        )

    def address_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip in network for network in self.allowed_networks):
            return True
        return all(self._judge(candidate) for candidate in judged_addresses(ip))

    def _judge(self, ip: IPAddress) -> bool:
        if any(ip in network for network in self.allowed_networks):
            return True
        if self.allow_private:
            return not (ip.is_multicast or ip.is_unspecified)
        if isinstance(ip, ipaddress.IPv6Address) and (ip.is_site_local or ip in NAT64_LOCAL):
            return False
        return ip.is_global and not (ip.is_multicast or ip in CGNAT)


def judged_addresses(ip: IPAddress) -> tuple[IPAddress, ...]:
    """The addresses a connection to `ip` really reaches, to be judged instead of `ip` itself.

    IPv6 forms that carry an IPv4 address are judged as that address (a public-looking IPv6 form
    of 169.254.169.254 is still the metadata service): IPv4-mapped `::ffff:a.b.c.d`, NAT64
    `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::/48`, IPv4-compatible `::a.b.c.d`, and Teredo
    (its server and its client address, both judged).
    """
    if not isinstance(ip, ipaddress.IPv6Address):
        return (ip,)
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip in NAT64_WELL_KNOWN or (int(ip) >> 32 == 0 and int(ip) > 1):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    return (ip,)


class _Refused(Exception):
    """A fetch the policy refuses; `reason` is the parenthesised part of Luma's detail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, checks every address, and connects to a checked one."""

    def __init__(self, policy: UrlPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses or not all(self._policy.address_allowed(a) for a in addresses):
            raise _Refused("address not allowed")
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> Any:
        raise _Refused("address not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _client(policy: UrlPolicy) -> httpx.AsyncClient:
    context = (
        ssl.create_default_context(cafile=policy.ca_bundle)
        if policy.ca_bundle
        else ssl.create_default_context()
    )
    transport = httpx.AsyncHTTPTransport(verify=context, trust_env=False)
    # httpx takes no network backend of its own: give its connection pool ours.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context, network_backend=_GuardedBackend(policy), max_connections=4
    )
    return httpx.AsyncClient(transport=transport, trust_env=False, headers={"User-Agent": USER_AGENT})


@dataclass(frozen=True)
class Posted:
    """The outcome of a POST: the answer's status, or why there was none."""

    status: int | None
    error: str | None = None


def url_problem(url: str, policy: UrlPolicy) -> str | None:
    """Why the policy refuses `url` before any connection (bad URL, scheme), or None. The addresses
    its host resolves to are judged when it is reached."""
    try:
        parsed = _parse_url(url)
    except _Refused as refused:
        return refused.reason
    if parsed.scheme != "https" and not (parsed.scheme == "http" and policy.allow_http):
        return "https required"
    return None


async def post_json(
    url: str, body: bytes, headers: dict[str, str], policy: UrlPolicy, timeout_s: float
) -> Posted:
    """POST `body` to `url` under the fetcher's rules (scheme, checked addresses, no DNS rebinding),
    not following redirects and not reading the answer's body. Never raises."""
    problem = url_problem(url, policy)
    if problem is not None:
        return Posted(None, problem)
    try:
        with anyio.fail_after(timeout_s):
            async with (
                _client(policy) as client,
                client.stream("POST", url, content=body, headers=headers, follow_redirects=False) as answer,
            ):
                return Posted(answer.status_code)
    except TimeoutError:
        return Posted(None, "timeout")
    except _Refused as refused:
        return Posted(None, refused.reason)
    except (httpx.HTTPError, httpcore.NetworkError, httpcore.TimeoutException, OSError, ValueError) as exc:
        return Posted(None, f"connection failed ({type(exc).__name__})")


@dataclass(frozen=True)
class Fetched:
    data: bytes
    media_type: str


async def fetch_image(url: str, path: str, policy: UrlPolicy) -> Fetched:
    """GET an image for the ImageRef at `path` (`source`, `image_ref[2]`) or raise its ApiError."""
    deadline = time.monotonic() + policy.timeout_s
    try:
        with anyio.fail_after(policy.timeout_s):
            async with _client(policy) as client:
                return await _follow(client, url, path, policy, deadline)
    except TimeoutError:
        raise ApiError(422, Detail.ref_fetch_failed(path, "timeout")) from None
    except _Refused as refused:
        raise ApiError(422, Detail.ref_fetch_failed(path, refused.reason)) from None
    except (httpx.HTTPError, httpcore.NetworkError, httpcore.TimeoutException, OSError, ValueError):
        raise ApiError(422, Detail.ref_fetch_failed(path)) from None


def _parse_url(text: str, base: httpx.URL | None = None) -> httpx.URL:
    """The URL `text` (resolved against `base` for a redirect), or _Refused("invalid URL") for text
    httpx cannot parse: an unclosed IPv6 bracket, an octal or out-of-range IPv4 host, bad
    characters (`https://[::1/x.png`, `https://0177.0.0.1/x.png`)."""
    try:
        return base.join(text) if base is not None else httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise _Refused("invalid URL") from None


async def _follow(
    client: httpx.AsyncClient, url: str, path: str, policy: UrlPolicy, deadline: float
) -> Fetched:
    current = _parse_url(url)
    for _ in range(MAX_REDIRECTS + 1):
        if current.scheme != "https" and not (current.scheme == "http" and policy.allow_http):
            raise _Refused("https required")
        remaining = max(0.1, deadline - time.monotonic())
        async with client.stream("GET", current, timeout=remaining, follow_redirects=False) as response:
            if response.is_redirect:
                target = _parse_url(response.headers.get("location", ""), base=current)
                if current.scheme == "https" and target.scheme == "http":
                    raise _Refused("redirect to http not allowed")
                current = target
                continue
            if not 200 <= response.status_code < 300:
                raise ApiError(422, Detail.ref_fetch_failed(path, f"HTTP {response.status_code}"))
            media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if not media_type.startswith("image/"):
                raise ApiError(422, Detail.ref_not_image(path))
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise ApiError(413, Detail.ref_too_large(path))
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > policy.max_bytes:
                    raise ApiError(413, Detail.ref_too_large(path))
                chunks.append(chunk)
            return Fetched(b"".join(chunks), media_type)
    raise ApiError(422, Detail.ref_fetch_failed(path))  # too many redirects
