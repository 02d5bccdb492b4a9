"""Fine-tune the NLI zero-shot fallback on the labelled table (``qroute finetune-nli``).

The pairs it trains on are ``qroute.training.nli_pairs``'s: from the table with the
router's own template and label descriptions (hard negatives among the labels the kNN stage
confuses), or generic NLI pairs.

Training is transformers' ``Trainer``: dynamic padding, progress bar, checkpoints every
evaluation, ``resume`` after an interruption, early stopping on dev pair accuracy, the
best checkpoint kept. The output directory is a model ``nli.model`` can point at, with a
model card (``README.md``) and the same figures in ``finetune.json``.

torch and transformers are imported inside the functions that need them; ``Trainer``
needs ``accelerate`` (the ``train`` extra).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qroute.config import NLISettings, ZeroShotSettings
from qroute.errors import ModelLoadError
from qroute.hub import resolve_model
from qroute.routing.zeroshot import NLIZeroShot, ZeroShotItem, class_index
from qroute.training.common import (
    CHECKPOINTS_DIR,
    TrainingReport,
    card_head,
    checkpointed_arguments,
    clear_checkpoints,
    discard_checkpoints,
    freeze_word_embeddings,
    latest_checkpoint,
    recorded_options,
    resume_point,
    stopping_callbacks,
    train,
    training_line,
)
from qroute.training.nli_pairs import (
    NLI_LABELS,
    FinetuneOptions,
    LabelCase,
    Pair,
    PreparedData,
)

__all__ = [
    "DATA_DIR",
    "FinetuneOptions",
    "FinetuneReport",
    "PreparedData",
    "finetune",
    "label_accuracy",
    "load_base",
    "model_card",
    "saved_data",
]

log = logging.getLogger(__name__)

# Where the prepared pairs and the first run's "before" figures live inside the output
# directory, so that a resumed run trains on exactly the same data.
DATA_DIR = "finetune-data"


@dataclass
class FinetuneReport(TrainingReport):
    """``finetune.json``: the fields both fine-tunes keep (``before``/``after``: dev
    pair_accuracy, and label_accuracy in table mode), then the NLI run's own."""

    base_kind: str  # "NLI model, head kept" or "encoder, new 3-class head"
    mode: str
    template: str
    label_descriptions: dict[str, str]
    hard_negatives: str


# -- model -----------------------------------------------------------------------------


def _class_ids(label2id: dict[str, int]) -> dict[str, int] | None:
    """Our three labels -> the model's output indices, or None when the model names no
    entailment class (a plain encoder). A two-class entailment/not-entailment head takes
    neutral and contradiction as its other class."""
    entailment = class_index(label2id, "entail")
    if entailment is None:
        return None
    others = sorted(int(i) for i in label2id.values() if int(i) != entailment)
    if not others:
        return None
    contradiction = class_index(label2id, "contradict")
    contradiction = others[0] if contradiction is None else contradiction
    neutral = class_index(label2id, "neutral")
    return {
        "entailment": entailment,
        "neutral": contradiction if neutral is None else neutral,
        "contradiction": contradiction,
    }


def load_base(base: str, seed: int) -> tuple[Any, Any, dict[str, int], str]:
    """(model, tokenizer, our label -> its output index, what kind of base it is). An NLI
    model keeps its head; a plain encoder gets a new, seeded 3-class head."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(base, "base", "--base")
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the base model {base!r}: {exc}") from exc
    ids = _class_ids(dict(config.label2id or {}))
    # The new head's initial weights are part of the run: seed them.
    torch.manual_seed(seed)
    if ids is not None:
        model = AutoModelForSequenceClassification.from_pretrained(path)
        kind = "NLI model, head kept"
    else:
        id2label = dict(enumerate(NLI_LABELS))
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(NLI_LABELS),
            id2label=id2label,
            label2id={label: i for i, label in id2label.items()},
            # A classifier of other classes (two-class sentiment, say) has a head of
            # another shape: it gets the new, seeded one rather than a load error.
            ignore_mismatched_sizes=True,
        )
        ids = {label: i for i, label in enumerate(NLI_LABELS)}
        kind = "encoder, new 3-class head"
        if _revive_pooler(model):
            kind += ", new pooler"
    return model, tokenizer, ids, kind


def _revive_pooler(model: Any) -> bool:
    """Re-initialise a placeholder pooler (all zeros); True when it did.

    A sequence-classification head reads the pooler's output. Encoders trained for mean
    pooling (sentence-transformers models, e5) often ship no pooler or an all-zero one, and
    an all-zero pooler gives every pair the same pooled vector: the new head can only learn
    the class prior, and predicts the majority class for every pair."""
    import torch

    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    dense = getattr(getattr(base, "pooler", None), "dense", None)
    if not isinstance(dense, torch.nn.Linear) or torch.any(dense.weight != 0):
        return False
    log.warning("the base model's pooler is all zeros (a placeholder): initialising it afresh")
    std = float(getattr(model.config, "initializer_range", 0.02))
    with torch.no_grad():
        dense.weight.normal_(mean=0.0, std=std)
        if dense.bias is not None:
            dense.bias.zero_()
    return True


class _Encoded:
    """Tokenised pairs as the Trainer reads them: a sized, indexable sequence of dicts
    (unpadded: the collator pads each batch to its own longest pair)."""

    def __init__(self, pairs: Sequence[Pair], tokenizer: Any, ids: dict[str, int], n: int):
        encoded = tokenizer(
            [p.premise for p in pairs],
            [p.hypothesis for p in pairs],
            truncation=True,
            max_length=n,
        )
        keys = list(encoded.keys())
        self._rows = [
            {**{k: encoded[k][i] for k in keys}, "labels": ids[p.label]}
            for i, p in enumerate(pairs)
        ]

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._rows[index]


def _pair_accuracy(eval_prediction: Any) -> dict[str, float]:
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def label_accuracy(
    scorer: NLIZeroShot,
    cases: Sequence[LabelCase],
    zero_shot: ZeroShotSettings,
    *,
    batch: int = 16,
) -> float:
    """Share of ``cases`` whose own label the router's zero-shot scorer ranks first among
    the case's candidates (the label it would pick, whatever its threshold)."""
    if not cases:
        return float("nan")
    vector = np.zeros(1, dtype=np.float32)
    right = 0
    for start in range(0, len(cases), batch):
        chunk = cases[start : start + batch]
        items = [ZeroShotItem(c.text, vector, c.candidates) for c in chunk]
        for case, ranked in zip(chunk, scorer.score(items, zero_shot), strict=True):
            right += ranked[0].label == case.label
    return right / len(cases)


def finetune(
    data: PreparedData,
    base: str,
    out: str | Path,
    options: FinetuneOptions,
    *,
    zero_shot: ZeroShotSettings,
    callbacks: Sequence[Any] = (),
) -> FinetuneReport:
    """Train ``base`` on ``data`` and write the best model (by dev pair accuracy) to
    ``out`` with its model card. With ``options.resume`` the run continues from the
    latest checkpoint in ``out`` on the data prepared by the interrupted run.
    Raises ModelLoadError (base model), ConfigError (options)."""
    out = Path(out)
    data_dir, checkpoints = out / DATA_DIR, out / CHECKPOINTS_DIR
    resume_from = resume_point(options, checkpoints)
    if resume_from is not None and not (data_dir / "meta.json").exists():
        # A checkpoint is only resumable on the pairs it was trained on; without them
        # the checkpoints are another run's (and are cleared below).
        log.warning(
            "%s holds no saved pairs of the run in %s: starting from the beginning",
            data_dir,
            checkpoints,
        )
        resume_from = None
    data = _run_data(data, data_dir, checkpoints, resume_from)

    model, tokenizer, ids, kind = load_base(base, options.seed)
    freeze_word_embeddings(model, options)
    trainer = _trainer(model, tokenizer, ids, data, options, checkpoints, callbacks)
    nli = NLISettings(
        model=str(out), max_length=options.max_length, device=str(trainer.args.device)
    )

    def measure() -> dict[str, float]:
        return _measure(trainer, nli, tokenizer, data, zero_shot)

    before = _before(data_dir, resume_from, measure)
    run = train(trainer, resume_from)
    after = measure()

    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    report = FinetuneReport(
        out=str(out),
        base=base,
        base_kind=kind,
        mode=data.mode,
        source=data.source,
        counts=data.counts,
        template=data.template,
        label_descriptions=data.label_descriptions,
        hard_negatives=data.hard_negatives,
        options=recorded_options(options),
        before=before,
        after=after,
        **run,
    )
    (out / "finetune.json").write_text(report.to_json(), encoding="utf-8")
    (out / "README.md").write_text(model_card(report), encoding="utf-8")
    discard_checkpoints(options, checkpoints)
    return report


def saved_data(out: str | Path) -> PreparedData | None:
    """The pairs of an interrupted run in ``out`` that ``--resume`` continues: None when
    there is no checkpoint to resume (a finished run keeps its pairs but not its
    checkpoints: a resumed command must then prepare its own table afresh)."""
    out = Path(out)
    data_dir = out / DATA_DIR
    if latest_checkpoint(out / CHECKPOINTS_DIR) is None or not (data_dir / "meta.json").exists():
        return None
    return PreparedData.load(data_dir)


def _run_data(
    data: PreparedData, data_dir: Path, checkpoints: Path, resume_from: str | None
) -> PreparedData:
    """What the run trains on: the interrupted run's pairs when it resumes one, else
    ``data``, saved for a later resume (any other run's checkpoints removed)."""
    if resume_from is not None:
        return PreparedData.load(data_dir)
    clear_checkpoints(checkpoints)
    data.save(data_dir)
    return data


def _trainer(
    model: Any,
    tokenizer: Any,
    ids: dict[str, int],
    data: PreparedData,
    options: FinetuneOptions,
    checkpoints: Path,
    callbacks: Sequence[Any],
) -> Any:
    """transformers' ``Trainer`` on ``data``'s training pairs, evaluated on a seeded sample
    of at most ``options.max_eval_pairs`` dev pairs."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    train_set = _Encoded(data.train, tokenizer, ids, options.max_length)
    rng = random.Random(options.seed)
    dev_pairs = data.dev
    if len(dev_pairs) > options.max_eval_pairs:
        dev_pairs = rng.sample(dev_pairs, options.max_eval_pairs)
    dev_set = _Encoded(dev_pairs, tokenizer, ids, options.max_length)

    args = TrainingArguments(
        **checkpointed_arguments(options, checkpoints, len(train_set), "accuracy"),
        per_device_eval_batch_size=2 * options.batch_size,
        weight_decay=options.weight_decay,
        dataloader_num_workers=0,
        # Our rows already hold exactly the model's inputs.
        remove_unused_columns=False,
        # Batches of similar lengths: less padding for the same pairs.
        train_sampling_strategy="group_by_length",
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=dev_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=_pair_accuracy,
        callbacks=stopping_callbacks(options, callbacks),
    )


def _before(
    data_dir: Path, resume_from: str | None, measure: Callable[[], dict[str, float]]
) -> dict[str, float]:
    """The dev figures before training: the interrupted run's when this one resumes it
    (the model now loaded is its checkpoint's, not the base), else measured and kept."""
    before_file = data_dir / "before.json"
    if resume_from is not None and before_file.exists():
        kept: dict[str, float] = json.loads(before_file.read_text(encoding="utf-8"))
        return kept
    before = measure()
    before_file.write_text(json.dumps(before), encoding="utf-8")
    return before


def _measure(
    trainer: Any,
    nli: NLISettings,
    tokenizer: Any,
    data: PreparedData,
    zero_shot: ZeroShotSettings,
) -> dict[str, float]:
    figures = {"pair_accuracy": round(float(trainer.evaluate()["eval_accuracy"]), 4)}
    if data.dev_cases:
        scorer = NLIZeroShot.from_model(nli, trainer.model, tokenizer)
        figures["label_accuracy"] = round(label_accuracy(scorer, data.dev_cases, zero_shot), 4)
        trainer.model.train()
    return figures


def model_card(report: FinetuneReport) -> str:
    """The output directory's README.md: what was trained from what, and how well."""
    descriptions = (
        "\n".join(f"- {label}: {text}" for label, text in report.label_descriptions.items())
        or "- (none: the label names themselves)"
    )
    hypothesis = (
        f"""
## Hypotheses

Template: `{report.template}`; `{{label}}` is filled with the label's description where the
config gives one:

{descriptions}

Point the router's config at this model with the same template and descriptions:

```yaml
nli:
  model: {report.out}
zero_shot:
  method: nli
  template: "{report.template}"
```
"""
        if report.mode == "table"
        else ""
    )
    measures = (
        "`pair_accuracy`: the three-way (or entailment/contradiction) class of the dev pairs "
        f"(a sample of at most {report.options['max_eval_pairs']:,}). "
        + (
            "`label_accuracy`: share of dev texts whose own label the router's zero-shot "
            "scorer ranks first among the candidates (all labels, or the true label and its "
            f"{report.options['eval_candidates'] - 1} most confusable ones when there are "
            f"more than {report.options['eval_candidates']}; at most "
            f"{report.options['eval_texts']:,} texts)."
            if report.mode == "table"
            else ""
        )
    )
    head = card_head(
        "NLI fallback fine-tuned by qroute",
        report,
        [
            ("Base model", f"`{report.base}` ({report.base_kind})"),
            ("Data", f"`{report.source}` ({report.mode}); train/dev split by text"),
            ("Date", report.date),
            ("Training", training_line(report)),
            ("Negatives", report.hard_negatives or "n/a"),
        ],
    )
    return f"{head}\n\n{measures}\n{hypothesis}"
