"""`make deploy`: every `gcloud` call that puts the relay on Cloud Functions (gen2), in order.

Idempotent: each resource is described before it is created, so a second run
creates nothing and deploys a new revision. `DRY_RUN=1` prints the commands
instead of running them (describes included: nothing is asked of Google).
Secret values never appear in a command or a file here: Secret Manager holds
them, and the two this tool writes itself (a generated RELAY_SECRET, the
Memorystore URL with its AUTH string) go to `gcloud` on its standard input.
"""

from __future__ import annotations

import secrets as random_secrets
import shutil
from pathlib import Path
from urllib.parse import quote

import yaml

from deploy.gcloud import Gcloud
from deploy.settings import ROOT, WORK_DIR, DeployError, DeploySettings, SecretRef, load
from relay.module_type import module_type, render

# What the function needs at run time, and nothing else (Google's build installs requirements.txt).
UPLOAD_FILES = ("main.py", "requirements.txt")
UPLOAD_PACKAGE = "relay"
APIS = (
    "cloudresourcemanager.googleapis.com",  # the project check
    "iam.googleapis.com",  # the function's service account
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "secretmanager.googleapis.com",
)
NETWORK_APIS = ("compute.googleapis.com", "vpcaccess.googleapis.com")
# Marks what the deploy made itself (secrets, the Memorystore instance): `make destroy` deletes
# only those, never a secret of the operator's.
MADE_BY = "made-by=relay-deploy"
SERVICE_ACCOUNT_NAME = "Threatscore relay (runtime)"
CPU_BOOST = "run.googleapis.com/startup-cpu-boost"


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
            f"--display-name={SERVICE_ACCOUNT_NAME}",
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
            f"--labels={MADE_BY}",
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


def secret_value(ref: SecretRef, settings: DeploySettings) -> str:
    """A new random value for a secret the deploy makes itself (seen by nobody, never printed)."""
    if ref.env == "RELAY_ACCESS_KEYS":
        return f"{settings.access_key_tenant}={random_secrets.token_urlsafe(32)}"  # 43 characters
    return random_secrets.token_urlsafe(48)


def check_secrets(gcloud: Gcloud, settings: DeploySettings) -> dict[str, bool]:
    """Which of the named secrets exist. A secret only the operator can give (a Threatscore API
    key, the URL of a Redis of their own) that is missing stops the deploy here, before any change."""
    exists = {}
    missing = []
    for ref in settings.secrets:
        exists[ref.secret] = gcloud.describe("secrets", "describe", ref.secret) is not None
        if not exists[ref.secret] and ref.origin == "operator":
            missing.append(ref)
    if missing and not settings.dry_run:
        raise DeployError(
            "Secret Manager has no "
            + ", ".join(f"secret {ref.secret} for {ref.env}" for ref in missing)
            + ". Create it first (nothing has been created yet):\n"
            + "\n".join(
                f'  printf %s "$VALUE" | gcloud secrets create {ref.secret} --data-file=- '
                f"--project={settings.project}"
                for ref in missing
            )
        )
    for ref in missing:
        print(f"    {ref.env}: secret {ref.secret} must exist (its value is yours to give)")
    return exists


def ensure_secret(
    gcloud: Gcloud, settings: DeploySettings, ref: SecretRef, exists: bool, value: str | None
) -> None:
    """The secret exists, the function's account may read it, and `value` (the Memorystore URL)
    is its latest version. Values go to gcloud on its standard input, never on a command line."""
    if not exists and ref.origin != "operator":
        if value is None and ref.origin == "random":
            value = secret_value(ref, settings)
            print(f"    {ref.env}: a new random value goes to Secret Manager secret {ref.secret}")
        gcloud.run(
            "secrets",
            "create",
            ref.secret,
            "--replication-policy=automatic",
            f"--labels={MADE_BY}",
            "--data-file=-",
            stdin=value or "",
            stdin_note=ref.env,
        )
    elif exists and value is not None:
        latest = gcloud.call(
            "secrets",
            "versions",
            "access",
            "latest",
            f"--secret={ref.secret}",
            stream=False,
            allow_missing=True,
        )
        if latest is None or latest.stdout != value:
            gcloud.run(
                "secrets", "versions", "add", ref.secret, "--data-file=-", stdin=value, stdin_note=ref.env
            )
    # Right after the account's creation this may fail while IAM propagates: retried.
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


def apis_of(settings: DeploySettings) -> list[str]:
    apis = list(APIS)
    if settings.needs_connector:
        apis += NETWORK_APIS
    if settings.redis == "memorystore":
        apis.append("redis.googleapis.com")
    return apis


def check_login(gcloud: Gcloud, settings: DeploySettings) -> None:
    """gcloud has an active account (read from its own configuration: no API needed)."""
    answer = gcloud.call("auth", "list", "--filter=status:ACTIVE", "--format=value(account)", stream=False)
    if answer is None:
        return
    account = answer.stdout.strip()
    if not account:
        raise DeployError(
            "gcloud is not logged in (no active account). Run `gcloud auth login`, then the same make "
            "command again; nothing has been created."
        )
    print(f"    logged in as {account}")


def check_project_and_region(gcloud: Gcloud, settings: DeploySettings) -> str | None:
    """The project exists and this account sees it; the region serves Cloud Functions. The
    project's number (for the build's service account), or None in a dry run."""
    project = gcloud.describe("projects", "describe", settings.project)
    if project is None and not settings.dry_run:
        raise DeployError(
            f"project {settings.project} was not found, or your account may not see it: check "
            "GCP_PROJECT and `gcloud auth list`"
        )
    regions = gcloud.describe("functions", "regions", "list", "--gen2")
    if regions is not None and not settings.dry_run:
        names = {
            str(entry.get("locationId") or entry.get("name", "")).rsplit("/", 1)[-1] for entry in regions
        }
        if settings.region not in names:
            raise DeployError(
                f"GCP_REGION={settings.region} does not serve Cloud Functions (gen2) for this project; "
                f"regions: {', '.join(sorted(names))}"
            )
    return str((project or {}).get("projectNumber", "")) or None


def ensure_cpu_boost(gcloud: Gcloud, settings: DeploySettings, described: dict | None) -> None:
    """Start-up CPU boost on the function's Cloud Run service: a cold start's imports and first
    connections get more CPU. Set only when missing (a new `functions deploy` may drop it)."""
    service = ((described or {}).get("serviceConfig") or {}).get("service", "") or settings.function_name
    name = service.rsplit("/", 1)[-1]
    region = f"--region={settings.region}"
    found = gcloud.describe("run", "services", "describe", name, region)
    annotations = (
        (((found or {}).get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations", {})
    )
    if str(annotations.get(CPU_BOOST, "")).lower() == "true":
        print("    start-up CPU boost is on")
        return
    gcloud.run("run", "services", "update", name, region, "--cpu-boost")


def deploy(settings: DeploySettings | None = None) -> None:
    settings = settings or load()
    gcloud = Gcloud(settings.project, settings.dry_run, settings.iam_retry_seconds)
    WORK_DIR.mkdir(exist_ok=True)
    source, env_file = WORK_DIR / "source", WORK_DIR / "env.yaml"
    staged = stage_source(source)
    env_file.write_text(yaml.safe_dump(env_vars(settings), default_flow_style=False, sort_keys=True))
    print(
        f"Deploying {settings.function_name} to {settings.project} ({settings.region})"
        + (": DRY RUN, nothing is run" if settings.dry_run else "")
    )

    # Checks first: a mistake costs seconds. Enabling the APIs is the one change before them.
    gcloud.step("Checking gcloud's login")
    check_login(gcloud, settings)
    gcloud.step("Enabling the APIs the deploy uses (one call; the first time takes a minute)")
    gcloud.run("services", "enable", *apis_of(settings))
    gcloud.step("Checking the project, the region and the secrets you named")
    project_number = check_project_and_region(gcloud, settings)
    exists = check_secrets(gcloud, settings)

    gcloud.step("The function's service account")
    ensure_service_account(gcloud, settings)
    address = None
    if settings.needs_connector:
        gcloud.step("Network and Serverless VPC Access connector (the connector takes minutes)")
        ensure_network(gcloud, settings)
    if settings.egress == "static":
        gcloud.step("A fixed outbound address: Cloud Router, reserved address, Cloud NAT")
        address = ensure_static_egress(gcloud, settings)
    if settings.redis == "memorystore":
        gcloud.step("Memorystore for Redis (a new instance takes several minutes)")
    redis_url = memorystore_url(gcloud, settings) if settings.redis == "memorystore" else None
    gcloud.step("Secrets in Secret Manager, readable by the function's account only")
    for ref in settings.secrets:
        ensure_secret(
            gcloud, settings, ref, exists[ref.secret], redis_url if ref.origin == "memorystore" else None
        )
    gcloud.step("The upload")
    check_upload(gcloud, source, staged)
    gcloud.step("Deploying the function (Google builds it: a few minutes)")
    try:
        gcloud.run(*deploy_command(settings, source, env_file))
    except DeployError as exc:
        if project_number and "What to do: the function's build" in str(exc):
            raise DeployError(f"{exc}\n{build_grant(settings, project_number)}") from None
        raise
    described = gcloud.describe(
        "functions", "describe", settings.function_name, f"--region={settings.region}", "--gen2"
    )
    gcloud.step("Start-up CPU boost on the function's Cloud Run service")
    ensure_cpu_boost(gcloud, settings, described if isinstance(described, dict) else None)

    url = (described if isinstance(described, dict) else {}).get("url") or settings.default_url
    module_type_file = WORK_DIR / "module_type.json"
    module_type_file.write_text(render(module_type(settings.audience, settings.xdr_region)))
    print(f"\n[{gcloud.elapsed()}] Done.")
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
    access = settings.secret("RELAY_ACCESS_KEYS")
    if access:
        print(
            "Access key: XDR's module asks for it (Relay access key). Show it with\n"
            f"             gcloud secrets versions access latest --secret={access.secret} "
            f"--project={settings.project}\n"
            f"           and paste the part after '{settings.access_key_tenant}=' into the module in XDR."
        )
    if settings.relay_auth == "jwks":
        print(f"Next:      the module type for XDR ({settings.xdr_region}): {module_type_file};")
        print("           register it with XDR_CLIENT_ID=... XDR_CLIENT_SECRET=... make register")
    else:
        secret = settings.secret("RELAY_SECRET")
        print(
            "Next:      a token for XDR's generic relay module, signed with the secret:\n"
            f'           RELAY_SECRET="$(gcloud secrets versions access latest --secret={secret.secret} '
            f'--project={settings.project})" .venv/bin/python -m relay token --aud {settings.audience} '
            "--days 365"
        )
    print(f"Check:     curl -s -X POST {url}/health  (answers 'authorization error' without XDR's token)")


def build_grant(settings: DeploySettings, project_number: str) -> str:
    """The command that gives the default build service account what a build needs."""
    return (
        "Projects made since mid-2024 build with the Compute Engine default service account, which "
        "may lack the role a build needs. Grant it:\n"
        f"  gcloud projects add-iam-policy-binding {settings.project} "
        f"--member=serviceAccount:{project_number}-compute@developer.gserviceaccount.com "
        "--role=roles/cloudbuild.builds.builder"
    )
