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


def test_every_node_example_loads_the_proto_as_the_tested_one_does() -> None:
    """@grpc/proto-loader without keepCase drops snake_case fields (top_labels) silently,
    and without defaults a 0 confidence reads as undefined: every page's Node example
    loads the proto with the options of the one the suite runs (docs/clients.md)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    loads = [
        (page.name, chunk.split(")", 1)[0])
        for page in pages
        for chunk in page.read_text(encoding="utf-8").split("loader.loadSync(")[1:]
    ]
    assert loads, "no Node example found"
    for page, options in loads:
        assert "keepCase: true" in options and "defaults: true" in options, (page, options)
