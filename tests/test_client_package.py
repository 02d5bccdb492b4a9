"""qroute-client (clients/python) is a caller's whole dependency: grpcio, protobuf and two
small grpc packages, never the router's torch, transformers, Qdrant or matplotlib."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"
ALLOWED = {"grpcio", "protobuf", "grpcio-status", "grpcio-health-checking"}
# What a caller must never need (the router's own stack, and qroute itself).
BLOCKED = (
    "torch,transformers,sentence_transformers,qdrant_client,qdrant_edge,matplotlib,numpy,"
    "scipy,sklearn,pydantic,pydantic_settings,yaml,qroute,qroute_server,qroute_indexer"
)

USE = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"the client imported {name}")
            return None

    sys.meta_path.insert(0, Block())

    import asyncio
    import qroute_client

    with qroute_client.Client("127.0.0.1:1", timeout=2, max_attempts=1, token="t") as client:
        try:
            client.health()
        except qroute_client.Unavailable:
            pass

    async def main():
        async with qroute_client.AsyncClient("127.0.0.1:1", timeout=2, max_attempts=1) as c:
            try:
                await c.classify("x")
            except qroute_client.Unavailable:
                print("ok")

    asyncio.run(main())
    """
)


def test_the_client_declares_only_grpc_and_protobuf() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {
        dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"]
    }
    assert names == ALLOWED


def test_the_client_runs_without_the_router_stack() -> None:
    result = subprocess.run(
        [sys.executable, "-c", USE, BLOCKED],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(CLIENT)},
        cwd=CLIENT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.client_venv
def test_the_client_installs_alone_into_a_fresh_venv(tmp_path: Path) -> None:
    """`pip install clients/python` into an empty venv (about a minute: it fetches grpcio
    and protobuf; opt in with -m client_venv)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    subprocess.run([*pip, "install", "--quiet", str(CLIENT)], check=True, timeout=600)
    listed = subprocess.run(
        [*pip, "list", "--format=freeze"], check=True, capture_output=True, text=True
    ).stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert "qroute-client" in installed
    assert not installed & {"torch", "transformers", "qdrant-client", "matplotlib", "qroute"}
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import qroute_client; print(qroute_client.Client)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
