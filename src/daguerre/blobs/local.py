"""Blobs as files under a root directory, served by daguerre itself through presigned URLs.

URLs look exactly like S3 path-style presigned URLs for `<base>/blobs/<bucket>/<key>`; the route in
`daguerre.api.blobs` checks them with `sigv4.verify` before reading or writing the file.
"""

from __future__ import annotations

import mimetypes
import os
import tempfile
from pathlib import Path

from daguerre.blobs.base import BlobNotFound
from daguerre.blobs.sigv4 import Credentials, presign

BUCKET = "daguerre"
ROUTE_PREFIX = "/blobs"
"""Local blobs are served under `<base_url>/blobs/<bucket>/<key>`."""


class UnsafeKey(ValueError):
    """A key that would leave the blob root."""


class LocalBlobStore:
    """Files under `root`; presigned URLs for `base_url` (or `public_url` when configured)."""

    def __init__(self, root: Path, credentials: Credentials, public_url: str | None = None) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.credentials = credentials
        self.bucket = BUCKET
        self._public_url = public_url.rstrip("/") if public_url else None

    def path_for(self, key: str) -> Path:
        """The file behind `key`, guaranteed to be inside the root (no `..`, no absolute keys)."""
        if not key or key.startswith("/") or "\x00" in key:
            raise UnsafeKey(key)
        path = Path(os.path.realpath(self.root / key))
        if not path.is_relative_to(self.root) or path == self.root:
            raise UnsafeKey(key)
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, UnsafeKey):
            raise BlobNotFound(key) from None

    def exists(self, key: str) -> bool:
        try:
            return self.path_for(key).is_file()
        except UnsafeKey:
            return False

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    def _endpoint(self, base_url: str | None) -> str:
        base = self._public_url or (base_url or "http://127.0.0.1:8000").rstrip("/")
        return base + ROUTE_PREFIX

    def presign_get(self, key: str, ttl_s: int, base_url: str | None = None) -> str:
        return presign(
            method="GET",
            endpoint=self._endpoint(base_url),
            bucket=self.bucket,
            key=key,
            ttl_s=ttl_s,
            credentials=self.credentials,
        )

    def presign_put(self, key: str, ttl_s: int, content_type: str, base_url: str | None = None) -> str:
        return presign(
            method="PUT",
            endpoint=self._endpoint(base_url),
            bucket=self.bucket,
            key=key,
            ttl_s=ttl_s,
            credentials=self.credentials,
            content_type=content_type,
        )

    @staticmethod
    def content_type(key: str) -> str:
        return mimetypes.guess_type(key)[0] or "application/octet-stream"
