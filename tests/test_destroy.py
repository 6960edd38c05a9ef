"""`make destroy` against the recording fake gcloud: after a full deploy, it removes everything the
deploy made, keeps the operator's own secret, and a second run removes nothing."""

from __future__ import annotations

import json

import pytest

from tests.fake_gcloud import PROJECT, REGION, FakeGcloud, flags

FULL = {
    "GCP_PROJECT": PROJECT,
    "GCP_REGION": REGION,
    "RELAY_AUTH": "jwks",
    "XDR_REGION": "eu",
    "EGRESS": "static",
    "REDIS": "memorystore",
    "SECRET_THREATSCORE_API_KEY": "threatscore-key",
}


@pytest.fixture
def gcloud(tmp_path) -> FakeGcloud:
    return FakeGcloud(tmp_path)


def deletes(commands: list[list[str]]) -> list[str]:
    return [" ".join(word for word in c if not word.startswith("--")) for c in commands if "delete" in c]


def test_destroy_removes_everything_the_deploy_made_and_nothing_else(gcloud):
    gcloud.seed("secrets threatscore-key")
    deployed = gcloud.run(**FULL)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert len(gcloud.resources()) > 10
    first = len(gcloud.commands())

    result = gcloud.run("destroy", **FULL, CONFIRM=PROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert gcloud.resources() == ["secrets threatscore-key"]  # the operator's own secret stays
    commands = gcloud.commands()[first:]
    assert deletes(commands) == [
        "functions delete relay",
        "secrets delete relay-access-keys",
        "secrets delete relay-redis-signing-key",
        "secrets delete relay-redis-url",
        "redis instances delete relay-cache",
        "compute routers nats delete relay-nat",
        "compute routers delete relay-router",
        "compute addresses delete relay-egress",
        "compute networks vpc-access connectors delete relay-conn",
        "compute networks subnets delete relay-connector",
        "compute networks delete relay-vpc",
        f"iam service-accounts delete relay-runtime@{PROJECT}.iam.gserviceaccount.com",
    ]
    [unbind] = [c for c in commands if c[:2] == ["secrets", "remove-iam-policy-binding"]]
    assert unbind[2] == "threatscore-key"
    assert flags(unbind)["member"] == f"serviceAccount:relay-runtime@{PROJECT}.iam.gserviceaccount.com"
    assert all("--quiet" in c for c in commands)
    assert "gcf-artifacts" in result.stdout  # what Google keeps, named

    before = len(gcloud.commands())
    again = gcloud.run("destroy", **FULL, CONFIRM=PROJECT)
    assert again.returncode == 0, again.stderr
    assert deletes(gcloud.commands()[before:]) == []


def test_destroy_needs_the_project_id_to_delete(gcloud):
    result = gcloud.run("destroy", **FULL)
    assert result.returncode != 0
    assert f"CONFIRM={PROJECT} make destroy" in result.stderr
    assert gcloud.commands() == []
    dry = gcloud.run("destroy", **FULL, DRY_RUN="1")
    assert dry.returncode == 0, dry.stderr
    assert gcloud.commands() == []
    assert "[dry run] gcloud functions delete relay" in dry.stdout
    assert "[dry run] gcloud compute networks delete relay-vpc" in dry.stdout


def test_a_service_account_or_secret_of_the_operators_is_left_alone(gcloud):
    # Made by hand (no label of the deploy's, another display name), in a project with the APIs on.
    gcloud.seed("iam service-accounts relay-runtime", "secrets relay-access-keys")
    state = json.loads(gcloud.state.read_text())
    gcloud.state.write_text(
        json.dumps({**state, "apis": ["iam.googleapis.com", "secretmanager.googleapis.com"]})
    )
    result = gcloud.run("destroy", **FULL, CONFIRM=PROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(gcloud.resources()) == ["iam service-accounts relay-runtime", "secrets relay-access-keys"]
    assert "left alone: relay-runtime@" in result.stdout
