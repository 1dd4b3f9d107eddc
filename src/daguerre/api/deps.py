"""Dependencies routes declare: the store, the blob store, the settings, the authenticated caller."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from daguerre.blobs import BlobStore
from daguerre.errors import ApiError
from daguerre.settings import Settings
from daguerre.store import Store
from daguerre.store.accounts import AccountStatus, hash_key
from daguerre.store.clock import utcnow
from daguerre.wire import KEY_PREFIX, Detail

BEARER = "Bearer "
P = ParamSpec("P")
T = TypeVar("T")


# Dependencies without I/O are `async def`, so FastAPI runs them on the event loop instead of
# handing each one to the thread pool.


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_blobs(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@dataclass(frozen=True)
class Caller:
    """The authenticated account behind a request."""

    account_id: str
    key_id: str


async def authenticate(request: Request, store: Annotated[Store, Depends(get_store)]) -> Caller:
    """`Authorization: Bearer luma-api-...` -> the caller, or one of Luma's 401/403 details.

    A key seen in the last few seconds is answered from the store's cache without leaving the event
    loop; otherwise the lookup runs in the thread pool."""
    header = request.headers.get("authorization", "")
    if not header.startswith(BEARER):  # the scheme word is case-sensitive (Luma)
        raise ApiError(401, Detail.MISSING_KEY)
    token = header[len(BEARER) :].strip()
    if not token.startswith(KEY_PREFIX) or len(token) <= len(KEY_PREFIX):
        raise ApiError(401, Detail.MISSING_KEY)
    key_hash = hash_key(token)
    match = store.accounts.cached_key(key_hash) or await read(store, store.accounts.find_key, key_hash)
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
    return Caller(account_id=match.account_id, key_id=match.key_id)


async def read(store: Store, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a single-row read: inline on SQLite (microseconds, and a thread hand-off costs more than
    the query under load), in the thread pool on a networked database."""
    if store.db.fast_reads:
        return function(*args, **kwargs)
    return await run_in_threadpool(function, *args, **kwargs)


async def json_body(request: Request) -> Any:
    """The request body decoded as JSON; 400 with a string detail when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Request body is not valid JSON") from None


StoreDep = Annotated[Store, Depends(get_store)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CallerDep = Annotated[Caller, Depends(authenticate)]
JsonBody = Annotated[Any, Depends(json_body)]
