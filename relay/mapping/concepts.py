"""What Threatscore's categories and indicator flags mean, in an analyst's words. Pure data.

Threatscore sometimes names one thing twice, as a category and as a flag
(`blocklist`), or in two spellings (the flag `compromission`, the category
`compromised`): each such family is one concept, and an observable gets one
indicator per concept. A name Threatscore sends that is not listed here is a
concept of its own, described from its name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from relay.mapping.dispositions import CLEAN, MALICIOUS, SUSPICIOUS, UNKNOWN


@dataclass(frozen=True)
class Concept:
    """One thing Threatscore says of an observable, whichever of its names it used."""

    key: str  # the concept's own name: an indicator's id and first tag depend on it only
    title: str
    short_description: str
    description: str
    disposition: int  # what the concept implies on its own: its indicator's severity follows
    grave: bool = False  # as grave as a score of three quarters or more
    known: bool = True  # described by the relay (an unknown name is described from the name only)
    names: tuple[str, ...] = ()  # Threatscore's names for it (categories and flags), besides `key`


def _concept(key: str, title: str, short: str, long: str, disposition: int, **extra) -> Concept:
    return Concept(key, title, short, long, disposition, **extra)


KNOWN_CONCEPTS: tuple[Concept, ...] = (
    _concept(
        "phishing",
        "Phishing",
        "Used for phishing: pages or mail that steal credentials or payments.",
        "Threatscore classifies this observable as phishing: it hosts, links to or sends pages "
        "made to trick people into giving away credentials, payment details or other secrets. "
        "Treat a click or a connection to it as a possible credential theft.",
        MALICIOUS,
        grave=True,
    ),
    _concept(
        "malware",
        "Malware",
        "Malware: malicious software, or a place that serves or controls it.",
        "Threatscore classifies this observable as malware: a malicious file, or an address that "
        "distributes or controls malicious software. A host that fetched or ran it may be infected.",
        MALICIOUS,
        grave=True,
    ),
    _concept(
        "botnet",
        "Botnet",
        "Part of a botnet: a controlled machine or the server that commands one.",
        "Threatscore classifies this observable as part of a botnet: a machine under an attacker's "
        "control, or a server that commands such machines. Traffic to it may be an infected host "
        "calling home.",
        MALICIOUS,
        grave=True,
    ),
    _concept(
        "compromise",
        "Compromised host",
        "A compromised host: a legitimate system an attacker has taken over.",
        "Threatscore considers this observable compromised (its flag `compromission`, its "
        "category `compromised`, or both): a legitimate system that an attacker has taken "
        "over and may use to attack others or to serve malicious content. It may be both a "
        "victim and a threat.",
        MALICIOUS,
        names=("compromission", "compromised"),
    ),
    _concept(
        "attack",
        "Attack source",
        "Seen taking part in attacks (exploitation, brute force, intrusion attempts).",
        "Threatscore saw this observable take part in attacks: exploitation attempts, brute "
        "forcing or other intrusion attempts against systems it watches.",
        MALICIOUS,
    ),
    _concept(
        "malicious_host",
        "Malicious host",
        "A malicious host: a system Threatscore has seen acting with harmful intent.",
        "Threatscore classifies this observable as a malicious host: a system seen serving, "
        "sending or doing harm. Connections to or from it deserve a look.",
        MALICIOUS,
    ),
    _concept(
        "malspam",
        "Malicious spam",
        "Sends malicious spam: mail that carries malware or malicious links.",
        "Threatscore classifies this observable as a source of malicious spam (malspam): mail "
        "that carries malware or links to it. Mail from it should be treated as hostile.",
        MALICIOUS,
    ),
    _concept(
        "spam",
        "Spam",
        "Sends spam: unsolicited bulk mail.",
        "Threatscore classifies this observable as a source of spam: unsolicited bulk mail. "
        "A nuisance more than a threat on its own, often seen with other abuse.",
        SUSPICIOUS,
    ),
    _concept(
        "scanner",
        "Scanner",
        "Scans networks: probes many systems for open services or weaknesses.",
        "Threatscore saw this observable scanning (its category `scanner`, its flag `scan`, or "
        "both): probing many systems for open services or known weaknesses, often the first "
        "step of an attack, sometimes research.",
        SUSPICIOUS,
        names=("scan",),
    ),
    _concept(
        "blocklist",
        "On a blocklist",
        "Listed on at least one blocklist that Threatscore follows.",
        "Threatscore found this observable on at least one blocklist it follows (its category "
        "`blocklist`, its flag `blocklist`, or both): others have reported it for abuse. "
        "How grave depends on why it was listed; the other indicators say more.",
        SUSPICIOUS,
    ),
    _concept(
        "general_business",
        "General business",
        "A general business site or service: no threat in itself.",
        "Threatscore classifies this observable as a general business site or service: a "
        "content category, not a threat in itself.",
        CLEAN,
    ),
)

_BY_NAME = {name: concept for concept in KNOWN_CONCEPTS for name in (concept.key, *concept.names)}


@functools.lru_cache(maxsize=4096)
def concept_named(name: str) -> Concept:
    """The concept a Threatscore category or flag names (any case, `-` or `_`); an unknown name is
    a concept of its own."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_") or name
    known = _BY_NAME.get(key)
    if known is not None:
        return known
    words = key.replace("_", " ")
    return Concept(
        key=key,
        title=words[:1].upper() + words[1:],
        short_description=f"Threatscore marks it as {words}.",
        description=f"Threatscore marks this observable as {words} (its name for it: `{name}`). "
        "The relay has no further description of this category; Threatscore's page for the "
        "value says more.",
        disposition=UNKNOWN,
        known=False,
    )


def concepts_of(categories: list[str], flags: list[str]) -> tuple[Concept, ...]:
    """One concept per thing said: the categories' first, in Threatscore's order, then the flags'
    not already named by a category."""
    found: dict[str, Concept] = {}
    for name in (*categories, *flags):
        concept = concept_named(name)
        found.setdefault(concept.key, concept)
    return tuple(found.values())
