"""What `make deploy` and `make register` are told: the environment, then `deploy.env`.

A variable set in the environment wins over the same one in `deploy.env`
(as with make). Secrets never come from either: `deploy.env` naming one is
refused, and one exported in the shell (RELAY_SECRET to mint tokens, say) is
left out; the function reads its secrets from Secret Manager.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from relay.config import ConfigError, Settings, declared_settings
from relay.module_type import JWKS_HOSTS

ROOT = Path(__file__).resolve().parent.parent
# The settings file, and where the generated upload, env file and module type go (git- and
# gcloud-ignored). Both can be moved (DEPLOY_ENV, DEPLOY_WORK_DIR): the tests do.
DEPLOY_ENV = Path(os.environ.get("DEPLOY_ENV") or ROOT / "deploy.env")
WORK_DIR = Path(os.environ.get("DEPLOY_WORK_DIR") or ROOT / ".deploy")

TIMEOUT_MARGIN_SECONDS = 5  # the function's timeout is RELAY_DEADLINE plus this
# Set by the deployment itself, or by the platform: never passed on from the operator's settings.
RESERVED = frozenset({"RELAY_AUDIENCE", "GOOGLE_CLOUD_PROJECT", "K_SERVICE", "THREADS", "WORKERS"})


class DeployError(Exception):
    """A setting or an answer from Google that stops the deployment, in words for the operator."""


@dataclass(frozen=True)
class SecretRef:
    """A relay setting read from a Secret Manager secret (never a value)."""

    env: str  # the variable the function sees
    secret: str  # the Secret Manager secret's name


@dataclass(frozen=True)
class DeploySettings:
    project: str
    region: str
    function_name: str
    relay_auth: str
    audience: str
    runtime: str
    memory: str
    cpu: str
    concurrency: int
    min_instances: int
    max_instances: int
    timeout_seconds: int
    service_account_id: str
    xdr_region: str
    egress: str  # "" (Google's shared addresses) or "static"
    redis: str  # "" (none or REDIS_URL from a secret) or "memorystore"
    network: str
    subnet: str
    subnet_range: str
    connector: str
    router: str
    nat: str
    address: str
    redis_instance: str
    redis_size_gb: int
    relay_env: dict[str, str] = field(default_factory=dict)  # the relay's own settings, passed on
    secrets: tuple[SecretRef, ...] = ()
    dry_run: bool = False

    @property
    def service_account_email(self) -> str:
        return f"{self.service_account_id}@{self.project}.iam.gserviceaccount.com"

    @property
    def default_url(self) -> str:
        return f"https://{self.region}-{self.project}.cloudfunctions.net/{self.function_name}"

    @property
    def needs_connector(self) -> bool:
        return self.egress == "static" or self.redis == "memorystore"

    def secret(self, env: str) -> SecretRef | None:
        return next((ref for ref in self.secrets if ref.env == env), None)


def load(environ: Mapping[str, str] | None = None, env_file: Path = DEPLOY_ENV) -> DeploySettings:
    environ = os.environ if environ is None else environ
    from_file = (
        {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.is_file() else {}
    )
    secret_names = {declared.env for declared in declared_settings() if declared.secret}
    secret_names |= {"THREATSCORE_API_KEY", "XDR_CLIENT_SECRET"}
    in_file = sorted(secret_names & set(from_file))
    if in_file:
        raise DeployError(
            f"{env_file.name} must not hold {', '.join(in_file)}: keep secrets in Secret Manager "
            "and name the secret (SECRET_RELAY_SECRET, SECRET_THREATSCORE_API_KEY, SECRET_REDIS_URL)"
        )
    values = {**from_file, **{k: v for k, v in environ.items() if v.strip()}}

    def get(name: str, default: str = "") -> str:
        return values.get(name, default).strip()

    def required(name: str) -> str:
        value = get(name)
        if not value:
            raise DeployError(f"{name} is not set (in the environment or {env_file.name})")
        return value

    def number(name: str, default: int, lowest: int, highest: int) -> int:
        raw = get(name, str(default))
        if not re.fullmatch(r"[0-9]{1,6}", raw) or not lowest <= int(raw) <= highest:
            raise DeployError(f"{name} must be a whole number from {lowest} to {highest}, got {raw!r}")
        return int(raw)

    def name_like(name: str, default: str, pattern: str, what: str) -> str:
        value = get(name, default)
        if not re.fullmatch(pattern, value):
            raise DeployError(f"{name} must be {what}, got {value!r}")
        return value

    project = name_like("GCP_PROJECT", "", r"[a-z][a-z0-9-]{4,28}[a-z0-9]", "a project id")
    region = name_like("GCP_REGION", "", r"[a-z]+-[a-z]+[0-9]{1,2}", "a region such as europe-west1")
    function = name_like("FUNCTION_NAME", "relay", r"[a-z](?:[a-z0-9-]{0,40}[a-z0-9])?", "a function name")
    relay_auth = required("RELAY_AUTH").lower()
    if relay_auth not in ("jwks", "secret"):
        raise DeployError(f"RELAY_AUTH must be jwks or secret for a deployment, got {relay_auth!r}")

    relay_env = {
        declared.env: values[declared.env]
        for declared in declared_settings()
        if not declared.secret and declared.env in values and declared.env not in RESERVED
    }
    relay_env["RELAY_AUTH"] = relay_auth

    secrets = []
    if relay_auth == "secret":
        secrets.append(SecretRef("RELAY_SECRET", get("SECRET_RELAY_SECRET", f"{function}-relay-secret")))
    if get("SECRET_THREATSCORE_API_KEY"):
        secrets.append(SecretRef("THREATSCORE_API_KEY", get("SECRET_THREATSCORE_API_KEY")))
    redis = get("REDIS").lower()
    if redis not in ("", "memorystore"):
        raise DeployError(f"REDIS must be empty or memorystore, got {redis!r}")
    if redis == "memorystore" or get("SECRET_REDIS_URL"):
        secrets.append(SecretRef("REDIS_URL", get("SECRET_REDIS_URL", f"{function}-redis-url")))
    for ref in secrets:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", ref.secret):
            raise DeployError(f"the Secret Manager name for {ref.env} is not a secret name: {ref.secret!r}")

    egress = get("EGRESS").lower()
    if egress not in ("", "static"):
        raise DeployError(f"EGRESS must be empty or static, got {egress!r}")
    xdr_region = get("XDR_REGION", "us").lower()
    if xdr_region not in JWKS_HOSTS:
        raise DeployError(f"XDR_REGION must be one of {', '.join(JWKS_HOSTS)}, got {xdr_region!r}")

    # The relay must start with these settings: check them here rather than after a 2-minute build.
    try:
        placeholders = {ref.env: "x" * 64 for ref in secrets}
        relay_settings = Settings.from_env({**relay_env, **placeholders})
    except ConfigError as exc:
        raise DeployError(f"the relay would not start: {exc}") from None

    cpu = get("CPU", "1")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", cpu) or float(cpu) < 1:
        raise DeployError(f"CPU must be at least 1 (concurrency above 1 needs a whole CPU), got {cpu!r}")
    memory = name_like("MEMORY", "512Mi", r"[0-9]{3,5}Mi|[0-9]{1,2}Gi", "a size such as 512Mi or 1Gi")
    min_instances = number("MIN_INSTANCES", 0, 0, 100)
    max_instances = number("MAX_INSTANCES", 10, 1, 1000)
    if min_instances > max_instances:
        raise DeployError("MIN_INSTANCES is above MAX_INSTANCES")

    audience = get("RELAY_AUDIENCE") or f"https://{region}-{project}.cloudfunctions.net/{function}"
    return DeploySettings(
        project=project,
        region=region,
        function_name=function,
        relay_auth=relay_auth,
        audience=audience.rstrip("/"),
        runtime=name_like("RUNTIME", "python313", r"python3[0-9]{2}", "a Python runtime id (python313)"),
        memory=memory,
        cpu=cpu,
        concurrency=number("CONCURRENCY", 32, 2, 1000),
        min_instances=min_instances,
        max_instances=max_instances,
        timeout_seconds=math.ceil(relay_settings.relay_deadline) + TIMEOUT_MARGIN_SECONDS,
        service_account_id=name_like(
            "SERVICE_ACCOUNT", f"{function}-runtime", r"[a-z][a-z0-9-]{4,28}[a-z0-9]", "a service account id"
        ),
        xdr_region=xdr_region,
        egress=egress,
        redis=redis,
        network=get("NETWORK", f"{function}-vpc"),
        subnet=get("SUBNET", f"{function}-connector"),
        subnet_range=get("SUBNET_RANGE", "10.8.0.0/28"),
        connector=name_like(
            "CONNECTOR",
            f"{function}-conn"[:25],
            r"[a-z][-a-z0-9]{0,23}[a-z0-9]",
            "a connector name (25 chars)",
        ),
        router=get("ROUTER", f"{function}-router"),
        nat=get("NAT", f"{function}-nat"),
        address=get("ADDRESS", f"{function}-egress"),
        redis_instance=get("REDIS_INSTANCE", f"{function}-cache"),
        redis_size_gb=number("REDIS_SIZE_GB", 1, 1, 300),
        relay_env=relay_env,
        secrets=tuple(secrets),
        dry_run=get("DRY_RUN") not in ("", "0", "false", "no"),
    )
