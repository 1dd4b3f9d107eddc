"""Time-ordered row ids (UUID version 7)."""

from __future__ import annotations

import time
import uuid

from daguerre.store.ids import uuid7
from daguerre.wire import parse_uuid


def test_uuid7_is_a_canonical_version_7_rfc_uuid_carrying_the_time():
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(value)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert parse_uuid(value) == value == str(parsed)  # what the API accepts and answers
    assert before <= parsed.int >> 80 <= after


def test_uuid7_sorts_by_creation_time_and_never_repeats():
    earlier = [uuid7() for _ in range(1000)]
    time.sleep(0.002)
    later = [uuid7() for _ in range(1000)]
    assert max(earlier) < min(later)
    assert len(set(earlier + later)) == 2000
