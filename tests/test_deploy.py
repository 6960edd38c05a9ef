"""`make deploy` against a fake `gcloud` (first on PATH), and the upload it makes.

gcloud cannot reach Google from here: the fake records every call (arguments
and standard input), keeps what was created in a state file (a describe
answers "not found" until then), and lists an upload folder as gcloud would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pathspec
import pytest
import requests
import yaml

from relay.module_type import module_type
from tests.conftest import ROOT
from tests.relay_process import free_port, stop_process, wait_for_port, without_relay_settings

PROJECT, REGION = "acme-xdr-prod", "europe-west1"
URL = f"https://{REGION}-{PROJECT}.cloudfunctions.net/relay"
SHELL_SECRET = "a-shell-exported-relay-secret-" + "q" * 20
REDIS_AUTH = "memorystore-auth-string-7f3a9c"
EGRESS_ADDRESS = "203.0.113.7"

FAKE_GCLOUD = '''\
#!{python}
"""A fake gcloud: records its calls, remembers what was created, answers describe and upload lists."""
import json, os, pathlib, sys

state_path = pathlib.Path(os.environ["FAKE_GCLOUD_STATE"])
state = json.loads(state_path.read_text()) if state_path.exists() else {{"resources": [], "secrets": {{}}}}
args = sys.argv[1:]
stdin = sys.stdin.read() if "--data-file=-" in args else None
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
    log.write(json.dumps({{"args": args, "stdin": stdin}}) + "\\n")
options = dict(arg[2:].split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)
words = [arg for arg in args if not arg.startswith("--")]
verbs = [i for i, word in enumerate(words) if word in ("describe", "create", "deploy", "get-auth-string")]
key = None
if verbs:
    i = verbs[0]
    name = words[i + 1]
    if words[:2] == ["iam", "service-accounts"]:
        name = name.split("@")[0]
    key = " ".join(words[:i] + [name])

def answer(kind):
    if kind.startswith("compute addresses"):
        return {{"address": "{address}"}}
    if kind.startswith("redis instances"):
        return {{"host": "10.20.30.40", "port": 6378, "transitEncryptionMode": "DISABLED"}}
    if kind.startswith("functions"):
        return {{"url": "https://%s-%s.cloudfunctions.net/%s" % (options["region"], options["project"], name)}}
    return {{"name": key}}

if words[:2] == ["meta", "list-files-for-upload"]:
    root = pathlib.Path(words[2])
    for path in sorted(root.rglob("*")):
        if path.is_file():
            print(path.relative_to(root))
elif "get-auth-string" in words:
    print(json.dumps({{"authString": os.environ["FAKE_REDIS_AUTH"]}}))
elif words[:3] == ["secrets", "versions", "add"]:
    state["secrets"][words[3]] = stdin
elif words[:3] == ["secrets", "versions", "access"]:
    sys.stdout.write(state["secrets"].get(options["secret"], ""))
elif verbs and words[verbs[0]] == "describe":
    if key not in state["resources"]:
        sys.stderr.write("ERROR: (gcloud.%s) NOT_FOUND: %s not found\\n" % (".".join(words[:verbs[0] + 1]), key))
        sys.exit(1)
    print(json.dumps(answer(key)))
elif verbs:
    if key not in state["resources"]:
        state["resources"].append(key)
state_path.write_text(json.dumps(state))
'''


class FakeGcloud:
    def __init__(self, tmp_path: Path):
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        script = self.bin / "gcloud"
        script.write_text(FAKE_GCLOUD.format(python=sys.executable, address=EGRESS_ADDRESS))
        script.chmod(0o755)
        self.log = tmp_path / "gcloud.log"
        self.state = tmp_path / "gcloud-state.json"
        self.work = tmp_path / "work"
        self.deploy_env = tmp_path / "deploy.env"

    def seed(self, *resources: str) -> None:
        self.state.write_text(json.dumps({"resources": list(resources), "secrets": {}}))

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def commands(self) -> list[list[str]]:
        return [call["args"] for call in self.calls()]

    def run(self, target: str = "deploy", **settings: str) -> subprocess.CompletedProcess:
        env = {
            **without_relay_settings(os.environ),
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_GCLOUD_LOG": str(self.log),
            "FAKE_GCLOUD_STATE": str(self.state),
            "FAKE_REDIS_AUTH": REDIS_AUTH,
            "DEPLOY_ENV": str(self.deploy_env),
            "DEPLOY_WORK_DIR": str(self.work),
            **settings,
        }
        return subprocess.run(
            ["make", "--no-print-directory", target],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )


def flags(command: list[str]) -> dict[str, str]:
    return dict(
        arg[2:].split("=", 1) if "=" in arg else (arg[2:], "") for arg in command if arg.startswith("--")
    )


def creates(commands: list[list[str]]) -> list[str]:
    return [" ".join(word for word in c if not word.startswith("--")) for c in commands if "create" in c]


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
    assert ["meta", "list-files-for-upload", str(source), f"--project={PROJECT}"] in commands

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
        "secrets create relay-relay-secret",
        "redis instances create relay-cache",
        "secrets create relay-redis-url",
    ]
    nat = next(c for c in commands if c[:4] == ["compute", "routers", "nats", "create"])
    assert flags(nat)["nat-external-ip-pool"] == "relay-egress"
    assert flags(nat)["nat-custom-subnet-ip-ranges"] == "relay-connector"
    redis_create = next(c for c in commands if c[:3] == ["redis", "instances", "create"])
    assert "enable-auth" in flags(redis_create)
    bindings = [c for c in commands if "add-iam-policy-binding" in c]
    assert sorted(c[2] for c in bindings) == ["relay-redis-url", "relay-relay-secret", "threatscore-key"]
    assert all(c[:2] == ["secrets", "add-iam-policy-binding"] for c in bindings)
    assert all(flags(c)["role"] == "roles/secretmanager.secretAccessor" for c in bindings)
    assert all(flags(c)["member"] == f"serviceAccount:{options['service-account']}" for c in bindings)

    # Secrets went to Secret Manager on standard input only.
    stored = {
        c["args"][3]: c["stdin"] for c in gcloud.calls() if c["args"][:3] == ["secrets", "versions", "add"]
    }
    assert stored["relay-redis-url"] == f"redis://:{REDIS_AUTH}@10.20.30.40:6378/0"
    generated = stored["relay-relay-secret"]
    assert len(generated) >= 32 and generated != SHELL_SECRET
    for secret in (SHELL_SECRET, REDIS_AUTH, generated):
        assert not any(secret in arg for command in commands for arg in command)
        assert secret not in Path(options["env-vars-file"]).read_text()
        assert secret not in result.stdout + result.stderr

    # What the operator is told, and the module type for the deployed URL.
    assert f"URL:       {URL}" in result.stdout
    assert EGRESS_ADDRESS in result.stdout and "Cyberprotect" in result.stdout
    assert "make register" in result.stdout
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
    printed = [line for line in result.stdout.splitlines() if line.startswith("[dry run] gcloud ")]
    assert any(" functions deploy relay --gen2 " in line for line in printed)
    assert any(" compute routers nats create relay-nat " in line for line in printed)
    assert any("secrets versions add relay-relay-secret --data-file=-" in line for line in printed)
    assert SHELL_SECRET not in result.stdout + result.stderr


def test_plain_jwks_deploy_has_no_network_and_no_secret(gcloud):
    result = gcloud.run(GCP_PROJECT=PROJECT, GCP_REGION=REGION, RELAY_AUTH="jwks", CONCURRENCY="40")
    assert result.returncode == 0, result.stderr
    [deploy] = [c for c in gcloud.commands() if c[:2] == ["functions", "deploy"]]
    options = flags(deploy)
    assert "set-secrets" not in options and "vpc-connector" not in options
    assert yaml.safe_load(Path(options["env-vars-file"]).read_text())["THREADS"] == "40"
    assert creates(gcloud.commands()) == ["iam service-accounts create relay-runtime"]


def test_settings_from_deploy_env_and_the_environment_wins(gcloud):
    gcloud.deploy_env.write_text(
        f"# comment\nGCP_PROJECT={PROJECT}\nGCP_REGION=us-central1\nRELAY_AUTH=jwks\n"
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
    ],
)
def test_bad_settings_stop_before_any_gcloud_call(gcloud, settings, words):
    result = gcloud.run(**{"GCP_PROJECT": PROJECT, "GCP_REGION": REGION, "RELAY_AUTH": "jwks", **settings})
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


def test_a_missing_operator_secret_stops_with_how_to_create_it(gcloud):
    result = gcloud.run(
        GCP_PROJECT=PROJECT,
        GCP_REGION=REGION,
        RELAY_AUTH="jwks",
        SECRET_THREATSCORE_API_KEY="threatscore-key",
    )
    assert result.returncode != 0
    assert "no secret threatscore-key for THREATSCORE_API_KEY" in result.stderr
    assert "gcloud secrets create threatscore-key --data-file=-" in result.stderr
    assert not [c for c in gcloud.commands() if c[:2] == ["functions", "deploy"]]


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
