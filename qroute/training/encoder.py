"""Fine-tune the router's encoder on the labelled table (``qroute finetune-encoder``).

The router labels a query by its nearest labelled examples, and thresholds can only sort
what the encoder puts near each other: a general-purpose sentence encoder places "card
declined abroad" as close to "card not working" as to its own label's rows. Training the
encoder on the table itself tightens each label's rows and widens the gaps between labels;
queries that belong to no label then sit further from all of them, which is what a
similarity threshold needs to answer "none of these". Two losses, both sentence-transformers'
own:

- ``mnrl`` (MultipleNegativesRankingLoss): each row is paired with another row of its label,
  and must pick that one out of the batch's other pairs. The other pairs are taken to be of
  other labels, which holds for most of them when the table has many more labels than a
  batch has rows (CLINC150: 150 labels, 64 rows, under half a false negative per row).
- ``triplet`` (BatchAllTripletLoss over label-grouped batches): every batch holds two or
  more rows of several labels; each row is pulled towards its own label's rows and pushed at
  least ``margin`` of cosine distance further from the others'. Right for few labels, where
  in-batch negatives would mostly be of the row's own label.

``auto`` takes ``mnrl`` when the table has at least as many labels as a batch has rows.

Rows of ``table.none_label`` (out of scope) are no label to gather: with ``mnrl`` each
training pair gets one of them as its hard negative, so in-scope rows are pushed away
from what should be answered "none of these" (the thresholds then refuse it at a lower
similarity); ``triplet`` leaves them out. Dev kNN figures are over in-scope rows only.

Rows are split train/dev by a hash of their text (as ``qroute finetune-nli`` does), and
dev is measured as the router's kNN stage sees it: each dev text's 5 nearest train rows
vote (similarity-weighted), before and after. Training is sentence-transformers' own
trainer: progress bar, a checkpoint at every evaluation, ``resume`` after an interruption,
early stopping on dev, the best checkpoint kept. The output is a sentence-transformers
directory that ``encoder.model`` can point at, with a model card (``README.md``) and
``finetune.json``, whose ``run_id`` is part of the encoder fingerprint: an index or
thresholds made with another run of the same directory are refused or warned about.

torch, datasets and sentence-transformers' trainer are imported inside the functions that
need them (the ``train`` extra).
"""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from qroute.config import EncoderSettings
from qroute.embedding.dense import RUN_FILE
from qroute.errors import TableError
from qroute.evaluation.knn import DEFAULT_K, knn_accuracy
from qroute.hub import resolve_model
from qroute.training.common import (
    CHECKPOINTS_DIR,
    TrainingOptions,
    TrainingReport,
    card_head,
    checkpointed_arguments,
    clear_checkpoints,
    discard_checkpoints,
    freeze_word_embeddings,
    recorded_options,
    resume_point,
    split_by_text,
    split_table,
    stopping_callbacks,
    train,
    training_line,
)
from qroute.types import Example

__all__ = [
    "RUN_FILE",
    "EncoderFinetuneOptions",
    "EncoderFinetuneReport",
    "finetune_encoder",
    "held_out_rows",
    "model_card",
]

LOSSES = {
    "mnrl": "sentence-transformers `MultipleNegativesRankingLoss` (each row against another "
    "row of its label, in-batch negatives)",
    "triplet": "sentence-transformers `BatchAllTripletLoss`, cosine distance, batches grouped "
    "by label",
}


@dataclass(frozen=True)
class EncoderFinetuneOptions(TrainingOptions):
    # Rows per batch; the triplet loss draws them two at a time per label so every batch
    # has positives and negatives for each row: must be even and at least 4.
    batch_size: int = 64
    warmup_ratio: float = 0.1
    loss: Literal["auto", "mnrl", "triplet"] = "auto"
    # triplet: cosine distance a row's other-label rows must keep beyond its own label's.
    margin: float = 0.3

    def problems(self) -> list[str]:
        found = super().problems()
        if self.batch_size < 4 or self.batch_size % 2:
            found.append("batch_size must be even and at least 4")
        if self.loss not in ("auto", "mnrl", "triplet"):
            found.append("loss must be auto, mnrl or triplet")
        if not 0.0 < self.margin <= 2.0:
            found.append("margin must be in (0, 2] (a cosine distance)")
        return found


@dataclass
class EncoderFinetuneReport(TrainingReport):
    """``finetune.json`` (``RUN_FILE``): the fields both fine-tunes keep (``before``/
    ``after``: dev knn_accuracy), then the encoder run's own."""

    prompt: str
    run_id: str
    loss: str


def _positive_pairs(
    rows: Sequence[Example], seed: int, negatives: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Each row with another row of its label (rows alone in their label are left out),
    and with ``negatives`` (out-of-scope texts) one of them drawn at random as well."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_label[row.label].append(row.text)
    paired = {label for label, texts in by_label.items() if len(set(texts)) > 1}
    anchors, positives = [], []
    for row in rows:
        if row.label not in paired:
            continue
        texts = by_label[row.label]
        positive = row.text
        while positive == row.text:
            positive = rng.choice(texts)
        anchors.append(row.text)
        positives.append(positive)
    pairs = {"anchor": anchors, "positive": positives}
    if negatives:
        pairs["negative"] = [rng.choice(negatives) for _ in anchors]
    return pairs


def _encode_with(model: Any, prompt: str) -> Callable[[Sequence[str]], npt.NDArray[np.float32]]:
    def encode(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        vectors = model.encode(
            list(texts),
            batch_size=128,
            prompt=prompt or None,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    return encode


def _dev_evaluator(train: Sequence[Example], dev: Sequence[Example], prompt: str) -> Any:
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    class KNNEvaluator(BaseEvaluator):
        """Dev kNN accuracy, the figure checkpoints are chosen by."""

        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self.primary_metric = "knn_accuracy"

        def __call__(
            self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
        ) -> dict[str, float]:
            accuracy = knn_accuracy(_encode_with(model, prompt), train, dev)
            return self.prefix_name_to_metrics({"knn_accuracy": accuracy}, "dev")

    return KNNEvaluator()


def finetune_encoder(
    examples: Sequence[Example],
    encoder: EncoderSettings,
    out: str | Path,
    options: EncoderFinetuneOptions,
    *,
    source: str,
    base: str | None = None,
    none_label: str | None = None,
    callbacks: Sequence[Any] = (),
) -> EncoderFinetuneReport:
    """Train the encoder ``base`` (default ``encoder.model``) on the table rows
    ``examples`` and write the best model (by dev kNN accuracy) to ``out``. Texts are
    encoded with ``encoder.prompt``, as the router encodes them. With ``options.resume``
    the run continues from the latest checkpoint in ``out``; the split is a function of
    the table, so the same table gives the same data. Rows of ``none_label`` are hard
    negatives (the module's docstring). Raises TableError (too few rows or labels),
    ModelLoadError (base model), ConfigError (options)."""
    base = base or encoder.model
    out = Path(out)
    in_scope = [e for e in examples if e.label != none_label]
    labels, train_rows, dev_rows = split_table(in_scope, options.dev_fraction, source)
    # Only the out-of-scope rows on the train side of the same split by text: the dev side
    # is what `held_out_rows` hands `qroute tune --cross-validate` as never trained on.
    none_texts, _ = split_by_text(
        sorted({e.text for e in examples if e.label == none_label}),
        lambda t: t,
        options.dev_fraction,
    )
    loss_name = options.loss
    if loss_name == "auto":
        loss_name = "mnrl" if len(labels) >= options.batch_size else "triplet"
    _check_learnable(train_rows, loss_name, source)
    checkpoints = out / CHECKPOINTS_DIR
    resume_from = resume_point(options, checkpoints)
    if resume_from is None:
        clear_checkpoints(checkpoints)

    model = _load_base(base, encoder, options)
    negatives = none_texts if loss_name == "mnrl" else []
    trainer = _trainer(
        model,
        loss_name,
        labels,
        (train_rows, dev_rows),
        encoder.prompt,
        options,
        checkpoints,
        callbacks,
        negatives,
    )

    def dev_figures() -> dict[str, float]:
        encode = _encode_with(model, encoder.prompt)
        return {"knn_accuracy": round(knn_accuracy(encode, train_rows, dev_rows), 4)}

    before = dev_figures()
    run = train(trainer, resume_from)
    after = dev_figures()

    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    report = EncoderFinetuneReport(
        out=str(out),
        base=base,
        prompt=encoder.prompt,
        source=source,
        run_id=uuid.uuid4().hex,
        loss=loss_name,
        counts={
            "rows": len(examples),
            "labels": len(labels),
            "train_texts": len(train_rows),
            "dev_texts": len(dev_rows),
            "none_negatives": len(negatives),
        },
        options=recorded_options(options),
        before=before,
        after=after,
        **run,
    )
    (out / RUN_FILE).write_text(report.to_json(), encoding="utf-8")
    (out / "README.md").write_text(model_card(report), encoding="utf-8")
    discard_checkpoints(options, checkpoints)
    return report


def _check_learnable(train_rows: Sequence[Example], loss_name: str, source: str) -> None:
    """Raise TableError when ``loss_name`` has nothing to learn from the training rows:
    ``mnrl`` pairs two different rows of a label (none: zero steps, yet a new run_id that
    invalidates the index), ``triplet`` groups two or more rows of at least two labels
    (sentence-transformers' sampler would raise a bare ValueError)."""
    texts: dict[str, set[str]] = defaultdict(set)
    rows: dict[str, int] = defaultdict(int)
    for row in train_rows:
        texts[row.label].add(row.text)
        rows[row.label] += 1
    if loss_name == "mnrl" and not any(len(found) > 1 for found in texts.values()):
        raise TableError(
            [
                f"{source}: no label has two different training rows (after the dev split), "
                "so the mnrl loss has no pair to learn from: add rows per label"
            ]
        )
    grouped = sum(n >= 2 for n in rows.values())
    if loss_name == "triplet" and grouped < 2:
        raise TableError(
            [
                f"{source}: {grouped} label(s) have two or more training rows (after the dev "
                "split); the triplet loss needs at least two such labels: add rows per label"
            ]
        )


def _load_base(base: str, encoder: EncoderSettings, options: EncoderFinetuneOptions) -> Any:
    """The sentence-transformers model to train, on ``encoder.device``."""
    import torch
    from sentence_transformers import SentenceTransformer

    path = resolve_model(base, "encoder", "QROUTE_ENCODER__MODEL")
    torch.manual_seed(options.seed)
    model = SentenceTransformer(path, device=encoder.device)
    transformer: Any = model[0]
    freeze_word_embeddings(transformer.auto_model, options)
    return model


def _objective(
    model: Any,
    loss_name: str,
    labels: Sequence[str],
    train_rows: Sequence[Example],
    options: EncoderFinetuneOptions,
    negatives: Sequence[str],
) -> tuple[Any, Any, Any]:
    """(training set, loss, batch sampler) for ``loss_name``: ``mnrl`` on pairs of rows of
    a label (with ``negatives`` as hard negatives), ``triplet`` on labelled rows in
    label-grouped batches."""
    from datasets import Dataset
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    if loss_name == "mnrl":
        train_set = Dataset.from_dict(_positive_pairs(train_rows, options.seed, negatives))
        return train_set, losses.MultipleNegativesRankingLoss(model), BatchSamplers.NO_DUPLICATES
    ids = {label: i for i, label in enumerate(labels)}
    train_set = Dataset.from_dict(
        {"text": [e.text for e in train_rows], "label": [ids[e.label] for e in train_rows]}
    )
    loss = losses.BatchAllTripletLoss(
        model,
        distance_metric=losses.BatchHardTripletLossDistanceFunction.cosine_distance,
        margin=options.margin,
    )
    return train_set, loss, BatchSamplers.GROUP_BY_LABEL


def _trainer(
    model: Any,
    loss_name: str,
    labels: Sequence[str],
    split: tuple[Sequence[Example], Sequence[Example]],
    prompt: str,
    options: EncoderFinetuneOptions,
    checkpoints: Path,
    callbacks: Sequence[Any],
    negatives: Sequence[str],
) -> Any:
    """sentence-transformers' trainer on the ``split``'s train rows, checkpoints chosen by
    dev kNN accuracy."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        SentenceTransformerTrainingArguments,
    )

    train_rows, dev_rows = split
    train_set, loss, sampler = _objective(model, loss_name, labels, train_rows, options, negatives)
    args = SentenceTransformerTrainingArguments(
        **checkpointed_arguments(options, checkpoints, len(train_set), "eval_dev_knn_accuracy"),
        batch_sampler=sampler,
        prompts=prompt or None,
    )
    return SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        loss=loss,
        evaluator=_dev_evaluator(train_rows, dev_rows, prompt),
        callbacks=stopping_callbacks(options, callbacks),
    )


def held_out_rows(examples: Sequence[Example], model: str) -> list[Example] | None:
    """The rows of ``examples`` that the encoder directory ``model`` cannot have trained on
    when ``qroute finetune-encoder`` wrote it (those its split by text puts on the dev side),
    or None for any other model. Leave-one-out over rows an encoder trained on finds them
    closer to their neighbours than any new query will be."""
    try:
        report = json.loads((Path(model) / RUN_FILE).read_text(encoding="utf-8"))
        fraction = float(report["options"]["dev_fraction"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    _, dev = split_by_text(examples, lambda e: e.text, fraction)
    return dev


def model_card(report: EncoderFinetuneReport) -> str:
    """The output directory's README.md: what was trained from what, and how well."""
    prompt = f'\n  prompt: "{report.prompt}"' if report.prompt else ""
    head = card_head(
        "Encoder fine-tuned by qroute",
        report,
        [
            ("Base model", f"`{report.base}`"),
            ("Data", f"`{report.source}`; train/dev split by text"),
            ("Loss", LOSSES[report.loss]),
            ("Date", report.date),
            ("Run", f"`{report.run_id}` (part of the router's encoder fingerprint)"),
            ("Training", training_line(report)),
        ],
    )
    measure = (
        f"`knn_accuracy`: share of dev texts whose {DEFAULT_K} nearest train rows vote for "
        "their own label\n(similarity-weighted), the router's kNN stage without thresholds."
    )
    return f"""{head}

{measure}

## Use

```yaml
encoder:
  model: {report.out}{prompt}
```

Then re-index (the new fingerprint makes `qroute index` rebuild every vector) and re-tune
the thresholds (`qroute tune`): similarities under this model are not those of the base.
"""
