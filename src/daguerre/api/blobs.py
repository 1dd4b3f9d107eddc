"""GET, HEAD and PUT of presigned blob URLs, for the local blob store.

The URL is checked exactly as S3 would check it: SigV4 signature over the raw path, the query and
the signed headers (Host, and Content-Type for uploads), then the expiry. Refusals are S3-shaped
XML with status 403. PUT only ever writes the upload key of a file whose upload is still open
(`uploads/<file id>`: pending, not yet completed), at most 50 MB; completing the upload moves the
bytes to the file's own key, so the URL cannot replace what was checked, nor bring back a deleted
file. Only mounted when blobs live on local disk; with an S3 store, clients talk to the S3
service directly.
"""

from __future__ import annotations

import hashlib
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from daguerre.api.deps import services
from daguerre.blobs.local import ROUTE_PREFIX, LocalBlobStore, UnsafeKey
from daguerre.blobs.sigv4 import SignatureError, verify
from daguerre.store.schema import parse_upload_key
from daguerre.wire import MAX_INPUT_IMAGE_BYTES

router = APIRouter(prefix=ROUTE_PREFIX, include_in_schema=False)


def s3_error(status: int, code: str, message: str, resource: str, request_id: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{escape(request_id)}</RequestId></Error>"
    )
    return Response(body, status_code=status, media_type="application/xml")


def _check(request: Request, method: str) -> tuple[LocalBlobStore, str, Response | None]:
    """(the store, the resource path, an error response or None) for a presigned request."""
    blobs = services(request).blobs
    assert isinstance(blobs, LocalBlobStore)
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    resource = raw_path.decode("latin-1")
    request_id = request.scope.get("state", {}).get("request_id", "")
    try:
        verify(
            method=method,
            raw_path=resource,
            raw_query=request.scope.get("query_string", b"").decode("latin-1"),
            headers={k.lower(): v for k, v in request.headers.items()},
            credentials=blobs.credentials,
        )
    except SignatureError as exc:
        return blobs, resource, s3_error(403, exc.code, exc.message, resource, request_id)
    return blobs, resource, None


@router.api_route("/{bucket}/{key:path}", methods=["GET", "HEAD"])
def get_blob(bucket: str, key: str, request: Request) -> Response:
    # a HEAD request is allowed by a GET signature, as on S3
    blobs, resource, refused = _check(request, "GET")
    if refused is not None:
        return refused
    request_id = request.scope.get("state", {}).get("request_id", "")
    if bucket != blobs.bucket:
        return s3_error(404, "NoSuchBucket", "The specified bucket does not exist", resource, request_id)
    try:
        path = blobs.path_for(key)
    except UnsafeKey:
        path = None
    if path is None or not path.is_file():
        return s3_error(404, "NoSuchKey", "The specified key does not exist.", resource, request_id)
    return FileResponse(path, media_type=blobs.content_type(key))


@router.put("/{bucket}/{key:path}")
async def put_blob(bucket: str, key: str, request: Request) -> Response:
    blobs, resource, refused = _check(request, "PUT")
    if refused is not None:
        return refused
    request_id = request.scope.get("state", {}).get("request_id", "")
    file_id = parse_upload_key(key)
    if bucket != blobs.bucket or file_id is None:
        return s3_error(403, "AccessDenied", "Access Denied", resource, request_id)
    if not await run_in_threadpool(services(request).store.files.awaiting_upload, file_id):
        return s3_error(
            403, "AccessDenied", "The upload is complete or the file was deleted", resource, request_id
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_INPUT_IMAGE_BYTES:
            return s3_error(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                resource,
                request_id,
            )
        chunks.append(chunk)
    data = b"".join(chunks)
    await run_in_threadpool(
        blobs.put, key, data, request.headers.get("content-type", "application/octet-stream")
    )
    return Response(
        status_code=200, headers={"ETag": f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'}
    )
