"""The relay's OpenAPI description (openapi.yaml) as a check on any answer.

`check_conforms` finds the operation a request reached and validates the
answer's status, headers and body against what the description promises.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml
from jsonschema.exceptions import best_match
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from relay.app import route_for

OPENAPI = Path(__file__).resolve().parent.parent / "openapi.yaml"
UNKNOWN_PATH = "/{unknownPath}"


@functools.cache
def spec() -> dict:
    with OPENAPI.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


def responses_for(path: str, method: str) -> dict:
    """The documented responses of the operation a request reaches.

    An unknown path is 404 whatever the method; any method but POST on a
    documented path is the shared 405 response.
    """
    route = route_for(path)
    if route is None:
        return spec()["paths"][UNKNOWN_PATH]["post"]["responses"]
    if method.upper() != "POST":
        return {"405": spec()["components"]["responses"]["MethodNotAllowed"]}
    return spec()["paths"]["/" + route]["post"]["responses"]


def schema_validator(schema: dict) -> OAS30Validator:
    # The components travel with the schema so that its "#/components/..." references resolve.
    return OAS30Validator({**schema, "components": spec()["components"]}, format_checker=oas30_format_checker)


def resolve(node: dict) -> dict:
    """`node`, or what its `$ref` points at (one level)."""
    if "$ref" not in node:
        return node
    target: dict = spec()
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return target


def check_conforms(path: str, method: str, status: int, body, headers=None) -> None:
    """The answer is one the description allows for this request; AssertionError says why not."""
    responses = responses_for(path, method)
    assert str(status) in responses, f"{method} {path}: HTTP {status} is not documented"
    response = resolve(responses[str(status)])
    schema = response["content"]["application/json"]["schema"]
    error = best_match(schema_validator(schema).iter_errors(body))
    assert error is None, (
        f"{method} {path}: the answer does not conform at /{'/'.join(map(str, error.path))}: "
        f"{error.message[:500]}"
    )
    for name, header in response.get("headers", {}).items():
        value = (headers or {}).get(name)
        if header.get("required"):
            assert value is not None, f"{method} {path}: header {name} is missing"
        if value is not None and "enum" in header["schema"]:
            assert value in header["schema"]["enum"], f"{method} {path}: header {name}: {value!r}"
