"""Threatscore answers of our own making, in the shapes the reference describes.

Engine ids, values and dates are invented; the shapes and quirks are real.
"""

from __future__ import annotations

# Shaped like the recorded 1.1.1.1 answer: four engines, aggregate 0.3397.
FOUR_ENGINES_DATE = "2021-06-14T08:30:05.120Z"
FOUR_ENGINES = {
    "data": "198.51.100.7",
    "types": ["ip"],
    "signature": "5f1c" * 16,
    "version": 20210614,
    "geo": {"country": {"code": "FR", "name": "France"}},
    "firstSeen": "2019-02-11",
    "lastSeen": FOUR_ENGINES_DATE,
    "sources": 1,
    "scores": [
        {
            "date": FOUR_ENGINES_DATE,
            "score": 0.3397058823529412,
            "confidence": None,
            "level": "suspicious",
            "details": [
                {
                    "date": FOUR_ENGINES_DATE,
                    "engineId": "aa01" * 8,
                    "engineConfidence": None,
                    "level": "safe",
                    "score": 0,
                },
                {
                    "date": FOUR_ENGINES_DATE,
                    "engineId": "bb02" * 8,
                    "engineConfidence": None,
                    "level": "malicious",
                    "score": 0.9,
                },
                {
                    "date": FOUR_ENGINES_DATE,
                    "engineId": "cc03" * 8,
                    "engineConfidence": None,
                    "level": "suspicious",
                    "score": 0.5,
                },
                {
                    "date": FOUR_ENGINES_DATE,
                    "engineId": "dd04" * 8,
                    "engineConfidence": None,
                    "level": "safe",
                    "score": 0.175,
                },
            ],
        }
    ],
}

# The four "nothing known" forms.
NO_DATA_NESTED_EMPTY = {"scores": [[]], "types": ["Unknown"], "signature": "0e1d" * 12}
NO_DATA_NO_SCORES = {"data": "203.0.113.9", "types": ["Unknown"], "signature": "77aa" * 16}
NO_DATA_BARE_LIST: list = []
NO_DATA_404 = {"error": {"type": "Client Error", "code": "404", "message": "Observable not found"}}
# (HTTP status, body) of each form.
NO_DATA_FORMS = [
    (200, NO_DATA_NESTED_EMPTY),
    (200, NO_DATA_NO_SCORES),
    (200, NO_DATA_BARE_LIST),
    (404, NO_DATA_404),
]

ERROR_404_GENERIC = {"error": {"type": "Client Error", "code": "404", "message": "Not Found"}}
ERROR_500 = {"error": {"type": "Server Error", "code": "500", "message": "Internal Error"}}
PROXY_502_HTML = "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"


def engine(engine_id: str, score, date: str, level: str = "safe") -> dict:
    return {"date": date, "engineId": engine_id, "engineConfidence": None, "level": level, "score": score}


# A history: the newest entry last in the list (order must not matter), one null aggregate.
HISTORY = {
    "data": "malware.example",
    "types": ["domain"],
    "scores": [
        {
            "date": "2020-01-05T00:00:00.000Z",
            "score": 0.1,
            "confidence": None,
            "level": "safe",
            "details": [engine("ee05" * 8, 0.1, "2020-01-05T00:00:00.000Z")],
        },
        {
            "date": "2022-03-01T12:00:00.000Z",
            "score": None,
            "confidence": None,
            "level": None,
            "details": [engine("ff06" * 8, None, "2022-03-01T12:00:00.000Z")],
        },
        {
            "date": "2021-09-09T09:09:09.000Z",
            "score": 0.8,
            "confidence": None,
            "level": "malicious",
            "details": [
                engine("ee05" * 8, 0.95, "2021-09-09T09:09:09.000Z", "malicious"),
                engine("ff06" * 8, -0.2, "2021-09-09T09:09:09.000Z"),
            ],
        },
    ],
}

# 2018: string scores, date-only dates.
LEGACY_2018 = {
    "data": "old.example",
    "scores": [
        {
            "date": "2018-10-12",
            "score": "0.99",
            "level": "malicious",
            "details": [engine("ab12" * 8, "0.99", "2018-10-12", "malicious")],
        },
    ],
}

NEGATIVE_SCORE = {
    "scores": [
        {
            "date": "2022-05-05T05:05:05.500Z",
            "score": -1,
            "level": "safe",
            "details": [engine("cd34" * 8, -0.5, "2022-05-05T05:05:05.500Z")],
        }
    ],
}

ALL_NULL_SCORES = {
    "scores": [
        {
            "date": "2022-05-05T05:05:05.500Z",
            "score": None,
            "level": None,
            "details": [engine("cd34" * 8, None, "2022-05-05T05:05:05.500Z")],
        }
    ],
}

# Structure changes that really happened, and one that could.
BROKEN_MISSING_DATE = {
    "scores": [
        {
            "level": "suspicious",
            "broken_date_key": FOUR_ENGINES_DATE,
            "score": 0.34,
            "details": [engine("aa01" * 8, 0, FOUR_ENGINES_DATE)],
        }
    ],
}
BROKEN_MISSING_SCORES = {
    "scores": [
        {
            "level": "suspicious",
            "details": [{"date": FOUR_ENGINES_DATE, "engineId": "aa01" * 8, "level": "safe"}],
        }
    ],
}
RESULTS_UNDER_OTHER_KEY = {"data": "198.51.100.7", "types": ["ip"], "results": FOUR_ENGINES["scores"]}


def with_scores(*engine_scores: float, aggregate: float = 0.5, date: str = FOUR_ENGINES_DATE) -> dict:
    """A one-entry answer with the given engine scores."""
    return {
        "scores": [
            {
                "date": date,
                "score": aggregate,
                "level": None,
                "details": [
                    engine(f"{index:032x}", score, date) for index, score in enumerate(engine_scores)
                ],
            }
        ]
    }


# --- The v3 API (POST /api/v3/observables/search/by-value) -------------------------------------

V3_NEWEST = "2025-03-02T10:20:30.000Z"
V3_OLDER = "2024-11-05T08:00:00.000Z"
# Found, with every field the reference describes.
V3_FOUND = {
    "threatscore": {
        "value": 0.8125,
        "level": "malicious",
        "categories": ["phishing", "malicious_host"],
        "indicators": {"blocklist": True, "attack": False, "scan": False, "compromission": True},
    },
    "observable": {
        "geo": {"country_name": "Netherlands", "city_name": "Amsterdam"},
        "as": {"asn": 64500, "organization_name": "Example Hosting B.V."},
        "first_seen": V3_OLDER,
        "last_seen": V3_NEWEST,
    },
    "analysis": [
        {"id": "1a2b" * 8, "date": V3_NEWEST, "score": 0.8125},
        {"id": "3c4d" * 8, "date": V3_NEWEST},  # informational: no score
        {"id": "1a2b" * 8, "date": V3_OLDER, "score": 0.4},  # the same scorer, earlier
        {"id": "5e6f" * 8, "date": V3_OLDER, "score": None},  # informational: null score
    ],
    "tags": ["dns", "hosting"],
}

# Dates as epoch milliseconds; a level word the relay does not know; no categories, one flag.
V3_EPOCH_MS_FIRST = 1_700_000_000_000  # 2023-11-14T22:13:20Z
V3_EPOCH_MS_LAST = 1_710_000_000_123  # 2024-03-09T16:00:00.123Z
V3_EPOCH_AND_ODD_LEVEL = {
    "threatscore": {
        "value": 0.3,
        "level": "Dangerous-ish",
        "categories": [],
        "indicators": {"blocklist": False, "attack": False, "scan": True, "compromission": False},
    },
    "observable": {"first_seen": V3_EPOCH_MS_FIRST, "last_seen": V3_EPOCH_MS_LAST},
    "analysis": [{"id": "7a8b" * 8, "date": V3_EPOCH_MS_LAST, "score": 0.3}],
}

# A safe answer with nothing but the score: no observable facts, no analysis.
V3_SAFE_BARE = {"threatscore": {"value": 0.05, "level": "safe", "categories": [], "indicators": {}}}

# The "nothing known" forms: (HTTP status, body).
V3_NOT_IN_DATABASE: dict = {}
V3_NOT_ANALYSED_YET = {"threatscore": {"categories": [], "indicators": {}}, "tags": []}
V3_NO_DATA_FORMS = [
    (200, V3_NOT_IN_DATABASE),
    (200, V3_NOT_ANALYSED_YET),
    (404, NO_DATA_404),
]

V3_ERROR_IN_BODY = {
    "error": {"type": "Server Error", "code": "500", "message": "Search backend\n unavailable"}
}
V3_THREATSCORE_NOT_AN_OBJECT = {"threatscore": ["malicious"]}
V3_VALUE_NOT_A_NUMBER = {"threatscore": {"value": "very high", "level": "malicious"}}

# The refusals of late 2025 (the body's form is not recorded: both).
REFUSED_403_TEXT = "Blocked by IP filtering"
REFUSED_403_JSON = {"error": {"type": "Client Error", "code": "403", "message": "Blocked by IP filtering"}}
REFUSED_401_JSON = {"error": {"type": "Client Error", "code": "401", "message": "Invalid API key"}}
