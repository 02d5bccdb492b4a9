"""Generate the Python stubs for proto/qroute/v1/*.proto: the server's copy into
qroute/v1/ and the client distribution's copy into clients/python/qroute_client/v1/.

Run with the pinned grpcio-tools (see pyproject's ``dev`` extra):
``python proto/generate.py [OUT_DIR]``. OUT_DIR defaults to the repository
root; tests pass a temporary directory and diff the result against the
committed stubs.

Both copies come from one protoc run. The client's copy imports its own package
(``qroute_client.v1``), so the client installs without qroute; the wire format and
the descriptors (file ``qroute/v1/router.proto``, package ``qroute.v1``) are the
same, and protobuf accepts the identical file twice when both load in one process.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
SERVER_STUBS = Path("qroute", "v1")
CLIENT_STUBS = Path("clients", "python", "qroute_client", "v1")
# What changes in the client's copy: Python module paths only, never the proto package
# (``qroute.v1.ClassifyRequest``, ``/qroute.v1.RouterService/Classify`` stay as they are).
CLIENT_REWRITES = {
    "router_pb2.py": [("'qroute.v1.router_pb2'", "'qroute_client.v1.router_pb2'")],
    "router_pb2_grpc.py": [
        ("from qroute.v1 import router_pb2", "from qroute_client.v1 import router_pb2"),
        ("code in qroute/v1/router_pb2_grpc.py", "code in qroute_client/v1/router_pb2_grpc.py"),
    ],
}


def _protoc(out_dir: Path) -> None:
    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")


def generate(out_dir: Path) -> list[Path]:
    """Write both copies under ``out_dir``; returns the files written."""
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        _protoc(Path(scratch))
        stubs = sorted(Path(scratch, "qroute", "v1").glob("router_pb2*"))
        for target, rewrites in ((SERVER_STUBS, {}), (CLIENT_STUBS, CLIENT_REWRITES)):
            (out_dir / target).mkdir(parents=True, exist_ok=True)
            for stub in stubs:
                text = stub.read_text(encoding="utf-8")
                for old, new in rewrites.get(stub.name, []):
                    if old not in text:
                        raise SystemExit(f"{stub.name}: {old!r} not found; update CLIENT_REWRITES")
                    text = text.replace(old, new)
                dest = out_dir / target / stub.name
                dest.write_text(text, encoding="utf-8")
                written.append(dest)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(target):
        print(path)
