"""``mythline schedule kubernetes``: the manifests, checked offline.

kubernetes-validate checks every object against the Kubernetes JSON schemas it bundles
(strict: an unknown field fails). The schemas say nothing about enums, names or cron
fields, so the API server's rules for those are checked here too, and one test runs the
pod's own command with the pod's environment and its ConfigMap laid out as the kubelet
lays it out, against the scripted LLM server.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any
from zoneinfo import ZoneInfo

import kubernetes_validate
import pytest
import yaml
from probe import run_app
from typer.testing import CliRunner

from mythline_cli import kubernetes, schedule
from mythline_cli.cli import app
from mythline_cli.fleet.topics import TOPICS

from helpers import KEY_ENV, TEST_KEY, lore_responder, mythline, write_config

ROOT = Path(__file__).resolve().parent.parent
CHECKED_IN = ROOT / "deploy" / "kubernetes"
# The oldest release with every field used (CronJob timeZone is GA in 1.27), and the newest bundled.
VERSIONS = ("1.27", "1.37")
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def generate(*args: str) -> list[dict[str, Any]]:
    result = invoke("schedule", "kubernetes", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(kubernetes.HEADER + "\n")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def pod_spec(cronjob: dict[str, Any]) -> dict[str, Any]:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def env_of(cronjob: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in pod_spec(cronjob)["containers"][0]["env"]}


@pytest.fixture
def starter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What `mythline init` writes, found as ./mythline.toml."""
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    assert invoke("init").exit_code == 0
    return work / "mythline.toml"


# -- the API server's rules the JSON schemas leave out ----------------------------------------

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?$")


def api_rules(doc: dict[str, Any]) -> None:
    meta = doc["metadata"]
    assert DNS_LABEL.match(meta["name"]) and DNS_LABEL.match(meta["namespace"])
    for key in {**meta.get("labels", {}), **meta.get("annotations", {})}:
        assert LABEL_KEY.match(key), key
    for value in meta.get("labels", {}).values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    if doc["kind"] == "ConfigMap":
        assert all(CONFIG_KEY.match(k) for k in doc["data"])
        return
    spec = doc["spec"]
    assert len(meta["name"]) <= 52  # its jobs' names append 11 characters
    fields = spec["schedule"].split()
    assert len(fields) == 5 and all(CRON_FIELD.match(f) for part in fields for f in part.split(","))
    ZoneInfo(spec["timeZone"])
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] >= 10
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] > 0 and job["ttlSecondsAfterFinished"] > 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert job["template"]["metadata"]["labels"] == meta["labels"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        assert DNS_LABEL.match(container["name"])
        assert all(ENV_NAME.match(e["name"]) for e in container["env"])
        assert {m["name"] for m in container["volumeMounts"]} <= set(volumes)
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        for env in container["env"]:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert CONFIG_KEY.match(ref["key"]) and DNS_LABEL.match(ref["name"])
    for volume in volumes.values():
        for item in volume.get("configMap", {}).get("items", []):
            assert not item["path"].startswith("/") and ".." not in PurePosixPath(item["path"]).parts


def check_all(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        api_rules(doc)


# -- shape --------------------------------------------------------------------------------------

def test_the_starter_config_gives_valid_manifests(starter: Path) -> None:
    docs = generate()
    check_all(docs)
    objects = by_kind(docs)
    assert set(objects) == ({"ConfigMap/mythline-config", "CronJob/mythline-watchdog"}
                            | {f"CronJob/mythline-{name}" for name in TOPICS})


def test_a_typo_fails_the_schema_check(starter: Path) -> None:
    """The validator really reads what we give it: one unknown field fails it."""
    cronjob = by_kind(generate())["CronJob/mythline-world-npcs"]
    pod_spec(cronjob)["restartPolicyy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, VERSIONS[-1], strict=True)


def test_each_agent_runs_at_its_cron_slot_with_the_guarantees(starter: Path) -> None:
    docs = by_kind(generate())
    cron = invoke("schedule", "cron", "--exe", "/x/mythline").stdout
    specs = {schedule.job_key(ln): " ".join(ln.split()[:5]) for ln in cron.splitlines()
             if ln and not ln.startswith(("#", "MAILTO"))}
    for name in TOPICS:
        cronjob = docs[f"CronJob/mythline-{name}"]
        spec = cronjob["spec"]
        assert spec["schedule"] == specs[name]  # the same staggered slot as the crontab line
        assert spec["suspend"] is False
        assert spec["successfulJobsHistoryLimit"] == 1 and spec["failedJobsHistoryLimit"] == 3
        assert spec["startingDeadlineSeconds"] == 900  # half the 30 minutes
        assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 1800 + 300  # run_timeout + margin
        container = pod_spec(cronjob)["containers"][0]
        assert container["command"] == ["mythline"] and container["args"] == ["run", name]
        assert container["resources"] == kubernetes.AGENT_RESOURCES
    watchdog = docs["CronJob/mythline-watchdog"]
    assert watchdog["spec"]["schedule"] == specs["--watchdog"] == "*/5 * * * *"
    assert pod_spec(watchdog)["containers"][0]["args"] == ["watchdog"]


def test_secrets_come_from_the_secret_and_nothing_else_holds_them(starter: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    starter.write_text(starter.read_text(encoding="utf-8").replace(
        '# webhook_url_env = ""', 'webhook_url_env = "MYTHLINE_WEBHOOK_URL"'), encoding="utf-8")
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    monkeypatch.setenv("MYTHLINE_STATE", f"postgresql://mythline:{TEST_KEY}@db.example/mythline")
    monkeypatch.setenv("MYTHLINE_WEBHOOK_URL", f"https://hooks.example/{TEST_KEY}")
    result = invoke("schedule", "kubernetes")
    assert result.exit_code == 0, result.output
    assert TEST_KEY not in result.stdout
    docs = by_kind([d for d in yaml.safe_load_all(result.stdout) if d])
    secret = {"secretKeyRef": {"name": "mythline"}}
    for name, doc in docs.items():
        if doc["kind"] != "CronJob":
            continue
        env = env_of(doc)
        wanted = {"MYTHLINE_STATE", "MYTHLINE_WEBHOOK_URL"} | ({"OPENROUTER_API_KEY"} if "watchdog" not in name
                                                                else set())
        assert {n for n, e in env.items() if "valueFrom" in e} == wanted, name
        for var in wanted:
            assert env[var]["valueFrom"]["secretKeyRef"] == {**secret["secretKeyRef"], "key": var}
        assert env["MYTHLINE_CONFIG"]["value"] == "/etc/mythline/mythline.toml"
    # The watchdog sends alerts and calls no model: it does not get the provider's key.
    assert "OPENROUTER_API_KEY" not in env_of(docs["CronJob/mythline-watchdog"])


def test_the_key_variable_follows_the_config(starter: Path) -> None:
    starter.write_text(starter.read_text(encoding="utf-8").replace(
        '# api_key_env = "OPENROUTER_API_KEY"', 'api_key_env = "LOCAL_LLM_KEY"'), encoding="utf-8")
    env = env_of(by_kind(generate())["CronJob/mythline-world-npcs"])
    assert "OPENROUTER_API_KEY" not in env
    assert env["LOCAL_LLM_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mythline", "key": "LOCAL_LLM_KEY"}
    starter.write_text(starter.read_text(encoding="utf-8").replace(
        'api_key_env = "LOCAL_LLM_KEY"', 'api_key_env = ""'), encoding="utf-8")
    env = env_of(by_kind(generate())["CronJob/mythline-world-npcs"])
    assert [n for n, e in env.items() if "valueFrom" in e] == ["MYTHLINE_STATE"]


def test_the_configmap_holds_the_config_and_prompts_as_written(starter: Path) -> None:
    prompt = starter.parent / "prompts" / "research.md"
    prompt.write_text(prompt.read_text(encoding="utf-8") + "\nCite patch numbers.  \n", encoding="utf-8")
    (starter.parent / "prompts" / "repair.md").unlink()  # the pods use the built-in one, as a run here does
    docs = by_kind(generate())
    data = docs["ConfigMap/mythline-config"]["data"]
    assert data == {"mythline.toml": starter.read_text(encoding="utf-8"),
                    "prompt-system.md": (starter.parent / "prompts" / "system.md").read_text(encoding="utf-8"),
                    "prompt-research.md": prompt.read_text(encoding="utf-8"),
                    "prompt-validate.md": (starter.parent / "prompts" / "validate.md").read_text(encoding="utf-8"),
                    "prompt-summarise.md": (starter.parent / "prompts" / "summarise.md").read_text(encoding="utf-8")}
    volume = pod_spec(docs["CronJob/mythline-world-npcs"])["volumes"][0]
    assert volume["configMap"]["items"] == [
        {"key": "mythline.toml", "path": "mythline.toml"},
        {"key": "prompt-system.md", "path": "prompts/system.md"},
        {"key": "prompt-research.md", "path": "prompts/research.md"},
        {"key": "prompt-validate.md", "path": "prompts/validate.md"},
        {"key": "prompt-summarise.md", "path": "prompts/summarise.md"},
    ]


def test_without_a_config_file_the_pods_use_the_defaults() -> None:
    docs = generate()
    check_all(docs)
    assert not any(d["kind"] == "ConfigMap" for d in docs)
    cronjob = by_kind(docs)["CronJob/mythline-world-npcs"]
    assert "MYTHLINE_CONFIG" not in env_of(cronjob)
    assert "config" not in {v["name"] for v in pod_spec(cronjob)["volumes"]}


def test_image_namespace_and_time_zone(starter: Path) -> None:
    starter.write_text(starter.read_text(encoding="utf-8").replace(
        '# timezone = "local"', 'timezone = "Europe/Berlin"'), encoding="utf-8")
    result = invoke("schedule", "kubernetes", "--image", "registry.example/team/mythline:0.1.0", "-n", "lore")
    assert result.exit_code == 0 and "timezone" not in result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    check_all(docs)
    for doc in docs:
        assert doc["metadata"]["namespace"] == "lore"
        if doc["kind"] == "CronJob":
            assert doc["spec"]["timeZone"] == "Europe/Berlin"
            assert pod_spec(doc)["containers"][0]["image"] == "registry.example/team/mythline:0.1.0"


def test_a_local_budget_timezone_is_utc_in_the_pods_and_says_so(starter: Path) -> None:
    result = invoke("schedule", "kubernetes")
    assert result.exit_code == 0
    assert result.stderr == ('mythline: warning: budget.timezone is "local", which is UTC in the pods; set it to '
                             'your zone (e.g. "Europe/Berlin") so every host counts the same budget day\n')
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert {d["spec"]["timeZone"] for d in docs if d["kind"] == "CronJob"} == {"Etc/UTC"}


def test_an_interval_cron_cannot_express_is_noted(starter: Path) -> None:
    with starter.open("a", encoding="utf-8") as fh:
        fh.write('\n[agents.world-npcs]\ninterval = "45m"\n')
    cronjob = by_kind(generate())["CronJob/mythline-world-npcs"]
    assert cronjob["spec"]["schedule"].endswith("/30 * * * *")
    assert cronjob["metadata"]["annotations"] == {
        "mythline/interval": "45m",
        "mythline/schedule-note": "cron cannot run every 45m; every 30 minutes instead (the nearest schedule "
                                  "that is not longer)"}


# -- pause, resume, disable ---------------------------------------------------------------------

def test_a_paused_agent_is_suspended_until_resumed(starter: Path) -> None:
    assert invoke("pause", "world-npcs", "--note", "rewriting its prompt").exit_code == 0
    docs = by_kind(generate())
    paused = docs["CronJob/mythline-world-npcs"]
    assert paused["spec"]["suspend"] is True
    assert paused["metadata"]["annotations"]["mythline/suspended"] == (
        "world-npcs is paused; mythline resume, then generate and apply again")
    assert "rewriting" not in json.dumps(paused)  # the note stays in the state
    assert [n for n, d in docs.items() if d["kind"] == "CronJob" and d["spec"]["suspend"]] == \
        ["CronJob/mythline-world-npcs"]
    assert invoke("resume", "world-npcs").exit_code == 0
    resumed = by_kind(generate())["CronJob/mythline-world-npcs"]
    assert resumed["spec"]["suspend"] is False and "mythline/suspended" not in resumed["metadata"]["annotations"]


def test_a_disabled_agent_keeps_a_suspended_cronjob(starter: Path) -> None:
    """Applying again after disabling stops its pods; a CronJob left out would keep running."""
    with starter.open("a", encoding="utf-8") as fh:
        fh.write("\n[agents.world-items]\nenabled = false\n")
    result = invoke("schedule", "kubernetes", "--out", "k8s", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["suspended"] == {"world-items": "disabled"}
    cronjob = yaml.safe_load(Path("k8s/cronjob-world-items.yaml").read_text(encoding="utf-8"))
    assert cronjob["spec"]["suspend"] is True
    assert cronjob["metadata"]["annotations"]["mythline/suspended"] == \
        "world-items is disabled (agents.NAME.enabled = false)"


# -- files --------------------------------------------------------------------------------------

def test_out_writes_one_file_per_object_and_removes_its_own_stale_ones(starter: Path) -> None:
    with starter.open("a", encoding="utf-8") as fh:
        fh.write('\n[agents.eastern-zones]\nkind = "world-zones"\ntopics = ["Dun Morogh"]\n')
    Path("k8s").mkdir()
    Path("k8s/secret-notes.yaml").write_text("# mine\nkind: Secret\n", encoding="utf-8")
    result = invoke("schedule", "kubernetes", "--out", "k8s")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "wrote 11 agent CronJob(s), the watchdog's and the ConfigMap to k8s",
        "apply them with: kubectl apply -f k8s (the namespace and the Secret first: see docs/many-hosts.md)"]
    assert Path("k8s/cronjob-eastern-zones.yaml").is_file()
    starter.write_text(starter.read_text(encoding="utf-8").split("\n[agents.eastern-zones]")[0], encoding="utf-8")
    result = invoke("schedule", "kubernetes", "--out", "k8s", "--json")
    report = json.loads(result.stdout)
    assert report["removed"] == [str(Path("k8s") / "cronjob-eastern-zones.yaml")]
    assert len(report["written"]) == 12 and report["suspended"] == {}
    assert sorted(p.name for p in Path("k8s").iterdir()) == sorted(
        ["configmap.yaml", "cronjob-watchdog.yaml", "secret-notes.yaml"] + [f"cronjob-{n}.yaml" for n in TOPICS])
    mask = os.umask(0)
    os.umask(mask)
    for path in Path("k8s").glob("cronjob-*.yaml"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # meant to be read and committed
        assert path.read_text(encoding="utf-8").startswith(kubernetes.HEADER + "\napiVersion: batch/v1\n")


def test_the_stream_and_the_files_hold_the_same_objects(starter: Path) -> None:
    streamed = generate()
    assert invoke("schedule", "kubernetes", "--out", "k8s").exit_code == 0
    written = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(Path("k8s").iterdir())]
    assert sorted(map(json.dumps, streamed)) == sorted(map(json.dumps, written))


# -- refusals: one line, exit 2, nothing written --------------------------------------------------

@pytest.mark.parametrize("toml,args,message", [
    ('[alerts]\nwebhook_url = "https://hooks.example/T0/B0/XYZ"\n', [],
     "alerts.webhook_url holds the webhook's token, and the config goes into a ConfigMap as it is; set "
     'alerts.webhook_url_env = "MYTHLINE_WEBHOOK_URL" instead and put the URL in the mythline Secret '
     "(see docs/many-hosts.md)"),
    ('prompts_dir = "/home/you/prompts"\n', [],
     "prompts_dir = '/home/you/prompts' is not inside the config file's folder, so the ConfigMap cannot carry the "
     'prompts; give a path relative to the config file, like the "prompts" that mythline init writes'),
    ('prompts_dir = "../prompts"\n', [], "prompts_dir = '../prompts' is not inside the config file's folder"),
    ('[agents.watchdog]\nkind = "world-lore"\ntopics = ["x"]\n', [],
     "an agent named watchdog would take the watchdog's CronJob name (mythline-watchdog); rename the agent in "
     "the config"),
    ('[agents.lore-]\nkind = "world-lore"\ntopics = ["x"]\n', [],
     "agent lore- cannot name a CronJob (mythline-lore-): a Kubernetes name ends with a letter or digit; rename "
     "the agent in the config"),
    ('[provider]\napi_key_env = "MY KEY"\n', [],
     "provider.api_key_env = 'MY KEY' cannot name a variable the pods read from a Secret; use letters, digits "
     "and '_', like OPENROUTER_API_KEY"),
    ("", ["--namespace", "Lore_Team"],
     "'Lore_Team' is not a Kubernetes namespace name: lowercase letters, digits and '-', at most 63, starting "
     "and ending with a letter or digit"),
    ("", ["--image", "my image"], "'my image' is not an image reference; give one like"),
    ("", ["--json"], "--json lists the files written; use it with --out DIR"),
], ids=["webhook-url", "prompts-absolute", "prompts-outside", "agent-watchdog", "agent-dash", "key-variable",
        "namespace", "image", "json-without-out"])
def test_refusals(toml: str, args: list[str], message: str) -> None:
    Path("mythline.toml").write_text(toml, encoding="utf-8")
    proc = mythline("schedule", "kubernetes", "--out", "k8s", *args) if "--json" not in args else \
        mythline("schedule", "kubernetes", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mythline: " + message), proc.stderr
    assert not Path("k8s").exists()


def test_out_naming_a_file_is_refused(starter: Path) -> None:
    Path("k8s").write_text("not a folder\n", encoding="utf-8")
    proc = mythline("schedule", "kubernetes", "--out", "k8s")
    assert proc.returncode == 2
    assert proc.stderr == ("mythline: invalid value for '--out': dir 'k8s' is a file "
                           "(see: mythline schedule kubernetes --help)\n")
    assert Path("k8s").read_text(encoding="utf-8") == "not a folder\n"


def test_a_state_home_that_is_a_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state-file"
    state.write_text("", encoding="utf-8")
    proc = mythline("schedule", "kubernetes", env={"MYTHLINE_HOME": str(state)})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"mythline: {state} is not a directory, so it cannot be the state home; "
                                        "point MYTHLINE_HOME at a directory, or move the file away"]


def test_the_model_and_base_url_of_this_shell_are_carried(starter: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYTHLINE_MODEL", "some/model")
    monkeypatch.setenv("MYTHLINE_BASE_URL", "https://llm.example/v1")
    docs = generate()
    check_all(docs)
    for doc in docs:
        if doc["kind"] == "CronJob":
            env = env_of(doc)
            assert env["MYTHLINE_MODEL"] == {"name": "MYTHLINE_MODEL", "value": "some/model"}
            assert env["MYTHLINE_BASE_URL"] == {"name": "MYTHLINE_BASE_URL", "value": "https://llm.example/v1"}


def test_the_image_runs_as_the_manifests_user_and_holds_no_secret() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users == [f"{kubernetes.USER_ID}:{kubernetes.USER_ID}"]  # the last USER is the one that runs
    assert f"--uid {kubernetes.USER_ID}" in dockerfile and f"--gid {kubernetes.USER_ID}" in dockerfile
    assert f"MYTHLINE_HOME={kubernetes.HOME_DIR}" in dockerfile
    assert re.search(r'^ENTRYPOINT \["mythline"\]$', dockerfile, re.M)
    for name in ("OPENROUTER_API_KEY", kubernetes.STATE_ENV, "MYTHLINE_WEBHOOK_URL", "PGPASSWORD"):
        assert name not in dockerfile
    assert not re.search(r"^(ARG|ENV)\b.*(KEY|PASSWORD|SECRET)", dockerfile, re.M)
    # Only what the image installs goes into the build: no venv, state home, key store or config.
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ignore[ignore.index("*") + 1:][:3] == ["!pyproject.toml", "!README.md", "!mythline_cli/"]
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M)
    assert copied == ["pyproject.toml README.md", "mythline_cli"]


@pytest.mark.parametrize("dsn,has", [
    ("postgresql://mythline@db/mythline", False),
    ("postgresql://db.example:5432/mythline?sslmode=require", False),
    ("postgresql://mythline:s3cret@db/mythline", True),
    ("postgresql://mythline:@db/mythline", True),
    ("postgresql://db/mythline?user=m&password=s3cret", True),
    ("host=db dbname=mythline user=mythline", False),
    ("host=db password=s3cret dbname=mythline", True),
    ("service=mythline", False),
])
def test_dsn_has_password(dsn: str, has: bool) -> None:
    assert kubernetes.dsn_has_password(dsn) is has


def test_does_not_import_the_llm_stack(starter: Path) -> None:
    for args in (["schedule", "kubernetes"], ["schedule", "kubernetes", "--out", "k8s", "--json"]):
        report = run_app(args)
        assert report.returncode == 0, report.stderr
        assert report.llm_stack == set(), report.loaded


# -- the pod's own command, with its environment and its ConfigMap ---------------------------------

def _lay_out(docs: dict[str, dict[str, Any]], cronjob: dict[str, Any], root: Path) -> dict[str, Path]:
    """The pod's volumes under ``root``, as the kubelet would mount them: mount path -> folder."""
    pod = pod_spec(cronjob)
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        folder = root / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True)
        source = volumes[mount["name"]]
        if "configMap" in source:
            data = docs[f"ConfigMap/{source['configMap']['name']}"]["data"]
            for item in source["configMap"]["items"]:
                (folder / item["path"]).parent.mkdir(parents=True, exist_ok=True)
                (folder / item["path"]).write_text(data[item["key"]], encoding="utf-8")
        mounts[mount["mountPath"]] = folder
    return mounts


MARK = "MARK-FROM-THE-CONFIGMAP"


def _pod(root: Path, llm_server) -> tuple[dict[str, Any], dict[str, Path], dict[str, str]]:  # noqa: ANN001
    """world-npcs's container, its volumes laid out under ``root`` and its environment, for a
    config that talks to the scripted server with the starter's prompts (research edited)."""
    project = root / "project"
    project.mkdir(parents=True)
    os.chdir(project)
    assert invoke("init").exit_code == 0
    config = write_config(project / "server.toml", base_url=llm_server.base_url,
                          sections={"budget": {"timezone": "UTC"}})
    Path("mythline.toml").write_text('prompts_dir = "prompts"\n' + config.read_text(encoding="utf-8"),
                                     encoding="utf-8")
    research = Path("prompts/research.md")
    research.write_text(research.read_text(encoding="utf-8") + f"\n{MARK}\n", encoding="utf-8")
    docs = by_kind(generate())
    cronjob = docs["CronJob/mythline-world-npcs"]
    mounts = _lay_out(docs, cronjob, root / "pod")
    container = pod_spec(cronjob)["containers"][0]
    secrets = {KEY_ENV: TEST_KEY}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYTHLINE_") and k != KEY_ENV}
    for var in container["env"]:
        if "value" in var:
            value = var["value"]
            for path, folder in mounts.items():
                if value == path or value.startswith(path + "/"):
                    value = str(folder) + value[len(path):]
                    break
            env[var["name"]] = value
        elif var["name"] in secrets:
            env[var["name"]] = secrets[var["name"]]
        # MYTHLINE_STATE is left out: these runs keep their state in the pod's emptyDir.
    assert container["command"] == ["mythline"]
    llm_server.responder = lore_responder("world-npcs")
    return container, mounts, env


def _ran_a_cycle(proc: subprocess.CompletedProcess[str], mounts: dict[str, Path], llm_server) -> None:  # noqa: ANN001
    assert proc.returncode == 0, proc.stderr
    assert TEST_KEY not in proc.stdout + proc.stderr
    assert list((mounts[kubernetes.HOME_DIR] / "store").rglob("*.json")), "no record stored in the pod's home"
    assert any(MARK in json.dumps(r["body"]) for r in llm_server.requests), \
        "the research prompt from the ConfigMap did not reach the model"


def test_the_pods_command_runs_with_its_environment_and_configmap(tmp_path: Path, llm_server) -> None:
    container, mounts, env = _pod(tmp_path, llm_server)
    proc = subprocess.run([sys.executable, "-m", "mythline_cli", *container["args"]], env=env,
                          cwd=tmp_path / "pod", capture_output=True, text=True, timeout=120)
    _ran_a_cycle(proc, mounts, llm_server)


def _can_sandbox() -> bool:
    if os.name != "posix" or os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -o remount,bind,ro /"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_sandbox(), reason="needs root, unshare and setpriv for a private read-only mount")
def test_the_pod_runs_as_its_user_on_a_read_only_root(llm_server) -> None:
    """readOnlyRootFilesystem and runAsUser, as far as one machine can play them: a private
    mount namespace where / is read-only, the ConfigMap's folder read-only, and only the
    emptyDirs writable, with the run as uid 10001."""
    uid = str(pod_spec(by_kind(generate())["CronJob/mythline-world-npcs"])["securityContext"]["runAsUser"])
    # Not under tmp_path: pytest's base folder is root's alone, and uid 10001 must get through.
    root = Path(tempfile.mkdtemp(prefix="mythline-pod-"))
    here = Path.cwd()
    try:
        root.chmod(0o755)
        container, mounts, env = _pod(root, llm_server)
        for path in [root / "pod", *(root / "pod").rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        binds = []
        for mount_path, folder in mounts.items():
            if mount_path in (kubernetes.HOME_DIR, "/tmp"):
                os.chown(folder, int(uid), int(uid))  # the emptyDir, given to fsGroup
            binds.append(f"mount --bind {shlex.quote(str(folder))} {shlex.quote(str(folder))}")
            if mount_path == kubernetes.CONFIG_DIR:
                binds.append(f"mount -o remount,bind,ro {shlex.quote(str(folder))}")
        env.update(HOME=str(mounts[kubernetes.HOME_DIR]), TMPDIR=str(mounts["/tmp"]), PYTHONDONTWRITEBYTECODE="1")
        run = " ".join(shlex.quote(w) for w in
                       ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", "--",
                        sys.executable, "-m", "mythline_cli", *container["args"]])
        script = " && ".join([*binds, "mount -o remount,bind,ro /", f"exec {run}"])
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env,
                              cwd=root / "pod", capture_output=True, text=True, timeout=120)
        _ran_a_cycle(proc, mounts, llm_server)
        assert {p.stat().st_uid for p in mounts[kubernetes.HOME_DIR].rglob("*")} == {int(uid)}
        assert not list(mounts["/tmp"].iterdir())  # with / read-only, the state home is all it wrote
    finally:
        os.chdir(here)
        shutil.rmtree(root, ignore_errors=True)


# -- the checked-in copy --------------------------------------------------------------------------

REFRESH = ('(cd "$(mktemp -d)" && export MYTHLINE_HOME="$PWD/home" && mythline init && '
           'mythline schedule kubernetes --out "$OLDPWD/deploy/kubernetes")')


def test_the_checked_in_manifests_are_current(starter: Path) -> None:
    result = invoke("schedule", "kubernetes", "--out", "fresh")
    assert result.exit_code == 0, result.output
    committed = {p.name: p.read_bytes() for p in CHECKED_IN.glob("*.yaml")}
    fresh = {p.name: p.read_bytes() for p in Path("fresh").iterdir()}
    assert committed == fresh, f"deploy/kubernetes is out of date; regenerate it from the repo root with: {REFRESH}"


def test_the_checked_in_manifests_are_valid_and_documented() -> None:
    docs = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(CHECKED_IN.glob("*.yaml"))]
    assert len(docs) == len(TOPICS) + 2
    check_all(docs)
    readme = (CHECKED_IN / "README.md").read_text(encoding="utf-8")
    guide = (ROOT / "docs" / "many-hosts.md").read_text(encoding="utf-8")
    assert REFRESH in readme and REFRESH in guide
