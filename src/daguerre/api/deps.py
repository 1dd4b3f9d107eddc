"""What routes need: the deployment's services, the authenticated caller, the JSON body.

The Files and usage routes take the caller as a dependency (`CallerDep`); the generations routes,
called most, are `RequestRoute`s that call `authenticate` and `json_body` themselves. All reach
the store, blobs and settings through `services(request)`: each FastAPI dependency costs 6-10 us
per request (measured), so the services are one attribute read rather than three dependencies.
"""

from __future__ import annotations

import hmac
import inspect
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from daguerre.api.ratelimit import RequestRateLimiter
from daguerre.api.relay import Starts
from daguerre.api.waiting import TerminalWaiter
from daguerre.blobs import BlobStore
from daguerre.dispatch import Dispatcher, open_dispatcher
from daguerre.errors import ApiError
from daguerre.fetch import UrlPolicy
from daguerre.moderation import Moderator
from daguerre.settings import Settings
from daguerre.store import Store
from daguerre.store.accounts import AccountStatus, KeyMatch, hash_key
from daguerre.store.clock import utcnow
from daguerre.validation import decode_json_body
from daguerre.wire import KEY_PREFIX, Detail

BEARER = b"Bearer "
_KEY_TOKEN = re.compile(re.escape(KEY_PREFIX.encode()) + rb"[A-Za-z0-9._~+/-]+=*")


@dataclass(frozen=True)
class Services:
    """What create_app() was given (and what it derived), kept on `app.state.services`."""

    settings: Settings
    store: Store
    blobs: BlobStore
    url_policy: UrlPolicy
    limiter: RequestRateLimiter
    moderator: Moderator
    dispatcher: Dispatcher
    """Hands committed generations to the executor (dispatch: embedded table queue or Temporal)."""
    waiter: TerminalWaiter
    """Where `Prefer: wait` requests wait for their generation to end (api.waiting)."""
    starts: Starts = field(default_factory=Starts)
    """Workflow starts in flight (execution = "temporal"; api.relay)."""

    @classmethod
    def build(cls, settings: Settings, store: Store, blobs: BlobStore) -> Services:
        policy = UrlPolicy.build(
            allow_http=settings.url_allow_http,
            allow_private=settings.url_allow_private,
            allowed_networks=settings.url_allowed_networks,
            timeout_s=settings.url_timeout_s,
            ca_bundle=str(settings.url_ca_bundle) if settings.url_ca_bundle else None,
        )
        limiter = RequestRateLimiter(settings.rate_limit_storage, settings.rate_limit_window_s)
        return cls(
            settings=settings,
            store=store,
            blobs=blobs,
            url_policy=policy,
            limiter=limiter,
            moderator=Moderator.from_settings(settings),
            dispatcher=open_dispatcher(settings),
            waiter=TerminalWaiter(store),
        )


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


Caller = KeyMatch
"""The authenticated caller: its key's match, with the account and what its creates are held to
(rpm_limit, concurrency_limit, metered). The cached match itself, not a copy per request."""


async def authenticate(request: Request) -> Caller:
    """`Authorization: Bearer luma-api-...` -> the caller, or one of Luma's 401/403 details.

    A key seen in the last few seconds is answered from the store's cache; otherwise the lookup
    is a read (inline on SQLite: see `Database.reads_inline`)."""
    store = services(request).store
    header = next((value for name, value in request.scope["headers"] if name == b"authorization"), b"")
    # "Bearer", one space, a key: the scheme word is case-sensitive (Luma) and the key a b64token
    # (RFC 6750), so extra spaces or other characters are a malformed header, not a key.
    if not header.startswith(BEARER) or _KEY_TOKEN.fullmatch(header, len(BEARER)) is None:
        raise ApiError(401, Detail.MISSING_KEY)
    token = header[len(BEARER) :].decode("ascii")
    key_hash = hash_key(token)
    match = store.accounts.cached_key(key_hash) or await store.accounts.find_key_async(key_hash)
    if match is None or not hmac.compare_digest(match.key_hash, key_hash):
        raise ApiError(401, Detail.INVALID_KEY)
    if match.revoked_at is not None:
        raise ApiError(401, Detail.REVOKED_KEY)
    if match.expires_at is not None and match.expires_at <= utcnow():
        raise ApiError(401, Detail.EXPIRED_KEY)
    if match.account_status == AccountStatus.SUSPENDED:
        raise ApiError(403, Detail.SUSPENDED)
    if match.account_status == AccountStatus.DEACTIVATED:
        raise ApiError(403, Detail.DEACTIVATED)
    return match


def base_url(request: Request) -> str:
    """Where the client reached this server (`scheme://host[:port]` plus any root path)."""
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    if host is None:
        return str(request.base_url).rstrip("/")
    return f"{scope['scheme']}://{host.decode('latin-1')}{scope.get('root_path', '')}"


async def json_body(request: Request) -> Any:
    """The request body decoded as JSON; 400 with a string detail when it is not JSON."""
    return decode_json_body(await request.body())


CallerDep = Annotated[Caller, Depends(authenticate)]


class RequestRoute(APIRoute):
    """A route whose endpoint is `async def endpoint(request: Request) -> Response`, called as is.

    FastAPI still documents it (path, response model, error responses, `openapi_extra`), but its
    per-request handler (parameter solving, response serialisation, telemetry hooks) is left out:
    it cost about 30 us of every request in-process (measured with bench's ASGI driver), a
    quarter of a polling GET. Errors raised by the endpoint still reach the app's exception
    handlers. Used by the generations routes, the ones clients call most."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        parameters = list(inspect.signature(endpoint).parameters.values())
        if not inspect.iscoroutinefunction(endpoint) or [p.name for p in parameters] != ["request"]:
            raise TypeError(f"{endpoint.__name__}: a RequestRoute endpoint is `async def f(request)`")
        super().__init__(path, endpoint, **kwargs)
        if self.dependencies:
            raise TypeError(f"{endpoint.__name__}: a RequestRoute runs no dependencies")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return handler
