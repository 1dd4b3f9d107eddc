"""The `Idempotency-Key` request header on `POST /v1/generations` and `POST /v1/files` (an extension).

    key = requested_key(request, "generations", fingerprint(body))   # None without the header
    earlier = await find_earlier(svc, account_id, key)                # 422 if reused differently
    ... create with `key` (the store records it in the create's transaction, store.idempotency) ...

A repeat (same account, endpoint and key within 24 hours, same request) creates and charges
nothing: it answers the resource made the first time, as it is now, with the first status and the
header `Idempotent-Replayed: true`. The same key with a different request is 422. "The same
request" is judged on what it asks, not its bytes: the JSON body's values (key order and spacing do
not matter), or a multipart upload's fields and file bytes (its boundary differs on every send).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from daguerre.api.deps import Services
from daguerre.errors import ApiError
from daguerre.store.idempotency import IdempotencyKey, KeyRecord
from daguerre.wire import Detail

HEADER = "Idempotency-Key"
REPLAYED = {"Idempotent-Replayed": "true"}
MAX_KEY_CHARS = 255


def fingerprint(body: Any, data: bytes = b"") -> bytes:
    """What a request asks, canonically: its JSON values (or form fields), and an upload's bytes."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return canonical.encode() + b"\0" + hashlib.sha256(data).digest()


def requested_key(request: Request, scope: str, asked: bytes) -> IdempotencyKey | None:
    """The request's Idempotency-Key, or None; 400 when the header is malformed."""
    text = request.headers.get(HEADER)
    if text is None:
        return None
    if not 1 <= len(text) <= MAX_KEY_CHARS or not all(" " <= char <= "~" for char in text):
        raise ApiError(400, Detail.IDEMPOTENCY_KEY_INVALID)
    return IdempotencyKey(scope, text, hashlib.sha256(asked).hexdigest())


async def find_earlier(svc: Services, account_id: str, key: IdempotencyKey) -> KeyRecord | None:
    """The create that used `key` already, or None; 422 when it asked for something else."""
    record = await run_in_threadpool(svc.store.idempotency.find, account_id, key)
    if record is not None and record.request_hash != key.request_hash:
        raise ApiError(422, Detail.IDEMPOTENCY_KEY_REUSED)
    return record
