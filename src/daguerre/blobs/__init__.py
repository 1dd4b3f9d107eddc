"""Blob storage: input images, outputs and uploads, handed out as presigned URLs.

blobs = open_blob_store(settings)
blobs.put("outputs/<id>/<token>/0.png", data, "image/png")
url = blobs.presign_get("outputs/<id>/<token>/0.png", 3600, base_url="http://host:8000")
"""

from __future__ import annotations

import secrets
from pathlib import Path

from daguerre.blobs.base import BlobInfo, BlobNotFound, BlobStore
from daguerre.blobs.local import LocalBlobStore
from daguerre.blobs.sigv4 import Credentials
from daguerre.settings import Settings, write_private_file

ACCESS_KEY = "daguerre"


def open_blob_store(settings: Settings) -> LocalBlobStore:
    """The local-disk store under the data directory, signing with the deployment's secret."""
    secret = settings.blob_secret or _load_or_create_secret(settings.data_dir / "blob-secret")
    return LocalBlobStore(
        settings.resolved_blob_dir, Credentials(ACCESS_KEY, secret), public_url=settings.public_url
    )


def _load_or_create_secret(path: Path) -> str:
    """A random signing secret kept in a file only the current user can read."""
    if not path.exists():
        write_private_file(path, secrets.token_urlsafe(32) + "\n")  # loses harmlessly to a racing process
    return path.read_text().strip()


__all__ = ["BlobInfo", "BlobNotFound", "BlobStore", "LocalBlobStore", "open_blob_store"]
