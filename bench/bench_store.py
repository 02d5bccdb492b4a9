"""Embedded store choice: top-k search latency of Qdrant Edge vs qdrant-client's local mode.

Same random unit vectors, same queries, same k, one process, one run. Prints p50/p95 in
ms per store and the ratio local/edge, and writes JSON to bench/results/ (or --out).

    python bench/bench_store.py --points 10000 --dim 384

``--scale 10000,1000000 --keep DIR``: instead, top-k search p50 of the embedded store
(Qdrant Edge, HNSW built at publish) at each size, and the ratio of the largest to the
smallest, measured in one run (target at 1M / 10k <= 5). Building a million rows takes
long: ``--build-only`` builds what DIR lacks (no measuring: run it outside the bench
lock), a later run with ``--keep DIR`` measures the indexes kept there.
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


async def _build(root: Path, points: int, dim: int) -> dict[str, float]:
    """A published EmbeddedStore version of ``points`` random unit vectors under root
    (chunks of 10,000, each from its own seed: never the whole table in memory)."""
    store = EmbeddedStore(root, "scale")
    start = time.perf_counter()
    version = await store.create_version(dim, {})
    for offset in range(0, points, 10_000):
        chunk = _unit_vectors(offset, min(10_000, points - offset), dim)
        for at in range(0, len(chunk), 1000):
            await store.upsert(
                version,
                [
                    Point(
                        str(uuid.uuid5(uuid.NAMESPACE_OID, str(offset + at + i))),
                        v.tolist(),
                        {"text": "", "label": f"l{(offset + at + i) % 100}"},
                    )
                    for i, v in enumerate(chunk[at : at + 1000])
                ],
            )
    written = time.perf_counter()
    await store.publish(version)  # builds the HNSW graph
    published = time.perf_counter()
    await store.close()
    return {"upsert_s": written - start, "publish_s": published - written}


async def _scaled(args: argparse.Namespace) -> None:
    import resource

    sizes = [int(x) for x in args.scale.split(",")]
    keep: Path = args.keep
    builds: dict[str, dict[str, float]] = {}
    for size in sizes:
        root = keep / f"n{size}"
        if await EmbeddedStore(root, "scale").current_version() is None:
            print(f"building {size} x {args.dim} ...", flush=True)
            builds[str(size)] = await _build(root, size, args.dim)
            print(f"  {builds[str(size)]}", flush=True)
    if args.build_only:
        return
    queries = _unit_vectors(10**9, args.queries, args.dim)
    results: dict[str, dict[str, float]] = {}
    for size in sizes:
        store = EmbeddedStore(keep / f"n{size}", "scale")
        version = await store.current_version()
        assert version is not None
        await store.open(version)
        reader = await store._acquire(version)  # the shard's own count of indexed vectors
        info = reader.shard.info()
        await store._release(version, reader)
        indexed = float(info.indexed_vectors_count)
        # Warm-up queries of their own: the vectors are memory-mapped (Memory.Cold), and
        # a cold page cache would time the disk, not the search.
        warm = iter(_unit_vectors(10**9 + 1, args.warmup, args.dim))
        query_iter = iter(np.tile(queries, (2, 1)))

        async def one(
            store: EmbeddedStore = store, version: str = version, queries: object = query_iter
        ) -> object:
            return await store.search(version, [next(queries).tolist()], args.k)

        for vector in warm:
            await store.search(version, [vector.tolist()], args.k)
        times = await _time(one, args.queries - 1)
        await store.close()
        results[str(size)] = {
            "p50_ms": statistics.median(times),
            "p95_ms": float(np.percentile(times, 95)),
            "indexed_vectors": indexed,
            "points": float(info.points_count),
            **builds.get(str(size), {}),
        }
        print(
            f"{size:>9} points   p50 {results[str(size)]['p50_ms']:7.3f} ms   "
            f"p95 {results[str(size)]['p95_ms']:7.3f} ms   HNSW-indexed {int(indexed)}"
        )
    ratio = results[str(sizes[-1])]["p50_ms"] / results[str(sizes[0])]["p50_ms"]
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"p50 at {sizes[-1]} / p50 at {sizes[0]} = {ratio:.2f}   (target <= 5)   peak RSS {rss_gb:.2f} GB"
    )
    write_results(
        args.out,
        {
            "params": {k: str(v) for k, v in vars(args).items()},
            "results": results,
            "largest_over_smallest_p50": ratio,
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
