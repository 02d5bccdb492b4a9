"""The pages that introduce RouterService name every RPC it has: a client author reads
the first paragraph of docs/clients.md or docs/serving.md, not the proto."""

from __future__ import annotations

from pathlib import Path

import pytest

from qroute.v1 import router_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
RPCS = [m.name for m in pb.DESCRIPTOR.services_by_name["RouterService"].methods]


@pytest.mark.parametrize("page", ["clients.md", "serving.md"])
def test_the_introduction_names_every_rpc(page: str) -> None:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    # The first paragraph after the title.
    intro = text.split("\n\n")[1]
    missing = [rpc for rpc in RPCS if f"`{rpc}`" not in intro]
    assert not missing, f"docs/{page}'s first paragraph does not name {missing}"
