"""A recording fake `gcloud` (first on PATH) for `make deploy` and `make destroy`.

gcloud cannot reach Google from here: the fake records every call (arguments, how its standard
input was given, the value sent there), keeps what was created in a state file (a describe
answers "not found" until then, a delete removes it), and lists an upload folder as gcloud
would. FAKE_GCLOUD_FAIL="WORDS=N" makes the first N calls whose words start with WORDS fail with
Google's transient IAM error (N=-1: every one), or with FAKE_GCLOUD_FAIL_MESSAGE when set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.relay_process import without_relay_settings

PROJECT, REGION = "acme-xdr-prod", "europe-west1"
PROJECT_NUMBER = "123456789012"
REDIS_AUTH = "memorystore-auth-string-7f3a9c"
EGRESS_ADDRESS = "203.0.113.7"
TRANSIENT_ERROR = (
    "ERROR: (gcloud.{command}) INVALID_ARGUMENT: Service account "
    "relay-runtime@acme-xdr-prod.iam.gserviceaccount.com does not exist."
)

SCRIPT = '''\
#!{python}
"""A fake gcloud: records its calls, remembers what was created, answers describes and lists."""
import json, os, pathlib, stat, sys

state_path = pathlib.Path(os.environ["FAKE_GCLOUD_STATE"])
state = json.loads(state_path.read_text()) if state_path.exists() else {{}}
for part, empty in (("resources", []), ("secrets", {{}}), ("labels", {{}}), ("boost", []), ("failed", {{}})):
    state.setdefault(part, empty)
args = sys.argv[1:]
if "--data-file=-" in args:
    stdin_kind, stdin = "data", sys.stdin.read()
else:
    same = os.fstat(0).st_rdev == os.stat("/dev/null").st_rdev and stat.S_ISCHR(os.fstat(0).st_mode)
    stdin_kind, stdin = ("devnull" if same else "open"), None
prompts_off = os.environ.get("CLOUDSDK_CORE_DISABLE_PROMPTS") == "1"
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
    log.write(json.dumps({{"args": args, "stdin": stdin, "stdin_kind": stdin_kind, "prompts_off": prompts_off}}) + "\\n")
options = dict(arg[2:].split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)
words = [arg for arg in args if not arg.startswith("--")]

def save():
    state_path.write_text(json.dumps(state))

def fail(message, code=1):
    sys.stderr.write(message + "\\n")
    save()
    sys.exit(code)

rule = os.environ.get("FAKE_GCLOUD_FAIL", "")
if rule:
    prefix, count = rule.rsplit("=", 1)
    if " ".join(words).startswith(prefix):
        done = state["failed"].get(prefix, 0)
        if int(count) < 0 or done < int(count):
            state["failed"][prefix] = done + 1
            fail(os.environ.get("FAKE_GCLOUD_FAIL_MESSAGE") or {transient!r}.format(command=".".join(words[:3])))

verbs = [i for i, word in enumerate(words) if word in ("describe", "create", "deploy", "delete", "update", "get-auth-string")]
key = None
if verbs:
    i = verbs[0]
    name = words[i + 1]
    if words[:2] == ["iam", "service-accounts"]:
        name = name.split("@")[0]
    noun = words[:i]
    if noun[:2] == ["run", "services"]:
        noun = ["functions"]  # a gen2 function's Cloud Run service has the function's name
    key = " ".join(noun + [name])

def answer(kind):
    if kind.startswith("compute addresses"):
        return {{"address": "{address}"}}
    if kind.startswith("redis instances"):
        return {{"host": "10.20.30.40", "port": 6378, "transitEncryptionMode": "DISABLED", "labels": state["labels"].get(kind, {{}})}}
    if kind.startswith("functions") and words[:2] == ["run", "services"]:
        boost = {{"run.googleapis.com/startup-cpu-boost": "true"}} if kind in state["boost"] else {{}}
        return {{"spec": {{"template": {{"metadata": {{"annotations": boost}}}}}}}}
    if kind.startswith("functions"):
        return {{"url": "https://%s-%s.cloudfunctions.net/%s" % (options["region"], options["project"], name),
                "serviceConfig": {{"service": "projects/%s/locations/%s/services/%s" % (options["project"], options["region"], name)}}}}
    if kind.startswith("iam service-accounts"):
        return {{"displayName": state["labels"].get(kind, {{}}).get("display-name", "")}}
    if kind.startswith("secrets"):
        return {{"name": kind, "labels": state["labels"].get(kind, {{}})}}
    return {{"name": kind}}

def labels_of():
    found = {{}}
    for pair in filter(None, options.get("labels", "").split(",")):
        k, v = pair.split("=", 1)
        found[k] = v
    if "display-name" in options:
        found["display-name"] = options["display-name"]
    return found

if words[:2] == ["auth", "list"]:
    print(os.environ.get("FAKE_GCLOUD_ACCOUNT", "operator@acme.example"))
elif words[:2] == ["projects", "describe"]:
    print(json.dumps({{"projectId": words[2], "projectNumber": "{number}", "lifecycleState": "ACTIVE"}}))
elif words[:3] == ["functions", "regions", "list"]:
    print(json.dumps([{{"locationId": r, "name": "projects/p/locations/" + r}} for r in ("europe-west1", "us-central1")]))
elif words[:3] == ["services", "list"]:
    print("\\n".join(state.get("apis", [])))
elif words[:2] == ["services", "enable"]:
    state["apis"] = sorted(set(state.get("apis", [])) | set(words[2:]))
elif words[:2] == ["functions", "deploy"] and not state["resources"].count("functions " + words[2]):
    sys.stderr.write("Preparing function...done.\\nDeploying function...\\n")
    state["resources"].append("functions " + words[2])
elif words[:2] == ["meta", "list-files-for-upload"]:
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
elif words[:2] == ["secrets", "list"]:
    print(json.dumps([{{"name": "projects/%s/secrets/%s" % (options["project"], k.split(" ", 1)[1])}} for k in state["resources"] if k.startswith("secrets ")]))
elif verbs and words[verbs[0]] == "describe":
    if key not in state["resources"]:
        fail("ERROR: (gcloud.%s) NOT_FOUND: %s not found" % (".".join(words[:verbs[0] + 1]), key))
    print(json.dumps(answer(key)))
elif verbs and words[verbs[0]] == "delete":
    if key not in state["resources"]:
        fail("ERROR: (gcloud.%s) NOT_FOUND: %s not found" % (".".join(words[:verbs[0] + 1]), key))
    state["resources"].remove(key)
elif verbs and words[verbs[0]] == "update" and words[:2] == ["run", "services"]:
    if "--cpu-boost" in args and key not in state["boost"]:
        state["boost"].append(key)
elif verbs:
    if key not in state["resources"]:
        state["resources"].append(key)
        state["labels"][key] = labels_of()
    if words[:2] == ["secrets", "create"] and stdin is not None:
        state["secrets"][words[2]] = stdin
save()
'''


class FakeGcloud:
    def __init__(self, tmp_path: Path):
        self.bin = tmp_path / "bin"
        self.bin.mkdir(parents=True)
        script = self.bin / "gcloud"
        script.write_text(
            SCRIPT.format(
                python=sys.executable,
                address=EGRESS_ADDRESS,
                number=PROJECT_NUMBER,
                transient=TRANSIENT_ERROR,
            )
        )
        script.chmod(0o755)
        self.log = tmp_path / "gcloud.log"
        self.state = tmp_path / "gcloud-state.json"
        self.work = tmp_path / "work"
        self.deploy_env = tmp_path / "deploy.env"

    def seed(self, *resources: str) -> None:
        self.state.write_text(json.dumps({"resources": list(resources)}))

    def resources(self) -> list[str]:
        return json.loads(self.state.read_text())["resources"] if self.state.exists() else []

    def secrets(self) -> dict[str, str]:
        return json.loads(self.state.read_text())["secrets"] if self.state.exists() else {}

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
            stdin=subprocess.PIPE,  # a pipe: a gcloud call that inherited it would be seen as "open"
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
