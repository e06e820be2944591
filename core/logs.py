"""One JSON object per log line, the format of every process of the service: the app's and the
worker's records and gunicorn's own messages (ready for Loki or ELK).

gunicorn's master process uses this module too, so it imports nothing with effects at import
(the standard library, orjson and :mod:`core.jsontext` only): the metric definitions open their
multiprocess files on import, and the master must not do that before ``on_starting`` has even
made their directory.

Lines are encoded with orjson (about a tenth of the standard encoder's time). They hold what
the standard library's ``json.dumps(entry, default=str)`` wrote, compact (a float below 1e-4
may be spelt without an exponent: ``0.000015`` for ``1.5e-05``, the same number), with one
difference: a float that is not finite (NaN, infinity) is ``null``, where the standard
encoder wrote ``NaN``, which is not JSON. What orjson cannot encode (an integer past 64 bits,
a dict with keys that are not strings) is written by the standard encoder. Every line is ASCII,
non-ASCII text escaped (``\\u00e9``) as the standard encoder does, whatever stdout's encoding.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import orjson

from core.jsontext import ascii_only

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}
# orjson encodes datetimes, dataclasses and numpy values its own way: they go to _plain, as
# they went to str() with the standard encoder.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _plain(value: object) -> object:
    """What the standard encoder writes for a value orjson does not take: a float subclass
    (numpy's float64) as a number, anything else as its ``str``."""
    return float(value) if isinstance(value, float) else str(value)


def dumps(entry: dict[str, Any]) -> str:
    """``entry`` as one line of ASCII JSON (see the module's docstring)."""
    try:
        line = orjson.dumps(entry, default=_plain, option=_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(entry, default=str, separators=(",", ":"))
    return ascii_only(line)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra, "exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return dumps(entry)


def configure(level: str) -> None:
    """Send every log record of the process to stdout as JSON lines at ``level``.

    No line carries the caller's file, line or function, so the records do not look them up
    (the logging HOWTO's "Optimization": a walk up the stack for every record; a format that
    asks for them gets ``(unknown file)``, 0 and ``(unknown function)``). The thread and
    process are still looked up: ``%(process)d`` of a format could not take None.
    """
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.Formatter.converter = time.gmtime
    logging._srcfile = None
