"""Blob storage: input images, outputs and uploads, handed out as presigned URLs.

blobs = open_blob_store(settings)
blobs.put("outputs/<id>/<token>/0.png", data, "image/png")
url = blobs.presign_get("outputs/<id>/<token>/0.png", 3600, base_url="http://host:8000")
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from daguerre.blobs.base import BlobInfo, BlobNotFound, BlobStore, BlobStoreError, BlobStoreUnavailable
from daguerre.blobs.local import LocalBlobStore
from daguerre.blobs.s3 import S3BlobStore
from daguerre.blobs.sigv4 import Credentials
from daguerre.settings import Settings, write_private_file

ACCESS_KEY = "daguerre"
LOCAL_ONLY_SETTINGS = ("blob_dir", "blob_secret", "public_url")

log = logging.getLogger(__name__)


def open_blob_store(settings: Settings) -> BlobStore:
    """The store `blob_url` names: an S3 bucket (boto3 reads where and as whom from the standard
    AWS variables and config), or by default the local-disk store under the data directory,
    signing with the deployment's secret. Raises BlobStoreUnavailable when S3 cannot be used."""
    location = settings.s3_location
    if location is not None:
        ignored = [name for name in LOCAL_ONLY_SETTINGS if getattr(settings, name) is not None]
        if ignored:
            log.warning("blobs are in S3: %s only apply to local blobs and are ignored", ", ".join(ignored))
        return S3BlobStore(location.bucket, location.prefix, addressing_style=settings.blob_addressing_style)
    secret = settings.blob_secret or _load_or_create_secret(settings.data_dir / "blob-secret")
    return LocalBlobStore(
        settings.resolved_blob_dir, Credentials(ACCESS_KEY, secret), public_url=settings.public_url
    )


def _load_or_create_secret(path: Path) -> str:
    """A random signing secret kept in a file only the current user can read."""
    if not path.exists():
        write_private_file(path, secrets.token_urlsafe(32) + "\n")  # loses harmlessly to a racing process
    return path.read_text().strip()


__all__ = [
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "BlobStoreUnavailable",
    "LocalBlobStore",
    "S3BlobStore",
    "open_blob_store",
]
