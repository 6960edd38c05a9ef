"""The builders both mappings share: another spelling of a lookup respelled from one spelling's
entities is exactly what mapping that spelling gives, for every answer of the simulator's catalogue."""

from __future__ import annotations

import copy
import ipaddress
from datetime import UTC, datetime

import pytest

from relay.errors import RelayError
from relay.mapping import MappingOptions, map_answer, respelled
from relay.observables import Observable, canonical_value
from relay.schemas import parse_score_answer, parse_v3_answer
from simulator.catalogue import ENTRIES
from tests.ctim import check_answer

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PARSERS = {"score": parse_score_answer, "v3": parse_v3_answer}
KINDS = ("verdicts", "judgements", "indicators", "sightings", "relationships")


def other_spellings(observable_type: str, value: str) -> list[tuple[str, str]]:
    """(type, value) spellings XDR may send for the same lookup as `value`."""
    if observable_type == "ip":
        mapped = ipaddress.IPv6Address(f"::ffff:{value}")
        return [
            ("ip", f"  {value} "),
            ("ipv6", f"::ffff:{value}"),
            ("ipv6", f"::FFFF:{value}"),
            ("ipv6", mapped.exploded),  # 0000:...:ffff:c633:6407
            ("ipv6", mapped.exploded.upper()),
        ]
    if observable_type == "ipv6":
        return [("ipv6", value.upper()), ("ipv6", ipaddress.IPv6Address(value).exploded)]
    if observable_type == "domain":
        return [("domain", value.upper()), ("domain", value.title()), ("domain", f"{value}.")]
    if observable_type == "url":
        scheme, rest = value.split("://", 1)
        host, path = rest.split("/", 1)
        return [
            ("url", f"{scheme.upper()}://{host.upper()}/{path}"),
            ("url", f"{scheme}://{host.title()}/{path}"),
        ]
    if observable_type in ("md5", "sha1", "sha256"):
        return [(observable_type, value.upper()), (observable_type, f" {value[:8].upper()}{value[8:]}")]
    return [(observable_type, f" {value}  ")]  # user_agent: sent as it is, less surrounding blanks


def observable(observable_type: str, value: str) -> Observable:
    lookup_value = canonical_value(observable_type, value)
    assert lookup_value is not None, (observable_type, value)
    return Observable(observable_type, value, lookup_value)


def _catalogue_answers() -> list:
    found = []
    for entry in ENTRIES:
        for api in ("score", "v3"):
            reply = entry.reply(api)
            if reply.status != 200:
                continue
            try:
                answer = PARSERS[api](reply.body)
            except RelayError:
                continue  # an answer the relay reports as an error: nothing mapped
            if answer is not None:
                found.append(pytest.param(api, entry.type, entry.value, answer, id=f"{api}-{entry.value}"))
    return found


CATALOGUE = _catalogue_answers()


def test_the_catalogue_has_answers_of_every_kind_to_respell():
    assert {api for api, *_ in (param.values for param in CATALOGUE)} == {"score", "v3"}
    types = {observable_type for _, observable_type, *_ in (param.values for param in CATALOGUE)}
    assert {"ip", "ipv6", "domain", "url", "md5", "user_agent"} <= types


@pytest.mark.parametrize("entities_limit", [100, 2])  # 2: the limit cuts judgements and relationships
@pytest.mark.parametrize(("api", "observable_type", "value", "answer"), CATALOGUE)
def test_a_respelled_copy_is_what_mapping_the_spelling_gives(
    api, observable_type, value, answer, entities_limit
):
    options = MappingOptions(
        ui_url="https://ui.threatscore.test", valid_days=7, entities_limit=entities_limit
    )
    first = observable(observable_type, value)
    entities = map_answer(first, answer, options, NOW)
    assert entities.verdicts or entities.judgements  # something to respell
    untouched = copy.deepcopy(entities)
    ids = {
        doc["id"] for kind in ("judgements", "sightings", "relationships") for doc in getattr(entities, kind)
    }

    for spelling in other_spellings(observable_type, value):
        other = observable(*spelling)
        assert other.cache_key == first.cache_key  # one lookup

        copied = respelled(entities, other)

        assert copied == map_answer(other, answer, options, NOW)
        assert entities == untouched  # the first spelling's entities are left as they were
        for verdict in copied.verdicts:
            assert verdict["observable"] == {"type": other.type, "value": other.value}
        for judgement in copied.judgements:
            assert judgement["observable"] == {"type": other.type, "value": other.value}
        for sighting in copied.sightings:
            assert sighting["observables"] == [{"type": other.type, "value": other.value}]
        # Each spelling's ids are its own (an answer with both lists each entity once)...
        copied_ids = {
            doc["id"]
            for kind in ("judgements", "sightings", "relationships")
            for doc in getattr(copied, kind)
        }
        assert not copied_ids & ids
        # ...the verdict names its judgement, and a relationship only entities of the copy.
        judgement_ids = {judgement["id"] for judgement in copied.judgements}
        assert all(verdict["judgement_id"] in judgement_ids for verdict in copied.verdicts)
        named = judgement_ids | {
            doc["id"] for kind in ("indicators", "sightings") for doc in getattr(copied, kind)
        }
        for relationship in copied.relationships:
            assert {relationship["source_ref"], relationship["target_ref"]} <= named
        data = {kind: getattr(copied, kind) for kind in KINDS if getattr(copied, kind)}
        check_answer({"data": {kind: {"count": len(docs), "docs": docs} for kind, docs in data.items()}})


def test_nothing_respelled_is_nothing():
    entities = map_answer(observable("ip", "192.0.2.1"), None, MappingOptions("https://ui.test", 7, 100), NOW)
    assert respelled(entities, observable("ipv6", "::ffff:192.0.2.1")) == entities
