"""Static checks of the Kubernetes base in deploy/kubernetes (no cluster, no kustomize
binary): every manifest parses and validates against the Kubernetes JSON schemas that
kubernetes-validate ships, the base is rendered from kustomization.yaml's lists, and
the probes, ports, paths, users and environment agree with the image and with qroute's
settings."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from deploy_env import ROOT, dockerfile_env, dockerfile_instructions, settings_field
from ruamel.yaml import YAML

from qroute.config import Settings, load_settings

BASE = ROOT / "deploy" / "kubernetes"
SECRET_TEMPLATE = BASE / "secret.example.yaml"
# The oldest Kubernetes with gRPC probes on by default, and the newest schemas shipped.
K8S_VERSIONS = ["1.25", kubernetes_validate.utils.latest_version()]


def _documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in YAML(typ="safe", pure=True).load_all(fh) if doc is not None]


def _kustomization() -> dict[str, Any]:
    (kustomization,) = _documents(BASE / "kustomization.yaml")
    return kustomization


def render() -> list[dict[str, Any]]:
    """What `kustomize build deploy/kubernetes` yields for this base: its resources, and
    the ConfigMaps of its configMapGenerator (unhashed names, as the base asks)."""
    kustomization = _kustomization()
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True
    objects = [doc for name in kustomization["resources"] for doc in _documents(BASE / name)]
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in generator["files"]:
            key, _, source = entry.rpartition("=")
            source = source or entry
            data[key or Path(source).name] = (BASE / source).read_text(encoding="utf-8")
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    return objects


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render()


def _one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {}
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            specs[o["kind"]] = o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            specs["CronJob"] = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def _image_port(setting: str) -> int:
    return int(dockerfile_env()[setting].rsplit(":", 1)[1])


def _settings(
    objects: list[dict[str, Any]],
    container: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Settings:
    """The Settings the container starts with: the image's ENV, then its env (secret
    values stand in as placeholders), then the file from the ConfigMap it mounts."""
    env = dict(dockerfile_env())
    for name, item in _env(container).items():
        env[name] = item.get("value", "placeholder")
    for name in list(os.environ):
        if name.startswith("QROUTE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("QROUTE_"):
            monkeypatch.setenv(name, value)
    config = Path(env["QROUTE_CONFIG"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config.parent))
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    pod = next(s for s in _pod_specs(objects).values() if container in s["containers"])
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    data = _one(objects, "ConfigMap", volume["configMap"]["name"])["data"]
    path = tmp_path / config.name
    path.write_text(data[config.name], encoding="utf-8")
    return load_settings(path)


# --------------------------------------------------------------------------- parsing


def test_every_manifest_parses() -> None:
    files = sorted(BASE.glob("*.yaml"))
    assert files
    for path in files:
        assert _documents(path), f"{path.name} is empty"


def test_kustomization_lists_every_manifest() -> None:
    """A manifest left out of the list would silently never be applied."""
    kustomization = _kustomization()
    listed = set(kustomization["resources"])
    listed |= {f for g in kustomization.get("configMapGenerator", []) for f in g["files"]}
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    # The Secret template stays out on purpose: applying it would overwrite real keys.
    assert on_disk - listed == {SECRET_TEMPLATE.name}
    assert listed <= on_disk


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(
    objects: list[dict[str, Any]], version: str
) -> None:
    for obj in [*objects, *_documents(SECRET_TEMPLATE)]:
        # strict: an unknown (e.g. misspelt) field is an error, not silently dropped.
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_rejects_a_misspelt_field(objects: list[dict[str, Any]]) -> None:
    bad = copy.deepcopy(_one(objects, "Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_the_secret_template_holds_no_secret() -> None:
    (secret,) = _documents(SECRET_TEMPLATE)
    assert secret["stringData"]["qdrant-api-key"].startswith("REPLACE")
    assert "data" not in secret


# --------------------------------------------------------------------------- agreement


def test_every_qroute_variable_is_a_setting(objects: list[dict[str, Any]]) -> None:
    for spec in _pod_specs(objects).values():
        for container in spec["containers"]:
            for name in _env(container):
                if name.startswith("QROUTE_") and name != "QROUTE_CONFIG":
                    settings_field(name)


def test_router_probes_and_ports_are_the_routers(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (container,) = _pod_specs(objects)["Deployment"]["containers"]
    settings = _settings(objects, container, monkeypatch, tmp_path)
    grpc_port = int(settings.server.bind.rsplit(":", 1)[1])
    assert settings.server.bind.startswith("0.0.0.0:")
    assert settings.server.metrics_host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": grpc_port, "metrics": settings.server.metrics_port}
    assert grpc_port == _image_port("QROUTE_SERVER__BIND")
    # Ready only when the gRPC health service says SERVING (an index is published).
    assert container["readinessProbe"]["grpc"]["port"] == grpc_port
    assert "service" not in container["readinessProbe"]["grpc"]
    # Alive is not ready: the health service says NOT_SERVING until the first index.
    assert "grpc" not in container["livenessProbe"]
    assert container["livenessProbe"]["tcpSocket"]["port"] == grpc_port


def test_services_and_budget_select_the_routers(objects: list[dict[str, Any]]) -> None:
    deployment = _one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    names = {p["name"] for p in container["ports"]}
    services = [o for o in objects if o["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"qroute", "qroute-headless"}
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
    budget = _one(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] > budget["spec"]["maxUnavailable"]


def test_pods_run_as_the_images_user(objects: list[dict[str, Any]]) -> None:
    users = [args for instr, args in dockerfile_instructions() if instr == "USER"]
    uid, _, gid = users[-1].partition(":")
    hf_home = dockerfile_env()["HF_HOME"]
    for kind, spec in _pod_specs(objects).items():
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid)), kind
        for container in spec["containers"]:
            assert container["resources"]["limits"]["memory"], f"{kind} has no memory limit"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            # The only writable places on a read-only root: the model cache and /tmp.
            assert {hf_home, "/tmp"} <= mounts, kind


def test_secret_references_exist_in_the_template(objects: list[dict[str, Any]]) -> None:
    (secret,) = _documents(SECRET_TEMPLATE)
    keys = set(secret["stringData"])
    for kind, spec in _pod_specs(objects).items():
        for container in spec["containers"]:
            for item in _env(container).values():
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"], kind
                    assert ref["key"] in keys, f"{kind}: {ref['key']} is not in the Secret"
        for volume in spec["volumes"]:
            if "secret" in volume:
                assert {i["key"] for i in volume["secret"]["items"]} <= keys


@pytest.mark.parametrize("kind", ["Deployment", "Job", "CronJob"])
def test_config_comes_from_the_configmap(
    objects: list[dict[str, Any]], kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (container,) = _pod_specs(objects)[kind]["containers"]
    store = _settings(objects, container, monkeypatch, tmp_path).store
    assert store.is_server and store.api_key is not None
    assert (store.shard_number, store.replication_factor) == (3, 2)
    assert store.write_consistency_factor == store.replication_factor


def test_indexer_job_and_cronjob_run_the_same_pod(objects: list[dict[str, Any]]) -> None:
    job = _one(objects, "Job")
    cron = _one(objects, "CronJob")
    assert job["spec"] == cron["spec"]["jobTemplate"]["spec"]
    # Two indexers on one collection would remove each other's drafts.
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["qroute", "index"]
    assert container["image"].split(":")[0] == "qroute-indexer"


@pytest.mark.parametrize("config", ["deploy/compose/qroute.yaml", "deploy/kubernetes/qroute.yaml"])
def test_deploy_configs_route_like_the_example(config: str) -> None:
    """One set of routing values: the deploy configs differ from examples/qroute.yaml
    only in where they store and listen."""
    example = YAML(typ="safe", pure=True).load(
        (ROOT / "examples" / "qroute.yaml").read_text(encoding="utf-8")
    )
    deployed = YAML(typ="safe", pure=True).load((ROOT / config).read_text(encoding="utf-8"))
    for data in (example, deployed):
        data.pop("store", None)
        data.pop("server", None)
    assert deployed == example


def test_routers_read_their_tokens_from_the_secret(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """server.auth.tokens_file is the file the Secret's `tokens` key is mounted as."""
    spec = _pod_specs(objects)["Deployment"]
    (container,) = spec["containers"]
    server = _settings(objects, container, monkeypatch, tmp_path).server
    assert server.auth.tokens_file is not None
    # Reflection is off under auth unless turned on.
    assert not server.reflection_enabled
    mounted = {}
    for volume in spec["volumes"]:
        if "secret" in volume:
            mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
            for item in volume["secret"]["items"]:
                mounted[item["key"]] = f"{mount['mountPath']}/{item['path']}"
    assert mounted["tokens"] == server.auth.tokens_file
