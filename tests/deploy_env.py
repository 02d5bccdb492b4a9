"""Shared by tests/test_compose.py and tests/test_deploy.py: what the deploy files'
environment variables mean to qroute."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from qroute.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"

# QROUTE_* variables that are not Settings fields (qroute.config.config_file reads it).
NOT_SETTINGS = {"QROUTE_CONFIG"}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def settings_field(name: str) -> tuple[str, ...]:
    """``QROUTE_A__B`` -> ``("a", "b")``, ``QROUTE_A__B__C`` -> ``("a", "b", "c")``; fails
    unless Settings has that section and (nested) field (pydantic-settings would otherwise
    ignore or reject the variable at start, far from the manifest that set it)."""
    assert name.startswith("QROUTE_"), f"{name} is not a qroute variable"
    parts = name.removeprefix("QROUTE_").lower().split("__")
    assert len(parts) >= 2, f"{name}: expected QROUTE_<SECTION>__<FIELD>"
    model: Any = Settings
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "Settings"
        assert isinstance(model, type) and issubclass(model, BaseModel), f"{name}: {where}?"
        if depth == 0:
            assert part in model.model_fields, f"{name}: Settings has no section {part!r}"
        else:
            assert part in model.model_fields, f"{name}: settings section {where} has no {part!r}"
        model = model.model_fields[part].annotation
    return tuple(parts)


def qroute_variables(env: dict[str, Any]) -> list[str]:
    return [name for name in env if name.startswith("QROUTE_") and name not in NOT_SETTINGS]


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${VAR}`` / ``${VAR:?message}`` / ``${VAR:-default}``, from ``variables``."""

    def one(match: re.Match[str]) -> str:
        assert match.group(1) in variables, f"{value}: {match.group(1)} is not defined"
        return variables[match.group(1)]

    return _INTERPOLATION.sub(one, value)


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def dockerfile_instructions() -> list[tuple[str, str]]:
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


def dockerfile_env(stage: str = "router") -> dict[str, str]:
    """ENV of a build stage (its own and its parents'), ``KEY=value`` pairs only."""
    env: dict[str, str] = {}
    stages: dict[str, dict[str, str]] = {}
    for number, (instr, args) in enumerate(dockerfile_instructions()):
        if instr == "FROM":
            base, _, name = args.partition(" AS ")
            env = dict(stages.get(base.strip(), {}))
            stages[name.strip() or f"unnamed-{number}"] = env
        elif instr == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return stages[stage]
