"""The blob store port: images in and out, addressed by key, handed to clients as presigned URLs.

Two implementations share this interface: `LocalBlobStore` (files under a directory; daguerre
itself serves and checks the presigned URLs) and `S3BlobStore` for any S3-compatible service (the
service checks the URLs boto3 mints). Both mint S3 SigV4 query-string URLs, so clients see one URL
shape and one expiry rule. Failures of the storage itself (a disk, the S3 service) are OSErrors.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import NamedTuple, Protocol


class BlobNotFound(LookupError):
    """No blob under that key."""


class BlobStoreError(OSError):
    """The blob service failed: an error answer, or no answer after the retries."""


class BlobStoreUnavailable(RuntimeError):
    """The configured blob store cannot be used at all (a missing package, no credentials)."""


class BlobInfo(NamedTuple):
    """One listed blob: what S3's ListObjectsV2 says of each object (Key, Size, LastModified)."""

    key: str
    size: int
    """Bytes."""
    modified_at: datetime
    """When the blob was last written, timezone-aware UTC."""


class BlobStore(Protocol):
    """Keys are built by daguerre (see store.schema), never taken from user input."""

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes:
        """The blob's bytes; raises BlobNotFound."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the blob; removing a missing blob is not an error."""
        ...

    def move(self, source: str, target: str) -> None:
        """Put the blob at `source` under `target` (replacing what is there) and remove `source`;
        raises BlobNotFound when there is no blob at `source`. On S3: copy, then delete."""
        ...

    def list_blobs(self, prefix: str) -> Iterator[BlobInfo]:
        """Every blob whose key starts with `prefix` (plain text, as S3's `Prefix`), in no promised
        order. Lazy: a caller may delete what it has been given while it goes on listing, and a
        blob written or deleted meanwhile may or may not be listed. The keys are the store's own
        and may be passed back to `get` and `delete`."""
        ...

    def presign_get(self, key: str, ttl_s: int, base_url: str | None = None) -> str:
        """A SigV4 URL that GETs the blob until `ttl_s` seconds from now.

        `base_url` is where the client reached this server; a store that serves blobs itself
        builds its URLs on it (unless a public URL is configured). Other stores ignore it.
        """
        ...

    def presign_put(
        self,
        key: str,
        ttl_s: int,
        content_type: str,
        base_url: str | None = None,
        *,
        content_length: int | None = None,
    ) -> str:
        """A SigV4 URL that PUTs the blob (with exactly this Content-Type) until `ttl_s` from now.

        With `content_length`, a store whose service checks the URLs itself signs that too, so no
        other size can be sent (S3); the local store caps every upload at the 50 MB input limit
        instead, and ingest compares the size with the declared one either way.
        """
        ...
