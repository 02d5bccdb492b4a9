"""The embedded store keys each row's point by an integer (``edge.point_key``), which
Qdrant Edge reads back cheaply, and still reads the versions an earlier release keyed by
the row id (a UUID); rows whose keys collide never publish a version a point short."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from qroute_indexer import run_index

from qroute.config import LexicalSettings, Settings
from qroute.embedding.lexical import LexicalEncoder, Lexicon
from qroute.errors import IndexWriteError
from qroute.store import Point, edge
from qroute.store.embedded import EmbeddedStore
from qroute.table import row_id
from qroute.testing import BagOfWordsEncoder

ROWS = [
    (f"{topic} {word} question {i}", topic)
    for topic, word in (("finance", "money"), ("movie", "film"), ("weather", "rain"))
    for i in range(5)
]


async def _version(store: EmbeddedStore) -> tuple[str, list[str]]:
    """A published hybrid version of ROWS (two-dimensional dense vectors)."""
    encoder = LexicalEncoder(LexicalSettings())
    lexicon = Lexicon.count(encoder.terms(text) for text, _ in ROWS)
    version = await store.create_version(2, {"labels": []}, sparse=True)
    ids = [row_id(text, label) for text, label in ROWS]
    await store.upsert(
        version,
        [
            Point(
                ids[i],
                [1.0, float(i)],
                {"text": text, "label": label},
                sparse=lexicon.vector(encoder.terms(text)),
            )
            for i, (text, label) in enumerate(ROWS)
        ],
    )
    await store.publish(version)
    return version, ids


def _point_ids(store: EmbeddedStore, version: str) -> list[object]:
    from qdrant_edge import EdgeShard, ScrollRequest

    shard = EdgeShard.load(str(store._root / version))
    try:
        records, _ = shard.scroll(ScrollRequest(limit=100, with_payload=False, with_vector=False))
        return [r.id for r in records]
    finally:
        shard.close()


async def _reads_back(store: EmbeddedStore, version: str, ids: list[str]) -> None:
    """Every way of reading a version finds the rows under their row ids."""
    sparse = LexicalEncoder(LexicalSettings())
    lexicon = Lexicon.count(sparse.terms(text) for text, _ in ROWS)
    query = lexicon.vector(sparse.terms("film question"))
    [groups] = await store.search_groups(version, [query], groups=3, group_size=2, labels=[None])
    assert groups[0].label == "movie"
    assert {h.row_id for g in groups for h in g.hits} <= set(ids)
    [hits] = await store.search(version, [[1.0, 2.0]], 3)
    assert all(h.row_id in ids for h in hits)
    [candidates] = await store.search_fused(version, [[1.0, 2.0]], [query], limit=4, labels=[None])
    assert candidates and all(c.hit.row_id in ids and c.lexical >= 0.0 for c in candidates)
    vectors = await store.vectors(version, [ids[3], row_id("not a row", "movie")])
    assert vectors == {ids[3]: pytest.approx([1.0 / 10**0.5, 3.0 / 10**0.5], abs=1e-4)}


async def test_points_are_keyed_by_integers_and_hits_keep_their_row_ids(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "store", "keys")
    version, ids = await _version(store)
    await store.close()
    keys = _point_ids(store, version)
    assert sorted(keys) == sorted(edge.point_key(i) for i in ids)  # type: ignore[type-var]
    assert all(type(k) is int for k in keys)
    store = EmbeddedStore(tmp_path / "store", "keys")
    await _reads_back(store, version, ids)
    await store.close()


async def test_a_version_keyed_by_row_ids_is_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How a release before point_key wrote its points: under the row id itself.
    store = EmbeddedStore(tmp_path / "store", "keys")
    with monkeypatch.context() as patch:
        patch.setattr(edge, "point_key", lambda row: row)
        version, ids = await _version(store)
    await store.close()
    assert {str(k) for k in _point_ids(store, version)} == set(ids)
    store = EmbeddedStore(tmp_path / "store", "keys")
    await _reads_back(store, version, ids)
    await store.close()


async def test_rows_whose_keys_collide_do_not_publish(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    table = tmp_path / "t.csv"
    with table.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([("text", "label"), *ROWS])
    good = await run_index(settings, table, encoder=BagOfWordsEncoder(), progress=False)
    # Two rows of one key: the second overwrites the first, and the count gate sees it.
    first, second = row_id(*ROWS[0]), row_id(*ROWS[1])
    real = edge.point_key
    monkeypatch.setattr(edge, "point_key", lambda row: real(first if row == second else row))
    with pytest.raises(IndexWriteError, match="count: 14 points in the index, 15 distinct rows"):
        await run_index(settings, table, encoder=BagOfWordsEncoder(), progress=False, full=True)
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    assert await store.current_version() == good.version
    await store.close()
