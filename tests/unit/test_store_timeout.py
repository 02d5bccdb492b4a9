"""``store.timeout_s`` below a second is a deadline the client keeps: qdrant-client takes
whole seconds, and truncating 0.5 to 0 made every call fail at once as "unreachable"."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qroute.config import StoreSettings
from qroute.store import open_store


class _SlowQdrant(BaseHTTPRequestHandler):
    """Answers every GET as Qdrant would with no aliases, after 0.2 s."""

    def do_GET(self) -> None:
        time.sleep(0.2)
        if self.path.startswith("/aliases"):
            body = {"result": {"aliases": []}, "status": "ok", "time": 0.0}
        else:
            body = {"title": "qdrant", "version": "1.20.0"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_qdrant() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowQdrant)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_a_sub_second_timeout_still_waits_for_the_answer(slow_qdrant: str) -> None:
    store = open_store(StoreSettings(location=slow_qdrant, timeout_s=0.5, prefer_grpc=False))
    try:
        assert await store.current_version() is None
    finally:
        await store.close()
        # qdrant-client checks the server's version in a thread of its own: let it end
        # inside the test.
        for thread in threading.enumerate():
            if "_check_compatibility" in thread.name:
                thread.join(timeout=10)
