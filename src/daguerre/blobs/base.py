"""The blob store port: images in and out, addressed by key, handed to clients as presigned URLs.

Two implementations share this interface: `LocalBlobStore` (files under a directory; daguerre
itself serves and checks the presigned URLs) and an S3 store for any S3-compatible service. Both
mint S3 SigV4 query-string URLs, so clients see one URL shape and one expiry rule.
"""

from __future__ import annotations

from typing import Protocol


class BlobNotFound(LookupError):
    """No blob under that key."""


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

    def presign_get(self, key: str, ttl_s: int, base_url: str | None = None) -> str:
        """A SigV4 URL that GETs the blob until `ttl_s` seconds from now.

        `base_url` is where the client reached this server; a store that serves blobs itself
        builds its URLs on it (unless a public URL is configured). Other stores ignore it.
        """
        ...

    def presign_put(self, key: str, ttl_s: int, content_type: str, base_url: str | None = None) -> str:
        """A SigV4 URL that PUTs the blob (with exactly this Content-Type) until `ttl_s` from now."""
        ...
