"""The committed gRPC stubs are exactly what the pinned grpcio-tools makes of the proto:
the server's copy (qroute/v1/) and the client distribution's (clients/python/qroute_client/v1/)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COPIES = [Path("qroute", "v1"), Path("clients", "python", "qroute_client", "v1")]


@pytest.mark.parametrize("copy", COPIES, ids=str)
def test_stubs_are_fresh(tmp_path: Path, copy: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(p.name for p in (tmp_path / copy).iterdir())
    assert generated == ["router_pb2.py", "router_pb2.pyi", "router_pb2_grpc.py"]
    for name in generated:
        fresh = (tmp_path / copy / name).read_text(encoding="utf-8")
        committed = (ROOT / copy / name).read_text(encoding="utf-8")
        assert committed == fresh, f"{copy}/{name} is stale: run `python proto/generate.py`"


def test_the_client_copy_imports_only_its_own_package() -> None:
    grpc_stub = (ROOT / COPIES[1] / "router_pb2_grpc.py").read_text(encoding="utf-8")
    assert "from qroute_client.v1 import router_pb2" in grpc_stub
    assert "from qroute.v1" not in grpc_stub
    # The wire names stay those of qroute.v1.
    assert "'/qroute.v1.RouterService/Classify'" in grpc_stub


@pytest.mark.parametrize("first", ["qroute", "qroute_client"])
def test_both_copies_load_in_one_process(first: str) -> None:
    """Both define the file qroute/v1/router.proto in protobuf's default pool: the
    identical descriptor is accepted, whichever loads first, and messages interoperate."""
    second = {"qroute": "qroute_client", "qroute_client": "qroute"}[first]
    script = textwrap.dedent(
        f"""
        import {first}.v1.router_pb2 as a, {first}.v1.router_pb2_grpc
        import {second}.v1.router_pb2 as b, {second}.v1.router_pb2_grpc
        wire = a.ClassifyRequest(text="x", top_labels=2).SerializeToString()
        assert b.ClassifyRequest.FromString(wire).top_labels == 2
        assert a.DESCRIPTOR.serialized_pb == b.DESCRIPTOR.serialized_pb
        print("ok")
        """
    )
    path = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
