"""GET (and HEAD) of presigned blob URLs, for the local blob store.

The URL is checked exactly as S3 would check it: SigV4 signature over the raw path, the query and
the Host header, then the expiry. Refusals are S3-shaped XML with status 403. Only mounted when
blobs live on local disk; with an S3 store, clients talk to the S3 service directly.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from daguerre.api.deps import services
from daguerre.blobs.local import ROUTE_PREFIX, LocalBlobStore, UnsafeKey
from daguerre.blobs.sigv4 import SignatureError, verify

router = APIRouter(prefix=ROUTE_PREFIX, include_in_schema=False)


def s3_error(status: int, code: str, message: str, resource: str, request_id: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{escape(request_id)}</RequestId></Error>"
    )
    return Response(body, status_code=status, media_type="application/xml")


@router.api_route("/{bucket}/{key:path}", methods=["GET", "HEAD"])
def get_blob(bucket: str, key: str, request: Request) -> Response:
    blobs = services(request).blobs
    assert isinstance(blobs, LocalBlobStore)
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    resource = raw_path.decode("latin-1")
    request_id = request.scope.get("state", {}).get("request_id", "")
    try:
        verify(
            method="GET",  # a HEAD request is allowed by a GET signature, as on S3
            raw_path=resource,
            raw_query=request.scope.get("query_string", b"").decode("latin-1"),
            headers={k.lower(): v for k, v in request.headers.items()},
            credentials=blobs.credentials,
        )
    except SignatureError as exc:
        return s3_error(403, exc.code, exc.message, resource, request_id)
    if bucket != blobs.bucket:
        return s3_error(404, "NoSuchBucket", "The specified bucket does not exist", resource, request_id)
    try:
        path = blobs.path_for(key)
    except UnsafeKey:
        path = None
    if path is None or not path.is_file():
        return s3_error(404, "NoSuchKey", "The specified key does not exist.", resource, request_id)
    return FileResponse(path, media_type=blobs.content_type(key))
