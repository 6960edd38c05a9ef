"""`make deploy`: every `gcloud` call that puts the relay on Cloud Functions (gen2), in order.

Idempotent: each resource is described before it is created, so a second run
creates nothing and deploys a new revision. `DRY_RUN=1` prints the commands
instead of running them (describes included: nothing is asked of Google).
Secret values never appear in a command or a file here: Secret Manager holds
them, and the two this tool writes itself (a generated RELAY_SECRET, the
Memorystore URL with its AUTH string) go to `gcloud` on its standard input.
"""

from __future__ import annotations

import json
import re
import secrets as random_secrets
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import yaml

from deploy.settings import ROOT, WORK_DIR, DeployError, DeploySettings, SecretRef, load
from relay.module_type import module_type, render

# What the function needs at run time, and nothing else (Google's build installs requirements.txt).
UPLOAD_FILES = ("main.py", "requirements.txt")
UPLOAD_PACKAGE = "relay"
APIS = (
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "secretmanager.googleapis.com",
)
NETWORK_APIS = ("compute.googleapis.com", "vpcaccess.googleapis.com")
_NOT_FOUND = re.compile(r"NOT_FOUND|not found|was not found", re.IGNORECASE)


class Gcloud:
    """Runs `gcloud`, or prints what it would run. Every command is printed before it runs."""

    def __init__(self, project: str, dry_run: bool):
        self.project = project
        self.dry_run = dry_run
        self.executable = "gcloud" if dry_run else shutil.which("gcloud")
        if self.executable is None:
            raise DeployError("gcloud is not on PATH (install the Google Cloud CLI, or try DRY_RUN=1)")

    def _command(self, args: list[str]) -> list[str]:
        return ["gcloud", *args, f"--project={self.project}"]

    def run(self, *args: str, stdin: str | None = None, stdin_note: str = "", check: bool = True) -> str:
        command = self._command(list(args))
        shown = shlex.join(command) + (f"   # standard input: {stdin_note}" if stdin is not None else "")
        print(("[dry run] " if self.dry_run else "$ ") + shown, flush=True)
        if self.dry_run:
            return ""
        result = subprocess.run(  # noqa: S603 - gcloud with our own arguments, no shell
            [self.executable, *command[1:]], input=stdin, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise DeployError(f"gcloud failed ({shlex.join(command[:4])} ...):\n{result.stderr.strip()}")
        return result.stdout

    def describe(self, *args: str) -> dict | None:
        """The resource as JSON, or None when Google says it does not exist (or in a dry run)."""
        command = self._command([*args, "--format=json"])
        print(("[dry run] " if self.dry_run else "$ ") + shlex.join(command), flush=True)
        if self.dry_run:
            return None
        result = subprocess.run(  # noqa: S603 - gcloud with our own arguments, no shell
            [self.executable, *command[1:]], capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            try:
                return json.loads(result.stdout or "{}")
            except json.JSONDecodeError:
                return {}
        if _NOT_FOUND.search(result.stderr):
            return None
        raise DeployError(f"gcloud failed ({shlex.join(command[:4])} ...):\n{result.stderr.strip()}")

    def ensure(self, describe: list[str], create: list[str]) -> dict | None:
        """Describe before create: creates the resource only when it is missing."""
        found = self.describe(*describe)
        if found is None:
            self.run(*create)
        return found


def stage_source(target: Path) -> list[str]:
    """A folder with exactly what the function needs; the relative paths it holds."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in UPLOAD_FILES:
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(
        ROOT / UPLOAD_PACKAGE, target / UPLOAD_PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())


def env_vars(settings: DeploySettings) -> dict[str, str]:
    """The function's environment (no secret among them): every value a string."""
    return {
        **settings.relay_env,
        "RELAY_AUDIENCE": settings.audience,
        "GOOGLE_CLOUD_PROJECT": settings.project,
        # functions-framework serves with gunicorn: one worker, THREADS threads. One thread per
        # request the instance may be given at once.
        "THREADS": str(settings.concurrency),
    }


def deploy_command(settings: DeploySettings, source: Path, env_file: Path) -> list[str]:
    command = [
        "functions",
        "deploy",
        settings.function_name,
        "--gen2",
        f"--runtime={settings.runtime}",
        f"--region={settings.region}",
        f"--source={source}",
        "--entry-point=relay",
        "--trigger-http",
        "--allow-unauthenticated",  # XDR brings its own token, which the relay verifies
        f"--timeout={settings.timeout_seconds}s",
        f"--memory={settings.memory}",
        f"--cpu={settings.cpu}",
        f"--concurrency={settings.concurrency}",
        f"--min-instances={settings.min_instances}",
        f"--max-instances={settings.max_instances}",
        f"--service-account={settings.service_account_email}",
        f"--env-vars-file={env_file}",
    ]
    if settings.secrets:
        command.append(
            "--set-secrets=" + ",".join(f"{ref.env}={ref.secret}:latest" for ref in settings.secrets)
        )
    if settings.needs_connector:
        command.append(
            f"--vpc-connector=projects/{settings.project}/locations/{settings.region}/connectors/{settings.connector}"
        )
        # static: every request leaves through the NAT address; Memorystore alone: only private ranges.
        command.append(
            "--egress-settings=" + ("all" if settings.egress == "static" else "private-ranges-only")
        )
    return command


def ensure_service_account(gcloud: Gcloud, settings: DeploySettings) -> None:
    """The function's own identity. No project role: it may only read its own secrets."""
    gcloud.ensure(
        ["iam", "service-accounts", "describe", settings.service_account_email],
        [
            "iam",
            "service-accounts",
            "create",
            settings.service_account_id,
            "--display-name=Threatscore relay (runtime)",
        ],
    )


def ensure_network(gcloud: Gcloud, settings: DeploySettings) -> None:
    region = f"--region={settings.region}"
    gcloud.ensure(
        ["compute", "networks", "describe", settings.network],
        ["compute", "networks", "create", settings.network, "--subnet-mode=custom"],
    )
    gcloud.ensure(
        ["compute", "networks", "subnets", "describe", settings.subnet, region],
        [
            "compute",
            "networks",
            "subnets",
            "create",
            settings.subnet,
            f"--network={settings.network}",
            f"--range={settings.subnet_range}",
            region,
        ],
    )
    gcloud.ensure(
        ["compute", "networks", "vpc-access", "connectors", "describe", settings.connector, region],
        [
            "compute",
            "networks",
            "vpc-access",
            "connectors",
            "create",
            settings.connector,
            region,
            f"--subnet={settings.subnet}",
            f"--subnet-project={settings.project}",
            "--min-instances=2",
            "--max-instances=3",
            "--machine-type=e2-micro",
        ],
    )


def ensure_static_egress(gcloud: Gcloud, settings: DeploySettings) -> str:
    """Cloud Router + reserved address + Cloud NAT for the connector's subnet; the address."""
    region = f"--region={settings.region}"
    gcloud.ensure(
        ["compute", "routers", "describe", settings.router, region],
        ["compute", "routers", "create", settings.router, f"--network={settings.network}", region],
    )
    gcloud.ensure(
        ["compute", "addresses", "describe", settings.address, region],
        ["compute", "addresses", "create", settings.address, region],
    )
    gcloud.ensure(
        ["compute", "routers", "nats", "describe", settings.nat, f"--router={settings.router}", region],
        [
            "compute",
            "routers",
            "nats",
            "create",
            settings.nat,
            f"--router={settings.router}",
            region,
            f"--nat-custom-subnet-ip-ranges={settings.subnet}",
            f"--nat-external-ip-pool={settings.address}",
        ],
    )
    address = gcloud.describe("compute", "addresses", "describe", settings.address, region)
    return (address or {}).get("address", "(the address of " + settings.address + ")")


def memorystore_url(gcloud: Gcloud, settings: DeploySettings) -> str | None:
    """The Redis URL of the relay's Memorystore instance (created with AUTH if missing), or None in
    a dry run. Holds the AUTH string: it only ever goes to Secret Manager."""
    region = f"--region={settings.region}"
    describe = ["redis", "instances", "describe", settings.redis_instance, region]
    gcloud.ensure(
        describe,
        [
            "redis",
            "instances",
            "create",
            settings.redis_instance,
            region,
            f"--network=projects/{settings.project}/global/networks/{settings.network}",
            "--tier=basic",
            f"--size={settings.redis_size_gb}",
            "--redis-version=redis_7_2",
            "--enable-auth",
        ],
    )
    instance = gcloud.describe(*describe)
    if instance is None:
        return None
    if instance.get("transitEncryptionMode") not in (
        None,
        "",
        "DISABLED",
        "TRANSIT_ENCRYPTION_MODE_UNSPECIFIED",
    ):
        raise DeployError(
            f"Memorystore instance {settings.redis_instance} uses in-transit encryption, which needs its CA "
            "certificate in the relay: not supported; use an instance without it (AUTH stays on)"
        )
    host, port = instance.get("host"), instance.get("port", 6379)
    if not host:
        raise DeployError(f"Memorystore instance {settings.redis_instance} has no host yet (still creating?)")
    auth = gcloud.describe("redis", "instances", "get-auth-string", settings.redis_instance, region) or {}
    password = auth.get("authString")
    credentials = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{credentials}{host}:{port}/0"


def ensure_secret(gcloud: Gcloud, settings: DeploySettings, ref: SecretRef, value: str | None) -> None:
    """The secret exists, the function's account may read it, and `value` (when this tool makes the
    value: a new RELAY_SECRET, the Memorystore URL) is its latest version."""
    made_here = ref.env == "RELAY_SECRET" or (ref.env == "REDIS_URL" and settings.redis == "memorystore")
    found = gcloud.describe("secrets", "describe", ref.secret)
    if found is None and not made_here:
        if not settings.dry_run:
            raise DeployError(
                f"Secret Manager has no secret {ref.secret} for {ref.env}. Create it first:\n"
                f'  printf %s "$VALUE" | gcloud secrets create {ref.secret} --data-file=- '
                f"--project={settings.project}"
            )
        print(f"  {ref.env}: Secret Manager secret {ref.secret} must exist (its value is yours to give)")
    elif found is None:
        if value is None and ref.env == "RELAY_SECRET":
            value = random_secrets.token_urlsafe(48)  # a new secret, seen by nobody
            print(f"  {ref.env}: a new random secret goes to Secret Manager secret {ref.secret}")
        gcloud.run("secrets", "create", ref.secret, "--replication-policy=automatic")
        gcloud.run(
            "secrets", "versions", "add", ref.secret, "--data-file=-", stdin=value or "", stdin_note=ref.env
        )
    elif value is not None:
        latest = gcloud.run("secrets", "versions", "access", "latest", f"--secret={ref.secret}", check=False)
        if latest != value:
            gcloud.run(
                "secrets", "versions", "add", ref.secret, "--data-file=-", stdin=value, stdin_note=ref.env
            )
    gcloud.run(
        "secrets",
        "add-iam-policy-binding",
        ref.secret,
        f"--member=serviceAccount:{settings.service_account_email}",
        "--role=roles/secretmanager.secretAccessor",
        "--format=none",
    )


def check_upload(gcloud: Gcloud, source: Path, staged: list[str]) -> None:
    """What gcloud itself would upload from `source` is exactly what was staged."""
    listed = gcloud.run("meta", "list-files-for-upload", str(source))
    if gcloud.dry_run:
        return
    uploaded = sorted(line.strip() for line in listed.splitlines() if line.strip())
    if uploaded != staged:
        raise DeployError(f"gcloud would upload {uploaded}, not the staged {staged}")


def deploy(settings: DeploySettings | None = None) -> None:
    settings = settings or load()
    gcloud = Gcloud(settings.project, settings.dry_run)
    WORK_DIR.mkdir(exist_ok=True)
    source, env_file = WORK_DIR / "source", WORK_DIR / "env.yaml"
    staged = stage_source(source)
    env_file.write_text(yaml.safe_dump(env_vars(settings), default_flow_style=False, sort_keys=True))

    print(f"Deploying {settings.function_name} to {settings.project} ({settings.region})")
    apis = list(APIS)
    if settings.needs_connector:
        apis += NETWORK_APIS
    if settings.redis == "memorystore":
        apis.append("redis.googleapis.com")
    gcloud.run("services", "enable", *apis)
    ensure_service_account(gcloud, settings)
    address = None
    if settings.needs_connector:
        ensure_network(gcloud, settings)
    if settings.egress == "static":
        address = ensure_static_egress(gcloud, settings)
    for ref in settings.secrets:
        value = memorystore_url(gcloud, settings) if ref.env == "REDIS_URL" and settings.redis else None
        ensure_secret(gcloud, settings, ref, value)
    check_upload(gcloud, source, staged)
    gcloud.run(*deploy_command(settings, source, env_file))

    described = gcloud.describe(
        "functions", "describe", settings.function_name, f"--region={settings.region}", "--gen2"
    )
    url = (described or {}).get("url") or settings.default_url
    module_type_file = WORK_DIR / "module_type.json"
    module_type_file.write_text(render(module_type(settings.audience, settings.xdr_region)))
    print()
    print(f"URL:       {url}")
    print(f"Audience:  {settings.audience} (RELAY_AUDIENCE: XDR must register exactly this URL)")
    if settings.audience != url and described:
        print(
            f"  note: the function answers at {url}, not at the audience; set RELAY_AUDIENCE if XDR uses it"
        )
    if address:
        print(
            f"Egress:    every call to Threatscore leaves from {address}: give this address to Cyberprotect"
        )
    print(f"Next:      the module type for XDR ({settings.xdr_region}): {module_type_file};")
    print("           register it with XDR_CLIENT_ID=... XDR_CLIENT_SECRET=... make register")
