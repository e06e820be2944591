"""JSON text as the standard library writes it by default, ASCII only, from orjson's output.

orjson (about ten times faster than :mod:`json`) writes UTF-8; the log lines and the API's
bodies were, and stay, ASCII with ``\\u`` escapes. Imports only the standard library (gunicorn's
master loads it with :mod:`core.logs`).
"""

from __future__ import annotations

import re

_NON_ASCII = re.compile("[^\\x00-\\x7f]")


def _escaped(match: re.Match[str]) -> str:
    """A character past ASCII as JSON's escape (a surrogate pair past the BMP), as
    ``json.dumps`` writes it."""
    code = ord(match[0])
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"


def ascii_only(text: str) -> str:
    """JSON ``text`` with every character past ASCII escaped. In JSON text such characters
    stand only inside strings, where the escape means the same character."""
    return text if text.isascii() else _NON_ASCII.sub(_escaped, text)
