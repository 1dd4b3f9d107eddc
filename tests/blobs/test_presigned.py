"""Presigned blob URLs: SigV4 format, one-hour expiry, 403 when expired or tampered (spec §6.3)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from daguerre.blobs.local import UnsafeKey
from daguerre.blobs.sigv4 import Credentials, SignatureError, verify

KEY = "outputs/abc/token/0.png"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


@pytest.fixture
def stored(blobs):
    blobs.put(KEY, PNG, "image/png")
    return KEY


def with_params(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    params.update(changes)
    return urlunsplit(parts._replace(query=urlencode(params)))


def test_url_has_the_s3_sigv4_query_format(blobs, stored):
    url = blobs.presign_get(stored, 3600, base_url="http://testserver")
    params = dict(parse_qsl(urlsplit(url).query))
    assert urlsplit(url).path == "/blobs/daguerre/" + stored
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert params["X-Amz-Expires"] == "3600"
    assert params["X-Amz-SignedHeaders"] == "host"
    assert params["X-Amz-Credential"].startswith("daguerre/") and params["X-Amz-Credential"].endswith(
        "/us-east-1/s3/aws4_request"
    )
    assert len(params["X-Amz-Signature"]) == 64 and "X-Amz-Date" in params


def test_a_valid_url_serves_the_bytes(client, blobs, stored):
    response = client.get(blobs.presign_get(stored, 3600, base_url="http://testserver"))
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert client.head(blobs.presign_get(stored, 3600, base_url="http://testserver")).status_code == 200


def test_an_expired_url_is_403_access_denied(client, blobs, stored):
    url = blobs.presign_get(stored, 2, base_url="http://testserver")  # X-Amz-Date has whole seconds
    assert client.get(url).status_code == 200
    time.sleep(3.1)
    response = client.get(url)
    assert response.status_code == 403
    assert "<Code>AccessDenied</Code>" in response.text
    assert "<Message>Request has expired</Message>" in response.text
    assert response.headers["content-type"].startswith("application/xml")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: with_params(url, **{"X-Amz-Signature": "0" * 64}),
        lambda url: with_params(url, **{"X-Amz-Expires": "604800"}),
        lambda url: url.replace("/0.png", "/1.png"),
        lambda url: with_params(url, extra="1"),
    ],
    ids=["signature", "expires", "key", "extra-parameter"],
)
def test_a_tampered_url_is_403_signature_does_not_match(client, blobs, stored, tamper):
    blobs.put(KEY.replace("/0.png", "/1.png"), PNG, "image/png")
    response = client.get(tamper(blobs.presign_get(stored, 3600, base_url="http://testserver")))
    assert response.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in response.text


def test_a_url_for_another_host_does_not_verify(client, blobs, stored):
    url = blobs.presign_get(stored, 3600, base_url="http://elsewhere:9000")
    path_and_query = url.split("elsewhere:9000", 1)[1]
    assert client.get(path_and_query).status_code == 403


def test_missing_signature_parameters_are_403(client, stored):
    assert client.get("/blobs/daguerre/" + stored).status_code == 403


def test_a_signature_from_another_secret_is_refused(client, blobs, stored):
    from daguerre.blobs.local import LocalBlobStore

    forger = LocalBlobStore(blobs.root, Credentials("daguerre", "not-the-secret"))
    response = client.get(forger.presign_get(stored, 3600, base_url="http://testserver"))
    assert response.status_code == 403 and "SignatureDoesNotMatch" in response.text


def test_keys_outside_the_root_are_refused(blobs):
    for key in ("../secret", "/etc/passwd", "outputs/../../x", ""):
        with pytest.raises(UnsafeKey):
            blobs.path_for(key)


def test_a_put_url_signs_the_content_type(blobs):
    url = blobs.presign_put("uploads/f/0", 3600, "image/png", base_url="http://h:1")
    parts = urlsplit(url)
    headers = {"host": "h:1", "content-type": "image/png"}
    verify(
        method="PUT",
        raw_path=parts.path,
        raw_query=parts.query,
        headers=headers,
        credentials=blobs.credentials,
    )
    with pytest.raises(SignatureError) as wrong_type:
        verify(
            method="PUT",
            raw_path=parts.path,
            raw_query=parts.query,
            headers={**headers, "content-type": "text/html"},
            credentials=blobs.credentials,
        )
    assert wrong_type.value.code == "SignatureDoesNotMatch"
    with pytest.raises(SignatureError):  # a PUT signature does not allow a GET
        verify(
            method="GET",
            raw_path=parts.path,
            raw_query=parts.query,
            headers=headers,
            credentials=blobs.credentials,
        )


def test_keys_with_spaces_and_unicode_verify(blobs):
    url = blobs.presign_get("outputs/a b+ü=1.png", 3600, base_url="http://h:1")
    parts = urlsplit(url)
    verify(
        method="GET",
        raw_path=parts.path,
        raw_query=parts.query,
        headers={"host": "h:1"},
        credentials=blobs.credentials,
    )


def test_verify_refuses_dates_far_in_the_future(blobs):
    url = blobs.presign_get(KEY, 3600, base_url="http://h:1")
    parts = urlsplit(url)
    with pytest.raises(SignatureError) as error:
        verify(
            method="GET",
            raw_path=parts.path,
            raw_query=parts.query,
            headers={"host": "h:1"},
            credentials=blobs.credentials,
            now=datetime.now(UTC) - timedelta(hours=1),
        )
    assert error.value.message == "Request is not valid yet"


def test_urls_are_never_stored(client, auth, worker, store):
    generation_id = client.post("/v1/generations", json={"prompt": "x"}, headers=auth).json()["id"]
    worker.run_once()
    url = client.get(f"/v1/generations/{generation_id}", headers=auth).json()["output"][0]["url"]
    assert httpx.URL(url).params["X-Amz-Signature"]
    with store.db.read() as conn:
        dump = "".join(str(row) for row in conn.exec_driver_sql("SELECT * FROM generations").all())
    assert "X-Amz-Signature" not in dump and "http" not in dump


@pytest.mark.parametrize(
    ("method", "key", "content_type"),
    [
        ("GET", "outputs/abc/0.png", None),
        ("GET", "inputs/a b+ü=1.png", None),
        ("PUT", "uploads/x/0", "image/png"),
    ],
)
@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:8000/blobs", "https://cdn.example.com", "http://h:80"]
)
def test_urls_are_byte_for_byte_what_boto3_generates(monkeypatch, method, key, content_type, endpoint):
    import boto3
    import botocore.auth
    from botocore.config import Config

    from daguerre.blobs.sigv4 import presign

    frozen = datetime(2026, 11, 24, 1, 2, 3, tzinfo=UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: frozen.replace(tzinfo=None))
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AK",
        aws_secret_access_key="SK",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    params = {"Bucket": "daguerre", "Key": key, **({"ContentType": content_type} if content_type else {})}
    expected = client.generate_presigned_url(
        "get_object" if method == "GET" else "put_object", Params=params, ExpiresIn=3600
    )
    ours = presign(
        method=method,
        endpoint=endpoint,
        bucket="daguerre",
        key=key,
        ttl_s=3600,
        credentials=Credentials("AK", "SK"),
        content_type=content_type,
        now=frozen,
    )
    assert ours == expected
