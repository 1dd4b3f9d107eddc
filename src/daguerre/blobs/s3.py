"""Blobs in any S3-compatible object store (AWS S3, Cloudflare R2, Ceph RGW, Garage, SeaweedFS...),
through boto3.

    blobs = S3BlobStore("my-bucket", prefix="daguerre/")     # blob_url = "s3://my-bucket/daguerre"

Where and as whom: everything boto3 reads by itself, so the deployment configures it the way it
configures any AWS tool. The endpoint comes from `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`, or
`endpoint_url` in the shared config file; none: AWS S3), the region from `AWS_REGION` (which
boto3 alone ignores), `AWS_DEFAULT_REGION` or the config file, the credentials from
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`), `AWS_PROFILE` and the
shared files, or a role on AWS. The constructor's own arguments take precedence over all of that
(tests use them).

Presigned URLs are minted by boto3 with SigV4 query authentication (`signature_version="s3v4"`,
always: boto3 otherwise mints SigV2 URLs for custom endpoints and for us-east-1), and the object
store checks them: clients download outputs from it and PUT uploads into it directly, daguerre
serves no bytes. Upload URLs sign the Content-Type, and the Content-Length when it is given, so
the store refuses any other type or size.

Addressing: `"path"` (`https://ENDPOINT/BUCKET/KEY`) or `"virtual"` (`https://BUCKET.ENDPOINT/KEY`)
force one style. None: the shared config file's `s3 = addressing_style = ...` if it has one, else
path style for a configured endpoint (what SeaweedFS, Garage, Ceph and MinIO-likes want; boto3's
own choice) and virtual-hosted on AWS, at the region's host
(`https://BUCKET.s3.REGION.amazonaws.com/KEY`; boto3's "auto" would presign for the global host).

Keys: the optional `prefix` goes before every key daguerre builds (store.schema) and is stripped
from the keys `list_blobs` answers, so several deployments can share a bucket. Keys never come
from users.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

from daguerre.blobs.base import BlobInfo, BlobNotFound, BlobStoreError, BlobStoreUnavailable
from daguerre.blobs.sigv4 import MAX_EXPIRES_S, Credentials

log = logging.getLogger(__name__)

ADDRESSING_STYLES = ("auto", "path", "virtual")
LIST_PAGE_SIZE = 1000
"""Keys per ListObjectsV2 page (the S3 maximum)."""
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 4
"""Tries per request in boto3's "standard" retry mode (5xx, throttling, dropped connections)."""
MAX_POOL_CONNECTIONS = 32
"""Connections kept per client: API threads and workers share one store."""
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})


class S3BlobStore:
    """Blobs as objects in `bucket`, under `prefix`; one thread-safe boto3 client."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        addressing_style: str | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        credentials: Credentials | None = None,
        list_page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        try:
            import boto3.session
            import botocore.session
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError
        except ImportError as exc:
            raise BlobStoreUnavailable(
                "blob_url is an s3:// URL, but boto3 is not installed: "
                "pip install 'daguerre[server]' (or pip install 'boto3>=1.35,<2')"
            ) from exc
        if addressing_style is not None and addressing_style not in ADDRESSING_STYLES:
            raise ValueError(f"addressing_style must be one of {', '.join(ADDRESSING_STYLES)}")
        if not 1 <= list_page_size <= LIST_PAGE_SIZE:
            raise ValueError(f"list_page_size must be between 1 and {LIST_PAGE_SIZE}")
        self.bucket = bucket
        self.prefix = prefix
        self._page_size = list_page_size

        def client(style: str | None) -> Any:
            s3_options: Any = {"addressing_style": style} if style else None
            config = Config(
                signature_version="s3v4",
                s3=s3_options,
                retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                max_pool_connections=MAX_POOL_CONNECTIONS,
                tcp_keepalive=True,
                # Checksums only where the S3 API requires them: boto3's default since 1.36 (CRC32
                # on every upload, sent as chunked uploads) is refused by several S3-compatible
                # services.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            return session.client(
                "s3",
                endpoint_url=endpoint_url,
                # boto3 itself reads only AWS_DEFAULT_REGION; the AWS CLI and the other SDKs
                # prefer AWS_REGION, and so does daguerre
                region_name=region_name or os.environ.get("AWS_REGION") or None,
                aws_access_key_id=credentials.access_key if credentials else None,
                aws_secret_access_key=credentials.secret_key if credentials else None,
                config=config,
            )

        try:
            core = botocore.session.Session()
            session = boto3.session.Session(botocore_session=core)
            style = addressing_style or (core.get_config_variable("s3") or {}).get("addressing_style")
            self._client: Any = client(style)
            if style is None and _is_aws(self._client.meta.endpoint_url):
                # boto3's "auto" presigns for the global host (BUCKET.s3.amazonaws.com), which
                # redirects for buckets outside us-east-1 for a while after they are made
                self._client = client("virtual")
            found = credentials is not None or session.get_credentials() is not None
        except (BotoCoreError, ValueError) as exc:  # a missing profile, a malformed endpoint URL...
            raise BlobStoreUnavailable(f"the S3 client for blob_url could not be set up: {exc}") from exc
        if not found:
            raise BlobStoreUnavailable(
                "blob_url is an s3:// URL, but no AWS credentials were found: set AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or a role)"
            )
        log.info("blobs in s3://%s/%s at %s", bucket, prefix, self.endpoint_url)

    @property
    def endpoint_url(self) -> str:
        """Where the client sends requests (for AWS, the regional endpoint boto3 chose)."""
        url: str = self._client.meta.endpoint_url
        return url

    def _object(self, key: str) -> str:
        return self.prefix + key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with _errors(key):
            self._client.put_object(
                Bucket=self.bucket, Key=self._object(key), Body=data, ContentType=content_type
            )

    def get(self, key: str) -> bytes:
        with _errors(key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._object(key))
            with response["Body"] as body:
                data: bytes = body.read()
                return data

    def exists(self, key: str) -> bool:
        try:
            with _errors(key):
                self._client.head_object(Bucket=self.bucket, Key=self._object(key))
        except BlobNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        try:
            with _errors(key):
                self._client.delete_object(Bucket=self.bucket, Key=self._object(key))
        except BlobNotFound:  # S3 answers 204 for a missing key; some compatible services 404
            pass

    def move(self, source: str, target: str) -> None:
        """Copy, then delete: S3 has no rename. Readers may see both copies for a moment, never
        neither."""
        with _errors(source):
            self._client.copy_object(
                Bucket=self.bucket,
                Key=self._object(target),
                CopySource={"Bucket": self.bucket, "Key": self._object(source)},
            )
        self.delete(source)

    def list_blobs(self, prefix: str) -> Iterator[BlobInfo]:
        """ListObjectsV2 pages, fetched as the caller goes (a continuation token carries on after
        the last key seen, so deleting what was listed is safe)."""
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=self._object(prefix),
            PaginationConfig={"PageSize": self._page_size},
        )
        skip = len(self.prefix)
        with _errors(prefix):
            for page in pages:
                for item in page.get("Contents", ()):
                    name: str = item["Key"]
                    if not name.startswith(self.prefix):
                        continue
                    yield BlobInfo(name[skip:], int(item["Size"]), item["LastModified"].astimezone(UTC))

    def presign_get(self, key: str, ttl_s: int, base_url: str | None = None) -> str:
        _check_ttl(ttl_s)
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._object(key)}, ExpiresIn=ttl_s
        )
        return url

    def presign_put(
        self,
        key: str,
        ttl_s: int,
        content_type: str,
        base_url: str | None = None,
        *,
        content_length: int | None = None,
    ) -> str:
        _check_ttl(ttl_s)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._object(key),
            "ContentType": content_type,
        }
        if content_length is not None:
            params["ContentLength"] = content_length
        url: str = self._client.generate_presigned_url("put_object", Params=params, ExpiresIn=ttl_s)
        return url


def _is_aws(endpoint_url: str) -> bool:
    host = urlsplit(endpoint_url).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def _check_ttl(ttl_s: int) -> None:
    if not 1 <= ttl_s <= MAX_EXPIRES_S:
        raise ValueError(f"ttl_s must be between 1 and {MAX_EXPIRES_S}")


@contextmanager
def _errors(key: str) -> Iterator[None]:
    """S3's "no such key" as BlobNotFound; any other failure (an error answer, or none after the
    retries) as BlobStoreError, an OSError like the local store's disk errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _NOT_FOUND:
            raise BlobNotFound(key) from None
        raise BlobStoreError(
            f"S3 refused {exc.operation_name} of {key!r}: {code} {error.get('Message', '')}"
        ) from exc
    except BotoCoreError as exc:
        raise BlobStoreError(f"S3 request for {key!r} failed: {exc}") from exc
