"""Fine-tune the NLI zero-shot fallback on the labelled table (``qroute finetune-nli``).

A base NLI model scores "이 문장은 영화에 관한 것입니다." against a movie question no better
than against 장소: it has never seen the router's hypotheses. Here every ``(text, label)``
row of the table becomes premise/hypothesis pairs made with the router's own template and
label descriptions: entailment with its own label's hypothesis, contradiction with
``negatives`` other labels'. Most negatives are labels the kNN stage confuses with the
row's label (hard negatives, see ``confusable_labels``), the rest are drawn at random.
Rows are split train/dev by a hash of their text, so a text never lands on both sides.

Generic NLI pairs (``premise``, ``hypothesis``, ``label`` JSONL) train the same way; that
is how a Korean NLI model is built here from a plain encoder before it is fine-tuned on a
table.

Training is transformers' ``Trainer``: dynamic padding, progress bar, checkpoints every
evaluation, ``resume`` after an interruption, early stopping on dev pair accuracy, the
best checkpoint kept. The output directory is a model ``nli.model`` can point at, with a
model card (``README.md``) and the same figures in ``finetune.json``.

torch and transformers are imported inside the functions that need them; ``Trainer``
needs ``accelerate`` (the ``train`` extra).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from qroute.config import NLISettings, ZeroShotSettings
from qroute.embedding.dense import Encoder
from qroute.errors import ConfigError, ModelLoadError, TableError
from qroute.hub import resolve_model
from qroute.routing.zeroshot import NLIZeroShot, ZeroShotItem, class_index
from qroute.table import normalise
from qroute.types import Example

__all__ = [
    "NLI_LABELS",
    "FinetuneOptions",
    "FinetuneReport",
    "LabelCase",
    "Pair",
    "PreparedData",
    "TrainingOptions",
    "build_pairs",
    "checkpointed_arguments",
    "confusable_labels",
    "finetune",
    "label_accuracy",
    "latest_checkpoint",
    "load_base",
    "prepare_nli_pairs",
    "prepare_table",
    "read_nli_pairs",
    "recorded_options",
    "split_by_text",
    "train",
    "training_line",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

NLI_LABELS = ("entailment", "neutral", "contradiction")
NLILabel = Literal["entailment", "neutral", "contradiction"]
# Where the prepared pairs and the first run's "before" figures live inside the output
# directory, so that a resumed run trains on exactly the same data.
DATA_DIR = "finetune-data"
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True, slots=True)
class Pair:
    premise: str
    hypothesis: str
    label: NLILabel


@dataclass(frozen=True, slots=True)
class LabelCase:
    """A dev text for the label-picking measure: its label and the candidates scored."""

    text: str
    label: str
    candidates: tuple[str, ...]


@dataclass(frozen=True)
class TrainingOptions:
    """What both fine-tunes (``finetune-nli``, ``finetune-encoder``) take."""

    dev_fraction: float = 0.1
    epochs: float = 1.0
    # > 0: stop after this many optimisation steps (overrides epochs; tests, smoke runs).
    max_steps: int = -1
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.06
    # Evaluate (and checkpoint) this often; None: about four times per epoch.
    eval_steps: int | None = None
    # Evaluations without a better dev figure before training stops.
    patience: int = 3
    # The word-embedding matrix is most of a small encoder's weights (96M of e5-small's
    # 118M) and a short fine-tune sees few of its rows: freezing it roughly halves the
    # optimiser's work per step at no measurable cost in accuracy.
    freeze_embeddings: bool = True
    # Mixed precision (bf16 autocast, fp32 master weights): about 2x faster training on
    # CPUs with AVX512-BF16 or AMX and on recent GPUs; slower where neither exists.
    bf16: bool = False
    seed: int = 0
    progress: bool = True
    resume: bool = False
    keep_checkpoints: bool = False

    def problems(self) -> list[str]:
        """What is wrong with these options; subclasses add their own checks."""
        found = []
        if not 0.0 < self.dev_fraction < 1.0:
            found.append("dev_fraction must be in (0, 1)")
        if self.epochs <= 0 and self.max_steps <= 0:
            found.append("epochs must be positive (or max_steps set)")
        return found

    def __post_init__(self) -> None:
        if found := self.problems():
            raise ConfigError("invalid fine-tuning options: " + "; ".join(found))


@dataclass(frozen=True)
class FinetuneOptions(TrainingOptions):
    # Contradiction pairs per row, and the share of them drawn among confusable labels.
    negatives: int = 3
    hard_share: float = 0.75
    weight_decay: float = 0.01
    # Queries and hypotheses are short: 64 tokens hold both; dynamic padding trims the rest.
    max_length: int = 64
    # Dev pairs the Trainer evaluates at each checkpoint (a seeded sample; all when fewer).
    max_eval_pairs: int = 2000
    # Label-picking accuracy: dev texts scored, and candidate labels per text (all labels
    # when there are no more than this).
    eval_texts: int = 500
    eval_candidates: int = 10

    def problems(self) -> list[str]:
        found = super().problems()
        if self.negatives < 1:
            found.append("negatives must be at least 1")
        if not 0.0 <= self.hard_share <= 1.0:
            found.append("hard_share must be in [0, 1]")
        if self.max_length < 8:
            found.append("max_length must be at least 8")
        return found


@dataclass
class PreparedData:
    """Training and dev pairs, plus what the model card reports about them."""

    train: list[Pair]
    dev: list[Pair]
    dev_cases: list[LabelCase]  # empty for generic NLI pairs
    source: str
    mode: Literal["table", "nli-pairs"]
    counts: dict[str, int] = field(default_factory=dict)
    template: str = ""
    label_descriptions: dict[str, str] = field(default_factory=dict)
    hard_negatives: str = ""

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, pairs in (("train", self.train), ("dev", self.dev)):
            _write_jsonl(folder / f"{name}.jsonl", (asdict(p) for p in pairs))
        _write_jsonl(folder / "dev_cases.jsonl", (asdict(c) for c in self.dev_cases))
        meta = {
            "source": self.source,
            "mode": self.mode,
            "counts": self.counts,
            "template": self.template,
            "label_descriptions": self.label_descriptions,
            "hard_negatives": self.hard_negatives,
        }
        (folder / "meta.json").write_text(
            json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: Path) -> PreparedData:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        pairs = {
            name: [Pair(**row) for row in _read_jsonl(folder / f"{name}.jsonl")]
            for name in ("train", "dev")
        }
        cases = [
            LabelCase(row["text"], row["label"], tuple(row["candidates"]))
            for row in _read_jsonl(folder / "dev_cases.jsonl")
        ]
        return cls(train=pairs["train"], dev=pairs["dev"], dev_cases=cases, **meta)


@dataclass
class FinetuneReport:
    out: str
    base: str
    base_kind: str  # "NLI model, head kept" or "encoder, new 3-class head"
    mode: str
    source: str
    counts: dict[str, int]
    template: str
    label_descriptions: dict[str, str]
    hard_negatives: str
    options: dict[str, Any]
    before: dict[str, float]  # dev pair_accuracy, label_accuracy (table mode)
    after: dict[str, float]
    train_seconds: float
    train_cpu_seconds: float
    steps: int
    epochs_done: float
    stopped_early: bool
    resumed_from: str | None
    date: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)


# -- data ------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _digest(text: str) -> int:
    raw = hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(raw, "little")


def split_by_text(
    items: Sequence[T], text: Callable[[T], str], dev_fraction: float
) -> tuple[list[T], list[T]]:
    """(train, dev) by a hash of each item's normalised text: every item with the same
    text lands on the same side, on every machine and every run."""
    cut = int(dev_fraction * 10_000)
    train: list[T] = []
    dev: list[T] = []
    for item in items:
        (dev if _digest(text(item)) % 10_000 < cut else train).append(item)
    return train, dev


def confusable_labels(
    examples: Sequence[Example],
    encoder: Encoder,
    *,
    probes_per_label: int = 50,
    neighbours: int = 10,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Per label, the other labels the kNN stage confuses with it, most confused first.

    The table is embedded with the router's encoder (the vectors the index holds); for
    up to ``probes_per_label`` rows of each label, its ``neighbours`` nearest other rows
    by cosine similarity (itself left out) are counted by label. This is the kNN
    stage's leave-one-out confusion, computed from the table so that it needs neither a
    running store nor a published index. Labels never seen near a label are absent.
    """
    rng = random.Random(seed)
    texts = [e.text for e in examples]
    vectors = np.asarray(encoder.encode(texts), dtype=np.float32)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, example in enumerate(examples):
        by_label[example.label].append(i)
    probes = []
    for rows in by_label.values():
        probes.extend(rng.sample(rows, min(probes_per_label, len(rows))))
    labels = [e.label for e in examples]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    chunk = 256
    for start in range(0, len(probes), chunk):
        rows = probes[start : start + chunk]
        similarity = vectors[rows] @ vectors.T
        similarity[np.arange(len(rows)), rows] = -np.inf
        take = min(neighbours, len(examples) - 1)
        if take <= 0:
            break
        nearest = np.argpartition(-similarity, take - 1, axis=1)[:, :take]
        for row, found in zip(rows, nearest, strict=True):
            own = labels[row]
            counts[own].update(labels[j] for j in found if labels[j] != own)
    return {
        label: [other for other, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]
        for label, c in counts.items()
    }


def _negatives(
    label: str,
    labels: Sequence[str],
    confusable: dict[str, list[str]],
    count: int,
    hard_share: float,
    rng: random.Random,
) -> list[str]:
    count = min(count, len(labels) - 1)
    hard_pool = [other for other in confusable.get(label, []) if other != label]
    # Draw the hard ones from the most confused few, not always the same top ones, so
    # that each label is contrasted with all of its close neighbours over the table.
    hard_pool = hard_pool[: max(2 * count, 1)]
    hard = rng.sample(hard_pool, min(round(count * hard_share), len(hard_pool)))
    rest = [other for other in labels if other != label and other not in hard]
    return hard + rng.sample(rest, count - len(hard))


def build_pairs(
    examples: Sequence[Example],
    labels: Sequence[str],
    zero_shot: ZeroShotSettings,
    confusable: dict[str, list[str]],
    *,
    negatives: int,
    hard_share: float,
    seed: int = 0,
) -> list[Pair]:
    """One entailment pair and ``negatives`` contradiction pairs per row, hypotheses
    written with the router's template and label descriptions."""
    rng = random.Random(seed)
    pairs = []
    for example in examples:
        pairs.append(Pair(example.text, zero_shot.hypothesis(example.label), "entailment"))
        for other in _negatives(example.label, labels, confusable, negatives, hard_share, rng):
            pairs.append(Pair(example.text, zero_shot.hypothesis(other), "contradiction"))
    return pairs


def _cases(
    examples: Sequence[Example],
    labels: Sequence[str],
    confusable: dict[str, list[str]],
    options: FinetuneOptions,
) -> list[LabelCase]:
    rng = random.Random(options.seed + 1)
    chosen = list(examples)
    if len(chosen) > options.eval_texts:
        chosen = rng.sample(chosen, options.eval_texts)
    cases = []
    for example in chosen:
        if len(labels) <= options.eval_candidates:
            candidates = list(labels)
        else:
            # The true label among its most confusable ones (topped up at random): the
            # choice the router's zero-shot stage faces, whose candidates are the vote's.
            others = confusable.get(example.label, [])[: options.eval_candidates - 1]
            rest = [lb for lb in labels if lb != example.label and lb not in others]
            others += rng.sample(rest, options.eval_candidates - 1 - len(others))
            candidates = sorted([example.label, *others])
        cases.append(LabelCase(example.text, example.label, tuple(candidates)))
    return cases


def prepare_table(
    examples: Sequence[Example],
    zero_shot: ZeroShotSettings,
    encoder: Encoder | None,
    options: FinetuneOptions,
    *,
    source: str,
) -> PreparedData:
    """Pairs from a labelled table (rows as ``qroute.table.read_table`` returns them).
    Without an encoder every negative is drawn at random."""
    labels = sorted({e.label for e in examples})
    if len(labels) < 2:
        raise TableError([f"{source}: fine-tuning needs at least two labels, found {labels}"])
    confusable = confusable_labels(examples, encoder, seed=options.seed) if encoder else {}
    train_rows, dev_rows = split_by_text(examples, lambda e: e.text, options.dev_fraction)
    if not train_rows or not dev_rows:
        raise TableError(
            [f"{source}: {len(examples)} rows are too few for a train/dev split by text"]
        )
    share = options.hard_share if encoder else 0.0
    train, dev = (
        build_pairs(
            rows,
            labels,
            zero_shot,
            confusable,
            negatives=options.negatives,
            hard_share=share,
            seed=options.seed + offset,
        )
        for offset, rows in enumerate((train_rows, dev_rows))
    )
    hard = (
        f"{round(options.hard_share * 100)}% of negatives among the labels nearest under "
        "the router's encoder (leave-one-out kNN confusions of up to 50 rows per label)"
        if encoder
        else "none: every negative drawn at random"
    )
    return PreparedData(
        train=train,
        dev=dev,
        dev_cases=_cases(dev_rows, labels, confusable, options),
        source=source,
        mode="table",
        counts={
            "rows": len(examples),
            "labels": len(labels),
            "train_texts": len(train_rows),
            "dev_texts": len(dev_rows),
            "train_pairs": len(train),
            "dev_pairs": len(dev),
        },
        template=zero_shot.template,
        label_descriptions=dict(zero_shot.label_descriptions),
        hard_negatives=hard,
    )


class _NLIRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    premise: str
    hypothesis: str
    label: NLILabel

    @field_validator("premise", "hypothesis")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty")
        return value


def read_nli_pairs(path: str | Path) -> list[Pair]:
    """Generic NLI pairs from JSONL (``premise``, ``hypothesis``, ``label`` one of
    entailment/neutral/contradiction); raises TableError naming every bad ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise TableError([f"{path}: no such file"])
    pairs: list[Pair] = []
    problems: list[str] = []
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = _NLIRow.model_validate_json(line)
            except ValidationError as exc:
                for err in exc.errors():
                    where = ".".join(str(part) for part in err["loc"]) or "(row)"
                    problems.append(f"{path}:{number}: {where}: {err['msg']}")
                continue
            pairs.append(Pair(normalise(row.premise), normalise(row.hypothesis), row.label))
    if problems:
        raise TableError(problems)
    if not pairs:
        raise TableError([f"{path}: no NLI pairs"])
    return pairs


def prepare_nli_pairs(
    pairs: Sequence[Pair], options: FinetuneOptions, *, source: str
) -> PreparedData:
    """Generic NLI pairs split train/dev by premise (a premise never on both sides)."""
    train, dev = split_by_text(pairs, lambda p: p.premise, options.dev_fraction)
    if not train or not dev:
        raise TableError([f"{source}: {len(pairs)} pairs are too few for a train/dev split"])
    per_label: Counter[str] = Counter(p.label for p in pairs)
    return PreparedData(
        train=list(train),
        dev=list(dev),
        dev_cases=[],
        source=source,
        mode="nli-pairs",
        counts={
            "pairs": len(pairs),
            "train_pairs": len(train),
            "dev_pairs": len(dev),
            **{f"{label}_pairs": per_label[label] for label in NLI_LABELS},
        },
    )


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


def latest_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not folder.is_dir():
        return None
    found: str | None = get_last_checkpoint(str(folder))  # type: ignore[no-untyped-call]
    return found


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
    from transformers import (
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
    )

    out = Path(out)
    data_dir, checkpoints = out / DATA_DIR, out / CHECKPOINTS_DIR
    resume_from = latest_checkpoint(checkpoints) if options.resume else None
    if options.resume and resume_from is None:
        log.warning("no checkpoint in %s: starting from the beginning", checkpoints)
    if resume_from is not None and (data_dir / "meta.json").exists():
        data = PreparedData.load(data_dir)
    else:
        if checkpoints.exists():
            # Checkpoints of another run would be resumed by mistake later.
            shutil.rmtree(checkpoints)
        data.save(data_dir)

    model, tokenizer, ids, kind = load_base(base, options.seed)
    if options.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
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
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=dev_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=_pair_accuracy,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=options.patience), *callbacks],
    )

    nli = NLISettings(model=str(out), max_length=options.max_length, device=str(args.device))
    before_file = data_dir / "before.json"
    if resume_from is not None and before_file.exists():
        before = json.loads(before_file.read_text(encoding="utf-8"))
    else:
        before = _measure(trainer, nli, tokenizer, data, zero_shot)
        before_file.write_text(json.dumps(before), encoding="utf-8")

    run = train(trainer, resume_from)
    after = _measure(trainer, nli, tokenizer, data, zero_shot)

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
    if not options.keep_checkpoints:
        # Checkpoints only serve to resume an interrupted run; this one finished.
        shutil.rmtree(checkpoints, ignore_errors=True)
    return report


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
    counts = "\n".join(f"| {k} | {v:,} |" for k, v in report.counts.items())
    figures = "\n".join(
        f"| {name} | {report.before.get(name, float('nan')):.4f} | "
        f"{report.after.get(name, float('nan')):.4f} |"
        for name in report.after
    )
    descriptions = (
        "\n".join(f"- {label}: {text}" for label, text in report.label_descriptions.items())
        or "- (none: the label names themselves)"
    )
    options = ", ".join(f"{k}={v}" for k, v in report.options.items())
    training = training_line(report)
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
    return f"""# NLI fallback fine-tuned by qroute

- **Base model:** `{report.base}` ({report.base_kind})
- **Data:** `{report.source}` ({report.mode}); train/dev split by text
- **Date:** {report.date}
- **Training:** {training}
- **Negatives:** {report.hard_negatives or "n/a"}
- **Options:** {options}

## Data

| | count |
|---|---|
{counts}

## Dev accuracy

| measure | before | after |
|---|---|---|
{figures}

{measures}
{hypothesis}"""


# -- what both fine-tunes share ----------------------------------------------------------


def train(trainer: Any, resume_from: str | None) -> dict[str, Any]:
    """Run ``trainer`` (from ``resume_from`` when set) and return the figures a report
    keeps about the run: its report fields ``train_seconds`` to ``date``."""
    began, cpu_began = time.perf_counter(), time.process_time()
    result = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - began
    # CPU seconds of this process: on a shared machine, wall time also counts the others.
    cpu_seconds = time.process_time() - cpu_began
    state = trainer.state
    return {
        "train_seconds": round(float(result.metrics.get("train_runtime", train_seconds)), 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "steps": int(state.global_step),
        "epochs_done": round(float(state.epoch or 0.0), 3),
        "stopped_early": _stopped_early(trainer),
        "resumed_from": resume_from,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def checkpointed_arguments(
    options: TrainingOptions, checkpoints: Path, train_rows: int, metric: str
) -> dict[str, Any]:
    """Trainer arguments both fine-tunes share: a dev evaluation and a checkpoint about four
    times an epoch (or every ``options.eval_steps``), the best by ``metric`` kept, warm-up
    over ``options.warmup_ratio`` of the steps, bf16 allowed on a CPU."""
    import torch

    steps_per_epoch = max(1, math.ceil(train_rows / options.batch_size))
    total_steps = (
        options.max_steps if options.max_steps > 0 else math.ceil(steps_per_epoch * options.epochs)
    )
    eval_steps = options.eval_steps or max(1, min(total_steps, steps_per_epoch) // 4)
    return {
        "output_dir": str(checkpoints),
        "per_device_train_batch_size": options.batch_size,
        "num_train_epochs": options.epochs,
        "max_steps": options.max_steps,
        "learning_rate": options.learning_rate,
        "warmup_steps": round(options.warmup_ratio * total_steps),
        "eval_strategy": "steps",
        "eval_steps": eval_steps,
        "save_strategy": "steps",
        "save_steps": eval_steps,
        "save_total_limit": 2,
        "load_best_model_at_end": True,
        "metric_for_best_model": metric,
        "greater_is_better": True,
        "logging_steps": max(1, min(50, eval_steps)),
        "report_to": "none",
        "disable_tqdm": not options.progress,
        "seed": options.seed,
        "data_seed": options.seed,
        # Pinned memory only helps copies to a GPU (and warns without one).
        "dataloader_pin_memory": torch.cuda.is_available(),
        "bf16": options.bf16,
        # transformers only accepts bf16 without a GPU when told to train on the CPU.
        "use_cpu": not torch.cuda.is_available(),
    }


def _stopped_early(trainer: Any) -> bool:
    """Whether early stopping ended the run (not a sampler that yields fewer batches)."""
    from transformers import EarlyStoppingCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, EarlyStoppingCallback):
            counter = int(getattr(callback, "early_stopping_patience_counter", 0))
            return counter >= callback.early_stopping_patience
    return False


def recorded_options(options: TrainingOptions) -> dict[str, Any]:
    """The options a model card records: those that shape the model, not the run."""
    return {
        k: v
        for k, v in asdict(options).items()
        if k not in ("progress", "resume", "keep_checkpoints")
    }


def training_line(report: Any) -> str:
    """One line of a model card: steps, epochs, time, early stop, resume."""
    return (
        f"{report.steps:,} steps, {report.epochs_done} epochs, {report.train_seconds:,.0f} s "
        f"({report.train_cpu_seconds:,.0f} CPU s)"
        + (", stopped early on dev" if report.stopped_early else "")
        + (f", resumed from {report.resumed_from}" if report.resumed_from else "")
    )
