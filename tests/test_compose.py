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
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"

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


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        logical.append(buf)
        buf = ""
    if buf:
        logical.append(buf)
    out = []
    for line in logical:
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


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
    assert {"qdrant", "router", "indexer"} <= set(services)


def test_qdrant_image_pinned_to_exact_version(services: dict[str, Any]) -> None:
    image = services["qdrant"].get("image", "")
    repo, sep, tag = image.rpartition(":")
    assert sep and repo == "qdrant/qdrant", f"unexpected qdrant image {image!r}"
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", tag)
    assert m, f"qdrant image must be pinned to an exact vX.Y.Z tag, got {tag!r}"
    # collection metadata needs Qdrant >= 1.16
    assert tuple(map(int, m.groups())) >= (1, 16, 0), f"qdrant {tag} is older than 1.16"


def test_qdrant_has_healthcheck_and_persistent_storage(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    qdrant = services["qdrant"]
    test = qdrant.get("healthcheck", {}).get("test")
    assert test and test != ["NONE"], "qdrant needs a healthcheck for service_healthy"
    # The qdrant image ships no curl/wget; don't let one creep in.
    flat = " ".join(test) if isinstance(test, list) else test
    assert not re.search(r"\b(curl|wget)\b", flat), "qdrant image has no curl/wget"
    vols = qdrant.get("volumes", [])
    assert any(str(v).split(":")[:2] == ["qdrant_storage", "/qdrant/storage"] for v in vols)
    assert "qdrant_storage" in (compose.get("volumes") or {})


@pytest.mark.parametrize("name", ["router", "indexer"])
def test_depends_on_healthy_qdrant(services: dict[str, Any], name: str) -> None:
    deps = services[name].get("depends_on")
    assert isinstance(deps, dict), f"{name}.depends_on must use the long form with a condition"
    assert deps.get("qdrant", {}).get("condition") == "service_healthy"


@pytest.mark.parametrize("name", ["router", "indexer"])
def test_store_points_at_qdrant_service(services: dict[str, Any], name: str) -> None:
    env = services[name].get("environment")
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    assert env.get("QROUTE_STORE__LOCATION") == "http://qdrant:6333"


def test_router_binds_all_interfaces_and_publishes_ports(services: dict[str, Any]) -> None:
    router = services["router"]
    env = router.get("environment", {})
    assert str(env.get("QROUTE_SERVER__BIND", "")).startswith("0.0.0.0:"), (
        "inside a container the router must not bind to loopback only"
    )
    published = {_container_port(p) for p in router.get("ports", [])}
    assert {50051, 9100} <= published
    assert router.get("restart") == "unless-stopped"


def test_router_healthcheck_uses_qroute_health(services: dict[str, Any]) -> None:
    test = services["router"].get("healthcheck", {}).get("test")
    assert isinstance(test, list) and test[0] == "CMD"
    assert test[1:3] == ["qroute", "health"]


def test_indexer_is_one_shot_under_a_profile(services: dict[str, Any]) -> None:
    indexer = services["indexer"]
    assert indexer.get("profiles"), "indexer must not start with a plain `docker compose up`"
    assert "index" in indexer["profiles"]
    assert str(indexer.get("restart", "no")) == "no"


def test_no_service_other_than_indexer_is_profiled(services: dict[str, Any]) -> None:
    profiled = {name for name, svc in services.items() if svc.get("profiles")}
    assert profiled == {"indexer"}


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


def test_built_services_share_one_image(services: dict[str, Any]) -> None:
    images = {svc.get("image") for svc in services.values() if "build" in svc}
    assert len(images) == 1, f"router and indexer should share one image tag, got {images}"


def test_hf_cache_volume_matches_dockerfile_user_home(services: dict[str, Any]) -> None:
    instructions = _dockerfile_instructions()
    users = [args for instr, args in instructions if instr == "USER"]
    assert users, "Dockerfile must switch to a non-root user"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), "Dockerfile must not run as root"
    expected = f"/home/{user}/.cache/huggingface"
    for name in ("router", "indexer"):
        vols = [str(v) for v in services[name].get("volumes", [])]
        assert f"hf_cache:{expected}" in vols, f"{name} must mount hf_cache at {expected}"


def test_dockerfile_basics() -> None:
    instructions = _dockerfile_instructions()
    froms = [args for instr, args in instructions if instr == "FROM"]
    assert froms and froms[0].startswith("python:3.11-slim")
    assert ("WORKDIR", "/app") in instructions
    exposed = {
        int(p.split("/")[0])
        for instr, args in instructions
        if instr == "EXPOSE"
        for p in args.split()
    }
    assert {50051, 9100} <= exposed
    cmd = [args for instr, args in instructions if instr == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["qroute", "serve"]
    runs = " ".join(args for instr, args in instructions if instr == "RUN")
    # The CPU torch arguments are the Makefile's (scripts/pip-torch-args, whose
    # resolution tests/test_install.py checks).
    torch = runs.find("pip install $(grep -v '^#' /tmp/pip-torch-args)")
    project = runs.find("pip install .")
    assert 0 <= torch < project, "CPU torch must be installed before the project"
    assert ("COPY", "scripts/pip-torch-args /tmp/pip-torch-args") in instructions


def test_dockerfile_copies_what_compose_references(services: dict[str, Any]) -> None:
    """Paths under /app used by compose commands must come from a COPY."""
    copied = []
    for instr, args in _dockerfile_instructions():
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
