"""The BlobStore contract (blobs/base.py), run against both stores: files on local disk, and an S3
bucket on a real SeaweedFS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from daguerre.blobs import BlobNotFound, BlobStore

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def any_blobs(request) -> BlobStore:
    return request.getfixturevalue("blobs" if request.param == "local" else "s3_blobs")


def listed(blobs, prefix=""):
    return sorted((blob.key, blob.size) for blob in blobs.list_blobs(prefix))


def test_put_get_exists_delete(any_blobs):
    assert not any_blobs.exists("outputs/g/t/0.png")
    with pytest.raises(BlobNotFound):
        any_blobs.get("outputs/g/t/0.png")
    any_blobs.put("outputs/g/t/0.png", PNG, "image/png")
    assert any_blobs.exists("outputs/g/t/0.png") and any_blobs.get("outputs/g/t/0.png") == PNG
    any_blobs.put("outputs/g/t/0.png", b"replaced", "image/png")
    assert any_blobs.get("outputs/g/t/0.png") == b"replaced"
    assert not any_blobs.exists("outputs/g/t") and not any_blobs.exists("outputs/g/t/0")  # no directories
    any_blobs.delete("outputs/g/t/0.png")
    assert not any_blobs.exists("outputs/g/t/0.png")
    with pytest.raises(BlobNotFound):
        any_blobs.get("outputs/g/t/0.png")
    any_blobs.delete("outputs/g/t/0.png")  # deleting a missing blob is not an error
    any_blobs.put("outputs/g/t/1.png", b"", "image/png")  # an empty blob is a blob
    assert any_blobs.exists("outputs/g/t/1.png") and any_blobs.get("outputs/g/t/1.png") == b""


def test_move_replaces_the_target_and_removes_the_source(any_blobs):
    any_blobs.put("uploads/f", PNG, "image/png")
    any_blobs.put("files/f", b"old", "image/png")
    any_blobs.move("uploads/f", "files/f")
    assert any_blobs.get("files/f") == PNG and not any_blobs.exists("uploads/f")
    assert listed(any_blobs, "uploads/") == []
    with pytest.raises(BlobNotFound):
        any_blobs.move("uploads/f", "files/f")
    assert any_blobs.get("files/f") == PNG  # a failed move leaves the target alone


def test_list_is_by_plain_text_prefix_with_sizes_and_utc_times(any_blobs):
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    any_blobs.put("outputs/a/t/0.png", b"12345", "image/png")
    any_blobs.put("outputs/ab/t/0.png", b"123", "image/png")
    any_blobs.put("outputs/b/t/0.jpg", b"1", "image/jpeg")
    any_blobs.put("inputs/a/0", b"xy", "image/png")
    assert listed(any_blobs, "outputs/") == [
        ("outputs/a/t/0.png", 5),
        ("outputs/ab/t/0.png", 3),
        ("outputs/b/t/0.jpg", 1),
    ]
    assert listed(any_blobs, "outputs/a") == [("outputs/a/t/0.png", 5), ("outputs/ab/t/0.png", 3)]
    assert listed(any_blobs, "outputs/a/") == [("outputs/a/t/0.png", 5)]
    assert listed(any_blobs, "outputs/a/t/0.png") == [("outputs/a/t/0.png", 5)]
    assert listed(any_blobs) == [*listed(any_blobs, "inputs/"), *listed(any_blobs, "outputs/")]
    assert listed(any_blobs, "nothing/") == []
    for blob in any_blobs.list_blobs(""):
        assert blob.modified_at.tzinfo is UTC
        assert before <= blob.modified_at <= datetime.now(UTC) + timedelta(seconds=1)
        assert any_blobs.get(blob.key)  # listed keys are the store's own


def test_deleting_while_listing_is_safe(any_blobs):
    for n in range(20):
        any_blobs.put(f"inputs/g{n:02}/0", b"x" * n, "image/png")
    seen = []
    for blob in any_blobs.list_blobs("inputs/"):
        seen.append(blob.key)
        any_blobs.delete(blob.key)
    assert sorted(seen) == [f"inputs/g{n:02}/0" for n in range(20)]
    assert listed(any_blobs, "inputs/") == []


def test_presigned_urls_have_the_sigv4_query_format(any_blobs):
    for url in (
        any_blobs.presign_get("outputs/g/t/0.png", 3600, base_url="http://testserver"),
        any_blobs.presign_put("uploads/f", 3600, "image/png", base_url="http://testserver"),
    ):
        params = httpx.URL(url).params
        assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and params["X-Amz-Expires"] == "3600"
        assert params["X-Amz-Credential"].endswith("/us-east-1/s3/aws4_request")
        assert len(params["X-Amz-Signature"]) == 64 and "X-Amz-Date" in params
    for ttl in (0, 604801):
        with pytest.raises(ValueError, match="ttl_s"):
            any_blobs.presign_get("outputs/g/t/0.png", ttl)
