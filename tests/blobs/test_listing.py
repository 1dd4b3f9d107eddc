"""Listing blobs under a prefix (what the sweeper walks), and what delete leaves behind."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from daguerre.blobs.local import TEMP_PREFIX


def listed(blobs, prefix):
    return sorted((blob.key, blob.size) for blob in blobs.list_blobs(prefix))


def test_the_modification_time_is_the_file_s(blobs):
    """What the sweeper's grace is judged by (the listing itself is in test_contract, on both stores)."""
    blobs.put("inputs/a/0", b"xy", "image/png")
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
