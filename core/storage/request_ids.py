"""The request id: issued by the server with each slate, opaque to clients.

``<12 hex: milliseconds><4 hex: member tag><12 hex: random>``, 28 characters. The time lets a
worker tell an expired request from an unknown one; the member tag is the hash tag of the
served slate's key (see :mod:`core.storage.keys`), so a worker finds the slate from the request
id alone, in the slot that also holds the member's clicked posts. The random part's first digit
is :data:`UNWRITTEN` exactly when the slate will never be written (served degraded, or empty),
so a worker counts its events ``unknown_request`` at once rather than wait for the slate
(core.events); ids issued before that rule have it by chance, and their slates were written
before their answers, so a worker finds them or nothing would come.
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


#: The first digit of a request id's random part when its slate is never written.
UNWRITTEN = "0"
_WRITTEN_DIGITS = "123456789abcdef"


def new_request_id(user_id: str, now: float | None = None, *, written: bool = True) -> str:
    """A time-ordered id for a slate served to ``user_id``; ``written``: whether the slate
    will be written (see the module docstring)."""
    millis = int((time.time() if now is None else now) * 1000)
    first = _WRITTEN_DIGITS[secrets.randbelow(15)] if written else UNWRITTEN
    return f"{millis:012x}{member_tag(user_id)}{first}{secrets.token_hex(6)[1:]}"


def never_written(request_id: str) -> bool:
    """Whether a request id from :func:`new_request_id` says its slate is never written."""
    return bool(_FORMAT.fullmatch(request_id)) and request_id[16] == UNWRITTEN


def request_time(request_id: str) -> float | None:
    """When a request id from :func:`new_request_id` was issued, or None if it is not one."""
    if not _FORMAT.fullmatch(request_id):
        return None
    return int(request_id[:12], 16) / 1000.0


def request_tag(request_id: str) -> str | None:
    """The member tag inside a request id from :func:`new_request_id`, or None if it is not one."""
    return request_id[12:16] if _FORMAT.fullmatch(request_id) else None
