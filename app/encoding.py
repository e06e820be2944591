"""The API's JSON bodies, encoded by orjson.

The bodies hold what Flask's default provider wrote (compact, keys sorted, ASCII with ``\\u``
escapes, a newline at the end), in about a tenth of the time, byte for byte but for two
spellings: a float below 1e-4 may be written without an exponent (``0.000015`` for
``1.5e-05``, the same number), and a float that is not finite is ``null`` where the standard
encoder wrote ``NaN``, which is not JSON (no body holds one). What orjson cannot encode (an
integer past 64 bits, a dict with keys that are not strings) and debug mode's indented bodies
are left to Flask's provider.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response

from core.jsontext import ascii_only

# Datetimes and dataclasses the way Flask's provider writes them (HTTP dates, asdict).
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class OrjsonProvider(DefaultJSONProvider):
    """``jsonify`` (and every view's dict or list) through orjson, with the provider's
    ``sort_keys`` and ``ensure_ascii``."""

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        option = _PASSTHROUGH | (orjson.OPT_SORT_KEYS if self.sort_keys else 0)
        try:
            text = orjson.dumps(obj, default=self._plain, option=option).decode()
        except orjson.JSONEncodeError:
            return super().response(*args, **kwargs)
        if self.ensure_ascii:
            text = ascii_only(text)
        return self._app.response_class(f"{text}\n", mimetype=self.mimetype)

    def _plain(self, value: object) -> object:
        """A float subclass (numpy's float64) as a number, as the standard encoder writes it;
        anything else as Flask's provider does (or TypeError)."""
        return float(value) if isinstance(value, float) else self.default(value)
