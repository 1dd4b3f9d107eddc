"""The S3 blob store on a real SeaweedFS: URLs minted by boto3 that the service itself checks
(signature, expiry, the signed Content-Type and Content-Length), the key prefix, paging, errors, and
how `blob_url` and the standard AWS variables choose and configure it."""

from __future__ import annotations

import sys
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from daguerre.blobs import BlobNotFound, BlobStoreError, BlobStoreUnavailable, S3BlobStore, open_blob_store
from daguerre.blobs.sigv4 import Credentials
from daguerre.cli import app
from daguerre.settings import Settings, parse_s3_url
from support.seaweed import REGION

pytestmark = pytest.mark.s3

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
KEY = "outputs/g/t/0.png"


def with_params(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    params.update(changes)
    return urlunsplit(parts._replace(query=urlencode(params)))


def other_store(seaweedfs, prefix: str = "", **options) -> S3BlobStore:
    return S3BlobStore(
        seaweedfs.bucket,
        prefix,
        endpoint_url=seaweedfs.endpoint,
        region_name=REGION,
        credentials=seaweedfs.credentials,
        **options,
    )


def aws_environment(monkeypatch, seaweedfs) -> None:
    """The standard AWS variables pointing at the test SeaweedFS."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.credentials.secret_key)
    monkeypatch.setenv("AWS_REGION", REGION)


# Presigned URLs, checked by the S3 service ---------------------------------------------------------


def test_a_get_url_serves_the_bytes_until_it_expires(s3_blobs, seaweedfs):
    s3_blobs.put(KEY, PNG, "image/png")
    url = s3_blobs.presign_get(KEY, 2, base_url="http://ignored:8000")  # X-Amz-Date has whole seconds
    assert url.startswith(f"{seaweedfs.endpoint}/{seaweedfs.bucket}/{s3_blobs.prefix}{KEY}?")
    params = httpx.URL(url).params
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and params["X-Amz-SignedHeaders"] == "host"
    response = httpx.get(url, timeout=10)
    assert (response.status_code, response.content) == (200, PNG)
    assert response.headers["content-type"] == "image/png"
    time.sleep(3.1)
    expired = httpx.get(url, timeout=10)
    assert expired.status_code == 403
    assert "<Code>AccessDenied</Code>" in expired.text and "Request has expired" in expired.text


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: with_params(url, **{"X-Amz-Signature": "0" * 64}),
        lambda url: with_params(url, **{"X-Amz-Expires": "604800"}),
        lambda url: url.replace("/0.png?", "/1.png?"),
    ],
    ids=["signature", "expires", "key"],
)
def test_a_tampered_get_url_is_refused(s3_blobs, tamper):
    s3_blobs.put(KEY, PNG, "image/png")
    s3_blobs.put(KEY.replace("/0.png", "/1.png"), PNG, "image/png")
    response = httpx.get(tamper(s3_blobs.presign_get(KEY, 3600)), timeout=10)
    assert response.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in response.text


def test_a_url_signed_with_another_secret_is_refused(s3_blobs, seaweedfs):
    s3_blobs.put(KEY, PNG, "image/png")
    forger = S3BlobStore(
        seaweedfs.bucket,
        s3_blobs.prefix,
        endpoint_url=seaweedfs.endpoint,
        region_name=REGION,
        credentials=Credentials(seaweedfs.credentials.access_key, "not-the-secret"),
    )
    assert httpx.get(forger.presign_get(KEY, 3600), timeout=10).status_code == 403


def test_a_put_url_takes_exactly_the_signed_content_type_and_length(s3_blobs):
    url = s3_blobs.presign_put("uploads/f", 3600, "image/png", content_length=len(PNG))
    assert httpx.URL(url).params["X-Amz-SignedHeaders"] == "content-length;content-type;host"
    for headers, body in (
        ({"Content-Type": "image/jpeg"}, PNG),
        ({}, PNG),
        ({"Content-Type": "image/png"}, PNG + b"more"),
        ({"Content-Type": "image/png"}, b"\0" * (5 * 1024 * 1024)),
    ):
        refused = httpx.put(url, content=body, headers=headers, timeout=30)
        assert refused.status_code == 403 and "SignatureDoesNotMatch" in refused.text
    assert not s3_blobs.exists("uploads/f")
    done = httpx.put(url, content=PNG, headers={"Content-Type": "image/png"}, timeout=10)
    assert done.status_code == 200, done.text
    assert s3_blobs.get("uploads/f") == PNG
    [blob] = s3_blobs.list_blobs("uploads/")
    assert (blob.key, blob.size) == ("uploads/f", len(PNG))


def test_a_put_url_without_a_length_signs_only_the_content_type(s3_blobs):
    url = s3_blobs.presign_put("uploads/f", 3600, "image/webp")
    assert httpx.URL(url).params["X-Amz-SignedHeaders"] == "content-type;host"
    assert (
        httpx.put(url, content=b"RIFF", headers={"Content-Type": "image/webp"}, timeout=10).status_code == 200
    )
    assert s3_blobs.get("uploads/f") == b"RIFF"


def test_a_put_url_expires(s3_blobs):
    url = s3_blobs.presign_put("uploads/f", 1, "image/png")
    time.sleep(2.1)
    response = httpx.put(url, content=PNG, headers={"Content-Type": "image/png"}, timeout=10)
    assert response.status_code == 403 and "Request has expired" in response.text
    assert not s3_blobs.exists("uploads/f")


# Keys, prefixes, paging ----------------------------------------------------------------------------


def test_the_prefix_is_put_before_every_key_and_stripped_from_listings(s3_blobs, seaweedfs):
    neighbour = other_store(seaweedfs, "neighbour-" + s3_blobs.prefix)
    whole_bucket = other_store(seaweedfs)
    s3_blobs.put("inputs/g/0", b"mine", "image/png")
    neighbour.put("inputs/g/0", b"theirs", "image/png")
    assert [b.key for b in s3_blobs.list_blobs("inputs/")] == ["inputs/g/0"]
    assert s3_blobs.get("inputs/g/0") == b"mine" and neighbour.get("inputs/g/0") == b"theirs"
    assert whole_bucket.get(s3_blobs.prefix + "inputs/g/0") == b"mine"
    assert [b.key for b in whole_bucket.list_blobs(s3_blobs.prefix)] == [s3_blobs.prefix + "inputs/g/0"]
    s3_blobs.move("inputs/g/0", "inputs/g/1")
    assert neighbour.get("inputs/g/0") == b"theirs"
    s3_blobs.delete("inputs/g/1")
    assert neighbour.exists("inputs/g/0") and not whole_bucket.exists(s3_blobs.prefix + "inputs/g/1")


def test_listing_goes_page_by_page_and_survives_deletions(s3_blobs, seaweedfs):
    paged = other_store(seaweedfs, s3_blobs.prefix, list_page_size=3)
    for n in range(10):
        paged.put(f"outputs/g{n}/t/0.png", b"x" * n, "image/png")
    paged.put("outputs-elsewhere/x", b"x", "image/png")
    seen = []
    for blob in paged.list_blobs("outputs/"):
        seen.append((blob.key, blob.size))
        paged.delete(blob.key)
    assert seen == [(f"outputs/g{n}/t/0.png", n) for n in range(10)]
    assert [b.key for b in paged.list_blobs("")] == ["outputs-elsewhere/x"]


def test_a_move_of_a_missing_blob_is_blob_not_found(s3_blobs):
    with pytest.raises(BlobNotFound):
        s3_blobs.move("uploads/nothing", "files/nothing")
    assert not s3_blobs.exists("files/nothing")


# Failures ------------------------------------------------------------------------------------------


def test_a_missing_bucket_is_a_blob_store_error_not_a_missing_blob(seaweedfs):
    store = S3BlobStore(
        "no-such-bucket-here",
        endpoint_url=seaweedfs.endpoint,
        region_name=REGION,
        credentials=seaweedfs.credentials,
    )
    with pytest.raises(BlobStoreError) as raised:
        store.get(KEY)
    assert isinstance(raised.value, OSError) and "NoSuchBucket" in str(raised.value)
    with pytest.raises(BlobStoreError):
        list(store.list_blobs(""))


def test_an_unreachable_service_is_a_blob_store_error(seaweedfs):
    from support.helpers import free_port

    store = S3BlobStore(
        seaweedfs.bucket,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name=REGION,
        credentials=seaweedfs.credentials,
    )
    started = time.monotonic()
    with pytest.raises(BlobStoreError):
        store.put(KEY, PNG, "image/png")
    assert time.monotonic() - started < 15  # a few quick retries, then the error


def test_no_credentials_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    with pytest.raises(BlobStoreUnavailable, match="AWS_ACCESS_KEY_ID"):
        open_blob_store(Settings(blob_url="s3://daguerre-test"))


def test_without_boto3_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.setitem(sys.modules, "boto3.session", None)
    with pytest.raises(BlobStoreUnavailable, match=r"boto3 is not installed.*daguerre\[server\]"):
        S3BlobStore("daguerre-test")


# Choosing and configuring the store ----------------------------------------------------------------


def test_blob_url_and_the_aws_variables_choose_the_s3_store(monkeypatch, seaweedfs, tmp_path):
    aws_environment(monkeypatch, seaweedfs)
    settings = Settings(data_dir=tmp_path / "data", blob_url=f"s3://{seaweedfs.bucket}/deploy-a/blobs/")
    store = open_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.endpoint_url) == (
        seaweedfs.bucket,
        "deploy-a/blobs/",
        seaweedfs.endpoint,
    )
    store.put(KEY, PNG, "image/png")
    assert other_store(seaweedfs).get("deploy-a/blobs/" + KEY) == PNG
    assert httpx.get(store.presign_get(KEY, 60), timeout=10).content == PNG
    store.delete(KEY)
    assert not (tmp_path / "data" / "blobs").exists()  # nothing on local disk


@pytest.mark.parametrize(
    ("environment", "style", "expected"),
    [
        # a configured endpoint: path style (what SeaweedFS, Garage, Ceph, MinIO-likes want)
        ({"AWS_ENDPOINT_URL_S3": "http://seaweed.internal:8333"}, None, "http://seaweed.internal:8333/bkt/"),
        ({"AWS_ENDPOINT_URL": "https://r2.example.com"}, None, "https://r2.example.com/bkt/"),
        # ... unless told otherwise
        ({"AWS_ENDPOINT_URL_S3": "http://s3.internal:8333"}, "virtual", "http://bkt.s3.internal:8333/"),
        # AWS: virtual-hosted unless told otherwise
        ({}, None, "https://bkt.s3.amazonaws.com/"),
        ({"AWS_REGION": "eu-central-1"}, None, "https://bkt.s3.eu-central-1.amazonaws.com/"),
        ({"AWS_REGION": "eu-central-1"}, "path", "https://s3.eu-central-1.amazonaws.com/bkt/"),
    ],
)
def test_addressing_style(monkeypatch, tmp_path, environment, style, expected):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SK")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path, blob_url="s3://bkt/p", blob_addressing_style=style)
    store = open_blob_store(settings)
    for url in (store.presign_get(KEY, 3600), store.presign_put("uploads/f", 3600, "image/png")):
        assert url.startswith(expected), url
        # SigV4 always (boto3 would mint SigV2 URLs for custom endpoints and us-east-1 otherwise)
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "AWSAccessKeyId" not in url


def test_the_aws_config_file_s_addressing_style_is_honoured(monkeypatch, tmp_path):
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-1\ns3 =\n  addressing_style = path\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SK")
    store = open_blob_store(Settings(data_dir=tmp_path, blob_url="s3://bkt"))
    assert store.presign_get(KEY, 60).startswith(f"https://s3.eu-west-1.amazonaws.com/bkt/{KEY}?")


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://bkt", "bkt", ""),
        ("s3://bkt/", "bkt", ""),
        ("s3://my.bucket-1/daguerre", "my.bucket-1", "daguerre/"),
        ("s3://bkt/a/b_c/", "bkt", "a/b_c/"),
    ],
)
def test_s3_urls(url, bucket, prefix):
    location = parse_s3_url(url)
    assert (location.bucket, location.prefix) == (bucket, prefix)
    assert Settings(blob_url=url).s3_location == location


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://", "bucket name '' is not valid"),
        ("s3://ab", "bucket name 'ab' is not valid"),
        ("s3://My_Bucket/x", "bucket name 'My_Bucket' is not valid"),
        ("s3://bkt/a//b", "key prefix '/a//b' is not valid"),
        ("s3://bkt/../x", "key prefix '/../x' is not valid"),
        ("s3://bkt/a b", "key prefix '/a b' is not valid"),
        ("s3://bkt?region=x", "no query"),
        ("s3://AK:SK@bkt", "credentials do not belong in blob_url"),
        ("s3://localhost:8333/bkt", "not a host"),
        ("s3:bkt", "must be s3://BUCKET[/PREFIX] or file:///PATH"),
        ("gs://bkt", "must be s3://BUCKET[/PREFIX] or file:///PATH"),
        ("/srv/blobs", "must be s3://BUCKET[/PREFIX] or file:///PATH"),
        ("file://host/srv", "file:///PATH"),
    ],
)
def test_malformed_blob_urls_are_refused_with_the_reason(url, message):
    with pytest.raises(ValidationError, match="blob_url") as raised:
        Settings(blob_url=url)
    assert message in str(raised.value)


def test_file_urls_name_the_local_store_s_directory(tmp_path):
    assert Settings(data_dir=tmp_path, blob_url="file://").resolved_blob_dir == tmp_path / "blobs"
    settings = Settings(data_dir=tmp_path, blob_url=f"file://{tmp_path}/elsewhere")
    assert settings.resolved_blob_dir == tmp_path / "elsewhere" and settings.s3_location is None
    assert open_blob_store(settings).root == (tmp_path / "elsewhere").resolve()
    with pytest.raises(ValidationError, match="name two places"):
        Settings(blob_dir=tmp_path / "a", blob_url=f"file://{tmp_path}/b")


def test_the_commands_refuse_a_bad_blob_url_or_missing_credentials_in_one_line(monkeypatch, tmp_path):
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    assert runner.invoke(app, ["migrate", *data]).exit_code == 0
    monkeypatch.setenv("DAGUERRE_BLOB_URL", "s3://Bad_Bucket")
    result = runner.invoke(app, ["gc", *data])
    assert result.exit_code == 2 and "blob_url" in result.stderr and "Bad_Bucket" in result.stderr
    assert "Traceback" not in result.output
    monkeypatch.setenv("DAGUERRE_BLOB_URL", "s3://good-bucket")
    result = runner.invoke(app, ["gc", *data])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("daguerre: ") and "no AWS credentials" in line


def test_daguerre_gc_sweeps_an_s3_bucket(monkeypatch, seaweedfs, tmp_path, s3_blobs):
    aws_environment(monkeypatch, seaweedfs)
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    assert runner.invoke(app, ["migrate", *data]).exit_code == 0
    monkeypatch.setenv("DAGUERRE_BLOB_URL", f"s3://{seaweedfs.bucket}/{s3_blobs.prefix}")
    result = runner.invoke(app, ["gc", "--dry-run", *data])
    assert result.exit_code == 0, result.output
    assert "orphans: would delete 0 output(s)" in result.output
