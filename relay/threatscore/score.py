"""The score API (2020-2022): `GET {base}/api/score/{value}`."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

import requests

from relay.config import Settings
from relay.errors import InvalidArgumentError
from relay.schemas import ScoreAnswer, parse_score_answer
from relay.threatscore.transport import Pacing, Transport, error_message, parse_json, status_error

# The one 404 that means "no data" rather than a wrong URL.
NOT_FOUND_MARKER = "observable not found"


class ScoreClient:
    def __init__(
        self,
        settings: Settings,
        session: requests.Session,
        sleep: Callable[[float], None] = time.sleep,
        pacing: Pacing | None = None,
    ):
        self._base_url = settings.threatscore_api_url
        self._transport = Transport(settings, session, sleep, pacing)

    def url_for(self, value: str) -> str:
        """One path segment, whatever the value holds: no `/`, `?`, `#` or `..` can steer the path."""
        segment = quote(value, safe="")
        # `.` and `..` are dot segments even when encoded (requests decodes %2E): refuse them.
        if segment in ("", ".", ".."):
            raise InvalidArgumentError(f"{value!r} cannot be looked up on Threatscore")
        return f"{self._base_url}/api/score/{segment}"

    def fetch(self, value: str, deadline: float | None = None) -> ScoreAnswer | None:
        status, body = self._transport.exchange("GET", self.url_for(value), deadline)
        if status == 200:
            return parse_score_answer(parse_json(body))
        if status == 404 and NOT_FOUND_MARKER in error_message(body).lower():
            return None  # "no data", not an error
        raise status_error(status, body)
