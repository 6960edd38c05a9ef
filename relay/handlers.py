"""Endpoint handlers: observables in, an XDR answer body out.

The handlers share one `Lookup` (the answer cache in front of the Threatscore
client) and the CTIM mapper. Everything about one request travels in its
`RequestContext`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import quote

from relay.config import Settings
from relay.errors import HealthCheckError, RelayError, envelope
from relay.logs import RequestStats
from relay.lookup import Lookup
from relay.mapper import MappingOptions, map_answer, search_url
from relay.observables import SUPPORTED_TYPES, Observable, canonical_value
from relay.version import VERSION

REFER_MODULE = "threatscore"


@dataclass(frozen=True)
class RequestContext:
    """The settings of one request; never shared between requests."""

    entities_limit: int
    deadline: float  # a time.monotonic() instant
    now: datetime
    stats: RequestStats = field(default_factory=RequestStats)  # what the request cost, for its log line

    @classmethod
    def start(
        cls,
        settings: Settings,
        entities_limit: int | None = None,
        stats: RequestStats | None = None,
        arrived_at: float | None = None,
    ) -> RequestContext:
        """`arrived_at` (`time.monotonic()`): when the request arrived; the deadline counts from it,
        so that authenticating (perhaps fetching keys) comes out of the same budget."""
        return cls(
            entities_limit=entities_limit or settings.ctr_entities_limit,
            deadline=(time.monotonic() if arrived_at is None else arrived_at) + settings.relay_deadline,
            now=datetime.now(UTC),
            stats=stats or RequestStats(),
        )


class Handlers:
    def __init__(self, settings: Settings, lookup: Lookup):
        self._settings = settings
        self._lookup = lookup
        self._health_probe = health_probe(settings.health_observable)

    def observe(self, observables: list[Observable], context: RequestContext) -> dict:
        return self._enrich(observables, context, with_judgements=True)

    def deliberate(self, observables: list[Observable], context: RequestContext) -> dict:
        return self._enrich(observables, context, with_judgements=False)

    def refer(self, observables: list[Observable], context: RequestContext) -> dict:
        return {"data": [self._reference(observable) for observable in observables]}

    def health(self, context: RequestContext) -> dict:
        """A real probe of Threatscore, never answered from the cache: "no data" is healthy,
        any failure says what failed."""
        error = self._lookup.probe(self._health_probe, context.deadline, context.stats).error
        if error is not None:
            failure = HealthCheckError(f"Threatscore health check failed: {error.message}")
            context.stats.count_error(failure.code, failure.message)
            return envelope([failure])
        return {"data": {"status": "ok"}}

    def version(self) -> dict:
        return {"version": VERSION}

    def _enrich(self, observables: list[Observable], context: RequestContext, with_judgements: bool) -> dict:
        outcomes = self._lookup.look_up(observables, context.deadline, context.stats)
        options = MappingOptions(
            now=context.now,
            ui_url=self._settings.threatscore_ui_url,
            valid_days=self._settings.ctim_valid_days,
            entities_limit=context.entities_limit,
        )
        verdicts: list[dict] = []
        judgements: list[dict] = []
        errors: list[RelayError] = []
        for observable in observables:
            outcome = outcomes[observable.cache_key]
            if outcome.error is not None:
                errors.append(outcome.error.about(observable.value))
                context.stats.count_error(outcome.error.code, outcome.error.message)
                continue
            # valid_time counts from when Threatscore was asked: a cached answer maps the same everywhere.
            at = replace(options, now=outcome.fetched_at) if outcome.fetched_at else options
            entities = map_answer(observable, outcome.answer, at)
            verdicts.extend(entities.verdicts)
            if with_judgements:
                judgements.extend(entities.judgements)
        data = {}
        for key, docs in (("verdicts", verdicts), ("judgements", judgements)):
            if docs:
                data[key] = {"count": len(docs), "docs": docs}
        if errors:
            return envelope(errors, data)
        return {"data": data}

    def _reference(self, observable: Observable) -> dict:
        type_name = SUPPORTED_TYPES[observable.type]
        return {
            "id": f"ref-{REFER_MODULE}-search-{observable.type}-{quote(observable.value, safe='')}",
            "title": f"Search for this {type_name}",
            "description": f"Look up this {type_name} on Threatscore",
            "url": search_url(self._settings.threatscore_ui_url, observable.lookup_value),
            "categories": ["Threatscore", "Search"],
        }


def health_probe(value: str) -> Observable:
    """`HEALTH_OBSERVABLE` as an observable of the type it is, so that its cache entry is the
    one a lookup of it would use."""
    for observable_type in SUPPORTED_TYPES:
        lookup_value = canonical_value(observable_type, value)
        if lookup_value is not None:
            return Observable(observable_type, value, lookup_value)
    return Observable("ip", value, value)  # not a valid observable: asked as configured
