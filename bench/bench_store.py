"""Embedded store choice: top-k search latency of Qdrant Edge vs qdrant-client's local mode.

Same random unit vectors, same queries, same k, one process, one run. Prints p50/p95 in
ms per store and the ratio local/edge, and writes JSON to bench/results/ (or --out).

    python bench/bench_store.py --points 10000 --dim 384
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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/store.json"))
    args = parser.parse_args()

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
