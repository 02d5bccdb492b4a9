"""The committed gRPC stubs are exactly what the pinned grpcio-tools makes of the proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(p.name for p in (tmp_path / "qroute" / "v1").iterdir())
    assert generated == ["router_pb2.py", "router_pb2.pyi", "router_pb2_grpc.py"]
    for name in generated:
        fresh = (tmp_path / "qroute" / "v1" / name).read_text(encoding="utf-8")
        committed = (ROOT / "qroute" / "v1" / name).read_text(encoding="utf-8")
        assert committed == fresh, f"qroute/v1/{name} is stale: run `python proto/generate.py`"
