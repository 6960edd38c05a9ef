"""`make deploy` against a recording fake `gcloud` (first on PATH, tests/fake_gcloud.py), and the
upload it makes."""

from __future__ import annotations

import json
import os
import subprocess
import time
import venv
from pathlib import Path

import pathspec
import pytest
import requests
import yaml

from deploy.settings import DeployError, load
from relay.module_type import module_type
from tests.conftest import ROOT
from tests.fake_gcloud import (
    EGRESS_ADDRESS,
    PROJECT,
    PROJECT_NUMBER,
    REDIS_AUTH,
    REGION,
    FakeGcloud,
    creates,
    flags,
)
from tests.relay_process import free_port, stop_process, wait_for_port, without_relay_settings

URL = f"https://{REGION}-{PROJECT}.cloudfunctions.net/relay"
SHELL_SECRET = "a-shell-exported-relay-secret-" + "q" * 20


@pytest.fixture
def gcloud(tmp_path) -> FakeGcloud:
    return FakeGcloud(tmp_path)


FULL = {
    "GCP_PROJECT": PROJECT,
    "GCP_REGION": REGION,
    "RELAY_AUTH": "secret",
    "EGRESS": "static",
    "REDIS": "memorystore",
    "SECRET_THREATSCORE_API_KEY": "threatscore-key",
    "RELAY_SECRET": SHELL_SECRET,  # exported in the operator's shell (to mint tokens): never deployed
    "CTR_ENTITIES_LIMIT": "50",
    "XDR_REGION": "eu",
}


def test_deploy_asks_google_for_everything_and_no_secret_leaks(gcloud):
    gcloud.seed("secrets threatscore-key")  # the operator's own secret exists
    result = gcloud.run(**FULL)
    assert result.returncode == 0, result.stdout + result.stderr
    commands = gcloud.commands()
    [deploy] = [c for c in commands if c[:2] == ["functions", "deploy"]]
    options = flags(deploy)
    assert deploy[2] == "relay"
    for flag in ("gen2", "trigger-http", "allow-unauthenticated"):
        assert flag in options
    assert options["runtime"] == "python313"
    assert options["entry-point"] == "relay"
    assert options["region"] == REGION and options["project"] == PROJECT
    assert options["timeout"] == "25s"  # RELAY_DEADLINE (20 s) and a margin
    assert int(options["concurrency"]) > 1 and float(options["cpu"]) >= 1
    assert options["memory"] == "512Mi"
    assert (options["min-instances"], options["max-instances"]) == ("0", "10")
    assert options["service-account"] == f"relay-runtime@{PROJECT}.iam.gserviceaccount.com"
    assert sorted(options["set-secrets"].split(",")) == [
        "REDIS_SIGNING_KEY=relay-redis-signing-key:latest",
        "REDIS_URL=relay-redis-url:latest",
        "RELAY_SECRET=relay-relay-secret:latest",
        "THREATSCORE_API_KEY=threatscore-key:latest",
    ]
    assert options["vpc-connector"] == f"projects/{PROJECT}/locations/{REGION}/connectors/relay-conn"
    assert options["egress-settings"] == "all"

    # The upload: exactly what the function needs, as gcloud itself lists it.
    source = Path(options["source"])
    uploaded = {str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()}
    assert uploaded == expected_upload()
    assert ["meta", "list-files-for-upload", str(source), f"--project={PROJECT}", "--quiet"] in commands

    # The environment: strings only, the audience, the project for the logs, THREADS to match.
    env = yaml.safe_load(Path(options["env-vars-file"]).read_text())
    assert all(isinstance(value, str) for value in env.values())
    assert env["RELAY_AUDIENCE"] == URL and env["GOOGLE_CLOUD_PROJECT"] == PROJECT
    assert env["THREADS"] == options["concurrency"]
    assert env["RELAY_AUTH"] == "secret" and env["CTR_ENTITIES_LIMIT"] == "50"
    assert not {"RELAY_SECRET", "REDIS_URL", "THREATSCORE_API_KEY"} & set(env)

    # Everything was described, then created once, the service account with no role but its secrets'.
    assert creates(commands) == [
        "iam service-accounts create relay-runtime",
        "compute networks create relay-vpc",
        "compute networks subnets create relay-connector",
        "compute networks vpc-access connectors create relay-conn",
        "compute routers create relay-router",
        "compute addresses create relay-egress",
        "compute routers nats create relay-nat",
        "redis instances create relay-cache",
        "secrets create relay-relay-secret",
        "secrets create relay-redis-url",
        "secrets create relay-redis-signing-key",
    ]
    nat = next(c for c in commands if c[:4] == ["compute", "routers", "nats", "create"])
    assert flags(nat)["nat-external-ip-pool"] == "relay-egress"
    assert flags(nat)["nat-custom-subnet-ip-ranges"] == "relay-connector"
    redis_create = next(c for c in commands if c[:3] == ["redis", "instances", "create"])
    assert "enable-auth" in flags(redis_create)
    bindings = [c for c in commands if "add-iam-policy-binding" in c]
    assert sorted(c[2] for c in bindings) == [
        "relay-redis-signing-key",
        "relay-redis-url",
        "relay-relay-secret",
        "threatscore-key",
    ]
    assert all(c[:2] == ["secrets", "add-iam-policy-binding"] for c in bindings)
    assert all(flags(c)["role"] == "roles/secretmanager.secretAccessor" for c in bindings)
    assert all(flags(c)["member"] == f"serviceAccount:{options['service-account']}" for c in bindings)

    # Secrets went to Secret Manager on standard input only; no other call had any input.
    stored = gcloud.secrets()
    assert stored["relay-redis-url"] == f"redis://:{REDIS_AUTH}@10.20.30.40:6378/0"
    generated = stored["relay-relay-secret"]
    assert len(generated) >= 32 and generated != SHELL_SECRET
    signing = stored["relay-redis-signing-key"]
    assert len(signing) >= 32 and signing != generated
    for call in gcloud.calls():
        assert call["stdin_kind"] == ("data" if "--data-file=-" in call["args"] else "devnull"), call
    for secret in (SHELL_SECRET, REDIS_AUTH, generated, signing):
        assert not any(secret in arg for command in commands for arg in command)
        assert secret not in Path(options["env-vars-file"]).read_text()
        assert secret not in result.stdout + result.stderr

    # What the operator is told, and the module type for the deployed URL.
    assert f"URL:       {URL}" in result.stdout
    assert EGRESS_ADDRESS in result.stdout and "Cyberprotect" in result.stdout
    assert "python -m relay token --aud " + URL in result.stdout  # secret mode: a token to paste
    assert json.loads((gcloud.work / "module_type.json").read_text()) == module_type(URL, "eu")

    # Again: nothing is created twice, the Redis URL is unchanged, the function is deployed anew.
    first = len(commands)
    again = gcloud.run(**FULL)
    assert again.returncode == 0, again.stdout + again.stderr
    second = gcloud.commands()[first:]
    assert creates(second) == []
    assert not [c for c in second if c[:3] == ["secrets", "versions", "add"]]
    assert [c for c in second if c[:2] == ["functions", "deploy"]]


def test_dry_run_prints_the_commands_and_runs_none(gcloud):
    result = gcloud.run(DRY_RUN="1", **FULL)
    assert result.returncode == 0, result.stderr
    assert gcloud.commands() == []  # gcloud was never called
    printed = [
        line.strip() for line in result.stdout.splitlines() if line.strip().startswith("[dry run] gcloud ")
    ]
    assert all(line.endswith("--quiet") or "# standard input" in line for line in printed)
    assert any(" functions deploy relay --gen2 " in line for line in printed)
    assert any(" compute routers nats create relay-nat " in line for line in printed)
    assert any(" secrets create relay-relay-secret " in line and "--data-file=-" in line for line in printed)
    assert any(" run services update relay --region=europe-west1 --cpu-boost" in line for line in printed)
    assert SHELL_SECRET not in result.stdout + result.stderr


JWKS = {"GCP_PROJECT": PROJECT, "GCP_REGION": REGION, "RELAY_AUTH": "jwks", "XDR_REGION": "eu"}


def test_plain_jwks_deploy_has_no_network_and_only_its_access_key(gcloud):
    result = gcloud.run(**JWKS, CONCURRENCY="40")
    assert result.returncode == 0, result.stderr
    [deploy] = [c for c in gcloud.commands() if c[:2] == ["functions", "deploy"]]
    options = flags(deploy)
    assert options["set-secrets"] == "RELAY_ACCESS_KEYS=relay-access-keys:latest"
    assert "vpc-connector" not in options
    env = yaml.safe_load(Path(options["env-vars-file"]).read_text())
    assert env["THREADS"] == "40"
    # Tokens from the organisation's own region only.
    assert env["RELAY_JWKS_HOSTS"] == "visibility.eu.amp.cisco.com"
    assert json.loads((gcloud.work / "module_type.json").read_text()) == module_type(URL, "eu")
    assert creates(gcloud.commands()) == [
        "iam service-accounts create relay-runtime",
        "secrets create relay-access-keys",
    ]
    # The access key: random, `soc=` and 43 characters, on standard input only; the operator is
    # shown the command that reads it, never the value.
    key = gcloud.secrets()["relay-access-keys"]
    tenant, value = key.split("=")
    assert tenant == "soc" and len(value) == 43
    assert value not in result.stdout + result.stderr
    assert not any(value in arg for command in gcloud.commands() for arg in command)
    assert (
        f"gcloud secrets versions access latest --secret=relay-access-keys --project={PROJECT}"
        in result.stdout
    )
    assert "make register" in result.stdout
    # Again: the key stays as it is.
    assert gcloud.run(**JWKS).returncode == 0
    assert gcloud.secrets()["relay-access-keys"] == key


def test_every_call_is_non_interactive(gcloud):
    result = gcloud.run(**{**FULL, "SECRET_THREATSCORE_API_KEY": ""})
    assert result.returncode == 0, result.stderr
    calls = gcloud.calls()
    assert len(calls) > 20
    for call in calls:
        assert "--quiet" in call["args"] and call["prompts_off"], call
        assert call["stdin_kind"] == ("data" if "--data-file=-" in call["args"] else "devnull"), call
    # The checks and the one API call come before the first change.
    words = [" ".join(a for a in c["args"] if not a.startswith("--")) for c in calls]
    first_change = next(i for i, w in enumerate(words) if " create " in f" {w} ")
    assert words[:first_change][0] == "auth list"
    assert [w for w in words if w.startswith("services enable")] == [words[1]]
    enabled = words[1].split()[2:]
    assert {"iam.googleapis.com", "cloudfunctions.googleapis.com", "redis.googleapis.com"} <= set(enabled)
    assert {"projects describe acme-xdr-prod", "functions regions list"} <= set(words[:first_change])
    # Progress: a line per step with the elapsed time.
    assert "] Enabling the APIs" in result.stdout and "[0:0" in result.stdout


def test_cpu_boost_is_set_once(gcloud):
    assert gcloud.run(**JWKS).returncode == 0
    assert gcloud.run(**JWKS).returncode == 0
    updates = [c for c in gcloud.commands() if c[:3] == ["run", "services", "update"]]
    assert len(updates) == 1 and "--cpu-boost" in updates[0] and flags(updates[0])["region"] == REGION


def test_a_transient_iam_error_is_retried_and_shown(gcloud):
    result = gcloud.run(**JWKS, FAKE_GCLOUD_FAIL="secrets add-iam-policy-binding=2", IAM_RETRY_SECONDS="60")
    assert result.returncode == 0, result.stdout + result.stderr
    bindings = [c for c in gcloud.commands() if c[:2] == ["secrets", "add-iam-policy-binding"]]
    assert len(bindings) == 3
    assert result.stdout.count("transient error") == 2
    assert (
        "Service account relay-runtime@acme-xdr-prod.iam.gserviceaccount.com does not exist" in result.stdout
    )


def test_a_lasting_iam_error_ends_the_deploy_within_its_bound(gcloud):
    started = time.monotonic()
    result = gcloud.run(**JWKS, FAKE_GCLOUD_FAIL="secrets add-iam-policy-binding=-1", IAM_RETRY_SECONDS="3")
    took = time.monotonic() - started
    assert result.returncode != 0
    assert took < 60  # 3 s of retries and the rest of a short deploy, with room for a loaded machine
    assert "step failed: Secrets in Secret Manager" in result.stderr
    assert "INVALID_ARGUMENT: Service account" in result.stderr  # Google's error, whole
    assert "IAM_RETRY_SECONDS" in result.stderr
    assert not [c for c in gcloud.commands() if c[:2] == ["functions", "deploy"]]


def test_any_other_error_stops_at_once_with_the_step_and_what_to_do(gcloud, tmp_path):
    result = gcloud.run(**JWKS, FAKE_GCLOUD_ACCOUNT="")
    assert result.returncode != 0
    assert "gcloud is not logged in" in result.stderr and "gcloud auth login" in result.stderr
    assert [c[:2] for c in gcloud.commands()] == [["auth", "list"]]


def test_gclouds_progress_reaches_the_operator_as_it_comes(gcloud):
    result = gcloud.run(**JWKS)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    deploy_at = next(i for i, line in enumerate(lines) if line.startswith("  $ gcloud functions deploy"))
    assert lines[deploy_at + 1 : deploy_at + 3] == [
        "    Preparing function...done.",
        "    Deploying function...",
    ]


def test_a_region_without_cloud_functions_stops_before_any_change(gcloud):
    result = gcloud.run(**{**JWKS, "GCP_REGION": "mars-north9"})
    assert result.returncode != 0
    assert "GCP_REGION=mars-north9 does not serve Cloud Functions" in result.stderr
    assert "europe-west1" in result.stderr  # the regions there are
    assert creates(gcloud.commands()) == []


def test_a_build_permission_error_says_what_to_grant(gcloud):
    google = (
        "ERROR: (gcloud.functions.deploy) OperationError: code=3, message=Build failed with status: "
        "FAILURE. Could not build the function due to a missing permission on the build service account."
    )
    result = gcloud.run(**JWKS, FAKE_GCLOUD_FAIL="functions deploy=-1", FAKE_GCLOUD_FAIL_MESSAGE=google)
    assert result.returncode != 0
    assert "step failed: Deploying the function" in result.stderr
    assert google in result.stderr  # whole
    assert (
        f"gcloud projects add-iam-policy-binding {PROJECT} "
        f"--member=serviceAccount:{PROJECT_NUMBER}-compute@developer.gserviceaccount.com "
        "--role=roles/cloudbuild.builds.builder"
    ) in result.stderr
    assert len([c for c in gcloud.commands() if c[:2] == ["functions", "deploy"]]) == 1  # not retried


def test_settings_from_deploy_env_and_the_environment_wins(gcloud):
    gcloud.deploy_env.write_text(
        f"# comment\nGCP_PROJECT={PROJECT}\nGCP_REGION=us-central1\nRELAY_AUTH=jwks\nXDR_REGION=us\n"
        "RELAY_AUDIENCE=https://relay.example.com/\nMAX_INSTANCES=3\nRELAY_DEADLINE=9.5\n"
    )
    result = gcloud.run(GCP_REGION=REGION)
    assert result.returncode == 0, result.stderr
    [deploy] = [c for c in gcloud.commands() if c[:2] == ["functions", "deploy"]]
    options = flags(deploy)
    assert options["region"] == REGION and options["max-instances"] == "3"
    assert options["timeout"] == "15s"  # ceil(9.5) + 5
    env = yaml.safe_load(Path(options["env-vars-file"]).read_text())
    assert env["RELAY_AUDIENCE"] == "https://relay.example.com" and env["RELAY_DEADLINE"] == "9.5"


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"RELAY_AUTH": "none"}, "RELAY_AUTH must be jwks or secret"),
        ({"CPU": "0.5"}, "CPU must be at least 1"),
        ({"CONCURRENCY": "1"}, "CONCURRENCY must be a whole number from 2"),
        ({"RELAY_DEADLINE": "-3"}, "the relay would not start: RELAY_DEADLINE"),
        ({"GCP_PROJECT": "Bad Project"}, "GCP_PROJECT must be a project id"),
        ({"XDR_REGION": ""}, "XDR_REGION is not set"),
        ({"XDR_REGION": "mars"}, "XDR_REGION must be one of us, eu, apjc"),
        ({"RELAY_JWKS_HOSTS": "visibility.amp.cisco.com"}, "leaves out visibility.eu.amp.cisco.com"),
        ({"SUBNET_RANGE": "8.8.8.0/28"}, "SUBNET_RANGE must be a private /28"),
        ({"IAM_RETRY_SECONDS": "-1"}, "IAM_RETRY_SECONDS must be a whole number"),
    ],
)
def test_bad_settings_stop_before_any_gcloud_call(gcloud, settings, words):
    result = gcloud.run(**{**JWKS, **settings})
    assert result.returncode != 0
    assert words in result.stderr
    assert gcloud.commands() == []


def test_a_secret_in_deploy_env_is_refused(gcloud):
    gcloud.deploy_env.write_text(
        f"GCP_PROJECT={PROJECT}\nGCP_REGION={REGION}\nRELAY_AUTH=secret\nRELAY_SECRET=x\n"
    )
    result = gcloud.run()
    assert result.returncode != 0 and "must not hold RELAY_SECRET" in result.stderr
    assert gcloud.commands() == []


def test_a_missing_operator_secret_stops_before_any_resource_is_made(gcloud):
    result = gcloud.run(**{**FULL, "SECRET_REDIS_URL": "my-redis-url", "REDIS": ""})
    assert result.returncode != 0
    assert "no secret threatscore-key for THREATSCORE_API_KEY" in result.stderr
    assert "secret my-redis-url for REDIS_URL" in result.stderr
    assert "gcloud secrets create threatscore-key --data-file=-" in result.stderr
    assert "nothing has been created yet" in result.stderr
    changes = [c for c in gcloud.commands() if {"create", "deploy", "update", "add"} & set(c)]
    assert changes == []
    assert gcloud.resources() == []


RESOURCE_SETTINGS = (
    "FUNCTION_NAME",
    "SERVICE_ACCOUNT",
    "NETWORK",
    "SUBNET",
    "CONNECTOR",
    "ROUTER",
    "NAT",
    "ADDRESS",
    "REDIS_INSTANCE",
    "SECRET_RELAY_SECRET",
    "SECRET_THREATSCORE_API_KEY",
    "SECRET_REDIS_URL",
    "SECRET_RELAY_ACCESS_KEYS",
    "SECRET_REDIS_SIGNING_KEY",
    "GCP_REGION",
    "GCP_PROJECT",
)


@pytest.mark.parametrize("variable", RESOURCE_SETTINGS)
def test_a_name_that_is_a_flag_stops_before_any_gcloud_call(gcloud, variable):
    """`--impersonate-service-account=...` as a resource name would be read by gcloud as a flag."""
    flag = "--impersonate-service-account=attacker@evil-project.iam.gserviceaccount.com"
    auth = "secret" if variable == "SECRET_RELAY_SECRET" else "jwks"
    result = gcloud.run(**{**FULL, "RELAY_AUTH": auth, variable: flag})
    assert result.returncode != 0
    assert f"{variable} must be " in result.stderr and "would reach gcloud as a flag" in result.stderr
    assert gcloud.commands() == []


@pytest.mark.parametrize("variable", [v for v in RESOURCE_SETTINGS if not v.startswith(("GCP_", "SECRET_"))])
@pytest.mark.parametrize("name", ["Relay", "relay_vpc", "a" * 64, "relay-", "9relay"])
def test_names_follow_googles_rules(variable, name):
    with pytest.raises(DeployError, match=f"{variable} must be "):
        load({**FULL, variable: name}, env_file=Path("/nonexistent"))


# --- the upload -----------------------------------------------------------------------------------


def expected_upload() -> set[str]:
    relay_files = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "relay").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    return {"main.py", "requirements.txt", *relay_files}


def test_gcloudignore_uploads_only_what_the_function_needs():
    """`--source=.` with the repository's .gcloudignore (gitignore rules, as gcloud reads them)
    leaves out everything but main.py, requirements.txt and relay/: tests, tools, deploy.env..."""
    spec = pathspec.PathSpec.from_lines("gitignore", (ROOT / ".gcloudignore").read_text().splitlines())
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    # What an operator's clone also holds, whether git sees it or not.
    local = ["deploy.env", ".deploy/env.yaml", ".venv/bin/python", "relay/__pycache__/app.cpython-313.pyc"]
    candidates = {path for path in [*listed, *local] if (ROOT / path).is_file() or path in local}
    uploaded = {path for path in candidates if not spec.match_file(path)}
    assert uploaded == expected_upload()


@pytest.mark.process
@pytest.mark.timeout(600)
def test_a_fresh_virtualenv_from_the_upload_serves_the_relay(tmp_path):
    """As Google's Python build does: only the staged files, `pip install -r requirements.txt`,
    then functions-framework with --target=relay."""
    from deploy.cloud import stage_source

    source = tmp_path / "source"
    assert set(stage_source(source)) == expected_upload()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", "requirements.txt"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    port = free_port()
    server = subprocess.Popen(
        [
            str(env_dir / "bin" / "functions-framework"),
            "--target=relay",
            "--host=127.0.0.1",
            f"--port={port}",
        ],
        cwd=source,
        env={**without_relay_settings(os.environ), "RELAY_AUTH": "none", "PYTHONPATH": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, server, timeout=60)
        answer = requests.post(f"http://127.0.0.1:{port}/version", timeout=30)
        assert answer.status_code == 200
        assert set(answer.json()) == {"version"}
    finally:
        stop_process(server)


def test_which_secrets_each_setup_gets():
    def secrets(**settings: str) -> dict[str, tuple[str, str]]:
        loaded = load({**JWKS, **settings}, env_file=Path("/nonexistent"))
        return {ref.env: (ref.secret, ref.origin) for ref in loaded.secrets}

    assert secrets() == {"RELAY_ACCESS_KEYS": ("relay-access-keys", "random")}
    # A Redis of one's own: its URL must exist; the signing key is made here.
    assert secrets(SECRET_REDIS_URL="my-redis") == {
        "RELAY_ACCESS_KEYS": ("relay-access-keys", "random"),
        "REDIS_URL": ("my-redis", "operator"),
        "REDIS_SIGNING_KEY": ("relay-redis-signing-key", "random"),
    }
    # Any organisation allowed: no access key, and the relay is told so.
    loaded = load({**JWKS, "RELAY_ANY_ORGANISATION": "true"}, env_file=Path("/nonexistent"))
    assert loaded.secrets == () and loaded.relay_env["RELAY_ANY_ORGANISATION"] == "true"
    with pytest.raises(DeployError, match="two settings name the same secret"):
        load({**JWKS, "SECRET_REDIS_URL": "same", "SECRET_RELAY_ACCESS_KEYS": "same"}, env_file=Path("/x"))
