"""A dense grouped search on a published embedded version groups by the version's labels,
read once, instead of reading every returned point's payload: the same groups as
grouping by payloads, with the payloads of only the hits it keeps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge

from qroute.store import Point, edge
from qroute.store.embedded import EmbeddedStore
from qroute.table import row_id

DIM = 6


@pytest.mark.parametrize(
    ("groups", "group_size", "allowed"), [(4, 3, None), (12, 2, None), (3, 5, ["l1", "l2", "l5"])]
)
async def test_the_same_groups_as_by_payloads_reading_only_the_kept_ones(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    groups: int,
    group_size: int,
    allowed: list[str] | None,
) -> None:
    rng = np.random.default_rng(11)
    rows = [(f"text {i}", f"l{i % 9}") for i in range(270)]
    store = EmbeddedStore(tmp_path / "store", "dense")
    version = await store.create_version(DIM, {"labels": []}, sparse=False)
    await store.upsert(
        version,
        [
            Point(
                row_id(text, label), rng.normal(size=DIM).tolist(), {"text": text, "label": label}
            )
            for text, label in rows
        ],
    )
    await store.publish(version)
    await store.open(version)  # the label map is read here, as a router's load probe does
    queries = [rng.normal(size=DIM).tolist() for _ in range(15)]
    labels = [allowed] * len(queries)
    reader = await store._acquire(version)
    try:
        by_payloads = edge.grouped(reader.shard, queries, groups, group_size, labels)
    finally:
        await store._release(version, reader)

    asked: list[Any] = []
    real: Callable[..., Any] = qdrant_edge.QueryRequest

    def recording(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("with_payload"))
        return real(*args, **kwargs)

    monkeypatch.setattr(qdrant_edge, "QueryRequest", recording)
    found = await store.search_groups(
        version, queries, groups=groups, group_size=group_size, labels=labels
    )
    await store.close()
    assert asked and not any(asked)  # no search read a payload
    assert found == by_payloads
    for query in found:
        assert len(query) == min(groups, 9 if allowed is None else len(allowed))
        for group in query:
            assert all(h.label == group.label and h.text.startswith("text ") for h in group.hits)
