"""Qdrant Edge, one shard: the query and point forms, and the search plans the embedded
store runs on a shard (blocking: the store calls them on a worker thread)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID

from qroute.store.base import LEXICAL, RRF_K, Candidate, Point, SearchVector
from qroute.store.metadata import LABEL_FIELD, hit_from_payload
from qroute.types import Group, SparseVector

__all__ = [
    "LEXICAL_PAGE",
    "PAGES",
    "create_shard",
    "fused",
    "grouped",
    "grouped_by_map",
    "labels_by_id",
    "point_key",
    "point_vector",
    "query",
    "query_filter",
    "version_labels",
]

# The page sizes ``grouped_by_map`` tries, in turn, before it falls back to ``grouped``.
PAGES = (1024, 4096)
# How deep ``fused`` reads the lexical ranking, to find its dense candidates' lexical
# similarities there instead of searching for them again.
LEXICAL_PAGE = 256
# Points per scroll call when reading a version's labels.
_LABEL_PAGE = 512
# The most one round asks for.
_MOST = 4096
# What a Hit is made of: a search returns only these of a point's payload.
HIT_FIELDS = ("text", LABEL_FIELD, "row_id")


def fused(
    shard: Any,
    dense: Sequence[Sequence[float]],
    sparse: Sequence[SparseVector],
    limit: int,
    labels: Sequence[Sequence[str] | None],
    hnsw_ef: int | None = None,
) -> list[list[Candidate]]:
    """For each query, ``limit`` candidates by each vector fused by reciprocal rank
    (best first; a tie keeps the dense one first), each with both its similarities, as
    scored by the shard. ``hnsw_ef``: the beam of the dense search (None: Qdrant's
    default).

    Qdrant Edge's own fusion returns the fused rank only, and scoring its candidates by
    the lexical vector afterwards (a search filtered by their ids) walks the query's
    posting lists again, which costs as much as the lexical search itself. So one batch
    asks each vector for its nearest, the lexical one ``LEXICAL_PAGE`` deep (it then
    holds the lexical similarity of almost every dense candidate), the ranks are fused
    here with Qdrant's formula, and only what is still missing is scored by id: the dense
    similarity of the lexical candidates (cheap) and the lexical one of dense candidates
    beyond a full page (rare)."""
    from qdrant_edge import Filter, HasIdCondition, QueryBatchRequest, QueryRequest

    # 1. Each vector's nearest, ids and scores only.
    page = max(limit, LEXICAL_PAGE)
    nearest_first = []
    for d, s, allowed in zip(dense, sparse, labels, strict=True):
        allowed_only = query_filter(allowed, ())
        nearest_first.append(
            QueryRequest(
                limit=limit, query=query(d), filter=allowed_only, params=search_params(d, hnsw_ef)
            )
        )
        nearest_first.append(QueryRequest(limit=page, query=query(s), filter=allowed_only))
    found = shard.query_batch(QueryBatchRequest(nearest_first)) if nearest_first else []
    # 2. Fused by rank; what each candidate still lacks.
    plans = []
    scoring: list[Any] = []
    for i, (d, s) in enumerate(zip(dense, sparse, strict=True)):
        by_dense = {p.id: float(p.score) for p in found[2 * i]}
        lexical_page = found[2 * i + 1]
        by_lexical = {p.id: float(p.score) for p in lexical_page}
        rank: dict[Any, float] = {}
        for position, pid in enumerate(by_dense):
            rank[pid] = 1.0 / (RRF_K + position)
        for position, p in enumerate(lexical_page[:limit]):
            rank[p.id] = rank.get(p.id, 0.0) + 1.0 / (RRF_K + position)
        order = sorted(rank, key=rank.__getitem__, reverse=True)
        # A page shorter than asked holds every point that shares a term with the query:
        # one missing from it has lexical similarity 0.
        lexical_missing = (
            [pid for pid in order if pid not in by_lexical] if len(lexical_page) == page else []
        )
        dense_missing = [pid for pid in order if pid not in by_dense]
        asks = []
        for missing, vector in ((dense_missing, d), (lexical_missing, s)):
            if missing:
                asks.append((len(scoring), missing is dense_missing))
                scoring.append(
                    QueryRequest(
                        limit=len(missing),
                        query=query(vector),
                        filter=Filter(must=[HasIdCondition(set(missing))]),
                        params=search_params(vector, hnsw_ef),
                    )
                )
        plans.append((order, rank, by_dense, by_lexical, asks))
    scored = shard.query_batch(QueryBatchRequest(scoring)) if scoring else []
    # 3. The payloads of the candidates.
    ids = [pid for order, *_ in plans for pid in order]
    payloads = (
        {r.id: r.payload for r in shard.retrieve(ids, list(HIT_FIELDS), False)} if ids else {}
    )
    answer = []
    for order, rank, by_dense, by_lexical, asks in plans:
        for at, is_dense in asks:
            (by_dense if is_dense else by_lexical).update(
                (p.id, float(p.score)) for p in scored[at]
            )
        answer.append(
            [
                Candidate(
                    # The hit's own score is the fused one, as Qdrant's fusion gives it.
                    hit_from_payload(pid, rank[pid], payloads.get(pid)),
                    by_dense.get(pid, 0.0),
                    by_lexical.get(pid, 0.0),
                )
                for pid in order
            ]
        )
    return answer


class _Asked(NamedTuple):
    """A query vector as Qdrant Edge takes it, converted once for all its searches
    (a dense one is a list of hundreds of floats to copy each time)."""

    query: Any
    params: Any


def _asked(vector: SearchVector, hnsw_ef: int | None) -> _Asked:
    return _Asked(query(vector), search_params(vector, hnsw_ef))


def _nearest(
    asked: _Asked,
    limit: int,
    allowed: Sequence[str] | None,
    exclude: Sequence[str] = (),
    with_payload: bool = True,
) -> Any:
    from qdrant_edge import QueryRequest

    return QueryRequest(
        limit=limit,
        query=asked.query,
        filter=query_filter(allowed, exclude),
        with_payload=list(HIT_FIELDS) if with_payload else False,
        params=asked.params,
    )


def point_key(row_id: str) -> int:
    """A row's point id in a shard: 64 bits of a hash of its row id (which its payload
    carries). Qdrant Edge builds a ``uuid.UUID`` each time a UUID id is read, and a
    grouped search reads the ids of a page of hundreds of points; an integer costs
    nothing. Two rows of one version with one key (odds about rows² / 2^65) would leave
    the version a point short, which the indexer's count gate refuses to publish."""
    return int.from_bytes(hashlib.blake2b(row_id.encode(), digest_size=8).digest(), "big")


def point_vector(point: Point) -> Any:
    from qdrant_edge import SparseVector as EdgeSparse

    dense = [float(x) for x in point.vector]
    if point.sparse is None:
        return dense
    named: dict[str, Any] = {
        LEXICAL: EdgeSparse(list(point.sparse.indices), list(point.sparse.values))
    }
    if dense:
        named[""] = dense
    return named


def query(vector: SearchVector) -> Any:
    from qdrant_edge import Query
    from qdrant_edge import SparseVector as EdgeSparse

    if isinstance(vector, SparseVector):
        return Query.Nearest(EdgeSparse(list(vector.indices), list(vector.values)), using=LEXICAL)
    return Query.Nearest([float(x) for x in vector])


def search_params(vector: SearchVector, hnsw_ef: int | None) -> Any:
    """The HNSW beam of a dense search (None: Qdrant's default); a sparse one has no graph."""
    if hnsw_ef is None or isinstance(vector, SparseVector):
        return None
    from qdrant_edge import SearchParams

    return SearchParams(hnsw_ef=hnsw_ef)


def query_filter(allowed: Sequence[str] | None, exclude: Sequence[str]) -> Any:
    from qdrant_edge import FieldCondition, Filter, MatchAny

    must: list[Any] = []
    if allowed is not None:
        must.append(FieldCondition(key=LABEL_FIELD, match=MatchAny(list(allowed))))
    must_not: list[Any] = []
    if exclude:
        must_not.append(FieldCondition(key=LABEL_FIELD, match=MatchAny(list(exclude))))
    if not must and not must_not:
        return None
    return Filter(must=must or None, must_not=must_not or None)


def grouped(
    shard: Any,
    vectors: Sequence[SearchVector],
    groups: int,
    group_size: int,
    labels: Sequence[Sequence[str] | None],
    hnsw_ef: int | None = None,
    label_of: Mapping[Any, str] | None = None,
) -> list[list[Group]]:
    """Each query's ``groups`` nearest labels with their ``group_size`` nearest hits.
    ``label_of``: every point's label by ``_key`` of its id (``labels_by_id``): the
    searches then read ids and scores only, and the payloads of just the hits kept."""
    # Qdrant Edge has no group-by; this is its exact equivalent in batched rounds.
    # 1. Nearest neighbours among the labels not seen yet, until `groups` labels are
    #    seen or the examples run out. Labels first seen in a round are nearer (by
    #    their best example) than every label still unseen, so the seen labels, in
    #    order, are the top groups. Excluding seen labels keeps a label with many
    #    near-duplicates from filling every round.
    # 2. One filtered search per top label that holds fewer than group_size hits.
    asked = [_asked(v, hnsw_ef) for v in vectors]
    found, complete = _rounds(shard, asked, groups, group_size, labels, label_of)
    _complete_groups(shard, asked, found, complete, groups, group_size, label_of)
    kept = []
    for by_label in found:
        ranked = sorted(by_label.items(), key=lambda item: item[1][0].score, reverse=True)
        kept.append([(label, hits[:group_size]) for label, hits in ranked[:groups]])
    payloads = {}
    if label_of is not None:
        ids = [h.id for query in kept for _, hits in query for h in hits]
        if ids:
            payloads = {r.id: r.payload for r in shard.retrieve(ids, list(HIT_FIELDS), False)}
    return [
        [
            Group(
                label,
                tuple(hit_from_payload(h.id, h.score, payloads.get(h.id, h.payload)) for h in hits),
            )
            for label, hits in query
        ]
        for query in kept
    ]


class _Found(NamedTuple):
    """A point a round found: its id, score, and payload (None when read later)."""

    id: Any
    score: float
    payload: Any


def _found(point: Any, label_of: Mapping[Any, str] | None) -> tuple[str, _Found]:
    if label_of is None:
        payload = point.payload or {}
        return str(payload.get(LABEL_FIELD, "")), _Found(point.id, float(point.score), payload)
    pid = point.id
    return label_of[_key(pid)], _Found(pid, float(point.score), None)


def _rounds(
    shard: Any,
    asked: Sequence[_Asked],
    groups: int,
    group_size: int,
    labels: Sequence[Sequence[str] | None],
    label_of: Mapping[Any, str] | None,
) -> tuple[list[dict[str, list[_Found]]], list[set[str]]]:
    """Step 1: per query, its nearest examples by label, and the labels whose every
    example was seen."""
    from qdrant_edge import QueryBatchRequest

    fetch = min(groups * group_size * 2, _MOST)
    found: list[dict[str, list[_Found]]] = [{} for _ in asked]
    pending = list(range(len(asked)))
    # Labels whose every example has been seen: first seen in a round that
    # returned fewer points than it asked for.
    complete: list[set[str]] = [set() for _ in asked]
    with_payload = label_of is None
    while pending:
        requests = [
            _nearest(asked[i], fetch, labels[i], list(found[i]), with_payload) for i in pending
        ]
        results = shard.query_batch(QueryBatchRequest(requests))
        still = []
        for position, points in zip(pending, results, strict=True):
            by_label = found[position]
            new: set[str] = set()
            for point in points:
                label, hit = _found(point, label_of)
                if label not in by_label:
                    new.add(label)
                by_label.setdefault(label, []).append(hit)
            if len(points) < fetch:
                complete[position] |= new
            elif len(by_label) < groups:
                still.append(position)
        pending = still

    return found, complete


def _complete_groups(
    shard: Any,
    asked: Sequence[_Asked],
    found: list[dict[str, list[_Found]]],
    complete: list[set[str]],
    groups: int,
    group_size: int,
    label_of: Mapping[Any, str] | None,
) -> None:
    """Step 2: fill each top label's group to ``group_size`` with a filtered search."""
    from qdrant_edge import QueryBatchRequest

    plan = [
        (position, label)
        for position, by_label in enumerate(found)
        for label in list(by_label)[:groups]
        if len(by_label[label]) < group_size and label not in complete[position]
    ]
    if plan:
        requests = [
            _nearest(asked[i], group_size, [label], (), label_of is None) for i, label in plan
        ]
        completed = shard.query_batch(QueryBatchRequest(requests))
        for (position, label), points in zip(plan, completed, strict=True):
            found[position][label] = [_found(p, label_of)[1] for p in points]


def _key(point_id: Any) -> Any:
    # A UUID's int hashes and compares in C; the UUID itself in Python.
    return point_id.int if type(point_id) is UUID else point_id


def labels_by_id(shard: Any) -> dict[Any, str]:
    """Every point's label, by ``_key`` of its id: what lets a grouped search skip
    reading payloads."""
    from qdrant_edge import ScrollRequest

    found: dict[Any, str] = {}
    offset = None
    while True:
        # Small pages: a scroll call holds the GIL throughout, and a router's event loop
        # waits for each one while a new version loads.
        records, offset = shard.scroll(
            ScrollRequest(
                limit=_LABEL_PAGE, offset=offset, with_payload=[LABEL_FIELD], with_vector=False
            )
        )
        for record in records:
            found[_key(record.id)] = str((record.payload or {}).get(LABEL_FIELD, ""))
        if offset is None:
            return found
        # Hand the GIL over between pages: the event loop that waits for it runs now,
        # not after the whole version's labels are read.
        time.sleep(0)


def version_labels(shard: Any) -> tuple[dict[Any, str], frozenset[str]]:
    """``labels_by_id`` and the set of the labels in it."""
    label_of = labels_by_id(shard)
    return label_of, frozenset(label_of.values())


def grouped_by_map(
    shard: Any,
    vectors: Sequence[SearchVector],
    groups: int,
    group_size: int,
    labels: Sequence[Sequence[str] | None],
    label_of: Mapping[Any, str],
    known: frozenset[str] | None = None,
) -> list[list[Group]]:
    """The same groups as ``grouped``, from one plain page of neighbours per query
    (ids and scores only: reading payloads costs more than the search), grouped by
    ``label_of``; the payloads of only the hits kept are read afterwards.

    A page is a prefix of the query's whole ranking, so its labels in order of first
    appearance are the top labels, and a label with ``group_size`` hits in it has its
    nearest ones: the answer is exact once the first ``groups`` labels each have that
    many, or the page holds every candidate. A query for which the largest page is not
    enough (rare: a label whose examples are far down the ranking) goes to ``grouped``.
    Sparse vectors walk their terms' posting lists whatever the page size, so a page of
    hundreds costs little more than one of dozens, and far less than the filtered
    searches of ``grouped``'s rounds. ``known``: every label in ``label_of``; where a
    query can reach fewer than ``groups`` labels (of the version, or of its allowed
    ones), a page that holds each of them ``group_size`` times is complete too."""
    from qdrant_edge import QueryBatchRequest, QueryRequest

    chosen: list[list[tuple[str, list[tuple[Any, float]]]] | None] = [None] * len(vectors)
    pending = list(range(len(vectors)))
    queries = [query(v) for v in vectors]
    for page in PAGES:
        if not pending:
            break
        limit = max(page, groups * group_size)
        requests = [
            QueryRequest(limit=limit, query=queries[i], filter=query_filter(labels[i], ()))
            for i in pending
        ]
        results = shard.query_batch(QueryBatchRequest(requests))
        still = []
        for position, points in zip(pending, results, strict=True):
            reachable = groups
            if known is not None:
                allowed = labels[position]
                reachable = min(
                    groups, len(known if allowed is None else known.intersection(allowed))
                )
            picked = _group_page(
                points, label_of, reachable, group_size, exhausted=len(points) < limit
            )
            if picked is None:
                still.append(position)
            else:
                chosen[position] = picked
        pending = still
    fallback = {}
    if pending:
        rest = grouped(
            shard,
            [vectors[i] for i in pending],
            groups,
            group_size,
            [labels[i] for i in pending],
            label_of=label_of,
        )
        fallback = dict(zip(pending, rest, strict=True))
    ids = [pid for picked in chosen if picked for _, hits in picked for pid, _ in hits]
    payloads = (
        {r.id: r.payload for r in shard.retrieve(ids, list(HIT_FIELDS), False)} if ids else {}
    )
    answer = []
    for position, picked in enumerate(chosen):
        if picked is None:
            answer.append(fallback[position])
            continue
        answer.append(
            [
                Group(
                    label,
                    tuple(hit_from_payload(pid, score, payloads.get(pid)) for pid, score in hits),
                )
                for label, hits in picked
            ]
        )
    return answer


def _group_page(
    points: Sequence[Any],
    label_of: Mapping[Any, str],
    groups: int,
    group_size: int,
    *,
    exhausted: bool,
) -> list[tuple[str, list[tuple[Any, float]]]] | None:
    """The top ``groups`` labels of one page with their ``group_size`` nearest (id,
    score), best label first; None when the page cannot tell them exactly."""
    by_label: dict[str, list[tuple[Any, float]]] = {}
    full = 0  # how many of the first `groups` labels hold group_size hits
    for point in points:
        pid = point.id  # in a version written before point_key, each read builds a UUID
        label = label_of.get(pid.int if type(pid) is UUID else pid)
        if label is None:
            return None  # a point the map does not know: not this version's map
        kept = by_label.get(label)
        if kept is None:
            if len(by_label) >= groups:
                continue  # not a top label: the first `groups` are
            kept = by_label[label] = []
        if len(kept) < group_size:
            kept.append((pid, float(point.score)))
            if len(kept) == group_size:
                full += 1
                if full == groups:
                    break
    if not exhausted and (len(by_label) < groups or full < groups):
        return None
    # In order of first appearance, which is the order of their best similarity.
    return list(by_label.items())


def create_shard(path: Path, dimension: int | None, sparse: bool) -> Any:
    """A new, empty shard at ``path`` for a version: cosine dense vectors of
    ``dimension`` (None: none), the IDF-weighted sparse vector when ``sparse``, and the
    label field indexed."""
    from qdrant_edge import (
        Distance,
        EdgeConfig,
        EdgeOptimizersConfig,
        EdgeShard,
        EdgeSparseVectorParams,
        EdgeVectorParams,
        Memory,
        Modifier,
        PayloadSchemaType,
        UpdateOperation,
    )

    # No write-ahead log: a version is written once, flushed before it is published,
    # and read-only after; an unflushed one is a draft the next run removes. Without
    # a WAL (and its lock) a router and an indexer can both open a published version.
    # Cold: vectors live in memory-mapped files, paged in on use, so a large index
    # does not have to fit in the process's memory.
    vectors = None
    if dimension is not None:
        vectors = EdgeVectorParams(size=dimension, distance=Distance.Cosine, memory=Memory.Cold)
    sparse_vectors = None
    if sparse:
        sparse_vectors = {LEXICAL: EdgeSparseVectorParams(modifier=Modifier.Idf)}
    optimizers = None
    if vectors is None:
        # Lexical only: publish's optimize turns every segment's sparse vectors into the
        # immutable inverted index, whatever its size, so a router loads the version
        # without rebuilding it (a shorter pause of its event loop at each switch). With
        # dense vectors the default threshold stays: below it, exact search, above it HNSW.
        optimizers = EdgeOptimizersConfig(indexing_threshold=1)
    config = EdgeConfig(
        vectors=vectors, sparse_vectors=sparse_vectors, wal_enabled=False, optimizers=optimizers
    )
    shard = EdgeShard.create(str(path), config)
    # Grouping by label runs one filtered search per label: index the field.
    index = UpdateOperation.create_field_index(LABEL_FIELD, PayloadSchemaType.Keyword)
    shard.update(index)
    return shard
