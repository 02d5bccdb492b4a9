"""The same behaviour from every VectorStore: the embedded Qdrant Edge store, and the
server store (over qdrant-client's in-memory mode here; over a real Qdrant server
when QDRANT_TEST_URL is set and the opt-in ``qdrant_server`` marker is selected)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from qroute.config import LexicalSettings
from qroute.embedding.lexical import LexicalEncoder, Lexicon
from qroute.errors import IndexWriteError, VersionMissing
from qroute.store import Point, VectorStore
from qroute.store.embedded import EmbeddedStore
from qroute.store.server import ServerStore

DIM = 8


def _points(n: int, seed: int = 0) -> list[Point]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM))
    return [
        Point(
            str(uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}-{i}")),
            v.tolist(),
            {"text": f"t{i}", "label": f"l{i % 3}", "row_id": f"r{i}"},
        )
        for i, v in enumerate(vectors)
    ]


@pytest.fixture(
    params=[
        "embedded",
        "server-memory",
        pytest.param("server", marks=pytest.mark.qdrant_server),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    collection = f"contract_{uuid.uuid4().hex[:8]}"
    built: VectorStore
    if request.param == "embedded":
        built = EmbeddedStore(tmp_path / "store", collection, drain_s=0.5)
    elif request.param == "server-memory":
        built = ServerStore(AsyncQdrantClient(location=":memory:"), collection)
    else:
        url = os.environ.get("QDRANT_TEST_URL")
        if not url:
            pytest.fail("the qdrant_server marker needs QDRANT_TEST_URL")
        built = ServerStore(AsyncQdrantClient(url=url, prefer_grpc=True), collection)
    yield built
    for version in await built.versions():
        if version != await built.current_version():
            await built.drop(version)
    await built.close()


async def test_nothing_is_published_at_first(store: VectorStore) -> None:
    assert await store.current_version() is None
    assert await store.versions() == []


async def test_write_publish_search(store: VectorStore) -> None:
    points = _points(30)
    version = await store.create_version(DIM, {"labels": ["l0", "l1", "l2"]})
    await store.upsert(version, points[:10])
    await store.upsert(version, points[10:])
    assert await store.count(version) == 30
    assert await store.current_version() is None  # written, not yet published

    assert await store.publish(version) is None
    assert await store.current_version() == version
    assert (await store.metadata(version))["labels"] == ["l0", "l1", "l2"]

    await store.open(version)
    results = await store.search(version, [points[7].vector, points[21].vector], 4)
    assert [len(r) for r in results] == [4, 4]
    first, second = results
    assert (first[0].text, first[0].label, first[0].row_id) == ("t7", "l1", "r7")
    assert first[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert second[0].text == "t21"
    assert [h.similarity for h in first] == sorted((h.similarity for h in first), reverse=True)


async def test_metadata_added_after_the_write_is_kept_with_the_rest(store: VectorStore) -> None:
    version = await store.create_version(DIM, {"labels": ["l0"], "rows": 3})
    await store.upsert(version, _points(3))
    await store.add_metadata(version, {"head": {"labels": ["l0", "l1"]}, "rows": 4})
    await store.publish(version)
    metadata = await store.metadata(version)
    assert metadata["labels"] == ["l0"]
    assert metadata["rows"] == 4
    assert metadata["head"] == {"labels": ["l0", "l1"]}
    assert metadata.get("published_at") or await store.published(version)


async def test_upsert_of_the_same_id_replaces(store: VectorStore) -> None:
    points = _points(5)
    version = await store.create_version(DIM, {})
    await store.upsert(version, points)
    await store.upsert(version, points)
    assert await store.count(version) == 5


async def test_republish_switches_and_old_version_can_be_dropped(store: VectorStore) -> None:
    v1 = await store.create_version(DIM, {"n": 1})
    await store.upsert(v1, _points(5, seed=1))
    await store.publish(v1)
    await store.open(v1)

    v2 = await store.create_version(DIM, {"n": 2})
    assert v2 != v1
    await store.upsert(v2, _points(6, seed=2))
    assert await store.publish(v2) == v1
    assert await store.current_version() == v2
    await store.open(v2)
    await store.drop(v1)
    assert await store.versions() == [v2]
    with pytest.raises(VersionMissing):
        await store.search(v1, [_points(1)[0].vector], 3)


async def test_the_published_version_cannot_be_dropped(store: VectorStore) -> None:
    version = await store.create_version(DIM, {})
    await store.upsert(version, _points(3))
    await store.publish(version)
    with pytest.raises(IndexWriteError):
        await store.drop(version)
    assert await store.current_version() == version


async def test_unpublished_version_is_invisible_and_droppable(store: VectorStore) -> None:
    live = await store.create_version(DIM, {})
    await store.upsert(live, _points(3))
    await store.publish(live)
    draft = await store.create_version(DIM, {})
    await store.upsert(draft, _points(4, seed=5))
    await store.drop(draft)
    assert await store.current_version() == live
    assert await store.versions() == [live]


async def test_missing_version_is_reported(store: VectorStore) -> None:
    with pytest.raises(VersionMissing):
        await store.metadata("no_such_v9")


async def test_groups_hold_one_label_each_and_near_duplicates_fill_only_one(
    store: VectorStore,
) -> None:
    rng = np.random.default_rng(7)
    base = rng.standard_normal(DIM)
    noise = rng.standard_normal((60, DIM))
    points = [
        Point(
            str(uuid.uuid4()),
            (base + 0.01 * noise[i]).tolist(),
            {"text": f"dup{i}", "label": "dup", "row_id": f"d{i}"},
        )
        for i in range(50)
    ] + [
        Point(
            str(uuid.uuid4()),
            (base + 0.5 * noise[50 + i]).tolist(),
            {"text": f"o{i}", "label": f"other{i % 3}", "row_id": f"o{i}"},
        )
        for i in range(10)
    ]
    version = await store.create_version(DIM, {"labels": ["dup", "other0", "other1", "other2"]})
    await store.upsert(version, points)
    await store.publish(version)
    await store.open(version)

    [groups] = await store.search_groups(
        version, [base.tolist()], groups=3, group_size=2, labels=[None]
    )
    assert len(groups) == 3
    assert groups[0].label == "dup" and len(groups[0].hits) == 2
    assert len({g.label for g in groups}) == 3
    bests = [g.hits[0].similarity for g in groups]
    assert bests == sorted(bests, reverse=True)
    for group in groups:
        assert all(hit.label == group.label for hit in group.hits)
        similarities = [hit.similarity for hit in group.hits]
        assert similarities == sorted(similarities, reverse=True)

    [restricted, everything] = await store.search_groups(
        version,
        [base.tolist(), base.tolist()],
        groups=10,
        group_size=1,
        labels=[["other1", "other2"], None],
    )
    assert {g.label for g in restricted} == {"other1", "other2"}
    assert {g.label for g in everything} == {"dup", "other0", "other1", "other2"}


@pytest.mark.parametrize("seed", range(8))
async def test_embedded_groups_match_qdrants_own_grouping(tmp_path: Path, seed: int) -> None:
    """Qdrant Edge has no group-by; EmbeddedStore's equivalent must give Qdrant's answer."""
    rng = np.random.default_rng(seed)
    n_labels = int(rng.integers(2, 30))
    counts = rng.integers(1, 12, n_labels)
    centres = rng.standard_normal((n_labels, DIM))
    points = []
    for label, count in enumerate(counts):
        for i in range(count):
            vector = centres[label] + rng.uniform(0.05, 1.5) * rng.standard_normal(DIM)
            payload = {"text": f"{label}-{i}", "label": f"l{label}", "row_id": f"{label}-{i}"}
            points.append(Point(str(uuid.uuid4()), vector.tolist(), payload))
    labels = [f"l{i}" for i in range(n_labels)]
    queries = rng.standard_normal((5, DIM)).tolist()
    groups, group_size = int(rng.integers(1, 12)), int(rng.integers(1, 5))
    allowed = [None, None, labels[:3], None, labels[1::2]]

    answers = []
    for store in (
        EmbeddedStore(tmp_path / "edge", "congruence"),
        ServerStore(AsyncQdrantClient(location=":memory:"), "congruence"),
    ):
        version = await store.create_version(DIM, {"labels": labels})
        await store.upsert(version, points)
        await store.publish(version)
        await store.open(version)
        found = await store.search_groups(
            version, queries, groups=groups, group_size=group_size, labels=allowed
        )
        answers.append([[(g.label, [h.row_id for h in g.hits]) for g in q] for q in found])
        await store.close()
    assert answers[0] == answers[1]


# -- sparse (lexical) vectors ------------------------------------------------

_TEXTS = {
    "l0": ["코스닥 지수 알려줘", "오늘 환율 얼마야", "삼성전자 주가 알려줘"],
    "l1": ["서귀포 맛집 알려줘", "강남역 카페 추천해줘", "부산 해운대 호텔 알려줘"],
    "l2": ["오펜하이머 등장인물 알려줘", "요즘 볼만한 영화 추천해줘", "인셉션 감독이 누구야"],
}


def _lexical_points(dense: bool) -> tuple[Lexicon, LexicalEncoder, list[Point]]:
    encoder = LexicalEncoder(LexicalSettings())
    rows = [(label, text) for label, texts in _TEXTS.items() for text in texts]
    lexicon = Lexicon.count(encoder.terms(text) for _, text in rows)
    rng = np.random.default_rng(1)
    points = []
    for i, (label, text) in enumerate(rows):
        vector = rng.standard_normal(DIM).tolist() if dense else []
        points.append(
            Point(
                str(uuid.uuid5(uuid.NAMESPACE_OID, text)),
                vector,
                {"text": text, "label": label, "row_id": f"r{i}"},
                sparse=lexicon.vector(encoder.terms(text)),
            )
        )
    return lexicon, encoder, points


@pytest.mark.parametrize("dense", [False, True], ids=["lexical-only", "dense+lexical"])
async def test_sparse_vectors_round_trip_with_the_stores_idf(
    store: VectorStore, dense: bool
) -> None:
    lexicon, encoder, points = _lexical_points(dense)
    version = await store.create_version(DIM if dense else None, {"labels": []}, sparse=True)
    await store.upsert(version, points)
    await store.publish(version)
    await store.open(version)
    assert await store.count(version) == len(points)

    query = lexicon.vector(encoder.terms("코스닥 지수 알려줘"))
    [hits] = await store.search(version, [query], k=4)
    # The store's IDF-modified score is exactly the cosine qroute computes itself.
    assert hits[0].text == "코스닥 지수 알려줘"
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-4)
    by_text = {p.payload["text"]: p.sparse for p in points}
    for hit in hits:
        stored = by_text[hit.text]
        assert stored is not None
        assert hit.similarity == pytest.approx(lexicon.similarity(query, stored), abs=1e-4)

    [groups] = await store.search_groups(
        version,
        [lexicon.vector(encoder.terms("해운대 맛집"))],
        groups=2,
        group_size=2,
        labels=[None],
    )
    assert groups[0].label == "l1"
    if dense:
        assert len(await store.vectors(version, [points[0].id])) == 1


async def test_fused_search_scores_both_similarities(store: VectorStore) -> None:
    lexicon, encoder, points = _lexical_points(dense=True)
    version = await store.create_version(DIM, {"labels": []}, sparse=True)
    await store.upsert(version, points)
    await store.publish(version)
    await store.open(version)
    target = points[4]
    query_dense = np.asarray(target.vector) / np.linalg.norm(target.vector)
    query_sparse = lexicon.vector(encoder.terms(str(target.payload["text"])))
    [candidates] = await store.search_fused(
        version, [query_dense.tolist()], [query_sparse], limit=3, labels=[None]
    )
    # The target is first by the dense vector and by the lexical one, so first after fusion.
    assert candidates[0].hit.row_id == target.payload["row_id"]
    assert 3 <= len(candidates) <= 6
    by_row = {p.payload["row_id"]: p for p in points}
    for candidate in candidates:
        point = by_row[candidate.hit.row_id]
        cosine = float(np.dot(query_dense, point.vector) / np.linalg.norm(point.vector))
        assert candidate.dense == pytest.approx(cosine, abs=1e-4)
        assert point.sparse is not None
        assert candidate.lexical == pytest.approx(
            lexicon.similarity(query_sparse, point.sparse), abs=1e-4
        )
    assert candidates[0].dense == pytest.approx(1.0, abs=1e-4)
    assert candidates[0].lexical == pytest.approx(1.0, abs=1e-4)
    [only_l2] = await store.search_fused(
        version, [query_dense.tolist()], [query_sparse], limit=3, labels=[["l2"]]
    )
    assert {c.hit.label for c in only_l2} == {"l2"}
