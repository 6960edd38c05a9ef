"""The OpenAPI description itself: valid, complete, in step with the code, and not vacuous."""

from __future__ import annotations

import copy

import pytest
from openapi_spec_validator import validate

from relay import errors
from relay.app import ENDPOINTS
from relay.version import VERSION
from tests import answers
from tests.contract import check_conforms, resolve, schema_validator, spec
from tests.ctim import check_answer


def test_the_description_is_valid_openapi_3():
    validate(spec())
    assert spec()["openapi"].startswith("3.")


def test_the_description_has_the_relays_version():
    assert str(spec()["info"]["version"]) == VERSION


def test_every_endpoint_is_described_and_nothing_else():
    described = {path.lstrip("/") for path in spec()["paths"]} - {"{unknownPath}"}
    assert described == set(ENDPOINTS)
    for route in ENDPOINTS:
        assert set(spec()["paths"]["/" + route]) == {"post"}


def every_relay_error_class(cls=errors.RelayError):
    yield cls
    for subclass in cls.__subclasses__():
        yield from every_relay_error_class(subclass)


def test_the_error_codes_are_exactly_the_relays():
    documented = set(spec()["components"]["schemas"]["ErrorEntry"]["properties"]["code"]["enum"])
    assert documented == {cls.code for cls in every_relay_error_class()}


def examples():
    """(where, schema, example) for every example in the description."""
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            body = resolve(operation.get("requestBody", {}))
            for media in body.get("content", {}).values():
                if "example" in media:
                    yield f"{method} {path} request", media["schema"], media["example"]
            for status, response in operation["responses"].items():
                for media in resolve(response).get("content", {}).values():
                    if "example" in media:
                        yield f"{method} {path} {status}", media["schema"], media["example"]


@pytest.mark.parametrize(
    ("where", "schema", "example"), list(examples()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_every_example_obeys_its_schema(where, schema, example):
    schema_validator(schema).validate(example)


def test_the_examples_obey_ctim_too():
    observe = spec()["paths"]["/observe/observables"]["post"]["responses"]["200"]
    check_answer(observe["content"]["application/json"]["example"])


# --- the schemas reject what the reference forbids (they are not vacuous) -----------

OBSERVE_EXAMPLE = spec()["paths"]["/observe/observables"]["post"]["responses"]["200"]["content"][
    "application/json"
]["example"]


def mutated(change) -> dict:
    body = copy.deepcopy(OBSERVE_EXAMPLE)
    change(body)
    return body


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda b: b["data"]["verdicts"]["docs"][0].update(id="x"), id="verdict with an id"),
        pytest.param(
            lambda b: b["data"]["verdicts"]["docs"][0].update(disposition=2), id="disposition disagrees"
        ),
        pytest.param(
            lambda b: b["data"]["judgements"]["docs"][0].update(confidence="Critical"), id="Critical"
        ),
        pytest.param(lambda b: b["data"]["judgements"]["docs"][0].update(priority=101), id="priority 101"),
        pytest.param(lambda b: b["data"]["judgements"]["docs"][0].pop("valid_time"), id="no valid_time"),
        pytest.param(
            lambda b: b["data"]["judgements"]["docs"][0]["valid_time"].update(end_time="next week"),
            id="end_time not a time",
        ),
        pytest.param(
            lambda b: b["data"]["judgements"]["docs"][0].update(id="judgement-1"), id="id not transient"
        ),
        pytest.param(lambda b: b["data"].update(module="threatscore"), id="module key"),
        pytest.param(lambda b: b["data"]["verdicts"].pop("count"), id="no count"),
        pytest.param(lambda b: b.update(data={}), id="empty data beside errors"),
        pytest.param(lambda b: b["errors"][0].update(code="oops"), id="unknown error code"),
        pytest.param(lambda b: b["errors"][0].update(message=""), id="empty message"),
        pytest.param(lambda b: b.update(errors=[]), id="empty errors"),
    ],
)
def test_the_description_rejects_bad_answers(change):
    with pytest.raises(AssertionError, match="does not conform"):
        check_conforms("/observe/observables", "POST", 200, mutated(change))


def test_an_undocumented_status_is_rejected():
    with pytest.raises(AssertionError, match="not documented"):
        check_conforms("/observe/observables", "POST", 500, {"errors": []})


# --- the relay's own answers, in-process ------------------------------------------------


def test_answers_of_every_endpoint_conform(threatscore, client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    threatscore.answer("198.51.100.8", answers.ERROR_500, status=500)
    body = [{"type": "ip", "value": "198.51.100.7"}, {"type": "ip", "value": "198.51.100.8"}]
    for path, payload in [
        ("/observe/observables", body),
        ("/deliberate/observables", body),
        ("/refer/observables", body),
        ("/observe/observables", []),
        ("/health", None),
        ("/version", None),
        ("/relay/observe/observables", body),
    ]:
        response = client.post(path, json=payload)
        check_conforms(path, "POST", response.status_code, response.get_json(), response.headers)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/observe/observables", "/health", "/version", "/relay/refer/observables"])
def test_other_methods_conform_to_the_405(client, method, path):
    response = client.open(path, method=method)
    check_conforms(path, method, response.status_code, response.get_json(), response.headers)


@pytest.mark.parametrize("path", ["/", "/favicon.ico", "/observe", "/a/b/c/health", "/%00"])
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_unknown_paths_conform_to_the_404(client, path, method):
    response = client.open(path, method=method)
    check_conforms(path, method, response.status_code, response.get_json(), response.headers)
