"""examples/deploy/: the image, the systemd unit and the Kubernetes manifests say what the daemon
needs (the watch command and its flags, the port it listens on, the probes' endpoints, a grace
period above --grace, non-root, a read-only root, secrets from the environment) and agree with
each other. No Docker engine and no cluster here: the files are parsed and held to those
properties; where the tools are installed, `kubectl kustomize` renders the kustomization and
`systemd-analyze verify` checks the unit."""

from __future__ import annotations

import argparse
import configparser
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import cli
from reconciler.settings import (
    Settings,
    aliyun_credentials,
    load_settings,
    volcengine_credentials,
)
from reconciler.settings_check import setting_names

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "examples" / "deploy"
KUBE = DEPLOY / "kubernetes"
PORT = 9430
ENDPOINTS = {"liveness": "/healthz", "readiness": "/readyz"}

# The options the deploy files rely on (README, docs/daemon.md); the real parser must have them.
DOCUMENTED_WATCH_OPTIONS = frozenset(
    {
        "--resync",
        "--listen",
        "--lease",
        "--grace",
        "--log-format",
        "--max-stops",
        "--allow-empty",
        "--probe",
    }
)


def watch_parser() -> argparse.ArgumentParser:
    """The real `watch` sub-parser."""
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found = action.choices.get("watch")
            assert isinstance(found, argparse.ArgumentParser), "reconciler has no watch command"
            return found
    raise AssertionError("the parser has no commands")


def watch_options() -> frozenset[str]:
    parser = watch_parser()
    return frozenset(o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def parse_watch(arguments: list[str]) -> dict[str, Any]:
    """`watch`'s arguments (after the word watch) → {option: value, "paths": [...]}, parsed
    by the real parser, so values are type-checked as the daemon will."""
    namespace = vars(cli.build_parser().parse_args(["watch", *arguments]))
    return {**namespace, **{f"--{o}": namespace.get(o) for o in ("listen", "grace", "lease")}}


def listen_port(parsed: dict[str, Any]) -> tuple[str, int]:
    listen = str(parsed["--listen"])
    host, _, port = listen.rpartition(":")
    return host, int(port)


def test_the_documented_options_are_the_real_commands() -> None:
    assert watch_options() >= DOCUMENTED_WATCH_OPTIONS


# --- the image -----------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage, continuations joined, comments dropped;
    `${NAME}` of global ARGs substituted in FROM lines."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        lines.append(pending.strip())
        pending = ""
    arguments: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            arguments[name] = default
            continue
        if instruction == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], rest)
            stages.append([])
        stages[-1].append((instruction, rest.strip()))
    return stages


def final_stage() -> dict[str, list[str]]:
    instructions: dict[str, list[str]] = {}
    for instruction, rest in dockerfile_stages()[-1]:
        instructions.setdefault(instruction, []).append(rest)
    return instructions


def image_uid() -> int:
    (user,) = final_stage()["USER"]
    uid = user.partition(":")[0]
    assert uid.isdigit(), "USER must be numeric, so that runAsNonRoot can check it"
    return int(uid)


def test_the_image_runs_watch_as_a_numeric_non_root_user_on_python_3_11_slim() -> None:
    final = final_stage()
    assert final["FROM"][0].split()[0] == "python:3.11-slim"
    assert image_uid() > 0
    (entrypoint,) = final["ENTRYPOINT"]
    assert json.loads(entrypoint) == ["reconciler", "watch"]  # exec form: no shell at run time
    (command,) = final["CMD"]
    arguments = json.loads(command)
    parsed = parse_watch(arguments)
    assert parsed["paths"] == ["/config"]
    assert listen_port(parsed) == ("0.0.0.0", PORT)
    assert final["EXPOSE"] == [str(PORT)]
    assert "HEALTHCHECK" not in final  # Kubernetes' probes do it
    environment = " ".join(final["ENV"])
    assert "PYTHONDONTWRITEBYTECODE=1" in environment  # nothing to write on a read-only root


def context_files() -> list[str]:
    """The repository files a build from the repository root would send, by the Dockerfile's own
    ignore file. Docker's matcher (moby/patternmatcher): the last matching pattern decides, and
    a pattern that matches a parent directory matches what is below it; fnmatch stands in for
    its `*` and `**`, which for these patterns select the same files."""
    rules = []
    for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((not line.startswith("!"), line.lstrip("!").rstrip("/")))
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    sent = []
    for path in tracked:
        prefixes = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
        excluded = False
        for exclude, pattern in rules:
            if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
                excluded = exclude
        if not excluded:
            sent.append(path)
    return sent


def test_the_build_context_holds_what_the_copies_name_and_nothing_else() -> None:
    sent = context_files()
    (build, _final) = dockerfile_stages()
    sources = [
        word
        for instruction, rest in build
        if instruction == "COPY" and not rest.startswith("--from")
        for word in rest.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert any(p == source or p.startswith(source.rstrip("/") + "/") for p in sent), source
    assert not [p for p in sent if p.startswith(("tests/", "docs/", "examples/", ".ci/"))]
    assert not [p for p in sent if "__pycache__" in p or p.endswith(".pyc")]


def test_the_build_context_builds_a_wheel_with_the_schemas(tmp_path: Path) -> None:
    """The Dockerfile's `pip install /src`, minus Docker: the files the context sends build."""
    context = tmp_path / "src"
    for path in context_files():
        target = context / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / path, target)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        # With build isolation, as the image's `pip install` builds (pyproject's setuptools).
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(context)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("reconciler-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "reconciler/schemas/manifest.schema.json" in names
    assert "reconciler/cli.py" in names


# --- systemd -------------------------------------------------------------------------------


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "reconciler.service").read_text())
    return parser


def test_the_systemd_unit_runs_watch_as_a_dedicated_user_with_secrets_from_a_file() -> None:
    service = unit()["Service"]
    assert service["Type"] == "exec"
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    assert service["EnvironmentFile"].startswith("/etc/")
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["ExecReload"].endswith("kill -HUP $MAINPID")
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/reconciler") and command[1] == "watch"
    parsed = parse_watch(command[2:])
    assert parsed["paths"] and all(p.startswith("/etc/") for p in parsed["paths"])
    # The state is SQLite in the one directory the unit may write: exactly one daemon.
    state_directory = service["StateDirectory"]
    assert f"RECONCILER_STATE=/var/lib/{state_directory}/state.db" in service["Environment"]
    assert float(service["TimeoutStopSec"]) > float(parsed["--grace"])


def test_the_env_file_example_names_real_settings_and_holds_only_placeholders() -> None:
    environment = env_file(DEPLOY / "reconciler.env.example")
    check_settings_and_placeholders(environment)
    assert referenced_variables() <= set(environment)


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verifies_the_unit_and_rates_its_exposure_ok(tmp_path: Path) -> None:
    # verify wants ExecStart's program to exist: point it at this environment's reconciler.
    installed = Path(sys.executable).parent / "reconciler"
    assert installed.exists()
    text = (DEPLOY / "reconciler.service").read_text()
    text = text.replace("/opt/reconciler/bin/reconciler", str(installed))
    copy = tmp_path / "reconciler.service"
    copy.write_text(text)
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True
    )
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", security.stdout)
    assert found is not None, security.stdout[-500:]
    assert float(found.group(1)) <= 2.0, found.group(0)  # systemd's "OK" band is below 2.0


# --- settings and secrets ------------------------------------------------------------------


def referenced_variables() -> set[str]:
    """The ${env:NAME} names the Kubernetes example's manifests use."""
    names: set[str] = set()
    for path in (KUBE / "sessions").iterdir():
        text = path.read_text()
        document = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        names |= {m for s in strings(document) for m in re.findall(r"\$\{env:(\w+)\}", s)}
    assert names
    return names


def strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


def check_settings_and_placeholders(environment: dict[str, str]) -> None:
    known = setting_names(Settings)
    settings = [name for name in environment if name.startswith("RECONCILER_")]
    assert settings and set(settings) <= set(known)
    assert all("replace-me" in value for value in environment.values())


def secret_documents() -> dict[str, dict[str, Any]]:
    documents = list(yaml.safe_load_all((KUBE / "secret.example.yaml").read_text()))
    assert all(d["kind"] == "Secret" for d in documents)
    return {d["metadata"]["name"]: d for d in documents}


def test_the_secret_example_holds_placeholders_for_real_settings_and_every_reference(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = secret_documents()
    credentials = secrets["reconciler-credentials"]["stringData"]
    check_settings_and_placeholders(credentials)
    assert referenced_variables() <= set(credentials)
    state = secrets["reconciler-state"]["stringData"]["url"]
    assert state.startswith("postgresql://") and "replace-me" in state
    # What a pod's environment would be: the settings load, both providers have credentials.
    for name in list(os.environ):
        if name.startswith(("RECONCILER_", "VOLC_", "ALIBABA_CLOUD_")):
            monkeypatch.delenv(name)
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RECONCILER_STATE", state)
    monkeypatch.chdir(tmp_path)  # no reconciler.toml
    settings = load_settings()
    assert settings.state == state
    assert volcengine_credentials(settings).access_key_id.startswith("AKLT")
    assert aliyun_credentials(settings).access_key_id.startswith("LTAI")


# --- Kubernetes ----------------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    loaded = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def resources() -> dict[str, dict[str, Any]]:
    """The listed resources by kind."""
    by_kind: dict[str, dict[str, Any]] = {}
    for name in kustomization()["resources"]:
        for document in yaml.safe_load_all((KUBE / name).read_text()):
            assert document["kind"] not in by_kind
            by_kind[document["kind"]] = document
    return by_kind


def test_the_kustomization_lists_every_manifest_but_never_the_secret_placeholders() -> None:
    listed = set(kustomization()["resources"])
    present = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}
    assert {"Deployment", "Service", "ServiceAccount"} <= set(resources())


def deployment() -> dict[str, Any]:
    return resources()["Deployment"]


def container() -> dict[str, Any]:
    (only,) = deployment()["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def container_watch() -> dict[str, Any]:
    assert container()["command"] == ["reconciler", "watch"]
    return parse_watch([str(a) for a in container()["args"]])


def test_two_replicas_share_postgresql_state() -> None:
    assert deployment()["spec"]["replicas"] == 2
    (state,) = [e for e in container()["env"] if e["name"] == "RECONCILER_STATE"]
    reference = state["valueFrom"]["secretKeyRef"]
    secret = secret_documents()[reference["name"]]["stringData"][reference["key"]]
    assert secret.startswith("postgresql://")  # SQLite allows exactly one daemon


def test_the_probes_ask_the_port_the_daemon_listens_on() -> None:
    host, port = listen_port(container_watch())
    assert host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert port in ports.values()
    for probe, path in ENDPOINTS.items():
        action = container()[f"{probe}Probe"]["httpGet"]
        assert action["path"] == path
        assert ports.get(action["port"], action["port"]) == port


def test_the_pod_stops_within_its_grace_period() -> None:
    grace = float(container_watch()["--grace"])
    assert deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


def test_the_pod_runs_non_root_on_a_read_only_root_with_no_capabilities() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_uid()
    assert pod["automountServiceAccountToken"] is False
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # Anything writable is a volume: /tmp only (the state is in PostgreSQL).
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m for m in container()["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]
    assert all("emptyDir" in volumes[m["name"]] for m in writable)


def test_the_sessions_configmap_is_mounted_whole_where_watch_reads() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    (generated,) = kustomization()["configMapGenerator"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container()["volumeMounts"] if m["mountPath"] == "/config"]
    assert "subPath" not in mount  # a subPath mount never sees the ConfigMap change
    assert volumes[mount["name"]]["configMap"]["name"] == generated["name"]
    assert container_watch()["paths"] == ["/config"]
    # A changed ConfigMap keeps its name: the files change under the daemon, no rollout.
    assert kustomization()["generatorOptions"]["disableNameSuffixHash"] is True


def test_the_secrets_come_from_the_secret_example_names() -> None:
    secrets = secret_documents()
    (source,) = container()["envFrom"]
    assert source["secretRef"]["name"] in secrets


def test_the_service_and_the_scrape_annotations_reach_the_daemons_port() -> None:
    template = deployment()["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert deployment()["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = resources()["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    (exposed,) = service["ports"]
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports[exposed["targetPort"]] == listen_port(container_watch())[1]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    budget = resources()["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(path)],
        cwd=path.parent,
        capture_output=True,
        text=True,
    )


def test_the_configmaps_manifests_validate_as_the_kubelet_mounts_them(tmp_path: Path) -> None:
    """The kubelet's atomic writer: the files live in a hidden timestamped directory, `..data`
    links to it and each key is a link through `..data`; the daemon must read the keys once."""
    (generated,) = kustomization()["configMapGenerator"]
    files = [KUBE / name for name in generated["files"]]
    config = tmp_path / "config"
    payload = config / "..2025_01_01_00_00_00.000000001"
    payload.mkdir(parents=True)
    for source in files:
        shutil.copyfile(source, payload / source.name)
        (config / source.name).symlink_to(Path("..data") / source.name)
    (config / "..data").symlink_to(payload.name)
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid: 2 session(s) declared." in result.stdout
    # The examples' own directory ignores the deploy files: they are not manifests.
    assert validate(REPO / "examples").returncode == 0


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl missing")
def test_kubectl_kustomize_renders_the_set_without_secrets() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(KUBE)], capture_output=True, text=True, timeout=120
    )
    assert rendered.returncode == 0, rendered.stderr
    documents = list(yaml.safe_load_all(rendered.stdout))
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == sorted([*resources(), "ConfigMap"])
    (configmap,) = [d for d in documents if d["kind"] == "ConfigMap"]
    assert configmap["metadata"]["name"] == "reconciler-sessions"
    assert sorted(configmap["data"]) == ["front-desk.toml", "lobby.yaml"]
    assert {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"} == {
        "voice-sessions"
    }


def test_the_deploy_page_names_every_file() -> None:
    page = (REPO / "docs" / "deploy.md").read_text()
    files = [
        p.relative_to(DEPLOY).as_posix()
        for p in DEPLOY.rglob("*")
        if p.is_file() and p.parent != KUBE / "sessions" and p.name != "README.md"
    ]
    assert len(files) >= 10
    assert [f for f in files if f"`{f}`" not in page] == []
