"""A lexical grouped search on the embedded store answers as the round-based search
did (``edge.grouped``): the same labels in the same order, the same similarities, the
same examples up to the order of equally similar ones; on both of its paths (one page
of neighbours grouped by the version's labels, and the fallback when the page is too
short to tell)."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qroute.config import LexicalSettings
from qroute.embedding.lexical import LexicalEncoder, Lexicon
from qroute.store import Point, edge
from qroute.store.embedded import EmbeddedStore
from qroute.types import Group, SparseVector


def _rows(labels: int, per_label: int) -> list[tuple[str, str]]:
    """Distinct texts of pseudo-words, a vocabulary per label with some words shared:
    partial n-gram overlaps, so that few similarities tie."""
    rng = random.Random(7)
    shared = ["".join(rng.choices("abcdefgh", k=rng.randint(3, 6))) for _ in range(30)]
    rows: dict[str, str] = {}
    for label in range(labels):
        vocabulary = rng.sample(shared, 6)
        while sum(1 for v in rows.values() if v == f"l{label}") < per_label:
            text = " ".join(rng.choices(vocabulary, k=rng.randint(2, 5)))
            rows.setdefault(text, f"l{label}")
    return list(rows.items())


def _untied(similarities: list[float]) -> list[bool]:
    """Which positions no tie can reorder: above the last similarity (a tie at the
    cut may keep either) and unlike every other."""
    rounded = [round(x, 5) for x in similarities]
    return [x > rounded[-1] and rounded.count(x) == 1 for x in rounded]


def _same(new: list[Group], old: list[Group]) -> None:
    """The same groups, up to the order of equally similar labels or examples."""
    best = [g.hits[0].similarity for g in old]
    assert [g.hits[0].similarity for g in new] == pytest.approx(best, abs=1e-5)
    for got, want, untied in zip(new, old, _untied(best), strict=True):
        if not untied:
            continue
        assert got.label == want.label
        similarities = [h.similarity for h in want.hits]
        assert [h.similarity for h in got.hits] == pytest.approx(similarities, abs=1e-5)
        for position, fixed in enumerate(_untied(similarities)):
            if fixed:
                assert got.hits[position].row_id == want.hits[position].row_id
    assert sum(_untied(best)) >= len(best) // 2  # most groups were compared label by label


@pytest.fixture
async def index(
    tmp_path: Path,
) -> AsyncIterator[tuple[EmbeddedStore, str, list[SparseVector]]]:
    encoder = LexicalEncoder(LexicalSettings())
    rows = _rows(labels=12, per_label=40)
    lexicon = Lexicon.count(encoder.terms(text) for text, _ in rows)
    store = EmbeddedStore(tmp_path / "store", "grouped")
    version = await store.create_version(None, {"labels": []}, sparse=True)
    await store.upsert(
        version,
        [
            Point(
                str(uuid.uuid5(uuid.NAMESPACE_OID, str(i))),
                [],
                {"text": text, "label": label, "row_id": f"r{i}"},
                sparse=lexicon.vector(encoder.terms(text)),
            )
            for i, (text, label) in enumerate(rows)
        ],
    )
    await store.publish(version)
    await store.open(version)
    rng = random.Random(3)
    queries = [text for text, _ in rng.sample(rows, 25)] + ["zzz qqq"]
    queries = [" ".join(rng.sample(q.split(), len(q.split()))) + " ab" for q in queries]
    yield store, version, [lexicon.vector(encoder.terms(q)) for q in queries]
    await store.close()


@pytest.mark.parametrize(
    "pages", [edge.PAGES, (8,), (40, 200)], ids=["default", "fallback", "second-page"]
)
@pytest.mark.parametrize(
    ("groups", "group_size", "allowed"),
    [(5, 3, None), (20, 2, None), (3, 4, ["l1", "l4", "l7", "l9"])],
)
async def test_the_same_groups_as_the_rounds(
    index: tuple[EmbeddedStore, str, list[SparseVector]],
    monkeypatch: pytest.MonkeyPatch,
    pages: tuple[int, ...],
    groups: int,
    group_size: int,
    allowed: list[str] | None,
) -> None:
    store, version, queries = index
    monkeypatch.setattr(edge, "PAGES", pages)
    labels = [allowed] * len(queries)
    new = await store.search_groups(
        version, queries, groups=groups, group_size=group_size, labels=labels
    )
    reader = await store._acquire(version)
    try:
        old = edge.grouped(reader.shard, queries, groups, group_size, labels)
    finally:
        await store._release(version, reader)
    assert any(groups_ for groups_ in old)  # the queries find something
    for got, want in zip(new, old, strict=True):
        _same(got, want)


# Pages shorter than the rows each query reaches (478-480 of all, 120 of the allowed
# labels'): never exhausted, and long enough to hold each label twice.
@pytest.mark.parametrize(
    ("groups", "allowed", "page"), [(20, None, 460), (5, ["l1", "l4", "l7", "no-such-label"], 100)]
)
async def test_fewer_labels_than_groups_are_answered_from_the_page(
    index: tuple[EmbeddedStore, str, list[SparseVector]],
    monkeypatch: pytest.MonkeyPatch,
    groups: int,
    allowed: list[str] | None,
    page: int,
) -> None:
    # 12 labels in the version (3 of the allowed ones): every label fills its group
    # within the first page, which is then the whole answer, not a fallback to the rounds
    # (a filtered search per round: several times slower).
    store, version, queries = index
    queries = queries[:-1]  # the last one shares no term with most labels
    labels = [allowed] * len(queries)
    reader = await store._acquire(version)
    try:
        old = edge.grouped(reader.shard, queries, groups, 2, labels)
    finally:
        await store._release(version, reader)

    def no_rounds(*args: object) -> None:
        raise AssertionError("fell back to the rounds")

    monkeypatch.setattr(edge, "grouped", no_rounds)
    monkeypatch.setattr(edge, "PAGES", (page,))
    new = await store.search_groups(version, queries, groups=groups, group_size=2, labels=labels)
    assert len(new[0]) == (12 if allowed is None else 3)
    for got, want in zip(new, old, strict=True):
        _same(got, want)
