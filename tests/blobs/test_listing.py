"""Listing blobs under a prefix (what the sweeper walks), and what delete leaves behind."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from daguerre.blobs.local import TEMP_PREFIX


def listed(blobs, prefix):
    return sorted((blob.key, blob.size) for blob in blobs.list_blobs(prefix))


def test_lists_keys_sizes_and_modification_times_under_a_prefix(blobs):
    blobs.put("outputs/a/t/0.png", b"12345", "image/png")
    blobs.put("outputs/ab/t/0.png", b"123", "image/png")
    blobs.put("outputs/b/t/0.jpg", b"1", "image/jpeg")
    blobs.put("inputs/a/0", b"xy", "image/png")
    assert listed(blobs, "outputs/") == [
        ("outputs/a/t/0.png", 5),
        ("outputs/ab/t/0.png", 3),
        ("outputs/b/t/0.jpg", 1),
    ]
    # The prefix is plain text, as with S3: `outputs/a` also matches `outputs/ab/...`.
    assert listed(blobs, "outputs/a") == [("outputs/a/t/0.png", 5), ("outputs/ab/t/0.png", 3)]
    assert listed(blobs, "outputs/a/") == [("outputs/a/t/0.png", 5)]
    assert listed(blobs, "") == [*listed(blobs, "inputs/"), *listed(blobs, "outputs/")]
    assert listed(blobs, "nothing/") == []
    old = time.time() - 7200
    os.utime(blobs.path_for("inputs/a/0"), (old, old))
    [blob] = blobs.list_blobs("inputs/")
    assert blob.modified_at.tzinfo is UTC
    assert abs((blob.modified_at - datetime.fromtimestamp(old, UTC)).total_seconds()) < 1


def test_unfinished_writes_and_links_are_not_listed(blobs, tmp_path):
    blobs.put("outputs/a/t/0.png", b"1", "image/png")
    directory = blobs.path_for("outputs/a/t/0.png").parent
    (directory / f"{TEMP_PREFIX}123").write_bytes(b"half a write")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not a blob")
    (directory / "link").symlink_to(outside / "secret")
    (directory / "dir-link").symlink_to(outside)
    assert listed(blobs, "outputs/") == [("outputs/a/t/0.png", 1)]


def test_a_prefix_that_leaves_the_root_lists_nothing(blobs, tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "file").write_bytes(b"x")
    assert listed(blobs, "../") == []
    assert listed(blobs, "../outside/") == []
    assert listed(blobs, "/etc/") == []


def test_delete_removes_the_directories_it_empties_and_no_more(blobs):
    blobs.put("outputs/g/t1/0.png", b"1", "image/png")
    blobs.put("outputs/g/t2/0.png", b"2", "image/png")
    root = blobs.root
    blobs.delete("outputs/g/t1/0.png")
    assert not (root / "outputs/g/t1").exists() and (root / "outputs/g/t2/0.png").exists()
    blobs.delete("outputs/g/t2/0.png")
    assert not (root / "outputs").exists() and root.is_dir()
    blobs.put("outputs/g/t3/0.png", b"3", "image/png")  # the directories come back when needed
    assert blobs.get("outputs/g/t3/0.png") == b"3"


def test_deleting_while_listing_is_safe(blobs):
    for n in range(20):
        blobs.put(f"inputs/g{n}/0", b"x" * n, "image/png")
    seen = []
    for blob in blobs.list_blobs("inputs/"):
        seen.append(blob.key)
        blobs.delete(blob.key)
    assert sorted(seen) == sorted(f"inputs/g{n}/0" for n in range(20))
    assert listed(blobs, "inputs/") == []
