"""Endpoint handlers: observables in, an XDR answer body out.

The handlers share one `Lookup` (the answer cache in front of the Threatscore
client) and the CTIM mapping. Everything about one request travels in its
`RequestContext`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import quote

import orjson
from cachetools import LRUCache

from relay.auth import DEFAULT_TENANT
from relay.cache import FlightWaitTimeoutError, SingleFlight
from relay.config import Settings
from relay.errors import (
    AnswerOutOfTimeError,
    AnswerTooLargeError,
    DeadlineExceededError,
    HealthCheckError,
    InternalError,
    RelayError,
    envelope,
)
from relay.logs import RequestStats
from relay.lookup import NOT_IN_TIME, Lookup, Outcome
from relay.mapping import MappingOptions, ObservableEntities, map_answer, respelled, search_url
from relay.observables import (
    OBSERVABLE_TYPES,
    TYPES,
    TYPES_BY_API,
    Observable,
    canonical_value,
    recognised_type,
)
from relay.tenants import TenantLookups
from relay.version import VERSION

logger = logging.getLogger(__name__)

REFER_MODULE = "threatscore"
# The entity lists of /observe, in the order they are listed.
ENTITY_KINDS = ("verdicts", "judgements", "indicators", "sightings", "relationships")
# An answer never grows past this: the entities of the observables that would pass it are
# left out (with a warning saying so). XDR and the function's own response limit (32 MB on
# Cloud Functions) are both well above it.
MAX_ANSWER_BYTES = 10 * 1024 * 1024
# Mapping may run this long past RELAY_DEADLINE (the lookups end by it); then the rest is left
# out, so that the whole request, its encoding included, ends within about a second of it.
MAPPING_GRACE_SECONDS = 0.5


@dataclass(frozen=True)
class RequestContext:
    """The settings of one request; never shared between requests."""

    entities_limit: int
    deadline: float  # a time.monotonic() instant
    now: datetime
    stats: RequestStats = field(default_factory=RequestStats)  # what the request cost, for its log line
    tenant: str = DEFAULT_TENANT  # whose call it is: its lookups are its own (relay.tenants)

    @classmethod
    def start(
        cls,
        settings: Settings,
        entities_limit: int | None = None,
        stats: RequestStats | None = None,
        arrived_at: float | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> RequestContext:
        """`arrived_at` (`time.monotonic()`): when the request arrived; the deadline counts from it,
        so that authenticating (perhaps fetching keys) comes out of the same budget."""
        return cls(
            entities_limit=entities_limit or settings.ctr_entities_limit,
            deadline=(time.monotonic() if arrived_at is None else arrived_at) + settings.relay_deadline,
            now=datetime.now(UTC),
            stats=stats or RequestStats(),
            tenant=tenant,
        )


class Handlers:
    def __init__(self, settings: Settings, lookup: Lookup | TenantLookups):
        self._settings = settings
        self._lookups = lookup if isinstance(lookup, TenantLookups) else TenantLookups.single(lookup)
        self._mapped = MappedAnswers()
        # The types the configured Threatscore API looks up (parse_observables keeps only these).
        self.supported_types = TYPES_BY_API[settings.threatscore_api]
        self._health_probe = health_probe(settings.health_observable, self.supported_types)
        self._health_checks = HealthChecks(settings.health_cache_seconds)

    def observe(self, observables: list[Observable], context: RequestContext) -> dict:
        return self._enrich(observables, context, ENTITY_KINDS)

    def deliberate(self, observables: list[Observable], context: RequestContext) -> dict:
        return self._enrich(observables, context, ("verdicts",))

    def refer(self, observables: list[Observable], context: RequestContext) -> dict:
        return {"data": [self._reference(observable) for observable in observables]}

    def health(self, context: RequestContext) -> dict:
        """A real probe of the configured Threatscore API, never answered from the answer cache:
        "no data" is healthy, any failure (a refusal too) says what failed. Concurrent checks
        share one probe, and a probe's result is reused for HEALTH_CACHE_SECONDS."""
        lookup = self._lookups.of(context.tenant)
        error = self._health_checks.result(
            lambda: lookup.probe(self._health_probe, context.deadline, context.stats).error,
            context.deadline,
        )
        notes = lookup.holding_back(context.deadline)
        if error is not None:
            words = "; ".join([error.message, *(note for note in notes if note not in error.message)])
            failure = HealthCheckError(f"Threatscore health check failed: {words}")
            context.stats.count_error(failure.code, failure.message)
            return envelope([failure])
        if notes:
            return {"data": {"status": "ok", "message": f"Threatscore answers; {'; '.join(notes)}"}}
        return {"data": {"status": "ok"}}

    def version(self) -> dict:
        return {"version": VERSION}

    def _enrich(self, observables: list[Observable], context: RequestContext, kinds: tuple[str, ...]) -> dict:
        outcomes = self._lookups.of(context.tenant).look_up(observables, context.deadline, context.stats)
        options = MappingOptions(
            ui_url=self._settings.threatscore_ui_url,
            valid_days=self._settings.ctim_valid_days,
            entities_limit=context.entities_limit,
        )
        docs: dict[str, list[dict]] = {kind: [] for kind in kinds}
        indicator_ids: set[str] = set()  # an indicator shared by observables is listed once
        errors: list[RelayError] = []
        size, left_out, out_of_time = 0, 0, 0
        # The smallest size of a lookup's docs seen in this request: a spelling of a lookup that
        # cannot fit any more is left out without being mapped (its docs are as large).
        lookup_sizes: dict[str, int] = {}
        # A lookup is mapped once a request: its other spellings get a respelled copy of the first
        # one's entities, and a lookup whose answer cannot be mapped is not tried again.
        mapped_lookups: dict[str, MappedAnswer] = {}
        unmappable: set[str] = set()
        stop_mapping_at = context.deadline + MAPPING_GRACE_SECONDS
        for observable in observables:
            outcome = outcomes[observable.cache_key]
            if outcome.error is not None:
                errors.append(outcome.error.about(observable.value))
                context.stats.count_error(outcome.error.code, outcome.error.message)
                continue
            known_size = lookup_sizes.get(observable.cache_key)
            if known_size is not None and size + known_size > MAX_ANSWER_BYTES:
                left_out += 1
                continue
            if time.monotonic() > stop_mapping_at:
                out_of_time += 1
                continue
            mapped = None
            if observable.cache_key not in unmappable:
                try:
                    mapped = self._mapped.get(
                        observable,
                        outcome,
                        options,
                        kinds,
                        context.now,
                        mapped_lookups.get(observable.cache_key),
                    )
                except Exception:  # one answer the relay cannot map costs its observables only
                    logger.exception("mapping a Threatscore answer to CTIM failed")
                    self._lookups.of(context.tenant).forget(observable.cache_key)  # ask again next time
                    unmappable.add(observable.cache_key)
            if mapped is None:
                error = InternalError("the relay could not map Threatscore's answer to CTIM")
                errors.append(error.about(observable.value))
                context.stats.count_error(error.code, error.message)
                continue
            mapped_lookups.setdefault(observable.cache_key, mapped)
            lookup_sizes[observable.cache_key] = min(mapped.size, known_size or mapped.size)
            new_indicators = [doc for doc in mapped.indicators if doc["id"] not in indicator_ids]
            added = mapped.size + sum(mapped.indicator_sizes[doc["id"]] for doc in new_indicators)
            if size + added > MAX_ANSWER_BYTES:
                left_out += 1
                continue
            size += added
            for kind, kind_docs in mapped.docs.items():
                docs[kind].extend(kind_docs)
            if "indicators" in docs:
                docs["indicators"].extend(new_indicators)
            indicator_ids.update(doc["id"] for doc in new_indicators)
        if left_out:
            too_large = AnswerTooLargeError(
                f"The answer would be larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MB: the entities"
                f" of {left_out} observable(s) are left out; ask about fewer observables at a time"
            )
            errors.append(too_large)
            context.stats.count_error(too_large.code, too_large.message)
        if out_of_time:
            late = AnswerOutOfTimeError(
                f"The relay's deadline (RELAY_DEADLINE) came before the answer was complete: the entities"
                f" of {out_of_time} observable(s) are left out; ask about fewer observables at a time"
            )
            errors.append(late)
            context.stats.count_error(late.code, late.message)
        data = {
            kind: {"count": len(kind_docs), "docs": kind_docs}
            for kind, kind_docs in docs.items()
            if kind_docs
        }
        if errors:
            return envelope(errors, data)
        return {"data": data}

    def _reference(self, observable: Observable) -> dict:
        type_name = TYPES[observable.type].title
        return {
            "id": f"ref-{REFER_MODULE}-search-{observable.type}-{quote(observable.value, safe='')}",
            "title": f"Search for this {type_name}",
            "description": f"Look up this {type_name} on Threatscore",
            "url": search_url(self._settings.threatscore_ui_url, observable.lookup_value),
            "categories": ["Threatscore", "Search"],
        }


class HealthChecks:
    """One probe for concurrent health checks, its result reused for `reuse_for` seconds."""

    def __init__(self, reuse_for: float):
        self._reuse_for = reuse_for
        self._flight = SingleFlight()
        self._lock = threading.Lock()
        self._last: tuple[float, RelayError | None] | None = None  # (when, what the probe found)

    def result(self, probe: Callable[[], RelayError | None], deadline: float) -> RelayError | None:
        with self._lock:
            last = self._last
        if last is not None and time.monotonic() - last[0] < self._reuse_for:
            return last[1]

        def probed() -> RelayError | None:
            error = probe()
            with self._lock:
                self._last = (time.monotonic(), error)
            return error

        try:
            return self._flight.do("health", probed, deadline)
        except FlightWaitTimeoutError:
            return DeadlineExceededError(NOT_IN_TIME)


@dataclass(frozen=True)
class MappedAnswer:
    """One observable's docs of the kinds asked for, with the bytes they add to the answer's
    JSON: `size` for all but the indicators, which are counted one by one (`indicator_sizes`)
    because an indicator that several observables share is listed once."""

    answer: object  # the answer mapped: an entry is reused only for this very object
    entities: ObservableEntities  # of the kinds asked for (the others empty): what is respelled
    docs: dict[str, list[dict]]
    indicators: list[dict]
    size: int
    indicator_sizes: dict[str, int]


class MappedAnswers:
    """The mapped docs of recent cached answers, reused while the answer object is the same.

    Since the mapping counts from when Threatscore was asked (not from the request), an
    answer served from the cache maps to the same docs on every request: mapping it and
    measuring the docs once, rather than on every request, takes most of the work off a
    cached observable. Bounded in bytes of docs; entries are shared read-only.

    An entry is one spelling's: on a miss, the entry of another spelling of the same lookup
    mapped earlier in the request (`spelling_of`) is respelled rather than the answer mapped again.
    """

    MAX_BYTES = 16 * 1024 * 1024

    def __init__(self) -> None:
        self._entries: LRUCache = LRUCache(maxsize=self.MAX_BYTES, getsizeof=_entry_bytes)
        self._lock = threading.Lock()

    def get(
        self,
        observable: Observable,
        outcome: Outcome,
        options: MappingOptions,
        kinds: tuple[str, ...],
        request_time: datetime,
        spelling_of: MappedAnswer | None = None,
    ) -> MappedAnswer:
        key = (observable, options, kinds, outcome.fetched_at)
        if outcome.fetched_at is not None:
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None and entry.answer is outcome.answer:
                return entry
        if spelling_of is not None and spelling_of.answer is outcome.answer:
            entry = _respelled(spelling_of, observable, kinds)
        else:
            entry = _mapped(observable, outcome.answer, options, kinds, outcome.fetched_at or request_time)
        if outcome.fetched_at is not None and entry.size <= self.MAX_BYTES // 16:
            with self._lock:
                self._entries[key] = entry
        return entry


def _entry_bytes(entry: MappedAnswer) -> int:
    # + the ids a respelling needs (about 160 bytes each)
    return entry.size + sum(entry.indicator_sizes.values()) + 160 * len(entry.entities.spelled_ids) + 512


def _mapped(
    observable: Observable, answer, options: MappingOptions, kinds: tuple[str, ...], asked_at: datetime
) -> MappedAnswer:
    # valid_time counts from when Threatscore was asked: a cached answer maps the same everywhere.
    entities = map_answer(observable, answer, options, now=asked_at)
    # Only the kinds asked for: nothing else is measured, or respelled for another spelling.
    entities = replace(entities, **{kind: [] for kind in ENTITY_KINDS if kind not in kinds})
    docs, indicators = _docs(entities, kinds), entities.indicators
    return MappedAnswer(
        answer=answer,
        entities=entities,
        docs=docs,
        indicators=indicators,
        size=_size(docs),
        indicator_sizes={doc["id"]: _size(doc) + 1 for doc in indicators},  # +1: the comma
    )


def _respelled(mapped: MappedAnswer, observable: Observable, kinds: tuple[str, ...]) -> MappedAnswer:
    """`mapped`, another spelling's, for `observable`: its indicators and their sizes are the same."""
    entities = respelled(mapped.entities, observable)
    docs = _docs(entities, kinds)
    return replace(mapped, entities=entities, docs=docs, indicators=entities.indicators, size=_size(docs))


def _docs(entities: ObservableEntities, kinds: tuple[str, ...]) -> dict[str, list[dict]]:
    return {kind: getattr(entities, kind) for kind in kinds if kind != "indicators"}


def _size(docs: dict) -> int:
    """Bytes the docs add to the answer's JSON."""
    try:
        return len(orjson.dumps(docs))
    except TypeError:  # a lone surrogate: the answer is written by json then (relay.app)
        return len(json.dumps(docs, separators=(",", ":")))


def health_probe(value: str, supported_types: frozenset[str]) -> Observable:
    """`HEALTH_OBSERVABLE` as an observable of the type it is among `supported_types` (the
    configured backend's), so that its cache entry is the one a lookup of it would use."""
    recognised = recognised_type(value.strip())  # its form says (as on the command line)
    if recognised in supported_types and canonical_value(recognised, value) is not None:
        return Observable(recognised, value, canonical_value(recognised, value))
    for observable_type in OBSERVABLE_TYPES:
        if observable_type.name not in supported_types or observable_type.recognises is None:
            continue  # any printable text is a user agent: only a type with a form of its own
        lookup_value = canonical_value(observable_type.name, value)
        if lookup_value is not None:
            return Observable(observable_type.name, value, lookup_value)
    return Observable("ip", value, value)  # not a valid observable: asked as configured
