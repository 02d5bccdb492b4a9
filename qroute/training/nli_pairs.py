"""The NLI fine-tune's data (``qroute finetune-nli``): premise/hypothesis pairs.

A base NLI model scores "이 문장은 영화에 관한 것입니다." against a movie question no better
than against 장소: it has never seen the router's hypotheses. Here every ``(text, label)``
row of the table becomes premise/hypothesis pairs made with the router's own template and
label descriptions: entailment with its own label's hypothesis, contradiction with
``negatives`` other labels'. Most negatives are labels the kNN stage confuses with the
row's label (hard negatives, see ``confusable_labels``), the rest are drawn at random.
Rows are split train/dev by a hash of their text, so a text never lands on both sides.

Generic NLI pairs (``premise``, ``hypothesis``, ``label`` JSONL) train the same way; that
is how a Korean NLI model is built here from a plain encoder before it is fine-tuned on a
table. ``qroute.training.nli`` trains on what this module prepares.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from qroute.config import ZeroShotSettings
from qroute.embedding.dense import Encoder
from qroute.errors import TableError
from qroute.table import normalise
from qroute.training.common import (
    TrainingOptions,
    read_jsonl,
    split_by_text,
    split_table,
    write_jsonl,
)
from qroute.types import Example

__all__ = [
    "NLI_LABELS",
    "FinetuneOptions",
    "LabelCase",
    "NLILabel",
    "Pair",
    "PreparedData",
    "build_pairs",
    "confusable_labels",
    "prepare_nli_pairs",
    "prepare_table",
    "read_nli_pairs",
]

log = logging.getLogger(__name__)

NLI_LABELS = ("entailment", "neutral", "contradiction")
NLILabel = Literal["entailment", "neutral", "contradiction"]


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
            write_jsonl(folder / f"{name}.jsonl", (asdict(p) for p in pairs))
        write_jsonl(folder / "dev_cases.jsonl", (asdict(c) for c in self.dev_cases))
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
            name: [Pair(**row) for row in read_jsonl(folder / f"{name}.jsonl")]
            for name in ("train", "dev")
        }
        cases = [
            LabelCase(row["text"], row["label"], tuple(row["candidates"]))
            for row in read_jsonl(folder / "dev_cases.jsonl")
        ]
        return cls(train=pairs["train"], dev=pairs["dev"], dev_cases=cases, **meta)


# -- preparing the pairs ---------------------------------------------------------------


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
    others: Sequence[str],
    confusable: dict[str, list[str]],
    count: int,
    hard_share: float,
    rng: random.Random,
) -> list[str]:
    """``count`` labels among ``others`` (those a row of ``label`` may contradict)."""
    count = min(count, len(others))
    allowed = set(others)
    hard_pool = [other for other in confusable.get(label, []) if other in allowed]
    # Draw the hard ones from the most confused few, not always the same top ones, so
    # that each label is contrasted with all of its close neighbours over the table.
    hard_pool = hard_pool[: max(2 * count, 1)]
    hard = rng.sample(hard_pool, min(round(count * hard_share), len(hard_pool)))
    rest = [other for other in others if other not in hard]
    return hard + rng.sample(rest, count - len(hard))


def _alike(labels: Sequence[str], zero_shot: ZeroShotSettings) -> list[list[str]]:
    """Groups of labels that share one hypothesis (the router cannot tell them apart)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for label in labels:
        groups[zero_shot.hypothesis(label)].append(label)
    return [group for group in groups.values() if len(group) > 1]


def build_pairs(
    examples: Sequence[Example],
    labels: Sequence[str],
    zero_shot: ZeroShotSettings,
    confusable: dict[str, list[str]],
    *,
    negatives: int,
    hard_share: float,
    seed: int = 0,
    none_label: str | None = None,
) -> list[Pair]:
    """One entailment pair and ``negatives`` contradiction pairs per row, hypotheses
    written with the router's template and label descriptions (never a label whose
    hypothesis is the row's own). A row of ``none_label`` (table.none_label: out of
    scope) entails nothing: ``negatives`` + 1 contradiction pairs with labels drawn at
    random (``labels`` holds no none label)."""
    rng = random.Random(seed)
    hypotheses = {label: zero_shot.hypothesis(label) for label in labels}
    # Per row label, the labels it may contradict. Two labels described alike (or one
    # described by the other's name) share a hypothesis: a negative among them would
    # teach the model that a row's own hypothesis is a contradiction.
    contrasting: dict[str, list[str]] = {}
    pairs = []
    for example in examples:
        if example.label == none_label:
            for other in rng.sample(list(labels), min(negatives + 1, len(labels))):
                pairs.append(Pair(example.text, zero_shot.hypothesis(other), "contradiction"))
            continue
        own = zero_shot.hypothesis(example.label)
        pairs.append(Pair(example.text, own, "entailment"))
        if example.label not in contrasting:
            contrasting[example.label] = [lb for lb in labels if hypotheses[lb] != own]
        others = contrasting[example.label]
        for other in _negatives(example.label, others, confusable, negatives, hard_share, rng):
            pairs.append(Pair(example.text, hypotheses[other], "contradiction"))
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
    none_label: str | None = None,
) -> PreparedData:
    """Pairs from a labelled table (rows as ``qroute.table.read_table`` returns them).
    Without an encoder every negative is drawn at random. Rows of ``none_label`` are
    premises that contradict the labels, never a hypothesis of their own."""
    labels, train_rows, dev_rows = split_table(examples, options.dev_fraction, source)
    labels = [label for label in labels if label != none_label]
    for group in _alike(labels, zero_shot):
        log.warning(
            "labels %s share the hypothesis %r (zero_shot.template, zero_shot.label_descriptions):"
            " they are never each other's negatives, and the NLI fallback cannot tell them apart",
            ", ".join(group),
            zero_shot.hypothesis(group[0]),
        )
    confusable = confusable_labels(examples, encoder, seed=options.seed) if encoder else {}
    confusable = {
        label: [other for other in others if other != none_label]
        for label, others in confusable.items()
        if label != none_label
    }
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
            none_label=none_label,
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
        dev_cases=_cases(
            [e for e in dev_rows if e.label != none_label], labels, confusable, options
        ),
        source=source,
        mode="table",
        counts={
            "rows": len(examples),
            "labels": len(labels),
            "train_texts": len(train_rows),
            "dev_texts": len(dev_rows),
            "train_pairs": len(train),
            "dev_pairs": len(dev),
            "none_rows": sum(e.label == none_label for e in examples),
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
