"""Static checks of docker-compose.yml (and the Dockerfile it builds).

No Docker engine is needed: the compose file is validated against the
official Compose Specification JSON schema, vendored at
tests/data/compose-spec.json (compose-spec/compose-spec, schema/compose-spec.json,
Apache-2.0; the copy shipped in check-jsonschema 0.39.0, sha256
d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64),
plus checks of the things a user of the stack would trip over.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from deploy_env import (
    dockerfile_env,
    dockerfile_instructions,
    interpolate,
    qroute_variables,
    read_env_file,
    settings_field,
)
from ruamel.yaml import YAML

from qroute.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"
ENV_EXAMPLE = ROOT / ".env.example"

QDRANT_NODES = ("qdrant", "qdrant-1", "qdrant-2", "qdrant-3")
ROUTERS = ("router", "router-cluster")
INDEXERS = ("indexer", "indexer-cluster")
QROUTE_SERVICES = ROUTERS + INDEXERS
CLUSTER = {"qdrant-1", "qdrant-2", "qdrant-3", "router-cluster", "indexer-cluster"}

# qroute subcommands the compose file may use, and the options it passes them.
QROUTE_SUBCOMMAND_OPTIONS = {
    "serve": {"--config"},
    "index": {"--config"},
    "health": {"--address"},
}


# --------------------------------------------------------------------------- helpers


def _load_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        data = YAML(typ="safe", pure=True).load(fh)
    assert isinstance(data, dict), "docker-compose.yml must be a YAML mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svcs = compose.get("services")
    assert isinstance(svcs, dict) and svcs, "no services defined"
    return svcs


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    # No format checker on purpose: compose durations ("5s") are not ISO 8601.
    return cls(schema)


def _argv(command: str | list[str]) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def _qroute_invocations(services: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Every `qroute ...` argv in the file (service commands and healthchecks)."""
    found = []
    for name, svc in services.items():
        if "command" in svc:
            found.append((f"{name}.command", _argv(svc["command"])))
        test = (svc.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
            argv = test[1:] if test[0] == "CMD" else shlex.split(" ".join(test[1:]))
            found.append((f"{name}.healthcheck", argv))
        elif isinstance(test, str):
            found.append((f"{name}.healthcheck", shlex.split(test)))
    return [(where, argv) for where, argv in found if argv and argv[0] == "qroute"]


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _running_settings(svc: dict[str, Any], stage: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Settings a service's container starts with: the image's ENV, then the
    service's environment (interpolated from .env.example), then its config file as
    mounted from the host."""
    variables = read_env_file(ENV_EXAMPLE)
    env = {**dockerfile_env(stage), **_env(svc)}
    for name in list(os.environ):
        if name.startswith("QROUTE_"):
            monkeypatch.delenv(name)
    for key, value in env.items():
        monkeypatch.setenv(key, interpolate(value, variables))
    return load_settings(_host_path(svc, env["QROUTE_CONFIG"]))


def _host_path(svc: dict[str, Any], container_path: str) -> Path:
    """The host file behind ``container_path`` through the service's bind mounts."""
    for vol in svc.get("volumes", []):
        source, target, *_ = str(vol).split(":")
        if source.startswith(".") and (container_path + "/").startswith(target + "/"):
            return COMPOSE_FILE.parent / source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not bind-mounted from the host")


def _container_port(spec: object) -> int:
    if isinstance(spec, dict):
        return int(spec["target"])
    # "[host_ip:][host_port:]container_port[/proto]"
    return int(str(spec).split("/")[0].rsplit(":", 1)[-1])


# --------------------------------------------------------------------------- schema


def test_vendored_schema_is_the_compose_spec() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema.get("title") == "Compose Specification"
    assert "service" in schema.get("$defs", schema.get("definitions", {}))


def test_compose_file_matches_compose_spec_schema(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "docker-compose.yml violates the compose spec:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def test_schema_validation_rejects_broken_files(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    """Guard against a schema/validator setup that accepts anything."""
    bad = copy.deepcopy(compose)
    bad["services"]["router"]["depends_on"] = {"qdrant": {"condition": "when_ready"}}
    assert not validator.is_valid(bad)

    bad = copy.deepcopy(compose)
    bad["services"]["qdrant"]["healtcheck"] = {"test": ["CMD", "true"]}  # typo'd key
    assert not validator.is_valid(bad)


def test_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "top-level `version:` is obsolete in the compose spec"


# --------------------------------------------------------------------------- services


def test_expected_services(services: dict[str, Any]) -> None:
    assert set(QDRANT_NODES + QROUTE_SERVICES) == set(services)


@pytest.mark.parametrize("name", QDRANT_NODES)
def test_qdrant_image_pinned_to_exact_version(services: dict[str, Any], name: str) -> None:
    image = services[name].get("image", "")
    repo, sep, tag = image.rpartition(":")
    assert sep and repo == "qdrant/qdrant", f"unexpected qdrant image {image!r}"
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", tag)
    assert m, f"qdrant image must be pinned to an exact vX.Y.Z tag, got {tag!r}"
    # collection metadata needs Qdrant >= 1.16
    assert tuple(map(int, m.groups())) >= (1, 16, 0), f"qdrant {tag} is older than 1.16"


@pytest.mark.parametrize("name", QDRANT_NODES)
def test_qdrant_has_healthcheck_and_persistent_storage(
    compose: dict[str, Any], services: dict[str, Any], name: str
) -> None:
    qdrant = services[name]
    test = qdrant.get("healthcheck", {}).get("test")
    assert test and test != ["NONE"], "qdrant needs a healthcheck for service_healthy"
    # The qdrant image ships no curl/wget; don't let one creep in.
    flat = " ".join(test) if isinstance(test, list) else test
    assert not re.search(r"\b(curl|wget)\b", flat), "qdrant image has no curl/wget"
    (volume,) = [str(v).split(":") for v in qdrant.get("volumes", [])]
    assert volume[1] == "/qdrant/storage"
    assert volume[0] in (compose.get("volumes") or {})


def _qdrants_of(name: str) -> set[str]:
    return {"qdrant-1", "qdrant-2", "qdrant-3"} if name in CLUSTER else {"qdrant"}


@pytest.mark.parametrize("name", QROUTE_SERVICES)
def test_depends_on_healthy_qdrant(services: dict[str, Any], name: str) -> None:
    deps = services[name].get("depends_on")
    assert isinstance(deps, dict), f"{name}.depends_on must use the long form with a condition"
    assert set(deps) == _qdrants_of(name)
    assert {dep.get("condition") for dep in deps.values()} == {"service_healthy"}


@pytest.mark.parametrize("name", QROUTE_SERVICES)
def test_store_points_at_qdrant_service(services: dict[str, Any], name: str) -> None:
    location = _env(services[name]).get("QROUTE_STORE__LOCATION", "")
    host = location.removeprefix("http://").split(":")[0]
    assert location == f"http://{host}:6333" and host in _qdrants_of(name)


@pytest.mark.parametrize("name", QROUTE_SERVICES + QDRANT_NODES)
def test_every_qroute_variable_is_a_setting(services: dict[str, Any], name: str) -> None:
    for variable in qroute_variables(_env(services[name])):
        settings_field(variable)


def test_variable_check_rejects_unknown_settings() -> None:
    with pytest.raises(AssertionError, match="no 'bnd'"):
        settings_field("QROUTE_SERVER__BND")
    with pytest.raises(AssertionError, match="no section"):
        settings_field("QROUTE_SERVERS__BIND")
    assert settings_field("QROUTE_STORE__REPLICATION_FACTOR") == ("store", "replication_factor")
    # Nested sections: server.auth.tokens_file.
    assert settings_field("QROUTE_SERVER__AUTH__TOKENS_FILE") == ("server", "auth", "tokens_file")
    with pytest.raises(AssertionError, match=r"server\.auth has no 'token'"):
        settings_field("QROUTE_SERVER__AUTH__TOKEN")


@pytest.mark.parametrize("name", ROUTERS)
def test_router_and_its_metrics_are_reachable_from_outside_the_container(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _running_settings(services[name], "router", monkeypatch)
    # A container's loopback is unreachable from the host and from other containers.
    assert settings.server.bind == "0.0.0.0:50051"
    assert settings.server.metrics_host == "0.0.0.0"
    assert settings.server.metrics_port == 9100
    published = {_container_port(p) for p in services[name].get("ports", [])}
    assert published == {50051, 9100}
    assert services[name].get("restart") == "unless-stopped"


@pytest.mark.parametrize("name", ROUTERS)
def test_routers_scale_without_clashing_host_ports(services: dict[str, Any], name: str) -> None:
    """`docker compose up --scale router=3`: a fixed host port fits only one replica."""
    router = services[name]
    assert "container_name" not in router
    for spec in router.get("ports", []):
        assert isinstance(spec, str), "short syntax: docker-compose v1 has no long host_ip"
        host_ip, host_port, _ = spec.split(":")
        assert host_port == "", f"{name}: {spec} fixes a host port"
        # No auth on the router yet: only this machine reaches the published ports.
        assert host_ip == "127.0.0.1"


@pytest.mark.parametrize("name", QDRANT_NODES)
def test_qdrant_ports_are_not_published(services: dict[str, Any], name: str) -> None:
    assert not services[name].get("ports"), f"{name}: Qdrant must not be published by default"


def test_one_api_key_for_qdrant_and_qroute(services: dict[str, Any]) -> None:
    keys = {name: _env(services[name]).get("QDRANT__SERVICE__API_KEY") for name in QDRANT_NODES}
    keys |= {name: _env(services[name]).get("QROUTE_STORE__API_KEY") for name in QROUTE_SERVICES}
    (key,) = set(keys.values())
    # Required: compose refuses to start with the variable unset, no silent keyless Qdrant.
    assert key and key.startswith("${QDRANT_API_KEY:?"), keys
    assert "QDRANT_API_KEY" in read_env_file(ENV_EXAMPLE)


def test_env_file_stays_out_of_git_and_the_image() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in (ROOT / ".dockerignore").read_text(encoding="utf-8").split()


@pytest.mark.parametrize("name", QROUTE_SERVICES)
def test_config_is_mounted_read_only_from_the_host(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The routers hot-reload a file the operator edits on the host."""
    svc = services[name]
    assert _env(svc).get("QROUTE_CONFIG") == "/etc/qroute/qroute.yaml"
    mounts = [str(v).split(":") for v in svc.get("volumes", [])]
    # A folder, not the file: an editor's rename-over would leave a file mount stale.
    assert ["./deploy/compose", "/etc/qroute", "ro"] in mounts
    assert _host_path(svc, "/etc/qroute/qroute.yaml").is_file()
    stage = "indexer" if name in INDEXERS else "router"
    assert _running_settings(svc, stage, monkeypatch).store.is_server


@pytest.mark.parametrize("name", QROUTE_SERVICES + QDRANT_NODES)
def test_resource_limits(services: dict[str, Any], name: str) -> None:
    limits = services[name].get("deploy", {}).get("resources", {}).get("limits", {})
    assert limits.get("memory") and limits.get("cpus"), f"{name} has no memory/cpu limit"


def test_cluster_nodes_form_one_raft_cluster(services: dict[str, Any]) -> None:
    for name in ("qdrant-1", "qdrant-2", "qdrant-3"):
        assert _env(services[name]).get("QDRANT__CLUSTER__ENABLED") == "true"
        argv = _argv(services[name]["command"])
        assert argv[0] == "./qdrant" and argv[argv.index("--uri") + 1] == f"http://{name}:6335"
        if name != "qdrant-1":
            assert argv[argv.index("--bootstrap") + 1] == "http://qdrant-1:6335"
    assert "--bootstrap" not in _argv(services["qdrant-1"]["command"])


@pytest.mark.parametrize("name", ["router-cluster", "indexer-cluster"])
def test_cluster_collections_are_sharded_and_replicated(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = "indexer" if name in INDEXERS else "router"
    store = _running_settings(services[name], stage, monkeypatch).store
    assert store.shard_number == 3 and store.replication_factor == 2
    # Every copy acknowledges each write before the version is published, so one copy
    # answering a search is enough, and the router keeps serving with a node down.
    assert store.write_consistency_factor == store.replication_factor
    assert store.read_consistency is None


def test_router_healthcheck_uses_qroute_health(services: dict[str, Any]) -> None:
    test = services["router"].get("healthcheck", {}).get("test")
    assert isinstance(test, list) and test[0] == "CMD"
    assert test[1:3] == ["qroute", "health"]


@pytest.mark.parametrize("name", INDEXERS)
def test_indexer_is_one_shot_under_a_profile(services: dict[str, Any], name: str) -> None:
    indexer = services[name]
    assert indexer.get("profiles"), "indexer must not start with a plain `docker compose up`"
    assert ("cluster" if name in CLUSTER else "index") in indexer["profiles"]
    assert str(indexer.get("restart", "no")) == "no"


def test_plain_up_starts_qdrant_and_router_only(services: dict[str, Any]) -> None:
    profiled = {name: svc.get("profiles") for name, svc in services.items() if svc.get("profiles")}
    assert profiled == {"indexer": ["index"]} | {name: ["cluster"] for name in CLUSTER}


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol.get("source") if isinstance(vol, dict) else str(vol).split(":")[0]
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} uses undeclared volume {source!r}"


# --------------------------------------------------------------------------- build / Dockerfile


def test_build_contexts_contain_a_dockerfile(services: dict[str, Any]) -> None:
    built = {name: svc["build"] for name, svc in services.items() if "build" in svc}
    assert {"router", "indexer"} <= set(built)
    for name, build in built.items():
        if isinstance(build, str):
            context, dockerfile = build, "Dockerfile"
        else:
            context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
        path = (COMPOSE_FILE.parent / context / dockerfile).resolve()
        assert path.is_file(), f"{name}: no Dockerfile at {path}"


def test_each_image_tag_is_one_build_target(services: dict[str, Any]) -> None:
    """The router image installs what serving needs; the indexer image adds [index]."""
    targets: dict[str, set[str]] = {}
    for name in QROUTE_SERVICES:
        svc = services[name]
        targets.setdefault(svc["image"], set()).add(svc["build"]["target"])
        assert svc["build"]["target"] == ("indexer" if name in INDEXERS else "router")
    assert all(len(t) == 1 for t in targets.values()), targets


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [args for instr, args in dockerfile_instructions() if instr == "USER"]
    assert users, "Dockerfile must switch to a non-root user"
    uid, _, gid = users[-1].partition(":")
    # Numeric: Kubernetes' runAsNonRoot can only check a numeric user.
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0


def test_hf_cache_volume_is_the_images_hf_home(services: dict[str, Any]) -> None:
    expected = dockerfile_env()["HF_HOME"]
    for name in QROUTE_SERVICES:
        vols = [str(v) for v in services[name].get("volumes", [])]
        assert f"hf_cache:{expected}" in vols, f"{name} must mount hf_cache at {expected}"


def test_dockerfile_basics() -> None:
    instructions = dockerfile_instructions()
    froms = [args for instr, args in instructions if instr == "FROM"]
    # Tag and digest: the same bytes on every build.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64} AS router", froms[0])
    assert froms[1:] == ["router AS indexer", "router"], "a plain build is the router"
    assert ("WORKDIR", "/app") in instructions
    exposed = {
        int(p.split("/")[0])
        for instr, args in instructions
        if instr == "EXPOSE"
        for p in args.split()
    }
    assert {50051, 9100} <= exposed
    cmd = [args for instr, args in instructions if instr == "CMD"]
    assert [json.loads(c)[:2] for c in cmd] == [["qroute", "serve"], ["qroute", "index"]]
    runs = " ".join(args for instr, args in instructions if instr == "RUN")
    # The CPU torch arguments are the Makefile's (scripts/pip-torch-args, whose
    # resolution tests/test_install.py checks).
    torch = runs.find("pip install $(grep -v '^#' /tmp/pip-torch-args)")
    project = runs.find('pip install ".[onnx]"')
    assert 0 <= torch < project, "CPU torch must be installed before the project"
    assert ("COPY", "scripts/pip-torch-args /tmp/pip-torch-args") in instructions
    # scikit-learn (index.head) only in the indexer's image.
    assert 'pip install ".[index]"' in runs and "[eval]" not in runs
    healthchecks = [args for instr, args in instructions if instr == "HEALTHCHECK"]
    assert healthchecks[-1] == "NONE"  # the indexer stage: no server to ask
    probe = json.loads(healthchecks[0].split("CMD", 1)[1])
    assert probe[:2] == ["qroute", "health"]


def test_no_build_leftovers_in_the_image() -> None:
    for instr, args in dockerfile_instructions():
        if instr == "RUN" and "pip install ." in args.replace('".', "."):
            assert "rm -rf build ./*.egg-info" in args, f"build/ and egg-info left by: {args}"


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    proc = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_copies_what_compose_references(services: dict[str, Any]) -> None:
    """Paths under /app used by compose commands must come from a COPY."""
    copied = []
    for instr, args in dockerfile_instructions():
        if instr == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            copied += [p.rstrip("/") for p in parts[:-1]]
    for where, argv in _qroute_invocations(services):
        for arg in argv:
            if arg.startswith("/app/"):
                top = arg[len("/app/") :].split("/")[0]
                assert top in copied, f"{where}: {arg} is not COPY'd into the image"


def test_files_referenced_by_compose_exist_in_repo(services: dict[str, Any]) -> None:
    referenced = sorted(
        {
            arg[len("/app/") :]
            for _, argv in _qroute_invocations(services)
            for arg in argv
            if arg.startswith("/app/")
        }
    )
    assert referenced
    missing = [rel for rel in referenced if not (ROOT / rel).is_file()]
    assert not missing, f"compose references files missing from the repo: {missing}"


# --------------------------------------------------------------------------- qroute CLI


def test_qroute_commands_name_known_subcommands(services: dict[str, Any]) -> None:
    invocations = _qroute_invocations(services)
    by_where = dict(invocations)
    assert by_where["router.command"][1] == "serve"
    assert by_where["indexer.command"][1] == "index"
    assert by_where["router.healthcheck"][1] == "health"
    for where, argv in invocations:
        assert len(argv) > 1 and argv[1] in QROUTE_SUBCOMMAND_OPTIONS, (
            f"{where}: unknown qroute subcommand in {argv}"
        )
        used = {a.split("=")[0] for a in argv[2:] if a.startswith("--")}
        unknown = used - QROUTE_SUBCOMMAND_OPTIONS[argv[1]]
        assert not unknown, f"{where}: unexpected options {unknown} for `qroute {argv[1]}`"


@pytest.mark.parametrize("subcommand", sorted(QROUTE_SUBCOMMAND_OPTIONS))
def test_installed_cli_accepts_compose_invocations(subcommand: str) -> None:
    """The CLI's help must list every option compose uses."""
    proc = subprocess.run(
        [sys.executable, "-m", "qroute", subcommand, "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"`qroute {subcommand} --help` failed:\n{proc.stderr}"
    for option in QROUTE_SUBCOMMAND_OPTIONS[subcommand]:
        assert option in proc.stdout, f"`qroute {subcommand}` has no {option} option"
