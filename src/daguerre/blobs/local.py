"""Blobs as files under a root directory, served by daguerre itself through presigned URLs.

URLs look exactly like S3 path-style presigned URLs for `<base>/blobs/<bucket>/<key>`; the route in
`daguerre.api.blobs` checks them with `sigv4.verify` before reading or writing the file.
"""

from __future__ import annotations

import mimetypes
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from daguerre.blobs.base import BlobInfo, BlobNotFound
from daguerre.blobs.sigv4 import Credentials, presign

BUCKET = "daguerre"
ROUTE_PREFIX = "/blobs"
"""Local blobs are served under `<base_url>/blobs/<bucket>/<key>`."""
TEMP_PREFIX = ".tmp-"
"""A file being written is named so until it is complete and renamed to its key."""


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
        for attempt in range(3):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
                break
            except FileNotFoundError:  # a delete removed the directory it had emptied meanwhile
                if attempt == 2:
                    raise
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
        """Remove the file, and the directories above it that this leaves empty (without that,
        every generation would leave two empty directories behind for ever)."""
        path = self.path_for(key)
        path.unlink(missing_ok=True)
        self._remove_empty_parents(path)

    def move(self, source: str, target: str) -> None:
        """A rename: atomic, and the bytes are never copied."""
        source_path, target_path = self.path_for(source), self.path_for(target)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source_path, target_path)
        except FileNotFoundError:
            raise BlobNotFound(source) from None
        self._remove_empty_parents(source_path)

    def _remove_empty_parents(self, path: Path) -> None:
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone): the directories above are not empty either
                break

    def list_blobs(self, prefix: str) -> Iterator[BlobInfo]:
        """Files under the root whose key starts with `prefix`, found by walking the directory that
        holds them (symbolic links are not followed; files of unfinished writes are left out)."""
        directory, _, first = prefix.rpartition("/")
        if directory:
            try:
                top = self.path_for(directory)
            except UnsafeKey:
                return
        else:
            top = self.root
        yield from _walk(top, directory + "/" if directory else "", first)

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

    def presign_put(
        self,
        key: str,
        ttl_s: int,
        content_type: str,
        base_url: str | None = None,
        *,
        content_length: int | None = None,
    ) -> str:
        """`content_length` is not signed: the PUT route caps every upload at 50 MB itself."""
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


def _walk(directory: Path, key_prefix: str, name_prefix: str) -> Iterator[BlobInfo]:
    """The files below `directory` as blobs, keys built from `key_prefix` and the names on the way
    down; at this level only names starting with `name_prefix`. Reads each directory lazily, so a
    directory of millions of generations is never held in memory."""
    try:
        entries = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    with entries:
        for entry in entries:
            if not entry.name.startswith(name_prefix) or entry.name.startswith(TEMP_PREFIX):
                continue
            key = key_prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from _walk(Path(entry.path), key + "/", "")
                elif entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    yield BlobInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))
            except FileNotFoundError:  # deleted while we were listing
                continue
