"""CTIM's dispositions and Threatscore's score buckets. Pure."""

from __future__ import annotations

CLEAN, MALICIOUS, SUSPICIOUS, COMMON, UNKNOWN = 1, 2, 3, 4, 5
DISPOSITION_NAMES = {
    CLEAN: "Clean",
    MALICIOUS: "Malicious",
    SUSPICIOUS: "Suspicious",
    COMMON: "Common",
    UNKNOWN: "Unknown",
}
# Threatscore's own verdict words (v3's `threatscore.level`).
LEVEL_DISPOSITIONS = {"safe": CLEAN, "suspicious": SUSPICIOUS, "malicious": MALICIOUS}


def disposition_for(score: float) -> int:
    """Threatscore score -> CTIM disposition; the buckets leave no gaps."""
    if score <= 0.25:  # negative scores mean clean too
        return CLEAN
    if score <= 0.5:
        return SUSPICIOUS
    return MALICIOUS
