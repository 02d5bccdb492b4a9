"""Dense vs lexical vs hybrid retrieval on Korean data (issue 7), one table.

StyleKQC: index train, classify dev. ParaKQC: 5-fold cross-validation by paraphrase
set (the `group` field), so paraphrases of one seed never straddle index and queries.
Each dataset is indexed once in hybrid mode (the index holds both vectors); routers in
each mode search it with the router's own decision path (k=10 labels x 3 examples,
max_mean, always answering: similarity threshold -1, zero-shot off). Test splits are
never read. Also: label stability under the typo generator (one typo of each kind on a
sample of the queries: how often the answer stays the one given to the clean query,
and accuracy on the typos), and the search step's p50 latency, hybrid vs dense, in the
same run (single queries, interleaved, embedding excluded).

    python bench/bench_retrieval.py --e5 DIR [--only stylekqc,parakqc] [--typo-sample 300]

The dense side is the multilingual-e5-small directory that
../shared/tools/make_e5_small.py writes (query prompt on both sides).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import CachedEncoder, write_results, write_table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qroute_indexer import run_index  # noqa: E402

from qroute.config import Settings, TableSettings  # noqa: E402
from qroute.embedding.dense import SentenceTransformerEncoder  # noqa: E402
from qroute.evaluation.typos import typo_set  # noqa: E402
from qroute.routing.classifier import Classifier  # noqa: E402
from qroute.routing.retrieval import Embedded  # noqa: E402
from qroute.store.embedded import EmbeddedStore  # noqa: E402
from qroute.table import read_table  # noqa: E402
from qroute.types import Example, Query  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
DEFAULT_WEIGHT = Settings().retrieval.dense_weight
MODES: dict[str, dict[str, Any]] = {
    "dense": {"mode": "dense"},
    "lexical": {"mode": "lexical"},
    "hybrid": {"mode": "hybrid", "fusion": "blend"},
    "hybrid (rrf)": {"mode": "hybrid", "fusion": "rrf"},
}


def _settings(base: Settings, mode: dict[str, Any]) -> Settings:
    return base.model_copy(update={"retrieval": base.retrieval.model_copy(update=mode)})


async def _labels(classifier: Classifier, texts: list[str]) -> list[str | None]:
    out: list[str | None] = []
    for start in range(0, len(texts), 64):
        chunk = texts[start : start + 64]
        out += [p.label for p in await classifier.classify([Query(t) for t in chunk])]
    return out


async def _fold(
    encoder: CachedEncoder,
    train: list[Example],
    held: list[Example],
    typo_rows: list[Example],
    where: Path,
    latency: int,
) -> dict[str, Any]:
    """Index ``train`` once (hybrid), then measure every mode on ``held``."""
    base = Settings(
        retrieval={"mode": "hybrid"},
        zero_shot={"method": "off"},
        router={"k": 10, "group_size": 3, "similarity_threshold": -1.0},
        store={"location": str(where), "collection": "bench"},
        table={"on_duplicate": "skip", "on_conflicting_labels": "skip"},
        index={"canary_per_label": 1},
    )
    await run_index(base, write_table(where / "train.csv", train), encoder=encoder, progress=False)
    store = EmbeddedStore(where, "bench")
    typos = list(typo_set(typo_rows, seed=0))
    result: dict[str, Any] = {"rows": len(held), "typos": len(typos), "modes": {}}
    classifiers = {}
    for name, mode in MODES.items():
        settings = _settings(base, mode)
        classifier = Classifier(
            settings, encoder if mode["mode"] != "lexical" else None, None, store
        )
        await classifier.refresh_index()
        classifiers[name] = classifier
        predicted = await _labels(classifier, [e.text for e in held])
        clean = dict(zip([e.text for e in held], predicted, strict=True))
        on_typos = await _labels(classifier, [t.text for t in typos])
        result["modes"][name] = {
            "right": sum(p == e.label for p, e in zip(predicted, held, strict=True)),
            "typo_right": sum(p == t.example.label for p, t in zip(on_typos, typos, strict=True)),
            "typo_same": sum(
                p == clean[t.example.text] for p, t in zip(on_typos, typos, strict=True)
            ),
        }
    if latency:
        result["latency"] = await _latency(classifiers, held[:latency])
    await store.close()
    return result


async def _latency(classifiers: dict[str, Classifier], held: list[Example]) -> dict[str, float]:
    """p50 of the search step (store search + similarities + grouping), one query at a
    time, dense and hybrid interleaved so both see the same machine."""
    dense, hybrid = classifiers["dense"], classifiers["hybrid"]
    index = hybrid.index
    assert index is not None
    router = hybrid.settings.router
    texts = [e.text for e in held]
    embedded = hybrid.retriever.embed(texts, index.lexicon)
    assert embedded.dense is not None and embedded.sparse is not None
    times: dict[str, list[float]] = {"dense": [], "hybrid": []}
    for warmup in (True, False):
        for i in range(len(texts)):
            for name, classifier in (("dense", dense), ("hybrid", hybrid)):
                one = Embedded(
                    embedded.dense[i : i + 1], [embedded.sparse[i]] if name == "hybrid" else None
                )
                start = time.perf_counter()
                await classifier.retriever.search_groups(
                    classifier.store,
                    index.version,
                    one,
                    classifier.settings.retrieval,
                    groups=router.k,
                    group_size=router.group_size,
                    labels=[None],
                )
                if not warmup:
                    times[name].append(time.perf_counter() - start)
    p50 = {name: statistics.median(values) * 1000 for name, values in times.items()}
    return {
        "dense_p50_ms": round(p50["dense"], 3),
        "hybrid_p50_ms": round(p50["hybrid"], 3),
        "ratio": round(p50["hybrid"] / p50["dense"], 3),
        "queries": len(texts),
    }


def _summary(name: str, folds: list[dict[str, Any]], how: str) -> dict[str, Any]:
    rows = sum(f["rows"] for f in folds)
    typos = sum(f["typos"] for f in folds)
    modes = {}
    for mode in MODES:
        right = sum(f["modes"][mode]["right"] for f in folds)
        typo_right = sum(f["modes"][mode]["typo_right"] for f in folds)
        same = sum(f["modes"][mode]["typo_same"] for f in folds)
        modes[mode] = {
            "accuracy": round(right / rows, 4),
            "typo_accuracy": round(typo_right / typos, 4) if typos else None,
            "typo_stability": round(same / typos, 4) if typos else None,
        }
    latency = next((f["latency"] for f in folds if "latency" in f), None)
    return {
        "dataset": name,
        "evaluated": how,
        "rows": rows,
        "typos": typos,
        "modes": modes,
        "latency": latency,
    }


async def stylekqc(encoder: CachedEncoder, tmp: Path, sample: int, latency: int) -> dict[str, Any]:
    lenient = TableSettings(on_duplicate="skip", on_conflicting_labels="skip")
    train = read_table(DATA / "stylekqc" / "train.jsonl", lenient)
    dev = read_table(DATA / "stylekqc" / "dev.jsonl", lenient)
    typo_rows = random.Random(0).sample(dev, min(sample, len(dev)))
    where = tmp / "stylekqc"
    where.mkdir()
    fold = await _fold(encoder, train, dev, typo_rows, where, latency)
    return _summary("stylekqc", [fold], "train -> dev")


async def parakqc(encoder: CachedEncoder, tmp: Path, sample: int, latency: int) -> dict[str, Any]:
    lenient = TableSettings(on_duplicate="skip", on_conflicting_labels="skip")
    rows = read_table(DATA / "parakqc" / "train.jsonl", lenient)
    folds = []
    for k in range(5):
        held = [e for e in rows if int(e.extra["group"]) % 5 == k]
        train = [e for e in rows if int(e.extra["group"]) % 5 != k]
        typo_rows = random.Random(k).sample(held, min(sample // 5, len(held)))
        where = tmp / f"parakqc{k}"
        where.mkdir()
        folds.append(await _fold(encoder, train, held, typo_rows, where, latency if k == 0 else 0))
        print(f"  parakqc fold {k + 1}/5 done", flush=True)
    return _summary("parakqc", folds, "5-fold CV by paraphrase set")


def _print(summary: dict[str, Any]) -> None:
    print(
        f"\n{summary['dataset']} ({summary['evaluated']}, {summary['rows']} queries, "
        f"{summary['typos']} typo queries)"
    )
    print(f"  {'mode':<20} {'accuracy':>9} {'typo acc':>9} {'stability':>10}")
    for mode, figures in summary["modes"].items():
        print(
            f"  {mode:<20} {figures['accuracy']:>9.4f} {figures['typo_accuracy']:>9.4f} "
            f"{figures['typo_stability']:>10.4f}"
        )
    if summary["latency"]:
        lat = summary["latency"]
        print(
            f"  search p50: dense {lat['dense_p50_ms']:.3f} ms, hybrid {lat['hybrid_p50_ms']:.3f} "
            f"ms -> ratio {lat['ratio']:.3f} (target <= 1.20; {lat['queries']} queries)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--e5", default=str(Path.home() / ".cache/qroute-models/multilingual-e5-small")
    )
    parser.add_argument("--only", default="stylekqc,parakqc")
    parser.add_argument("--typo-sample", type=int, default=300, help="queries given typos")
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument(
        "--weights",
        default="0.3,0.5,0.6,0.7,0.8",
        help="other hybrid dense_weight values to report besides the default",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval.json")
    args = parser.parse_args()
    for weight in (float(w) for w in args.weights.split(",") if w):
        if weight != DEFAULT_WEIGHT:
            MODES[f"hybrid w={weight}"] = {
                "mode": "hybrid",
                "fusion": "blend",
                "dense_weight": weight,
            }
    settings = Settings(encoder={"model": args.e5, "prompt": "query: ", "batch_size": 128})
    encoder = CachedEncoder(SentenceTransformerEncoder(settings.encoder))
    runs = {"stylekqc": stylekqc, "parakqc": parakqc}
    summaries = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            started = time.perf_counter()
            summary = asyncio.run(
                runs[name](encoder, Path(tmp), args.typo_sample, args.latency_queries)
            )
            summary["seconds"] = round(time.perf_counter() - started, 1)
            summaries.append(summary)
            _print(summary)
    write_results(
        args.out,
        {
            "encoder": Path(args.e5).name,
            "retrieval_defaults": Settings().retrieval.model_dump(),
            "lexical_defaults": Settings().lexical.model_dump(),
            "datasets": summaries,
        },
    )


if __name__ == "__main__":
    main()
