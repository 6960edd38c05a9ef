"""What `make deploy` and `make register` are told: the environment, then `deploy.env`.

A variable set in the environment wins over the same one in `deploy.env`
(as with make). Secrets never come from either: `deploy.env` naming one is
refused, and one exported in the shell (RELAY_SECRET to mint tokens, say) is
left out; the function reads its secrets from Secret Manager.
"""

from __future__ import annotations

import ipaddress
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
# Secrets of the relay that the deployment reads from Secret Manager, whatever Settings declares.
SECRET_SETTINGS = frozenset(
    {"THREATSCORE_API_KEY", "XDR_CLIENT_SECRET", "RELAY_SECRET", "RELAY_ACCESS_KEYS", "REDIS_SIGNING_KEY"}
)
DEFAULT_IAM_RETRY_SECONDS = 120

# Google's naming rules, per resource. Every name from the settings goes to gcloud as an argument:
# one that is not a valid name (a value starting with `--` would be read as a flag) stops the
# deployment before the first gcloud call.
RFC1035 = r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?"  # Compute Engine: networks, subnets, routers, NATs, addresses
NAME_RULES: dict[str, tuple[str, str]] = {
    "GCP_PROJECT": (
        r"[a-z][a-z0-9-]{4,28}[a-z0-9]",
        "a project id (6 to 30 lower-case letters, digits, hyphens)",
    ),
    "GCP_REGION": (r"[a-z]+-[a-z]+[0-9]{1,2}", "a region such as europe-west1"),
    "FUNCTION_NAME": (
        r"[a-z](?:[-a-z0-9]{0,40}[a-z0-9])?",
        "a function name (lower-case letters, digits, hyphens; a letter first; at most 42 characters)",
    ),
    "SERVICE_ACCOUNT": (
        r"[a-z][-a-z0-9]{4,28}[a-z0-9]",
        "a service account id (6 to 30 lower-case letters, digits, hyphens; a letter first)",
    ),
    "CONNECTOR": (
        r"[a-z](?:[-a-z0-9]{0,23}[a-z0-9])?",
        "a VPC connector name (lower-case letters, digits, hyphens; a letter first; at most 25 characters)",
    ),
    "REDIS_INSTANCE": (
        r"[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?",
        "a Memorystore instance id (lower-case letters, digits, hyphens; a letter first; at most 40)",
    ),
    "SECRET": (
        r"[A-Za-z0-9_][A-Za-z0-9_-]{0,254}",
        "a Secret Manager secret id (letters, digits, hyphens, underscores; at most 255; no - first)",
    ),
    "ACCESS_KEY_TENANT": (
        r"[a-z0-9](?:[-a-z0-9]{0,62})",
        "a tenant name (lower-case letters, digits, hyphens)",
    ),
    **{
        name: (RFC1035, f"a {what} name (lower-case letters, digits, hyphens; a letter first; at most 63)")
        for name, what in (
            ("NETWORK", "VPC network"),
            ("SUBNET", "subnet"),
            ("ROUTER", "Cloud Router"),
            ("NAT", "Cloud NAT"),
            ("ADDRESS", "reserved address"),
        )
    },
}


def check_name(variable: str, value: str, rule: str | None = None) -> str:
    """`value` if it is a valid name of its resource, else a DeployError naming the rule."""
    pattern, what = NAME_RULES[rule or variable]
    if not re.fullmatch(pattern, value):
        flag = " (a value starting with '-' would reach gcloud as a flag)" if value.startswith("-") else ""
        raise DeployError(f"{variable} must be {what}, got {value!r}{flag}")
    return value


class DeployError(Exception):
    """A setting or an answer from Google that stops the deployment, in words for the operator."""


@dataclass(frozen=True)
class SecretRef:
    """A relay setting read from a Secret Manager secret (never a value)."""

    env: str  # the variable the function sees
    secret: str  # the Secret Manager secret's name
    # Who gives the value: "operator" (the secret must exist), "random" (made here when missing),
    # "memorystore" (the Memorystore instance's URL, kept up to date here).
    origin: str = "operator"


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
    iam_retry_seconds: int = DEFAULT_IAM_RETRY_SECONDS
    access_key_tenant: str = "soc"
    relay_env: dict[str, str] = field(default_factory=dict)  # the relay's own settings, passed on
    secrets: tuple[SecretRef, ...] = ()
    # Every secret a deploy of this function may have made (whatever the mode): for `make destroy`.
    made_secrets: tuple[SecretRef, ...] = ()
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


# Values of the right shape for the start-up check (the real ones stay in Secret Manager).
PLACEHOLDERS = {"RELAY_ACCESS_KEYS": "soc=" + "x" * 43, "REDIS_URL": "redis://10.0.0.1:6379/0"}


def load(environ: Mapping[str, str] | None = None, env_file: Path = DEPLOY_ENV) -> DeploySettings:
    environ = os.environ if environ is None else environ
    from_file = (
        {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.is_file() else {}
    )
    secret_names = {declared.env for declared in declared_settings() if declared.secret}
    secret_names |= SECRET_SETTINGS
    in_file = sorted(secret_names & set(from_file))
    if in_file:
        raise DeployError(
            f"{env_file.name} must not hold {', '.join(in_file)}: keep secrets in Secret Manager "
            "and name the secret (SECRET_RELAY_SECRET, SECRET_THREATSCORE_API_KEY, SECRET_REDIS_URL, "
            "SECRET_RELAY_ACCESS_KEYS, SECRET_REDIS_SIGNING_KEY)"
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

    def named(variable: str, default: str = "", rule: str | None = None) -> str:
        return check_name(variable, get(variable, default), rule)

    project = named("GCP_PROJECT")
    region = named("GCP_REGION")
    function = named("FUNCTION_NAME", "relay")
    relay_auth = required("RELAY_AUTH").lower()
    if relay_auth not in ("jwks", "secret"):
        raise DeployError(f"RELAY_AUTH must be jwks or secret for a deployment, got {relay_auth!r}")

    relay_env = {
        declared.env: values[declared.env]
        for declared in declared_settings()
        if not declared.secret and declared.env in values and declared.env not in RESERVED
    }
    relay_env["RELAY_AUTH"] = relay_auth

    xdr_region = get("XDR_REGION").lower()
    if relay_auth == "jwks" and not xdr_region:
        raise DeployError(
            f"XDR_REGION is not set (in the environment or {env_file.name}): your XDR organisation's "
            f"region, one of {', '.join(JWKS_HOSTS)}; the relay trusts that region's key host only"
        )
    xdr_region = xdr_region or "us"
    if xdr_region not in JWKS_HOSTS:
        raise DeployError(f"XDR_REGION must be one of {', '.join(JWKS_HOSTS)}, got {xdr_region!r}")
    if relay_auth == "jwks":
        # Tokens come from the organisation's own region only, unless the operator says otherwise.
        hosts = relay_env.setdefault("RELAY_JWKS_HOSTS", JWKS_HOSTS[xdr_region])
        if JWKS_HOSTS[xdr_region] not in [host.strip().lower() for host in hosts.split(",")]:
            raise DeployError(
                f"RELAY_JWKS_HOSTS ({hosts}) leaves out {JWKS_HOSTS[xdr_region]}, the key host of "
                f"XDR_REGION={xdr_region}: XDR's tokens would be refused"
            )
    any_organisation = get("RELAY_ANY_ORGANISATION").lower() in ("1", "true", "yes")
    if get("RELAY_ANY_ORGANISATION"):
        relay_env["RELAY_ANY_ORGANISATION"] = get("RELAY_ANY_ORGANISATION")

    def secret_ref(env: str, variable: str, default: str, origin: str) -> SecretRef:
        return SecretRef(env, check_name(variable, get(variable, default), "SECRET"), origin)

    secrets = []
    if relay_auth == "secret":
        secrets.append(
            secret_ref("RELAY_SECRET", "SECRET_RELAY_SECRET", f"{function}-relay-secret", "random")
        )
    if relay_auth == "jwks" and not any_organisation:
        secrets.append(
            secret_ref("RELAY_ACCESS_KEYS", "SECRET_RELAY_ACCESS_KEYS", f"{function}-access-keys", "random")
        )
    if get("SECRET_THREATSCORE_API_KEY"):
        secrets.append(secret_ref("THREATSCORE_API_KEY", "SECRET_THREATSCORE_API_KEY", "", "operator"))
    redis = get("REDIS").lower()
    if redis not in ("", "memorystore"):
        raise DeployError(f"REDIS must be empty or memorystore, got {redis!r}")
    if redis == "memorystore" or get("SECRET_REDIS_URL"):
        origin = "memorystore" if redis == "memorystore" else "operator"
        secrets.append(secret_ref("REDIS_URL", "SECRET_REDIS_URL", f"{function}-redis-url", origin))
        # Every entry the relay keeps in Redis is signed with a key Redis never holds.
        secrets.append(
            secret_ref(
                "REDIS_SIGNING_KEY", "SECRET_REDIS_SIGNING_KEY", f"{function}-redis-signing-key", "random"
            )
        )
    made_secrets = (
        secret_ref("RELAY_SECRET", "SECRET_RELAY_SECRET", f"{function}-relay-secret", "random"),
        secret_ref("RELAY_ACCESS_KEYS", "SECRET_RELAY_ACCESS_KEYS", f"{function}-access-keys", "random"),
        secret_ref("REDIS_URL", "SECRET_REDIS_URL", f"{function}-redis-url", "memorystore"),
        secret_ref(
            "REDIS_SIGNING_KEY", "SECRET_REDIS_SIGNING_KEY", f"{function}-redis-signing-key", "random"
        ),
    )
    if len({ref.secret for ref in secrets}) != len(secrets):
        raise DeployError(f"two settings name the same secret: {', '.join(ref.secret for ref in secrets)}")

    egress = get("EGRESS").lower()
    if egress not in ("", "static"):
        raise DeployError(f"EGRESS must be empty or static, got {egress!r}")
    subnet_range = get("SUBNET_RANGE", "10.8.0.0/28")
    try:
        network_range = ipaddress.IPv4Network(subnet_range)
    except ValueError:
        network_range = None
    if network_range is None or network_range.prefixlen != 28 or not network_range.is_private:
        raise DeployError(
            f"SUBNET_RANGE must be a private /28 range such as 10.8.0.0/28, got {subnet_range!r}"
        )

    # The relay must start with these settings: check them here rather than after a 2-minute build.
    try:
        placeholders = {ref.env: PLACEHOLDERS.get(ref.env, "x" * 64) for ref in secrets}
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
        service_account_id=named("SERVICE_ACCOUNT", f"{function}-runtime"),
        xdr_region=xdr_region,
        egress=egress,
        redis=redis,
        network=named("NETWORK", f"{function}-vpc"),
        subnet=named("SUBNET", f"{function}-connector"),
        subnet_range=subnet_range,
        connector=named("CONNECTOR", f"{function}-conn"[:25]),
        router=named("ROUTER", f"{function}-router"),
        nat=named("NAT", f"{function}-nat"),
        address=named("ADDRESS", f"{function}-egress"),
        redis_instance=named("REDIS_INSTANCE", f"{function}-cache"),
        redis_size_gb=number("REDIS_SIZE_GB", 1, 1, 300),
        iam_retry_seconds=number("IAM_RETRY_SECONDS", DEFAULT_IAM_RETRY_SECONDS, 0, 3600),
        access_key_tenant=named("ACCESS_KEY_TENANT", "soc"),
        relay_env=relay_env,
        secrets=tuple(secrets),
        made_secrets=made_secrets,
        dry_run=get("DRY_RUN") not in ("", "0", "false", "no"),
    )
