"""The v3 API (since April 2021): `POST {base}/api/v3/observables/search/by-value`.

The value goes in the JSON body `{"data": value}`, as it is: the server works
out its type. The search only reads, so the shared transport may repeat it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from relay.config import Settings
from relay.schemas import V3Answer, parse_v3_answer
from relay.threatscore.transport import Pacing, Transport, error_message, parse_json, status_error

SEARCH_PATH = "/api/v3/observables/search/by-value"
# The one 404 that means "no data" rather than a wrong URL (as the score API says it).
NOT_FOUND_MARKER = "observable not found"


class V3Client:
    def __init__(
        self,
        settings: Settings,
        session: requests.Session,
        sleep: Callable[[float], None] = time.sleep,
        pacing: Pacing | None = None,
    ):
        self._search_url = settings.threatscore_api_url + SEARCH_PATH
        self._transport = Transport(settings, session, sleep, pacing)

    def fetch(self, value: str, deadline: float | None = None) -> V3Answer | None:
        status, body = self._transport.exchange("POST", self._search_url, deadline, {"data": value})
        if status == 200:
            return parse_v3_answer(parse_json(body))
        if status == 404 and NOT_FOUND_MARKER in error_message(body).lower():
            return None  # "no data", not an error
        raise status_error(status, body)
