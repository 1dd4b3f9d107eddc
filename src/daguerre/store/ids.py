"""Row ids that sort by creation time.

Generations and files get UUID version 7 ids (RFC 9562, section 5.7): 48 bits of Unix milliseconds,
then 74 random bits. They are ordinary UUID strings to clients, but consecutive ids land next to
each other in the primary-key B-tree, so an insert appends to one hot page instead of dirtying a
random one (on SQLite each dirty page is copied to the WAL at every commit). The random bits keep
them unguessable; the creation time they reveal is public anyway (`created_at`).
"""

from __future__ import annotations

import os
import time

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62
_RAND_A = (1 << 12) - 1  # 12 random bits after the version
_RAND_B = (1 << 62) - 1  # 62 random bits after the variant


def uuid7() -> str:
    """A new version-7 UUID, in the canonical lower-case form."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | _VERSION_7 | ((rand >> 62) & _RAND_A) << 64 | _VARIANT_RFC | (rand & _RAND_B)
    digits = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, without its checks (2.3 -> 0.9 us)
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
