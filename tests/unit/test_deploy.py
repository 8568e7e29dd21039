"""The deployment files in deploy/, checked without a container engine or a cluster.

- every Kubernetes manifest against the Kubernetes JSON schemas that `kubernetes-validate` ships (strict:
  an unknown field is an error), and compose.yaml against the Compose Specification's schema that
  `check-jsonschema` vendors, with `jsonschema`; each validator is shown refusing a broken file;
- the image: its entrypoint roles against the modules they run (`python -m MODULE` and its `run`), the
  CPU torch installed first, and a wheel built from what it copies carrying every package file;
- every `FEDLORA_*` variable a service gets (compose `environment`, Kubernetes `env` and `envFrom`) against
  the settings class of that service, and every required setting provided;
- the Redis configurations, loaded by a real `redis-server`.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import functools
import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import redis
import typer.main
import yaml
from packaging.requirements import Requirement
from pydantic import SecretStr, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings

from client_agent.data.wheels import CACHE_ENV
from fedlora import bootstrap, pki_setup, store_users
from fedlora.cli import app as cli_app
from fedlora.launcher import free_port
from fedlora.pki import new_authority
from fedlora.store_certs import instance_tls, issue_store_certificates
from protocol.messages import FederationSpec
from services.keys import KEK_ENV, KEK_FILE_ENV, KekError, load_kek
from services.settings import (
    CONFIG_ENV,
    ClientSettings,
    CloudSettings,
    EdgeSettings,
    Secret,
    ServiceSettings,
)
from services.store_tls import StoreTLS
from tests.redis_server import redis_binary, redis_client

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PREFIX = "FEDLORA_"
#: The oldest Kubernetes release the manifests are written for, and the newest one the validator knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())

ROLE_SETTINGS: dict[str, type[BaseSettings]] = {
    "cloud": CloudSettings,
    "edge": EdgeSettings,
    "client": ClientSettings,
    "bootstrap": bootstrap.BootstrapSettings,
    "pki": pki_setup.PkiSettings,
    "store-users": store_users.StoreUsersSettings,
}
#: Variables a service reads outside its settings class: the KEK (services/keys.py), the optional YAML
#: settings file (every `ServiceSettings`), the client's data cache (client_agent/data/wheels.py).
EXTRA_VARIABLES: dict[str, set[str]] = {
    "cloud": {KEK_ENV, KEK_FILE_ENV, CONFIG_ENV},
    "edge": {CONFIG_ENV},
    "client": {CONFIG_ENV, CACHE_ENV},
    "bootstrap": set(),
    "pki": set(),
    "store-users": set(),
}


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def field_name(variable: str) -> str:
    return variable[len(PREFIX) :].lower()


def is_secret_field(settings: type[BaseSettings], name: str) -> bool:
    info = settings.model_fields.get(name)
    return info is not None and info.annotation is SecretStr


# -- the entrypoint ---------------------------------------------------------------------------------------
ENTRYPOINT = DEPLOY / "entrypoint.sh"
DOCKERFILE = DEPLOY / "Dockerfile"


def entrypoint_roles() -> dict[str, str]:
    """role -> module, from the `case` arms of deploy/entrypoint.sh (`cloud) module=cloud_server ;;`)."""
    arms = re.findall(r"^\s*([a-z-]+)\)\s*module=([\w.]+)\s*;;", ENTRYPOINT.read_text(), flags=re.M)
    return dict(arms)


def program_file(module: str) -> Path:
    """The file `python -m module` runs, found without importing it (a package runs its __main__)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"no module {module}"
    if spec.submodule_search_locations is not None:
        main = importlib.util.find_spec(f"{module}.__main__")
        assert main is not None and main.origin is not None, f"{module} is a package without __main__"
        return Path(main.origin)
    return Path(spec.origin)


def test_entrypoint_roles_are_the_tiers():
    assert entrypoint_roles() == {
        "cloud": "cloud_server",
        "edge": "edge_aggregator",
        "client": "client_agent",
        "bootstrap": "fedlora.bootstrap",
        "pki": "fedlora.pki_setup",
        "store-users": "fedlora.store_users",
    }


@pytest.mark.parametrize("role", sorted(ROLE_SETTINGS))
def test_entrypoint_module_has_a_run_that_it_calls(role):
    module = entrypoint_roles()[role]
    source = program_file(module)
    tree = ast.parse(source.read_text())
    program = module if source.name != "__main__.py" else f"{module}.__main__"
    # Where `run` comes from: defined in the program, or imported into it.
    origin: str | None = None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "run":
            origin = program
        elif isinstance(node, ast.ImportFrom) and any(alias.name == "run" for alias in node.names):
            origin = node.module
    assert origin is not None, f"{source} neither defines nor imports `run`"
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "run"
    ]
    assert calls, f"{source} never calls run()"
    if origin == program:
        # Importing it must not start a service: the call sits under `if __name__ == "__main__"`.
        guarded = [
            node
            for node in tree.body
            if isinstance(node, ast.If)
            and "__main__" in ast.unparse(node.test)
            and "run()" in ast.unparse(node)
        ]
        assert guarded, f"{source} calls run() at import time"
    assert callable(getattr(importlib.import_module(origin), "run", None)), f"{origin}.run is not callable"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_image_installs_cpu_torch_first_then_the_project_as_a_non_root_user():
    runs = [args for word, args in dockerfile_instructions() if word == "RUN"]
    torch_at = next(i for i, args in enumerate(runs) if "torch==2.13.0" in args)
    project_at = next(i for i, args in enumerate(runs) if re.search(r"pip install \.(\s|$)", args))
    assert torch_at < project_at
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs[torch_at]
    assert "PIP_CONSTRAINT" in runs[project_at], "the project install must keep the pinned torch"
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    final_stage = instructions[last_from:]
    user = [args for word, args in final_stage if word == "USER"]
    assert user and not user[-1].startswith(("root", "0")), "the image must not run as root"
    env = " ".join(args for word, args in final_stage if word == "ENV")
    assert "HF_HUB_OFFLINE=1" in env and "TRANSFORMERS_OFFLINE=1" in env


def test_image_exposes_the_default_ports():
    exposed = {
        int(port) for word, args in dockerfile_instructions() if word == "EXPOSE" for port in args.split()
    }
    ports = {CloudSettings.model_fields["port"].default, EdgeSettings.model_fields["port"].default}
    assert exposed == ports


def test_image_entrypoint_is_the_script():
    instructions = dockerfile_instructions()
    entry = json.loads(next(args for word, args in instructions if word == "ENTRYPOINT"))
    copies = [args.split() for word, args in instructions if word == "COPY"]
    script = next(parts for parts in copies if "deploy/entrypoint.sh" in parts)
    assert script[-1] in (entry[0], f"/usr/local/bin/{entry[0]}")


def test_image_copies_every_package_and_the_build_context_keeps_them():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {name.rstrip("*") for name in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    sources = set()
    for word, args in dockerfile_instructions():
        if word == "COPY" and "--from" not in args:
            parts = [p for p in args.split() if not p.startswith("--")]
            sources.update(p.rstrip("/") for p in parts[:-1])
    assert packages <= sources, f"the Dockerfile does not copy {packages - sources}"
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in sources:
        hits = [p for p in ignored if fnmatch.fnmatch(source, p.removeprefix("**/")) or source == p]
        assert not hits, f".dockerignore drops {source}, which the Dockerfile copies ({hits})"
    for must in (".venv", ".git", "runs", ".cache"):
        assert must in ignored, f".dockerignore must exclude {must}"


def _installed(requirement: str) -> bool:
    wanted = Requirement(requirement)
    try:
        return wanted.specifier.contains(importlib.metadata.version(wanted.name), prereleases=True)
    except importlib.metadata.PackageNotFoundError:
        return False


def test_what_the_image_copies_builds_a_wheel_with_every_package_file(tmp_path):
    """`pip install .` in the image is not editable: a file the packages read (the dashboard page, ...)
    reaches the image only if the wheel built from the copied sources carries it."""
    context = tmp_path / "context"
    context.mkdir()
    copied: list[str] = []
    for word, args in dockerfile_instructions():
        parts = [p for p in args.split() if not p.startswith("--")]
        if word == "COPY" and "--from" not in args and "deploy/entrypoint.sh" not in parts:
            for source in parts[:-1]:
                target = context / source
                if (ROOT / source).is_dir():
                    shutil.copytree(
                        ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    shutil.copy2(ROOT / source, target)
                copied.append(source)
    # The venv's own setuptools builds it, with no download, when it can build wheels by itself (70.1 on,
    # without the `wheel` package); otherwise pip fetches [build-system]'s requirements.
    no_isolation = ["--no-build-isolation"] if _installed("setuptools>=70.1") else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *no_isolation, "-q", "-w", str(tmp_path), "."],
        cwd=context,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("fedlora-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    packages = [source for source in copied if (ROOT / source).is_dir()]
    expected = {
        path.relative_to(context).as_posix()
        for package in packages
        for path in (context / package).rglob("*")
        if path.is_file()
    }
    assert expected - in_wheel == set(), "files the image would lack (add them to package-data)"


# -- Kubernetes ---------------------------------------------------------------------------------------------
MANIFEST_FILES = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache
def k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    """Every object in deploy/k8s (parsed once; tests that change one change a deep copy)."""
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in MANIFEST_FILES
        for doc in load_yaml_documents(path)
    ]


def k8s_applied() -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy/k8s` applies (not the example Secrets)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in load_yaml_documents(K8S / name)]


def k8s_find(kind: str, name: str) -> dict[str, Any] | None:
    return next(
        (doc for _, doc in k8s_objects() if doc["kind"] == kind and doc["metadata"]["name"] == name), None
    )


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("where", "manifest"), k8s_objects(), ids=[name for name, _ in k8s_objects()])
def test_k8s_manifest_matches_the_kubernetes_schema(where, manifest, version):
    kubernetes_validate.validate(manifest, version, strict=True)


def _cloud_deployment() -> dict[str, Any]:
    found = k8s_find("Deployment", "fedlora-cloud")
    assert found is not None
    return copy.deepcopy(found)


def _typo_in_probe(doc: dict[str, Any]) -> None:
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")


def _replicas_as_words(doc: dict[str, Any]) -> None:
    doc["spec"]["replicas"] = "two"


def _no_selector(doc: dict[str, Any]) -> None:
    del doc["spec"]["selector"]


def _port_out_of_type(doc: dict[str, Any]) -> None:
    doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty-seven-hundred"


@pytest.mark.parametrize("breakage", [_typo_in_probe, _replicas_as_words, _no_selector, _port_out_of_type])
def test_k8s_validator_refuses_a_broken_manifest(breakage):
    manifest = _cloud_deployment()
    kubernetes_validate.validate(manifest, K8S_VERSIONS[0], strict=True)  # the unbroken one passes
    breakage(manifest)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_VERSIONS[0], strict=True)


def test_kustomization_applies_every_manifest_but_the_example_secrets():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in MANIFEST_FILES} - {"secrets.example.yaml"}
    assert all(doc["kind"] != "Secret" for doc in k8s_applied()), "real secrets are created with kubectl"
    for doc in k8s_applied():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization["namespace"]


@dataclass
class Workload:
    """One container of a fedlora service, as the Kubernetes manifests or compose.yaml configure it."""

    where: str
    role: str
    env: dict[str, str | None] = field(default_factory=dict)  # name -> literal value (None: from a Secret)
    secret_env: set[str] = field(default_factory=set)
    config_fields: set[str] = field(default_factory=set)  # provided by the FEDLORA_CONFIG file


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, doc in k8s_objects():
        if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield name, doc["spec"]["template"]["spec"]


def _claim_templates(name: str) -> set[str]:
    kind, _, object_name = name.partition(":")[2].partition("/")
    doc = k8s_find(kind, object_name)
    assert doc is not None
    return {claim["metadata"]["name"] for claim in doc["spec"].get("volumeClaimTemplates", [])}


def k8s_workloads() -> list[Workload]:
    workloads = []
    for name, pod in _pod_specs():
        for container in pod["containers"]:
            if not container["image"].startswith("fedlora"):
                continue
            workload = Workload(f"{name}/{container['name']}", container["args"][0])
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in source else "Secret"
                found = k8s_find(kind, ref["name"])
                assert found is not None, f"{workload.where}: no {kind} {ref['name']}"
                data = found.get("data") or found.get("stringData") or {}
                for key, value in data.items():
                    workload.env[key] = str(value) if kind == "ConfigMap" else None
                    if kind == "Secret":
                        workload.secret_env.add(key)
            for item in container.get("env", []):
                value = item.get("value")
                if value is not None:
                    for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
                        assert ref in workload.env, (
                            f"{workload.where}: $({ref}) is not defined above {item['name']}"
                        )
                    workload.env[item["name"]] = value
                else:
                    workload.env[item["name"]] = None
                    workload.secret_env.add(item["name"])
            workloads.append(workload)
    return workloads


def test_k8s_references_resolve():
    """Every ConfigMap, Secret and key a pod names exists (the Secrets in secrets.example.yaml)."""
    for name, pod in _pod_specs():
        for container in pod.get("initContainers", []) + pod["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef") or item.get("valueFrom", {}).get(
                    "configMapKeyRef"
                )
                if ref is not None:
                    kind = "Secret" if "secretKeyRef" in item["valueFrom"] else "ConfigMap"
                    found = k8s_find(kind, ref["name"])
                    assert found is not None, f"{name}: no {kind} {ref['name']}"
                    assert ref["key"] in (found.get("data") or found.get("stringData") or {})
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in pod.get("volumes", [])} | _claim_templates(name), name
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                found = k8s_find("Secret", volume["secret"]["secretName"])
                assert found is not None, f"{name}: no Secret {volume['secret']['secretName']}"
                for item in volume["secret"].get("items", []):
                    assert item["key"] in found["stringData"], f"{name}: no key {item['key']}"
            if "configMap" in volume:
                assert k8s_find("ConfigMap", volume["configMap"]["name"]) is not None
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert k8s_find("PersistentVolumeClaim", claim) is not None, f"{name}: no claim {claim}"


def test_k8s_example_secrets_are_placeholders_the_services_refuse():
    secret = TypeAdapter(Secret)
    for _, doc in k8s_objects():
        if doc["kind"] != "Secret":
            continue
        for key, value in doc["stringData"].items():
            assert value.startswith("<"), f"{doc['metadata']['name']}.{key} looks like a real value"
            if key == "kek":
                with pytest.raises(KekError):
                    load_kek({KEK_ENV: value})
            elif key != "edge.key":
                with pytest.raises(ValidationError):
                    secret.validate_python(value)


def test_k8s_pods_run_non_root_with_limits_and_probes():
    for name, pod in _pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, name
            writable_tmp = any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", []))
            assert writable_tmp or container["name"] == "wait-for-edge", f"{name}: no writable /tmp"


def _route_paths(module: str, attribute: str) -> set[str]:
    router = getattr(importlib.import_module(module), attribute)
    return {route.path for route in router.routes}


def test_k8s_probes_hit_the_health_routes_on_the_service_port():
    cloud_routes = _route_paths("cloud_server.routes.health", "router")
    edge_routes = _route_paths("edge_aggregator.routes", "router")
    assert {"/healthz", "/readyz"} <= cloud_routes and {"/healthz", "/readyz"} <= edge_routes
    workloads = {w.where: w for w in k8s_workloads()}
    for name, pod in _pod_specs():
        for container in pod["containers"]:
            workload = workloads.get(f"{name}/{container['name']}")
            if workload is None or workload.role not in ("cloud", "edge"):
                continue
            port = int(
                workload.env.get(f"{PREFIX}PORT") or ROLE_SETTINGS[workload.role].model_fields["port"].default
            )
            named = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            for probe in ("readinessProbe", "livenessProbe"):
                target = container[probe]["httpGet"]["port"]
                assert named.get(target, target) == port, f"{name}: {probe} is not on port {port}"
            service = k8s_find("Service", name.split("/")[-1])
            assert service is not None, f"{name}: no Service of the same name"
            assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"] and named["http"] == port


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_k8s_each_tier_runs_on_a_redis_of_its_own():
    """The cloud and each edge reach Redis through a Service that selects one StatefulSet of its own, whose
    ACL Secret is that tier's instance file (`fedlora.store_users`: its operator and the tier's user only)
    and whose NetworkPolicy admits that tier's pods alone: no other tier can log in to it nor reach it."""
    pods = {
        name: (doc["spec"]["template"]["metadata"]["labels"], doc)
        for name, doc in k8s_objects()
        if doc["kind"] in ("Deployment", "StatefulSet")
    }
    tiers = {
        name: labels
        for name, (labels, _) in pods.items()
        if labels.get("app.kubernetes.io/component") in ("cloud", "edge")
    }
    workloads = {w.where.rsplit("/", 1)[0]: w for w in k8s_workloads()}
    redis_of: dict[str, str] = {}
    for name in tiers:
        workload = workloads[name]
        host = str(urlsplit(str(workload.env[f"{PREFIX}STORE_URL"])).hostname)
        service = k8s_find("Service", host)
        assert service is not None, f"{name}: no Service {host}"
        selected = [n for n, (lab, doc) in pods.items() if _selects(service["spec"]["selector"], lab)]
        assert len(selected) == 1 and pods[selected[0]][1]["kind"] == "StatefulSet", f"{host}: {selected}"
        redis_pod = pods[selected[0]][1]["spec"]["template"]["spec"]
        (acl,) = [v["secret"]["secretName"] for v in redis_pod["volumes"] if "acl" in v["name"]]
        secret = k8s_find("Secret", acl)
        assert secret is not None, f"{host}: no Secret {acl}"
        role = workload.role
        instance = _instance_folder("STORE", role, workload.env)
        assert secret["stringData"]["users.acl"].startswith(f"<{instance}/{store_users.ACL_FILE}"), acl
        # ... and its TLS files (rediss:// only), which the tier's client checks and answers with its own.
        assert {"redis.crt", "redis.key", "ca.crt"} <= set(secret["stringData"]), acl
        assert urlsplit(str(workload.env[f"{PREFIX}STORE_URL"])).scheme == "rediss", name
        assert all(workload.env.get(f"{PREFIX}STORE_{f}_FILE") for f in ("CA", "CERT", "KEY")), name
        policies = [
            doc
            for _, doc in k8s_objects()
            if doc["kind"] == "NetworkPolicy"
            and _selects(doc["spec"]["podSelector"]["matchLabels"], pods[selected[0]][0])
        ]
        assert len(policies) == 1, f"{host}: {len(policies)} NetworkPolicies"
        admitted = [
            other
            for other, other_labels in tiers.items()
            if any(
                _selects(source["podSelector"]["matchLabels"], other_labels)
                for rule in policies[0]["spec"]["ingress"]
                for source in rule["from"]
            )
        ]
        assert admitted == [name], f"{host} admits {admitted}"
        redis_of[name] = host
    assert {tiers[n]["app.kubernetes.io/component"] for n in redis_of} == {"cloud", "edge"}
    assert len(set(redis_of.values())) == len(redis_of), f"two tiers share a Redis: {redis_of}"


# -- compose --------------------------------------------------------------------------------------------------
COMPOSE = DEPLOY / "compose.yaml"


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def compose_validator() -> jsonschema.protocols.Validator:
    schema = compose_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_matches_the_compose_spec_schema():
    errors = sorted(compose_validator().iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def _unknown_service_key(doc: dict[str, Any]) -> None:
    doc["services"]["cloud"]["helthcheck"] = doc["services"]["cloud"].pop("healthcheck")


def _bad_condition(doc: dict[str, Any]) -> None:
    doc["services"]["cloud"]["depends_on"]["redis-cloud"]["condition"] = "service_ready"


def _ports_not_a_list(doc: dict[str, Any]) -> None:
    doc["services"]["cloud"]["ports"] = {"8700": 8700}


@pytest.mark.parametrize("breakage", [_unknown_service_key, _bad_condition, _ports_not_a_list])
def test_compose_schema_refuses_a_broken_file(breakage):
    doc = compose()
    breakage(doc)
    assert list(compose_validator().iter_errors(doc)), f"{breakage.__name__} went through"


def fedlora_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if "fedlora" in str(s.get("image", ""))}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source (volume name or host path; `volume/subpath` for a volume's folder)."""
    result = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            subpath = volume.get("volume", {}).get("subpath")
            result[volume["target"]] = volume["source"] + (f"/{subpath}" if subpath else "")
            continue
        source, target = volume.split(":")[:2]
        result[target] = source
    return result


def placeheld(value: str) -> str:
    """`value` with each `${NAME...}` replaced by `{NAME}`, as compose would put NAME's value there."""
    return re.sub(r"\$\{(\w+)[^}]*\}", r"{\1}", value)


def compose_workloads() -> list[Workload]:
    services = fedlora_services()
    boot = services["bootstrap"]
    out_dir = boot["environment"][f"{PREFIX}OUT_DIR"]
    # The settings files the bootstrap writes, by the volume they land in: one per party it names.
    parties = {
        (bootstrap.EDGE_DIR, party): f"{out_dir}/{bootstrap.EDGE_DIR}/{party}"
        for party in json.loads(boot["environment"][f"{PREFIX}EDGES"])
    } | {
        (bootstrap.CLIENT_DIR, party): f"{out_dir}/{bootstrap.CLIENT_DIR}/{party}"
        for party in json.loads(boot["environment"][f"{PREFIX}CLIENTS"])
    }
    written = {
        _mounts(boot)[folder]: (party, bootstrap.CONFIG_FILE) for (_, party), folder in parties.items()
    }
    workloads = []
    for name, service in services.items():
        role = service["command"][0]
        if role not in ROLE_SETTINGS:
            continue
        workload = Workload(f"compose:{name}", role)
        for variable, value in service.get("environment", {}).items():
            workload.env[variable] = str(value)
        config = workload.env.get(CONFIG_ENV)
        if config is not None:
            folder, _, file_name = config.rpartition("/")
            volume = _mounts(service).get(folder)
            assert volume in written and written[volume][1] == file_name, (
                f"{name}: {CONFIG_ENV}={config} is not a file the bootstrap writes into a volume mounted there"
            )
            own = workload.env.get(f"{PREFIX}EDGE_ID" if role == "edge" else f"{PREFIX}CLIENT_ID")
            assert written[volume][0] == own, f"{name} mounts the enrolment token of {written[volume][0]}"
            workload.config_fields = set(bootstrap.CONFIG_FIELDS)
        workloads.append(workload)
    return workloads


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def test_compose_secrets_come_only_from_the_environment():
    env_example = {
        line.split("=", 1)[0]
        for line in (DEPLOY / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    referenced = {name for text in _strings(compose()) for name in re.findall(r"\$\{(\w+)", text)}
    assert referenced == env_example, "deploy/.env.example must list exactly the variables compose.yaml reads"
    for workload in compose_workloads():
        settings = ROLE_SETTINGS[workload.role]
        for variable, value in workload.env.items():
            secret = variable in (KEK_ENV,) or is_secret_field(settings, field_name(variable))
            if secret:
                assert value is not None and re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), (
                    f"{workload.where}: {variable} must be `${{NAME:?message}}`, not a value in the file"
                )
            if variable == f"{PREFIX}STORE_URL":
                password = urlsplit(placeheld(str(value))).password
                assert password is None, (
                    f"{workload.where}: the Redis password comes from its own file (STORE_PASSWORD_FILE)"
                )
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        name, _, value = line.partition("=")
        if any(word in name for word in ("TOKEN", "KEK", "PASSWORD")):
            assert value == "", f".env.example must leave {name} empty"


def test_compose_avoids_what_podman_compose_mishandles():
    """deploy/compose.yaml runs under Debian 12's podman-compose 1.0.3 (`make deploy-test`): every health
    check is one shell string (it joins a `CMD` list into a shell line without quoting it right, and the
    check then always fails), and no volume mounts a folder of another volume (`subpath`, which it does not
    support: the whole volume would be mounted)."""
    for name, service in compose()["services"].items():
        test = service.get("healthcheck", {}).get("test")
        if test is not None:
            assert test[0] == "CMD-SHELL" and len(test) == 2, name
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                assert "subpath" not in volume.get("volume", {}), name


def test_compose_health_checks_and_start_order():
    services = compose()["services"]
    for name, service in fedlora_services().items():
        role = service["command"][0]
        if role in ("cloud", "edge"):
            port = int(service["environment"][f"{PREFIX}PORT"])
            test = " ".join(service["healthcheck"]["test"])
            assert f"https://127.0.0.1:{port}/readyz" in test, name
            own_redis = urlsplit(service["environment"][f"{PREFIX}STORE_URL"]).hostname
            assert service["depends_on"][own_redis]["condition"] == "service_healthy", name
        if role == "edge":
            assert service["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
        if role == "client":
            edge_id = service["environment"][f"{PREFIX}EDGE_ID"]
            edge = next(
                n
                for n, s in services.items()
                if s.get("environment", {}).get(f"{PREFIX}EDGE_ID") == edge_id and s["command"][0] == "edge"
            )
            assert service["depends_on"][edge]["condition"] == "service_healthy", name
    assert services["bootstrap"]["depends_on"]["cloud"]["condition"] == "service_healthy"
    assert services["cloud"]["depends_on"]["pki"]["condition"] == "service_completed_successfully"


def _instance_folder(issued: str, role: str, env: dict[str, Any]) -> str:
    """The folder `fedlora.store_users` issues the Redis instance of this tier into, under `issued`."""
    root = Path(issued)
    folder = (
        store_users.cloud_folder(root)
        if role == "cloud"
        else store_users.edge_folder(root, env[f"{PREFIX}EDGE_ID"])
    )
    return folder.as_posix()


def test_compose_services_keep_apart_in_redis():
    """Each tier runs on a Redis of its own (one Redis would let one tier's user fill every tier's memory and
    list every tier's key names): its store URL names a Redis service that mounts that tier's instance folder
    (its ACL file knows that tier's user alone) and keeps its own data volume; the tier logs in as its own ACL
    user with the password file that store-users wrote into the folder only that service mounts."""
    services = compose()["services"]
    issuer = services["store-users"]
    out_dir = issuer["environment"][f"{PREFIX}OUT_DIR"]
    edge_ids = issuer["environment"][f"{PREFIX}EDGE_IDS"].split(",")
    issued = out_dir
    # The volumes store-users writes into, by the folder each is mounted at there: a Redis or a service
    # mounts its own instance folder's volume, never the whole output.
    issued_as = {
        source: target for target, source in _mounts(issuer).items() if target.startswith(out_dir + "/")
    }
    acl_folder = re.search(r"^aclfile (.*)/users\.acl$", (DEPLOY / "redis-compose.conf").read_text(), re.M)
    assert acl_folder is not None
    redis_of: dict[str, str] = {}
    for name, service in fedlora_services().items():
        role, env = service["command"][0], service.get("environment", {})
        if role not in ("cloud", "edge"):
            continue
        url = urlsplit(str(env[f"{PREFIX}STORE_URL"]))
        assert url.scheme == "rediss", f"{name}: a deployment needs Redis over TLS (rediss://)"
        instance = _instance_folder(issued, role, env)
        folder, _, file_name = env[f"{PREFIX}STORE_PASSWORD_FILE"].rpartition("/")
        assert issued_as[_mounts(service)[folder]] == f"{instance}/{store_users.SERVICE_DIR}", name
        assert file_name == store_users.PASSWORD_FILE
        # Its TLS files are its own too, from the same folder: what `fedlora.store_certs` writes there.
        service_tls = instance_tls(Path(instance)).service
        for setting, path in (
            ("CA", service_tls.ca_file),
            ("CERT", service_tls.cert_file),
            ("KEY", service_tls.key_file),
        ):
            assert path is not None
            written = path.relative_to(Path(instance) / store_users.SERVICE_DIR).as_posix()
            assert env[f"{PREFIX}STORE_{setting}_FILE"] == f"{folder}/{written}", name
        assert env[f"{PREFIX}STORE_USERNAME"] == (
            store_users.CLOUD_USER if role == "cloud" else store_users.edge_user(env[f"{PREFIX}EDGE_ID"])
        ), name
        if role == "edge":
            assert env[f"{PREFIX}EDGE_ID"] in edge_ids, f"{name}: store-users issues no Redis for it"
        redis_service = services[url.hostname]
        assert issued_as[_mounts(redis_service)[acl_folder[1]]] == f"{instance}/redis", (
            f"{name}: another tier's ACL file"
        )
        redis_of[name] = str(url.hostname)
    assert len(set(redis_of.values())) == len(redis_of), f"two tiers share a Redis: {redis_of}"
    data = [_mounts(services[host])["/data"] for host in redis_of.values()]
    assert len(set(data)) == len(data), f"two Redis instances share a data volume: {data}"
    assert re.search(r"^maxmemory \d+[kmg]b$", (DEPLOY / "redis-compose.conf").read_text(), re.M)


# -- FEDLORA_* variables against the settings classes ---------------------------------------------------------
def all_workloads() -> list[Workload]:
    return compose_workloads() + k8s_workloads()


def setting_problems(workload: Workload) -> list[str]:
    """What is wrong with a service's `FEDLORA_*` variables: names its settings class does not have,
    required settings nobody provides, a KEK given twice or not at all, a server bound to loopback."""
    settings = ROLE_SETTINGS[workload.role]
    allowed = EXTRA_VARIABLES[workload.role]
    problems = [
        f"{variable} is not a field of {settings.__name__}"
        for variable in workload.env
        if variable.upper().startswith(PREFIX)
        and variable.upper() not in allowed
        and field_name(variable) not in settings.model_fields
    ]
    provided = {field_name(v) for v in workload.env if v.upper().startswith(PREFIX)} | workload.config_fields
    required = {name for name, info in settings.model_fields.items() if info.is_required()}
    problems += [
        f"{settings.__name__} needs {name}, which nothing provides" for name in sorted(required - provided)
    ]
    if workload.role == "cloud" and len({KEK_ENV, KEK_FILE_ENV} & set(workload.env)) != 1:
        problems.append(f"set exactly one of {KEK_ENV} and {KEK_FILE_ENV}")
    if workload.role in ("cloud", "edge") and workload.env.get(f"{PREFIX}HOST") != "0.0.0.0":
        problems.append(f"{PREFIX}HOST must be 0.0.0.0: in a container, loopback is reachable by no one")
    return problems


@pytest.mark.parametrize("workload", all_workloads(), ids=lambda w: w.where)
def test_every_fedlora_variable_is_a_setting_and_every_required_setting_is_provided(workload):
    assert not setting_problems(workload), f"{workload.where}: " + "; ".join(setting_problems(workload))


def _misspelt(workload: Workload) -> None:
    workload.env[f"{PREFIX}EDGE_IDENTIFIER"] = workload.env.pop(f"{PREFIX}EDGE_ID")


def _cloud_url_missing(workload: Workload) -> None:
    del workload.env[f"{PREFIX}CLOUD_URL"]


def _loopback(workload: Workload) -> None:
    workload.env[f"{PREFIX}HOST"] = "127.0.0.1"


@pytest.mark.parametrize("source", ["compose", "k8s"])
@pytest.mark.parametrize("breakage", [_misspelt, _cloud_url_missing, _loopback])
def test_setting_check_finds_a_broken_edge(source, breakage):
    workloads = compose_workloads() if source == "compose" else k8s_workloads()
    edge = copy.deepcopy(next(w for w in workloads if w.role == "edge"))
    assert not setting_problems(edge)
    breakage(edge)
    assert setting_problems(edge), f"{breakage.__name__} went unnoticed"


def test_literal_settings_values_pass_validation():
    """Each non-secret value written in the files is one its settings field accepts."""
    for workload in all_workloads():
        settings = ROLE_SETTINGS[workload.role]
        for variable, value in workload.env.items():
            name = field_name(variable)
            if value is None or "${" in value or "$(" in value or name not in settings.model_fields:
                continue
            info = settings.model_fields[name]
            annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            if value.lstrip().startswith(("[", "{")):  # pydantic-settings reads a list or dict as JSON
                TypeAdapter(annotation).validate_json(value)
            else:
                TypeAdapter(annotation).validate_strings(value)


def test_every_federation_id_is_the_spec_files():
    spec = FederationSpec.model_validate(yaml.safe_load((DEPLOY / "federation.yaml").read_text()))
    for workload in all_workloads():
        fid = workload.env.get(f"{PREFIX}FEDERATION_ID")
        if workload.role in ("edge", "client"):
            assert fid == spec.federation_id, f"{workload.where}: {fid} is not {spec.federation_id}"


def test_every_deployed_hospital_accepts_the_spec_files_federation_and_its_peers():
    """A hospital refuses a federation its own policy forbids (k below 2, for one): the deployed ones must
    accept the federation they are deployed for, and the URLs they are given."""
    from client_agent.policy import HospitalPolicy

    spec = FederationSpec.model_validate(yaml.safe_load((DEPLOY / "federation.yaml").read_text()))
    hospitals = [w for w in all_workloads() if w.role == "client"]
    assert hospitals
    for workload in hospitals:
        values: dict[str, Any] = {}
        for name in HospitalPolicy.model_fields:
            info = ClientSettings.model_fields[name]
            raw = workload.env.get(f"{PREFIX}{name.upper()}")
            values[name] = info.default if raw is None else TypeAdapter(info.annotation).validate_strings(raw)
        policy = HospitalPolicy(**values)
        policy.check_spec(spec, num_examples=1000)
        policy.check_peer_url(workload.env[f"{PREFIX}CLOUD_URL"], field="cloud_url")


def test_every_hop_is_tls_and_no_service_holds_the_ca_key():
    """Compose and Kubernetes: every cloud and edge serves TLS (a certificate, its key and the federation's
    CA), every URL a party calls is https with the CA to verify it, nobody opts into plain http, and the
    CA's key is mounted only into the one-shot steps that issue certificates (pki, store-users)."""
    tls = {f"{PREFIX}TLS_CERT_FILE", f"{PREFIX}TLS_KEY_FILE", f"{PREFIX}TLS_CA_FILE"}
    for workload in all_workloads():
        env = workload.env
        if workload.role in ("cloud", "edge", "client"):
            assert tls <= set(env), f"{workload.where}: no TLS certificate ({sorted(tls - set(env))})"
        for variable in ("CLOUD_URL", "PUBLIC_URL", "EDGE_URL"):
            url = env.get(f"{PREFIX}{variable}")
            if url is not None:
                assert url.startswith("https://"), f"{workload.where}: {variable}={url} is not https"
                assert f"{PREFIX}TLS_CA_FILE" in env, f"{workload.where}: https without the federation's CA"
        for unsafe in ("ALLOW_PLAIN_HTTP", "ALLOW_INSECURE_HTTP"):
            assert f"{PREFIX}{unsafe}" not in env, f"{workload.where}: {unsafe}"
    services = fedlora_services()
    ca_dir = services["pki"]["environment"][f"{PREFIX}CA_DIR"]
    ca_volume = _mounts(services["pki"])[ca_dir]
    holders = sorted(name for name, service in services.items() if ca_volume in _mounts(service).values())
    # The one-shot issuers only: the HTTP certificates' (pki) and the Redis ones' (store-users), one CA.
    assert holders == ["pki", "store-users"], f"the CA key volume {ca_volume} is mounted into {holders}"
    assert (
        _mounts(services["store-users"])[services["store-users"]["environment"][f"{PREFIX}CA_DIR"]]
        == ca_volume
    )
    for _, doc in k8s_objects():
        if doc["kind"] == "Secret":
            assert "ca.key" not in doc.get("stringData", {}), doc["metadata"]["name"]


def test_image_environment_is_settings():
    for word, args in dockerfile_instructions():
        if word == "ENV":
            for variable in re.findall(r"(FEDLORA_\w+)=", args):
                assert field_name(variable) in ServiceSettings.model_fields, variable


def test_admin_shell_variables_are_the_cli_options():
    """The `cloud-admin` service runs the CLI: its variables are the envvars of `fedlora status`."""
    command = typer.main.get_command(cli_app)
    status = command.commands["status"]
    envvars = {p.envvar for p in status.params if p.envvar}
    for name, service in fedlora_services().items():
        if service["command"][0] == "fedlora":
            assert set(service.get("environment", {})) <= envvars, name


# -- Redis ---------------------------------------------------------------------------------------------------
def _start_redis(
    conf: Path, folder: Path, admin: store_users.StoreUser, admin_tls: StoreTLS
) -> tuple[subprocess.Popen[bytes], redis.Redis]:
    """The configuration's redis-server on a free TLS port (it has no plain one), and a client of its operator
    over TLS."""
    port = free_port()
    process = subprocess.Popen(
        [redis_binary(), str(conf), "--tls-port", str(port), "--bind", "127.0.0.1"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    client = redis_client(
        port,
        username=admin.name,
        password=admin.password,
        socket_connect_timeout=0.5,
        ssl=True,
        **admin_tls.redis_options(),
    )
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            out = process.stdout.read().decode(errors="replace") if process.stdout else ""
            pytest.fail(f"redis-server refused {conf.name}:\n{out}")
        try:
            client.ping()
            return process, client
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server did not answer within 20 s")
            time.sleep(0.05)


def _localised(text: str, folder: Path, instance: Path) -> str:
    """The configuration with its `dir` and `include` pointing into `folder` and what the containers mount at
    /etc/fedlora-store/redis (the instance's ACL file and TLS files that `fedlora.store_users` writes) at the
    instance's own folder."""
    text = re.sub(r"^dir .*$", f"dir {folder}", text, flags=re.M)
    text = text.replace("/etc/fedlora-store/redis/", f"{instance / 'redis'}/")
    return re.sub(r"^include .*/redis\.conf$", f"include {folder}/redis.conf", text, flags=re.M)


def redis_configurations() -> dict[str, str]:
    redis_map = k8s_find("ConfigMap", "fedlora-redis")
    assert redis_map is not None
    return {
        "compose": (DEPLOY / "redis-compose.conf").read_text(),
        "k8s": redis_map["data"]["redis.conf"],
    }


@pytest.mark.parametrize("instance", ["cloud", "edge-north"])
@pytest.mark.parametrize("which", ["compose", "k8s"])
def test_redis_configuration_loads_with_the_durability_of_redis_conf(which, instance, tmp_path):
    """Each tier's Redis (the cloud's, an edge's) loads the configuration with its own ACL file, which knows
    its operator and that tier's user only, and serves TLS only: no plain port, and a client certificate of
    the federation's CA asked of every client (`fedlora.store_certs`' files, as store-users writes them)."""
    issued = store_users.issue_store_users(tmp_path / "store-users", ["edge-north"])
    users = issued.cloud if instance == "cloud" else issued.edges[instance]
    store = "cloud" if instance == "cloud" else instance
    files = issue_store_certificates(
        {store: (users.folder, users.service.name)}, new_authority("test CA"), federation_id="staging"
    )[store]
    # deploy/redis.conf as shipped: Redis changes into a `dir` as it reads the line, so one there that does
    # not exist in the container stopped every Redis of the compose file before its own `dir` was read.
    (tmp_path / "redis.conf").write_text((DEPLOY / "redis.conf").read_text())
    conf = tmp_path / f"{which}.conf"
    conf.write_text(_localised(redis_configurations()[which], tmp_path, users.folder))
    process, client = _start_redis(conf, tmp_path, users.admin, files.admin)
    try:
        settings = {key: client.config_get(key)[key] for key in ("appendonly", "appendfsync", "save")}
        settings["maxmemory-policy"] = client.config_get("maxmemory-policy")["maxmemory-policy"]
        maxmemory = int(client.config_get("maxmemory")["maxmemory"])
        assert settings == {
            "appendonly": "yes",
            "appendfsync": "always",
            "save": "",
            "maxmemory-policy": "noeviction",
        }
        tls = {key: client.config_get(key)[key] for key in ("port", "tls-auth-clients")}
        assert tls == {"port": "0", "tls-auth-clients": "yes"}, (
            f"{which}: TLS only, client certificates asked"
        )
        # A connection that shows a certificate but has not logged in is refused (a raw socket: redis-py
        # would retry for seconds), and the tiers' users are the ACL file's.
        port = client.connection_pool.connection_kwargs["port"]
        context = ssl.create_default_context(cafile=str(files.service.ca_file))
        context.load_cert_chain(str(files.service.cert_file), str(files.service.key_file))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as stranger,
        ):
            stranger.sendall(b"PING\r\n")
            assert stranger.recv(64).startswith(b"-NOAUTH")
        assert set(client.acl_users()) == {"default", store_users.ADMIN_USER, users.service.name}
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
    assert maxmemory > 0, f"{which}: each instance needs its own maxmemory"
    binds = re.findall(r"^bind (.*)$", redis_configurations()[which], flags=re.M)
    assert binds and "127.0.0.1" not in binds[-1], f"{which}: Redis must listen beyond loopback"
