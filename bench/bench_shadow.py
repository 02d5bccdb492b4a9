"""What shadow evaluation and the review queue add to live Classify latency.

One in-process router (lexical mode, examples/queries.csv, no model) answers the
held-out queries over gRPC on 127.0.0.1, at concurrency 1 and ``--concurrency``, three
ways: review and shadow off; review on (every answer recorded: confidence_below 1);
review on and a shadow candidate (another similarity threshold) on every request.
Reports p50/p95 per way and the shadow outcomes.

    python bench/bench_shadow.py [--rounds 3] [--concurrency 16]
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


async def _measure(config: Path, texts: list[str], rounds: int, concurrency: int) -> dict[str, Any]:
    app = RouterApp(load_settings(config))
    port = await app.start()
    await app.load()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = router_pb2_grpc.RouterServiceStub(channel)
    out: dict[str, Any] = {}
    try:
        for text in texts[:10]:  # warm-up
            await stub.Classify(pb.ClassifyRequest(text=text))
        for width in (1, concurrency):
            latencies: list[float] = []
            gate = asyncio.Semaphore(width)

            async def one(
                text: str, gate: asyncio.Semaphore = gate, latencies: list[float] = latencies
            ) -> None:
                async with gate:
                    started = time.perf_counter()
                    await stub.Classify(pb.ClassifyRequest(text=text))
                    latencies.append(time.perf_counter() - started)

            for _ in range(rounds):
                await asyncio.gather(*(one(t) for t in texts))
            cut = statistics.quantiles(latencies, n=20)
            out[f"c{width}"] = {
                "n": len(latencies),
                "p50_ms": statistics.median(latencies) * 1000,
                "p95_ms": cut[18] * 1000,
            }
        if app.learning is not None:
            await app.learning.drain(30)
            if app.learning.shadow is not None:
                out["shadow"] = dict(app.learning.shadow.counts)
            if app.learning.recorder is not None:
                out["review"] = dict(app.learning.recorder.counts)
    finally:
        await channel.close()
        await app.stop(grace=0)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shadow.json")
    args = parser.parse_args()
    with (ROOT / "examples" / "queries_eval.csv").open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = _config(work / "base.yaml", work)
        await run_index(load_settings(base), ROOT / "examples" / "queries.csv", progress=False)
        review = {"enabled": True, "path": str(work / "review.sqlite"), "confidence_below": 1.0}
        candidate = _config(work / "candidate.yaml", work, router={"similarity_threshold": 0.6})
        ways = {
            "off": base,
            "review": _config(work / "review.yaml", work, review=review),
            "review+shadow": _config(
                work / "shadow.yaml", work, review=review, shadow={"config": str(candidate)}
            ),
        }
        for name, config in ways.items():
            results[name] = await _measure(config, texts, args.rounds, args.concurrency)
    print(f"{'way':<14} {'c1 p50':>8} {'c1 p95':>8} {'cN p50':>8} {'cN p95':>8}  (ms)")
    for name, row in results.items():
        c1, cn = row["c1"], row[f"c{args.concurrency}"]
        print(
            f"{name:<14} {c1['p50_ms']:>8.2f} {c1['p95_ms']:>8.2f} "
            f"{cn['p50_ms']:>8.2f} {cn['p95_ms']:>8.2f}  {row.get('shadow', '')}"
        )
    write_results(args.out, {"rounds": args.rounds, "concurrency": args.concurrency, **results})


if __name__ == "__main__":
    asyncio.run(main())
