"""A Threatscore simulator: both Threatscore APIs (score and v3) on a local port.

It is the project's one fake Threatscore: the tests, `make bench`,
`make loadtest` and `make demo` all use it. Run it on its own with
`python -m simulator --port PORT` (see `python -m simulator --help`).

Not part of the deployed function (see .gcloudignore); it needs only the
relay's runtime packages.
"""

from simulator.server import (
    NO_DATA_V3_BODY,
    NOT_FOUND_BODY,
    SCORE_API,
    V3_API,
    V3_PATH,
    Scripted,
    SeenRequest,
    ThreatscoreSimulator,
    fault_label,
)

__all__ = [
    "NOT_FOUND_BODY",
    "NO_DATA_V3_BODY",
    "SCORE_API",
    "V3_API",
    "V3_PATH",
    "Scripted",
    "SeenRequest",
    "ThreatscoreSimulator",
    "fault_label",
]
