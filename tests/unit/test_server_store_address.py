"""Where the server store dials: the URL's port over REST, store.grpc_port over gRPC,
and the one that failed named in the error (no server needed: port 1 refuses at once)."""

from __future__ import annotations

import threading

import pytest

from qroute.config import StoreSettings
from qroute.errors import StoreUnavailable
from qroute.store import open_store


def _join_version_checks() -> None:
    # qdrant-client checks the server's version over REST in a thread of its own, and
    # warns there when nothing answers: expected here; let it end inside the test.
    for thread in threading.enumerate():
        if "_check_compatibility" in thread.name:
            thread.join(timeout=10)


@pytest.mark.parametrize(
    ("settings", "dialled"),
    [
        ({"prefer_grpc": False}, "127.0.0.1:1 (REST"),
        ({"prefer_grpc": True, "grpc_port": 2}, "127.0.0.1:2 (gRPC"),
    ],
)
@pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")
async def test_an_unreachable_server_is_reported_with_the_port_dialled(
    settings: dict[str, object], dialled: str
) -> None:
    store = open_store(StoreSettings(location="http://127.0.0.1:1", timeout_s=1, **settings))
    try:
        with pytest.raises(StoreUnavailable, match="unreachable") as info:
            await store.current_version()
    finally:
        await store.close()
        _join_version_checks()
    assert f"Qdrant at {dialled}" in str(info.value)


def test_the_grpc_port_and_transport_are_settings() -> None:
    default = StoreSettings(location="http://qdrant:7000")
    assert (default.prefer_grpc, default.grpc_port) == (True, 6334)
    assert default.endpoint == "qdrant:6334 (gRPC, store.grpc_port)"
    rest = StoreSettings(location="http://qdrant:7000", prefer_grpc=False)
    assert rest.endpoint.startswith("qdrant:7000 (REST")
