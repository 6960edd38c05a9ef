"""Endpoint handlers: observables in, an XDR answer body out.

The handlers share one `Lookup` (the answer cache in front of the Threatscore
client) and the CTIM mapper. Everything about one request travels in its
`RequestContext`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from relay.config import Settings
from relay.errors import HealthCheckError, RelayError, envelope
from relay.lookup import Lookup
from relay.mapper import MappingOptions, map_answer, search_url
from relay.observables import SUPPORTED_TYPES, Observable
from relay.version import VERSION

REFER_MODULE = "threatscore"


@dataclass(frozen=True)
class RequestContext:
    """The settings of one request; never shared between requests."""

    entities_limit: int
    deadline: float  # a time.monotonic() instant
    now: datetime

    @classmethod
    def start(cls, settings: Settings, entities_limit: int | None = None) -> RequestContext:
        return cls(
            entities_limit=entities_limit or settings.ctr_entities_limit,
            deadline=time.monotonic() + settings.relay_deadline,
            now=datetime.now(UTC),
        )


class Handlers:
    def __init__(self, settings: Settings, lookup: Lookup):
        self._settings = settings
        self._lookup = lookup

    def observe(self, observables: list[Observable], context: RequestContext) -> dict:
        return self._enrich(observables, context, with_judgements=True)

    def deliberate(self, observables: list[Observable], context: RequestContext) -> dict:
        return self._enrich(observables, context, with_judgements=False)

    def refer(self, observables: list[Observable], context: RequestContext) -> dict:
        return {"data": [self._reference(observable) for observable in observables]}

    def health(self, context: RequestContext) -> dict:
        """A probe through the answer cache, as observe and deliberate look up: "no data" is
        healthy, any failure says what failed. A cached answer to the probe counts."""
        probe = self._settings.health_observable
        outcome = self._lookup.look_up([Observable("ip", probe, probe)], context.deadline)
        error = outcome[f"ip:{probe}"].error
        if error is not None:
            return envelope([HealthCheckError(f"Threatscore health check failed: {error.message}")])
        return {"data": {"status": "ok"}}

    def version(self) -> dict:
        return {"version": VERSION}

    def _enrich(self, observables: list[Observable], context: RequestContext, with_judgements: bool) -> dict:
        outcomes = self._lookup.look_up(observables, context.deadline)
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
                continue
            entities = map_answer(observable, outcome.answer, options)
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
