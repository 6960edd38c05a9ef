"""`make destroy`: removes every resource `make deploy` made for this function, and nothing else.

The same settings name the same resources. Each is described first and deleted only when it
exists: a second run deletes nothing. Secrets and the Memorystore instance are deleted only when
they carry the deploy's label (a secret of the operator's, say the Threatscore API key, keeps its
value and only loses the function's access); the service account only when it is the one the
deploy made. Deleting needs `CONFIRM=<the project id>`; `DRY_RUN=1` prints the commands.
"""

from __future__ import annotations

import os

from deploy.cloud import MADE_BY, SERVICE_ACCOUNT_NAME
from deploy.gcloud import Gcloud
from deploy.settings import DeployError, DeploySettings, load

LABEL_KEY, LABEL_VALUE = MADE_BY.split("=")


def made_by_deploy(found: dict | list | None) -> bool:
    return isinstance(found, dict) and (found.get("labels") or {}).get(LABEL_KEY) == LABEL_VALUE


def destroy(settings: DeploySettings | None = None, confirm: str | None = None) -> None:
    settings = settings or load()
    confirm = os.environ.get("CONFIRM", "").strip() if confirm is None else confirm
    if not settings.dry_run and confirm != settings.project:
        raise DeployError(
            f"make destroy deletes the function {settings.function_name} and everything make deploy made "
            f"for it in {settings.project}. See the commands with DRY_RUN=1 make destroy; delete with "
            f"CONFIRM={settings.project} make destroy"
        )
    gcloud = Gcloud(settings.project, settings.dry_run, settings.iam_retry_seconds)
    region = f"--region={settings.region}"
    print(
        f"Removing {settings.function_name} from {settings.project} ({settings.region})"
        + (": DRY RUN, nothing is run" if settings.dry_run else "")
    )
    gcloud.step("Which APIs are enabled (a disabled one has nothing to remove)")
    listed = gcloud.call("services", "list", "--enabled", "--format=value(config.name)", stream=False)
    enabled = set(listed.stdout.split()) if listed else None

    def on(api: str) -> bool:
        return enabled is None or f"{api}.googleapis.com" in enabled

    def remove(describe: list[str], delete: list[str], keep_unless=None) -> bool:
        found = gcloud.describe(*describe)
        if found is None and not settings.dry_run:
            return False
        if keep_unless is not None and found is not None and not keep_unless(found):
            name = describe[describe.index("describe") + 1]
            print(f"    left alone: {name} was not made by make deploy")
            return False
        gcloud.run(*delete)
        return True

    if on("cloudfunctions"):
        gcloud.step("The function (its Cloud Run service goes with it)")
        remove(
            ["functions", "describe", settings.function_name, region, "--gen2"],
            ["functions", "delete", settings.function_name, region, "--gen2"],
        )
    if on("secretmanager"):
        gcloud.step("Secrets the deploy made; the function's access to yours")
        made = {ref.secret for ref in settings.made_secrets}
        for name in sorted(made | {ref.secret for ref in settings.secrets}):
            found = gcloud.describe("secrets", "describe", name)
            if found is None and not settings.dry_run:
                continue
            if name in made and (settings.dry_run or made_by_deploy(found)):
                gcloud.run("secrets", "delete", name)
            else:
                gcloud.call(
                    "secrets",
                    "remove-iam-policy-binding",
                    name,
                    f"--member=serviceAccount:{settings.service_account_email}",
                    "--role=roles/secretmanager.secretAccessor",
                    "--format=none",
                    allow_missing=True,
                )
                print(f"    kept secret {name} (yours): the function's account may no longer read it")
    if on("redis"):
        gcloud.step("Memorystore for Redis (deleting takes minutes)")
        remove(
            ["redis", "instances", "describe", settings.redis_instance, region],
            ["redis", "instances", "delete", settings.redis_instance, region],
            keep_unless=made_by_deploy,
        )
    if on("compute"):
        gcloud.step("The fixed outbound address: Cloud NAT, Cloud Router, reserved address")
        remove(
            ["compute", "routers", "nats", "describe", settings.nat, f"--router={settings.router}", region],
            ["compute", "routers", "nats", "delete", settings.nat, f"--router={settings.router}", region],
        )
        remove(
            ["compute", "routers", "describe", settings.router, region],
            ["compute", "routers", "delete", settings.router, region],
        )
        if remove(
            ["compute", "addresses", "describe", settings.address, region],
            ["compute", "addresses", "delete", settings.address, region],
        ):
            print("    the address Cyberprotect allow-listed is released: a new deploy gets another one")
    if on("vpcaccess"):
        gcloud.step("The Serverless VPC Access connector (deleting takes minutes)")
        remove(
            ["compute", "networks", "vpc-access", "connectors", "describe", settings.connector, region],
            ["compute", "networks", "vpc-access", "connectors", "delete", settings.connector, region],
        )
    if on("compute"):
        gcloud.step("The subnet and the VPC network")
        remove(
            ["compute", "networks", "subnets", "describe", settings.subnet, region],
            ["compute", "networks", "subnets", "delete", settings.subnet, region],
        )
        remove(
            ["compute", "networks", "describe", settings.network],
            ["compute", "networks", "delete", settings.network],
        )
    if on("iam"):
        gcloud.step("The function's service account")
        remove(
            ["iam", "service-accounts", "describe", settings.service_account_email],
            ["iam", "service-accounts", "delete", settings.service_account_email],
            keep_unless=lambda found: (
                isinstance(found, dict) and found.get("displayName") == SERVICE_ACCOUNT_NAME
            ),
        )
    print(f"\n[{gcloud.elapsed()}] Done.")
    print(
        "Left in place: the APIs (other things may use them), and what Google's build keeps for every "
        f"function of the region: the Artifact Registry repository gcf-artifacts in {settings.region} and "
        f"the gcf-v2-sources-*/gcf-v2-uploads-* buckets (see docs/deploying.md, 'Removing it')."
    )
