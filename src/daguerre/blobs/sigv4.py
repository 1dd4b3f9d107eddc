"""S3 SigV4 query-string URLs: minted with botocore, checked with the standard library.

Minting goes through boto3's `generate_presigned_url`, exactly as for a real S3 service, so the URLs
have the usual shape (`X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=...&X-Amz-Date=...&
X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=...`). Checking rebuilds the canonical
request from the raw (still percent-encoded) path and query and compares signatures in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
REGION = "us-east-1"
SERVICE = "s3"
MAX_EXPIRES_S = 604800  # the SigV4 maximum, seven days
MAX_CLOCK_SKEW = timedelta(minutes=15)


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


class SignatureError(Exception):
    """A presigned URL that must be refused; `code` and `message` follow S3's error XML."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Presigner:
    """Mints presigned URLs for a bucket behind `endpoint` (one boto3 client per endpoint, cached)."""

    def __init__(self, credentials: Credentials, bucket: str, max_endpoints: int = 32) -> None:
        self._credentials = credentials
        self._bucket = bucket
        self._clients: OrderedDict[str, Any] = OrderedDict()
        self._max = max_endpoints
        self._lock = threading.Lock()

    def _client(self, endpoint: str) -> Any:
        with self._lock:
            client = self._clients.get(endpoint)
            if client is not None:
                self._clients.move_to_end(endpoint)
                return client
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=self._credentials.access_key,
            aws_secret_access_key=self._credentials.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        with self._lock:
            self._clients[endpoint] = client
            while len(self._clients) > self._max:
                self._clients.popitem(last=False)
        return client

    def get_url(self, endpoint: str, key: str, ttl_s: int) -> str:
        url: str = self._client(endpoint).generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=ttl_s
        )
        return url

    def put_url(self, endpoint: str, key: str, ttl_s: int, content_type: str) -> str:
        url: str = self._client(endpoint).generate_presigned_url(
            "put_object",
            Params={"Bucket": self._bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=ttl_s,
        )
        return url


def _uri_encode(value: str) -> str:
    return quote(value, safe="-_.~")


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def _parse_query(raw_query: str) -> list[tuple[str, str]]:
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs


def verify(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    credentials: Credentials,
    now: datetime | None = None,
) -> None:
    """Accept a presigned request or raise SignatureError. `headers` have lower-case names."""
    pairs = _parse_query(raw_query)
    params = dict(pairs)
    required = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
                "X-Amz-Signature")
    if any(name not in params for name in required) or params["X-Amz-Algorithm"] != ALGORITHM:
        raise SignatureError("AccessDenied", "Query-string authentication version 4 requires the "
                             "X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, "
                             "X-Amz-SignedHeaders, and X-Amz-Expires parameters.")
    try:
        signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires_s = int(params["X-Amz-Expires"])
    except ValueError:
        raise SignatureError("AccessDenied", "X-Amz-Date or X-Amz-Expires is malformed") from None
    access_key, _, scope = params["X-Amz-Credential"].partition("/")
    scope_parts = scope.split("/")
    if (
        not hmac.compare_digest(access_key.encode(), credentials.access_key.encode())
        or len(scope_parts) != 4
        or scope_parts[0] != signed_at.strftime("%Y%m%d")
        or scope_parts[3] != "aws4_request"
    ):
        raise SignatureError("InvalidAccessKeyId", "The access key ID you provided does not exist in our records.")
    if not 1 <= expires_s <= MAX_EXPIRES_S:
        raise SignatureError("AccessDenied", "X-Amz-Expires must be between 1 and 604800 seconds")

    signed_headers = params["X-Amz-SignedHeaders"].split(";")
    canonical_headers = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_headers)
    canonical_query = "&".join(
        f"{k}={v}"
        for k, v in sorted((_uri_encode(k), _uri_encode(v)) for k, v in pairs if k != "X-Amz-Signature")
    )
    canonical_request = "\n".join(
        (method, raw_path, canonical_query, canonical_headers, params["X-Amz-SignedHeaders"], "UNSIGNED-PAYLOAD")
    )
    string_to_sign = "\n".join(
        (ALGORITHM, params["X-Amz-Date"], scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest())
    )
    key = ("AWS4" + credentials.secret_key).encode("utf-8")
    for part in scope_parts:
        key = _hmac(key, part)
    expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
        raise SignatureError(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
        )

    now = now or datetime.now(UTC)
    if signed_at - now > MAX_CLOCK_SKEW:
        raise SignatureError("AccessDenied", "Request is not valid yet")
    if now > signed_at + timedelta(seconds=expires_s):
        raise SignatureError("AccessDenied", "Request has expired")
