"""The Files API: upload once, reference many times as `ImageRef.file_id`.

    POST   /v1/files                  JSON: a pending file and a presigned PUT envelope (201)
                                      multipart: the bytes inline in the `file` part (201, upload null)
    PUT    <upload.url>               the raw bytes (local blob store; S3 takes them directly)
    POST   /v1/files/{id}/complete    empty body; starts ingest; the File, normally still pending
    GET    /v1/files                  newest first, opaque keyset cursor, limit 1-100, purpose/state
    GET    /v1/files/{id}             the File
    DELETE /v1/files/{id}             soft delete, 204 (again 204 when already deleted)

Ingest runs after the answer is sent: the bytes must be as many as declared, decode as an accepted
image within the pixel limit (see media.load_input), then the file is `ready`, or `failed` with a
reason. A file whose ingest was interrupted (a crash) is ingested again by the maintenance task,
which also deletes files past their `expires_at`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from daguerre.api.cursors import decode_cursor, encode_cursor
from daguerre.api.deps import CallerDep, Services, base_url, json_body, services
from daguerre.api.idempotency import REPLAYED, find_earlier, fingerprint, requested_key
from daguerre.api.openapi import AUTH_ERRORS, IDEMPOTENCY_KEY_PARAMETER, errors
from daguerre.blobs import BlobNotFound
from daguerre.errors import ApiError, JobFailure
from daguerre.media import load_input, sniff_media_type
from daguerre.store.clock import utcnow
from daguerre.store.files import FileRecord, NewFile
from daguerre.store.idempotency import IdempotencyKey, KeyRecord
from daguerre.store.schema import file_key, upload_key
from daguerre.validation import parse_file_create
from daguerre.wire import (
    FILE_LIST_DEFAULT,
    FILE_LIST_MAX,
    FILE_PURPOSES,
    MAX_INPUT_IMAGE_BYTES,
    OUTPUT_URL_TTL_S,
    CreateFileResponse,
    Detail,
    File,
    FileCreate,
    FileList,
    FileState,
    PresignedUpload,
    Reason,
    format_timestamp,
    parse_uuid,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/files", tags=["files"])
_NOT_FOUND = {404: "File not found"}
# Documented only: the route checks the bounds itself, with its own detail string.
_LIMIT = Query(
    description=f"Page size; default {FILE_LIST_DEFAULT}",
    json_schema_extra={"minimum": 1, "maximum": FILE_LIST_MAX},
)


def to_wire(record: FileRecord) -> File:
    def stamp(moment: datetime | None) -> str | None:
        return format_timestamp(moment) if moment else None

    return File(
        id=record.id,
        created_at=format_timestamp(record.created_at),
        mime_type=record.mime_type,
        purpose=record.purpose,
        size_bytes=record.size_bytes,
        state=record.state,
        deleted_at=stamp(record.deleted_at),
        expires_at=stamp(record.expires_at),
        failure_reason=record.failure_reason,
        filename=record.filename,
        user_id=record.user_id,
    )


class JSONModelResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content.model_dump_json(by_alias=True).encode()  # type: ignore[no-any-return]


def _own_file(request: Request, caller_account: str, file_id: str) -> FileRecord:
    canonical = parse_uuid(file_id)
    record = services(request).store.files.get(canonical, caller_account) if canonical else None
    if record is None:
        raise ApiError(404, Detail.FILE_NOT_FOUND)
    return record


@router.post(
    "",
    status_code=201,
    response_model=CreateFileResponse,
    responses=errors(
        400,
        *AUTH_ERRORS,
        409,
        413,
        422,
        descriptions={
            409: Detail.IDEMPOTENCY_KEY_BUSY,
            413: "Request body or inline file too large",
            422: Detail.IDEMPOTENCY_KEY_REUSED,
        },
    ),
    summary="Create a file",
    openapi_extra={
        "parameters": [IDEMPOTENCY_KEY_PARAMETER],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/FileCreate"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "purpose": {"type": "string", "enum": ["input", "reference"]},
                            "filename": {"type": "string"},
                            "user_id": {"type": "string"},
                            "expires_at": {"type": "string", "format": "date-time"},
                        },
                    }
                },
            },
        },
    },
)
async def create_file(request: Request, caller: CallerDep, background: BackgroundTasks) -> JSONModelResponse:
    """JSON: a pending file and where to PUT its bytes. Multipart: the bytes inline."""
    svc = services(request)
    content_type = request.headers.get("content-type", "").lower()
    data = None
    if content_type.startswith("multipart/form-data"):
        create, data, fields = await _read_multipart(request)
        key = requested_key(request, "files", fingerprint(fields, data))
    else:
        body = await json_body(request)
        create = parse_file_create(body)
        key = requested_key(request, "files", fingerprint(body))
    if key is not None and (earlier := await find_earlier(svc, caller.account_id, key)) is not None:
        return _replay(request, caller.account_id, earlier)
    new = _new_file(caller.account_id, create)
    if data is not None:
        record = await run_in_threadpool(_store_inline, svc, new, data, key)
    else:
        record = await run_in_threadpool(svc.store.files.create, new, False, key)
    if record is None:  # a concurrent request with the same key won
        assert key is not None
        if (earlier := await find_earlier(svc, caller.account_id, key)) is not None:
            return _replay(request, caller.account_id, earlier)
        raise ApiError(409, Detail.IDEMPOTENCY_KEY_BUSY)
    if data is not None:
        background.add_task(ingest, svc, record.id, record.account_id)
    return JSONModelResponse(_created(request, record), status_code=201)


def _created(request: Request, record: FileRecord) -> CreateFileResponse:
    """The answer to a create: the file, and while it awaits its bytes where to PUT them."""
    upload = None
    if record.state == FileState.PENDING and record.uploaded_at is None:
        expires = utcnow() + timedelta(seconds=OUTPUT_URL_TTL_S)
        upload = PresignedUpload(
            expires_at=format_timestamp(expires),
            url=services(request).blobs.presign_put(
                upload_key(record.id),
                OUTPUT_URL_TTL_S,
                record.mime_type,
                base_url(request),
                content_length=record.size_bytes,  # S3 then refuses any other size
            ),
            headers={"Content-Type": record.mime_type},
        )
    return CreateFileResponse(id=record.id, state=record.state, file=to_wire(record), upload=upload)


def _replay(request: Request, account_id: str, earlier: KeyRecord) -> JSONModelResponse:
    """The answer to a repeated Idempotency-Key: the file it made, as it is now (with a fresh
    upload URL while it still awaits its bytes)."""
    record = services(request).store.files.get(earlier.resource_id, account_id)
    if record is None:
        raise ApiError(404, Detail.FILE_NOT_FOUND)
    return JSONModelResponse(_created(request, record), status_code=earlier.status_code, headers=REPLAYED)


def _new_file(account_id: str, create: FileCreate) -> NewFile:
    return NewFile(
        account_id=account_id,
        mime_type=create.mime_type,
        size_bytes=create.size_bytes,
        purpose=create.purpose,
        filename=create.filename,
        user_id=create.user_id,
        expires_at=create.expires_at,
    )


async def _read_multipart(request: Request) -> tuple[FileCreate, bytes, dict[str, str]]:
    async with request.form(max_files=1, max_fields=16) as form:
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise ApiError(400, Detail.FILE_REQUIRED)
        data = await part.read(MAX_INPUT_IMAGE_BYTES + 1)
        if len(data) > MAX_INPUT_IMAGE_BYTES:
            raise ApiError(413, Detail.FILE_TOO_LARGE)
        if not data:
            raise ApiError(400, "file: must not be empty")
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        sent = dict(fields)  # what the client asked, before the defaults below
        declared = part.content_type if part.content_type and part.content_type.startswith("image/") else None
        fields["mime_type"] = (
            fields.get("mime_type") or declared or sniff_media_type(data) or "application/octet-stream"
        )
        fields["size_bytes"] = str(len(data))
        fields.setdefault("filename", part.filename or "")
        if not fields["filename"]:
            del fields["filename"]
    return parse_file_create(fields, inline=True), data, sent


def _store_inline(svc: Services, new: NewFile, data: bytes, key: IdempotencyKey | None) -> FileRecord | None:
    record = svc.store.files.create(new, uploaded=True, idempotency_key=key)
    if record is not None:
        svc.blobs.put(file_key(record.id), data, record.mime_type)
    return record


@router.post(
    "/{file_id}/complete",
    response_model=File,
    responses=errors(400, *AUTH_ERRORS, 404, descriptions={**_NOT_FOUND, 400: Detail.FILE_NOT_UPLOADED}),
    summary="Complete an upload",
)
def complete_file(
    file_id: str, request: Request, caller: CallerDep, background: BackgroundTasks
) -> JSONModelResponse:
    """Starts ingest of the uploaded bytes; the file becomes `ready` or `failed` shortly after."""
    svc = services(request)
    record = _own_file(request, caller.account_id, file_id)
    if record.state != FileState.PENDING:
        return JSONModelResponse(to_wire(record))  # repeated calls are harmless
    if not (svc.blobs.exists(upload_key(record.id)) or svc.blobs.exists(file_key(record.id))):
        raise ApiError(400, Detail.FILE_NOT_UPLOADED)
    svc.store.files.mark_uploaded(record.id)  # from now on the local store refuses PUTs to it
    background.add_task(ingest, svc, record.id, record.account_id)
    return JSONModelResponse(to_wire(record))


@router.get("", response_model=FileList, responses=errors(400, *AUTH_ERRORS), summary="List files")
def list_files(
    request: Request,
    caller: CallerDep,
    limit: Annotated[int | None, _LIMIT] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    purpose: Annotated[str | None, Query(json_schema_extra={"enum": list(FILE_PURPOSES)})] = None,
    state: Annotated[str | None, Query(json_schema_extra={"enum": [s.value for s in FileState]})] = None,
) -> JSONModelResponse:
    """Newest first. Without a `state` filter, deleted files are left out."""
    size = FILE_LIST_DEFAULT if limit is None else limit
    if not 1 <= size <= FILE_LIST_MAX:
        raise ApiError(400, f"limit: must be between 1 and {FILE_LIST_MAX}")
    if purpose is not None and purpose not in ("input", "reference"):
        raise ApiError(400, "purpose: must be one of input, reference")
    if state is not None and state not in tuple(s.value for s in FileState):
        raise ApiError(400, "state: must be one of pending, ready, failed, deleted")
    after = decode_cursor(cursor) if cursor else None
    page = services(request).store.files.page(caller.account_id, size, after, purpose, state)
    last = page.files[-1] if page.has_more and page.files else None
    next_cursor = encode_cursor(last.created_at, last.id) if last is not None else None
    return JSONModelResponse(
        FileList(data=[to_wire(f) for f in page.files], has_more=page.has_more, next_cursor=next_cursor)
    )


@router.get(
    "/{file_id}",
    response_model=File,
    responses=errors(*AUTH_ERRORS, 404, descriptions=_NOT_FOUND),
    summary="Get a file",
)
def get_file(file_id: str, request: Request, caller: CallerDep) -> JSONModelResponse:
    return JSONModelResponse(to_wire(_own_file(request, caller.account_id, file_id)))


@router.delete(
    "/{file_id}",
    status_code=204,
    responses=errors(*AUTH_ERRORS, 404, descriptions=_NOT_FOUND),
    summary="Delete a file",
)
def delete_file(file_id: str, request: Request, caller: CallerDep) -> Response:
    """Soft delete: the file can no longer be referenced and its bytes are removed."""
    svc = services(request)
    record = _own_file(request, caller.account_id, file_id)
    svc.store.files.delete(record.id, caller.account_id)
    svc.blobs.delete(file_key(record.id))
    svc.blobs.delete(upload_key(record.id))
    return Response(status_code=204)


# --- ingest and maintenance -----------------------------------------------------------------------


MAX_INGEST_ATTEMPTS = 3
"""Ingests one upload may start. More means each one ended with its process (killed for memory,
say); the next attempt fails the file instead of decoding it again."""


def ingest(svc: Services, file_id: str, account_id: str) -> None:
    """Decide a pending upload: ready, or failed with a reason. Never raises: whatever goes wrong
    fails the file, so no upload stays pending."""
    try:
        _ingest(svc, file_id, account_id)
    except Exception:
        log.exception("ingest of file %s failed", file_id)
        svc.store.files.finish(file_id, FileState.FAILED, reason="the upload could not be checked")


def _ingest(svc: Services, file_id: str, account_id: str) -> None:
    record = svc.store.files.get(file_id, account_id)
    if record is None or record.state != FileState.PENDING:
        return
    attempt = svc.store.files.start_ingest(file_id)
    if attempt is None:
        return
    if attempt > MAX_INGEST_ATTEMPTS:
        reason = f"the upload could not be checked: {MAX_INGEST_ATTEMPTS} attempts did not finish"
        svc.store.files.finish(file_id, FileState.FAILED, reason=reason)
        log.warning("file %s failed: %s", file_id, reason)
        return
    try:
        if svc.blobs.exists(upload_key(file_id)):  # bytes PUT to the upload URL become the file's
            svc.blobs.move(upload_key(file_id), file_key(file_id))
        data = svc.blobs.get(file_key(file_id))
    except BlobNotFound:
        svc.store.files.finish(file_id, FileState.FAILED, reason="the uploaded bytes are missing")
        return
    if len(data) != record.size_bytes:
        reason = f"uploaded {len(data)} bytes, but size_bytes is {record.size_bytes}"
        svc.store.files.finish(file_id, FileState.FAILED, reason=reason)
        return
    settings = svc.settings
    try:
        image = load_input(data, settings.max_input_pixels, settings.max_input_aspect_ratio)
    except JobFailure as failure:
        svc.store.files.finish(file_id, FileState.FAILED, reason=f"{failure.code.value}: {failure.reason}")
        return
    if svc.moderator.check_image(image, "files", file_id) is not None:
        reason = f"content_moderated: {Reason.INPUT_MODERATED}"
        svc.store.files.finish(file_id, FileState.FAILED, reason=reason)
        return
    svc.store.files.finish(file_id, FileState.READY, mime_type=sniff_media_type(data) or record.mime_type)
    log.info("file %s is ready", file_id)


def maintain_files(svc: Services, stalled_after_s: float = 60.0) -> None:
    """Delete expired files (record soft-deleted, bytes removed); re-run interrupted ingests. One
    file that fails here never keeps the others from being maintained."""
    for file_id in svc.store.files.expire():
        try:
            svc.blobs.delete(file_key(file_id))
        except Exception:
            log.exception("deleting the bytes of expired file %s failed", file_id)
        else:
            log.info("file %s expired and was deleted", file_id)
    for record in svc.store.files.stalled(stalled_after_s):
        ingest(svc, record.id, record.account_id)
