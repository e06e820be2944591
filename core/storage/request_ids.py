"""The request id: issued by the server with each slate, opaque to clients.

``<12 hex: milliseconds><4 hex: member tag><12 hex: random>``, 28 characters. The time lets a
worker tell an expired request from an unknown one; the member tag is the hash tag of the
served slate's key (see :mod:`core.storage.keys`), so a worker finds the slate from the request
id alone, in the slot that also holds the member's clicked posts.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

REQUEST_ID_LENGTH = 28
_FORMAT = re.compile(r"[0-9a-f]{28}")


def member_tag(user_id: str) -> str:
    """Four hex digits of a hash of the member id (65,536 tags over Redis Cluster's 16,384
    slots): the hash tag of every key about the member and their slates."""
    return hashlib.blake2b(user_id.encode(), digest_size=2).hexdigest()


def new_request_id(user_id: str, now: float | None = None) -> str:
    """A time-ordered id for a slate served to ``user_id``."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:012x}{member_tag(user_id)}{secrets.token_hex(6)}"


def request_time(request_id: str) -> float | None:
    """When a request id from :func:`new_request_id` was issued, or None if it is not one."""
    if not _FORMAT.fullmatch(request_id):
        return None
    return int(request_id[:12], 16) / 1000.0


def request_tag(request_id: str) -> str | None:
    """The member tag inside a request id from :func:`new_request_id`, or None if it is not one."""
    return request_id[12:16] if _FORMAT.fullmatch(request_id) else None
