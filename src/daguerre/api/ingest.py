"""Input images of a create request: fetched or decoded, checked, and stored before the row exists.

Each ImageRef becomes one blob key: the `source` of an edit is input 0, references follow in order.

* `data`: base64-decoded (413 over 50 MB, 422 when not base64); stored under `inputs/<id>/<n>`.
* `url`: fetched server-side under the deployment's URL policy (see daguerre.fetch); all URLs of a
  request are fetched concurrently; stored under `inputs/<id>/<n>`.
* `generation_id`: a completed generation of the same account; its output key is reused (400 when
  the retention policy has deleted that output).
* `file_id`: a `ready` file of the same account; its key (`files/<id>`) is reused.

The declared media type must be an image (422 `content-type is not an image`) of an accepted
format (422 `unsupported image format`). What the bytes really are is checked by the worker, which
reports `corrupt_input`, `unsupported_format` or `image_too_large` on the generation. Bytes go to
the blob store before the generation row is inserted, so a crash in between leaves orphan blobs
only, never a row that points at nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from daguerre.api.deps import Services
from daguerre.errors import ApiError
from daguerre.fetch import fetch_image
from daguerre.media import decode_base64
from daguerre.store.schema import file_key, input_key
from daguerre.wire import (
    ACCEPTED_MIME_TYPES,
    MIME_TYPE_ALIASES,
    Detail,
    FileState,
    GenerationCreate,
    ImageRef,
    State,
    parse_uuid,
)

_INLINE_DECODE_LIMIT = 256 * 1024  # larger base64 payloads are decoded in the thread pool


@dataclass(frozen=True)
class _Bytes:
    data: bytes
    media_type: str


def _refs(create: GenerationCreate) -> list[tuple[str, ImageRef]]:
    refs = [("source", create.source)] if create.source is not None else []
    refs += [(f"image_ref[{i}]", ref) for i, ref in enumerate(create.image_ref or [])]
    return refs


def _check_media_type(media_type: str, path: str) -> str:
    media_type = media_type.split(";", 1)[0].strip().lower()
    if not media_type.startswith("image/"):
        raise ApiError(422, Detail.ref_not_image(path))
    media_type = MIME_TYPE_ALIASES.get(media_type, media_type)
    if media_type not in ACCEPTED_MIME_TYPES:
        raise ApiError(422, Detail.ref_unsupported_format(path))
    return media_type


async def ingest_inputs(
    create: GenerationCreate, generation_id: str, account_id: str, services: Services
) -> tuple[str, ...]:
    refs = _refs(create)
    if not refs:
        return ()
    if any(ref.url for _, ref in refs) and not services.settings.url_ingestion:
        raise ApiError(503, Detail.URL_INGESTION_OFF)
    resolved = await asyncio.gather(
        *(_resolve(path, ref, account_id, services) for path, ref in refs), return_exceptions=True
    )
    for outcome in resolved:  # the first failing reference, in request order, answers
        if isinstance(outcome, BaseException):
            raise outcome
    keys: list[str] = []
    for index, outcome in enumerate(resolved):
        if isinstance(outcome, str):
            keys.append(outcome)
        else:
            assert isinstance(outcome, _Bytes)
            key = input_key(generation_id, index)
            await run_in_threadpool(services.blobs.put, key, outcome.data, outcome.media_type)
            keys.append(key)
    return tuple(keys)


async def _resolve(path: str, ref: ImageRef, account_id: str, services: Services) -> str | _Bytes:
    """A blob key to reuse, or bytes to store."""
    store = services.store
    if ref.generation_id is not None:
        canonical = parse_uuid(ref.generation_id)
        record = await store.generations.get_async(canonical, account_id) if canonical else None
        if record is None:
            raise ApiError(400, Detail.ref_generation_not_found(path))
        if record.state == State.COMPLETED and record.purged_at is not None:
            raise ApiError(400, Detail.ref_generation_purged(path))
        if record.state != State.COMPLETED or not record.output_keys:
            raise ApiError(400, Detail.ref_generation_not_completed(path))
        return record.output_keys[0]
    if ref.file_id is not None:
        canonical = parse_uuid(ref.file_id)
        file = await store.files.get_async(canonical, account_id) if canonical else None
        if file is None or file.state == FileState.DELETED:
            raise ApiError(400, Detail.ref_file_not_found(path))
        if file.state != FileState.READY:
            raise ApiError(400, Detail.ref_file_not_ready(path))
        return file_key(file.id)
    if ref.url is not None:
        if ref.media_type:
            _check_media_type(ref.media_type, path)
        fetched = await fetch_image(ref.url, path, services.url_policy)
        return _Bytes(fetched.data, _check_media_type(fetched.media_type, path))
    assert ref.data is not None and ref.media_type is not None
    media_type = _check_media_type(ref.media_type, path)
    if len(ref.data) <= _INLINE_DECODE_LIMIT:
        data = decode_base64(ref.data, path)
    else:
        data = await run_in_threadpool(decode_base64, ref.data, path)
    return _Bytes(data, media_type)
