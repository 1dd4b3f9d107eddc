"""Opaque keyset cursors for the list endpoints: the (created_at, id) of a page's last item.

cursor = encode_cursor(record.created_at, record.id)
created_at, item_id = decode_cursor(cursor)      # ApiError 400 "cursor: invalid" if forged
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

from daguerre.errors import ApiError


def encode_cursor(created_at: datetime, item_id: str) -> str:
    raw = f"{created_at.isoformat()}|{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, item_id = raw.split("|", 1)
        moment = datetime.fromisoformat(created)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "cursor: invalid") from None
    if moment.tzinfo is None or moment.utcoffset() != timedelta(0):  # cursors are minted in UTC
        raise ApiError(400, "cursor: invalid")
    return moment, item_id
