"""What shadow evaluation and the review queue add to live Classify latency.

Three in-process routers (lexical mode, examples/queries.csv, no model), one per way:
review and shadow off; review on (every answer recorded: confidence_below 1); review on
and a shadow candidate (another similarity threshold) on every request. Each answers the
held-out queries over gRPC on 127.0.0.1, at concurrency 1 and ``--concurrency``, in
passes interleaved across the ways (``--rounds`` passes each), so that the other load on
the machine falls on every way alike. After each pass the way's review writer and shadow
candidate catch up before the next way runs. Reports p50/p99 of every call per way and
width, the shadow outcomes and the review records.

    python bench/bench_shadow.py [--rounds 10] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from _results import write_results
from qroute_indexer import run_index
from qroute_server.app import RouterApp
from ruamel.yaml import YAML

from qroute.config import load_settings
from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


def _config(path: Path, work: Path, **sections: dict[str, Any]) -> Path:
    data: dict[str, dict[str, Any]] = {
        "retrieval": {"mode": "lexical"},
        "router": {"k": 10, "similarity_threshold": 0.3},
        "store": {"location": str(work / "store"), "collection": "bench"},
        "server": {"bind": "127.0.0.1:0", "metrics_port": None},
    }
    data.update(sections)
    YAML(typ="safe", pure=True).dump(data, path)
    return path


class _Way:
    """One router, started in this process, and the latencies of its calls by width."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.latencies: dict[int, list[float]] = {}

    async def start(self) -> None:
        self.app = RouterApp(load_settings(self.config))
        port = await self.app.start()
        await self.app.load()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = router_pb2_grpc.RouterServiceStub(self.channel)

    async def one_pass(self, texts: list[str], width: int) -> None:
        """Every text once, ``width`` calls in flight; then the review writer and the
        shadow candidate catch up, so their leftover work lands on no other way."""
        latencies = self.latencies.setdefault(width, [])
        gate = asyncio.Semaphore(width)

        async def one(text: str) -> None:
            async with gate:
                started = time.perf_counter()
                await self.stub.Classify(pb.ClassifyRequest(text=text))
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one(t) for t in texts))
        if self.app.learning is not None:
            await self.app.learning.drain(30)

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for width, latencies in self.latencies.items():
            cut = statistics.quantiles(latencies, n=100)
            out[f"c{width}"] = {
                "n": len(latencies),
                "p50_ms": statistics.median(latencies) * 1000,
                "p99_ms": cut[98] * 1000,
            }
        learning = self.app.learning
        if learning is not None and learning.shadow is not None:
            out["shadow"] = dict(learning.shadow.counts)
        if learning is not None and learning.recorder is not None:
            out["review"] = dict(learning.recorder.counts)
        return out

    async def stop(self) -> None:
        await self.channel.close()
        await self.app.stop(grace=0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shadow.json")
    args = parser.parse_args()
    with (ROOT / "examples" / "queries_eval.csv").open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        # Each router its own store and review file: the embedded store is opened by
        # one reader at a time.
        def review(name: str) -> dict[str, Any]:
            return {
                "enabled": True,
                "path": str(work / name / "review.sqlite"),
                "confidence_below": 1.0,
            }

        candidate = _config(
            work / "candidate.yaml", work / "shadow", router={"similarity_threshold": 0.6}
        )
        ways = {
            "off": _config(work / "off.yaml", work / "off"),
            "review": _config(work / "review.yaml", work / "review", review=review("review")),
            "review+shadow": _config(
                work / "shadow.yaml",
                work / "shadow",
                review=review("shadow"),
                shadow={"config": str(candidate)},
            ),
        }
        for config in ways.values():
            await run_index(
                load_settings(config), ROOT / "examples" / "queries.csv", progress=False
            )
        running = {name: _Way(config) for name, config in ways.items()}
        for way in running.values():
            await way.start()
        try:
            for way in running.values():
                await way.one_pass(texts[:10], 1)  # warm-up
                way.latencies.clear()
            # Interleaved, so that what else runs on the machine meanwhile falls on
            # every way alike.
            for width in (1, args.concurrency):
                for _ in range(args.rounds):
                    for way in running.values():
                        await way.one_pass(texts, width)
            results = {name: way.figures() for name, way in running.items()}
        finally:
            for way in running.values():
                await way.stop()
    n = args.concurrency
    print(f"{'way':<14} {'c1 p50':>8} {'c1 p99':>8} {f'c{n} p50':>8} {f'c{n} p99':>8}  (ms)")
    for name, row in results.items():
        c1, cn = row["c1"], row[f"c{args.concurrency}"]
        print(
            f"{name:<14} {c1['p50_ms']:>8.2f} {c1['p99_ms']:>8.2f} "
            f"{cn['p50_ms']:>8.2f} {cn['p99_ms']:>8.2f}  {row.get('shadow', '')} "
            f"{row.get('review', '')}"
        )
    write_results(args.out, {"rounds": args.rounds, "concurrency": args.concurrency, **results})


if __name__ == "__main__":
    asyncio.run(main())
