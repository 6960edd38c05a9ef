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
