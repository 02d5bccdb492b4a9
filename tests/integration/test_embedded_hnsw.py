"""A published embedded version past Qdrant's indexing threshold is searched through
its HNSW graph, not by brute force: Qdrant Edge builds the graph only when asked, so
publishing asks."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from qroute.store import Point
from qroute.store.embedded import EmbeddedStore

# Just past Qdrant's default indexing threshold (10,000 KB of vectors) with the fewest
# points, so the graph takes seconds to build.
_POINTS, _DIM = 3000, 1024


async def test_publish_builds_the_hnsw_graph(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((_POINTS, _DIM)).astype(np.float32)
    store = EmbeddedStore(tmp_path / "store", "hnsw")
    version = await store.create_version(_DIM, {"labels": []})
    for start in range(0, _POINTS, 500):
        await store.upsert(
            version,
            [
                Point(
                    str(uuid.uuid5(uuid.NAMESPACE_OID, str(start + i))), v.tolist(), {"label": "x"}
                )
                for i, v in enumerate(vectors[start : start + 500])
            ],
        )
    await store.publish(version)
    await store.open(version)
    reader = await store._acquire(version)
    try:
        info = reader.shard.info()
    finally:
        await store._release(version, reader)
    assert info.points_count == _POINTS
    assert info.indexed_vectors_count == _POINTS
    [hits] = await store.search(version, [vectors[7].tolist()], 1)
    assert hits[0].row_id == str(uuid.uuid5(uuid.NAMESPACE_OID, "7"))
    await store.close()
