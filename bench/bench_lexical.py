"""Lexical search that scales with the table (issue 18).

Requests/s of a lexical router (a real `qroute serve` process, as in production) at
concurrency 64 on a large 151-label table, divided by the same on the 313-row example
table, in one run (target >= 0.5).

The large table is built reproducibly from CLINC150 train (15,100 rows, 150 intents +
oos): every row, plus three one-edit variants of it drawn with a fixed seed (a space
removed, a space added inside a word, one letter dropped; the English counterparts of
`qroute typos`), duplicates (text, label) dropped: 60,3xx rows. ``--rows`` cuts it
(to develop on a small size).

    python bench/bench_lexical.py [--rows 0] [--n 2000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from _load import free_port, throughput, until_classifying
from _results import write_results
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qroute_indexer import run_index  # noqa: E402

from qroute.config import Settings  # noqa: E402
from qroute.table import read_table  # noqa: E402
from qroute.v1 import router_pb2_grpc  # noqa: E402

CLINC = ROOT.parent.parent / "shared" / "datasets" / "clinc150"
if not CLINC.is_dir():
    CLINC = Path("/work/shared/datasets/clinc150")
SEED = 18


def _space_removed(text: str, rng: random.Random) -> str | None:
    spaces = [i for i, c in enumerate(text) if c == " " and 0 < i < len(text) - 1]
    return None if not spaces else (lambda i: text[:i] + text[i + 1 :])(rng.choice(spaces))


def _space_added(text: str, rng: random.Random) -> str | None:
    inside = [i for i in range(1, len(text)) if not text[i - 1].isspace() and not text[i].isspace()]
    return None if not inside else (lambda i: text[:i] + " " + text[i:])(rng.choice(inside))


def _letter_dropped(text: str, rng: random.Random) -> str | None:
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    return None if len(letters) < 2 else (lambda i: text[:i] + text[i + 1 :])(rng.choice(letters))


VARIANTS: tuple[Callable[[str, random.Random], str | None], ...] = (
    _space_removed,
    _space_added,
    _letter_dropped,
)


def big_table(source: Path, out: Path, rows: int = 0) -> int:
    """CLINC150 train and three seeded one-edit variants of each row, as a CSV table
    (``rows`` > 0: only the first ``rows``); returns the number of rows written."""
    rng = random.Random(SEED)
    seen: set[tuple[str, str]] = set()
    written: list[tuple[str, str]] = []
    with source.open(encoding="utf-8") as handle:
        originals = [json.loads(line) for line in handle if line.strip()]
    for row in originals:
        text, label = row["text"], row["label"]
        for candidate in (text, *(make(text, rng) for make in VARIANTS)):
            if candidate and candidate.strip() and (candidate, label) not in seen:
                seen.add((candidate, label))
                written.append((candidate, label))
    # Interleave labels (the source is sorted by label) so that a cut keeps all of them.
    rng.shuffle(written)
    if rows:
        written = written[:rows]
    import csv

    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(written)
    return len(written)


def _settings(tmp: Path, name: str, port: int) -> tuple[Settings, Path]:
    """The example lexical config (examples/qroute-lexical.yaml), on its own store and port."""
    yaml = YAML(typ="safe", pure=True)
    data = yaml.load((ROOT / "examples" / "qroute-lexical.yaml").read_text(encoding="utf-8"))
    data["store"] = {"location": str(tmp / name), "collection": name}
    data["server"] = {"bind": f"127.0.0.1:{port}", "metrics_port": None}
    settings = Settings(**data)
    config = tmp / f"{name}.yaml"
    yaml.dump(settings.model_dump(mode="json"), config)
    return settings, config


async def _serve_and_measure(
    config: Path, port: int, queries: list[str], concurrency: int, profile: Path | None
) -> float:
    # The result cache off: these figures time the search path, and the query
    # lists repeat (warm-up, passes).
    env = {**os.environ, "QROUTE_CONFIG": str(config), "QROUTE_ROUTER__CACHE_SIZE": "0"}
    command = [sys.executable, "-m", "qroute", "serve"]
    router = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    spy = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 120)
            stub = router_pb2_grpc.RouterServiceStub(channel)
            await until_classifying(stub)
            await throughput(stub, queries[:200], concurrency)  # warm-up
            if profile is not None:
                spy = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "-o",
                        str(profile),
                        "-f",
                        "speedscope",
                        "-p",
                        str(router.pid),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)
            return await throughput(stub, queries, concurrency)
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        router.terminate()
        router.wait(timeout=30)


async def _compare(settings: Settings, texts: list[str]) -> dict[str, float]:
    """The store's grouped lexical search against the round-based one it replaced
    (``edge.grouped``) on the same version and queries: how many answer alike (label
    and fallback reasons of the vote), how many have the same groups (labels and
    similarities to 1e-5), and each path's p50 per query."""
    from qroute.routing.retrieval import Retriever
    from qroute.routing.vote import take_vote
    from qroute.store import edge, open_store
    from qroute.store.metadata import IndexMetadata

    retriever = Retriever.from_settings(settings)
    store = open_store(settings.store)
    version = await store.current_version()
    assert version is not None
    lexicon = retriever.check(
        version, IndexMetadata.from_json(await store.metadata(version), version)
    )
    await store.open(version)
    reader = await store._acquire(version)  # type: ignore[attr-defined]
    router, zero_shot = settings.router, settings.zero_shot
    same_answer = same_groups = 0
    new_times, old_times = [], []
    for text in texts:
        vectors = retriever.embed([text], lexicon).sparse
        assert vectors is not None
        start = time.perf_counter()
        [new] = await store.search_groups(
            version, vectors, groups=router.k, group_size=router.group_size, labels=[None]
        )
        new_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        [old] = edge.grouped(reader.shard, vectors, router.k, router.group_size, [None])
        old_times.append(time.perf_counter() - start)
        a, b = take_vote(new, router, zero_shot), take_vote(old, router, zero_shot)
        same_answer += [s.label for s in a.scores[:1]] == [s.label for s in b.scores[:1]] and (
            a.reasons == b.reasons
        )
        same_groups += [g.label for g in new] == [g.label for g in old] and all(
            abs(x.similarity - y.similarity) < 1e-5
            for g, h in zip(new, old, strict=True)
            for x, y in zip(g.hits, h.hits, strict=True)
        )
    await store._release(version, reader)  # type: ignore[attr-defined]
    await store.close()
    return {
        "compared": len(texts),
        "same_answer": same_answer,
        "same_groups": same_groups,
        "grouped_p50_ms": statistics.median(new_times) * 1000,
        "rounds_p50_ms": statistics.median(old_times) * 1000,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=0, help="cut the large table (0: all)")
    parser.add_argument("--n", type=int, default=2000, help="requests timed per table")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the large run here")
    parser.add_argument(
        "--compare", type=int, default=0, help="dev queries to compare with the old search"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lexical.json")
    args = parser.parse_args()
    dev = [json.loads(line)["text"] for line in (CLINC / "dev.jsonl").open(encoding="utf-8")]
    small_queries = [e.text for e in read_table(ROOT / "examples" / "queries_eval.csv")]

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        big = tmp / "clinc150-grown.csv"
        rows = big_table(CLINC / "train.jsonl", big, args.rows)
        labels = len({e.label for e in read_table(big)})
        runs = {
            "small": (ROOT / "examples" / "queries.csv", small_queries),
            "large": (big, dev),
        }
        for name, (table, texts) in runs.items():
            port = free_port()
            settings, config = _settings(tmp, name, port)
            start = time.perf_counter()
            await run_index(settings, table, progress=False)
            results[f"{name}_index_s"] = time.perf_counter() - start
            if name == "large" and args.compare:
                compared = await _compare(settings, dev[: args.compare])
                results.update({f"compare_{k}": float(v) for k, v in compared.items()})
                print(f"grouped search vs the rounds it replaced: {compared}", flush=True)
            queries = (texts * (args.n // len(texts) + 1))[: args.n]
            profile = args.profile if name == "large" else None
            results[f"{name}_qps"] = await _serve_and_measure(
                config, port, queries, args.concurrency, profile
            )
            print(
                f"{name:<6} {table.name:<22} {results[f'{name}_qps']:8.1f} requests/s", flush=True
            )
    ratio = results["large_qps"] / results["small_qps"]
    print(
        f"lexical router at concurrency {args.concurrency}: {rows} rows, {labels} labels "
        f"{results['large_qps']:.1f} req/s / 313-row example {results['small_qps']:.1f} req/s "
        f"= {ratio:.2f}   (target >= 0.5)"
    )
    write_results(
        args.out,
        {
            "params": {k: str(v) for k, v in vars(args).items()},
            "large_rows": rows,
            "large_labels": labels,
            "results": results,
            "large_over_small": ratio,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
