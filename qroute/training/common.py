"""What both fine-tunes (``finetune-nli``, ``finetune-encoder``) share.

Their options (``TrainingOptions``), the train/dev split by text, the Trainer arguments
(evaluation and checkpoints about four times an epoch, the best kept), resuming from and
clearing checkpoints, the run's figures (``train``), the report fields both keep
(``TrainingReport``) and the head of both model cards.

torch and transformers are imported inside the functions that need them (the ``train``
extra).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from qroute.errors import ConfigError, TableError
from qroute.table import normalise
from qroute.types import Example

__all__ = [
    "CHECKPOINTS_DIR",
    "TrainingOptions",
    "TrainingReport",
    "card_head",
    "checkpointed_arguments",
    "clear_checkpoints",
    "discard_checkpoints",
    "freeze_word_embeddings",
    "latest_checkpoint",
    "read_jsonl",
    "recorded_options",
    "resume_point",
    "split_by_text",
    "split_table",
    "stopping_callbacks",
    "train",
    "training_line",
    "write_jsonl",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

CHECKPOINTS_DIR = "checkpoints"


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
    # Mixed precision (bf16 autocast, fp32 master weights): faster training on CPUs with
    # AVX512-BF16 or AMX and on recent GPUs (bench/RESULTS.md); slower where neither exists.
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


@dataclass
class TrainingReport:
    """What both fine-tunes record about a run (``finetune.json``); ``train`` returns the
    fields from ``train_seconds`` to ``date``."""

    out: str
    base: str
    source: str
    counts: dict[str, int]
    options: dict[str, Any]
    before: dict[str, float]
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


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
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


def split_table(
    examples: Sequence[Example], dev_fraction: float, source: str
) -> tuple[list[str], list[Example], list[Example]]:
    """(labels in name order, train rows, dev rows) of a table to fine-tune on; raises
    TableError when it has fewer than two labels or too few rows for both sides."""
    labels = sorted({e.label for e in examples})
    if len(labels) < 2:
        raise TableError([f"{source}: fine-tuning needs at least two labels, found {labels}"])
    train_rows, dev_rows = split_by_text(examples, lambda e: e.text, dev_fraction)
    if not train_rows or not dev_rows:
        raise TableError(
            [f"{source}: {len(examples)} rows are too few for a train/dev split by text"]
        )
    return labels, train_rows, dev_rows


# -- checkpoints -----------------------------------------------------------------------


def latest_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not folder.is_dir():
        return None
    found: str | None = get_last_checkpoint(str(folder))  # type: ignore[no-untyped-call]
    return found


def resume_point(options: TrainingOptions, checkpoints: Path) -> str | None:
    """The checkpoint to resume from: the latest in ``checkpoints`` with
    ``options.resume`` (a warning when there is none), else None."""
    resume_from = latest_checkpoint(checkpoints) if options.resume else None
    if options.resume and resume_from is None:
        log.warning("no checkpoint in %s: starting from the beginning", checkpoints)
    return resume_from


def clear_checkpoints(checkpoints: Path) -> None:
    """Remove the checkpoints of another run before a fresh one: they would be resumed
    by mistake later."""
    if checkpoints.exists():
        shutil.rmtree(checkpoints)


def discard_checkpoints(options: TrainingOptions, checkpoints: Path) -> None:
    """After a finished run, unless ``options.keep_checkpoints``: checkpoints only serve
    to resume an interrupted one."""
    if not options.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)


# -- training --------------------------------------------------------------------------


def freeze_word_embeddings(model: Any, options: TrainingOptions) -> None:
    """Freeze a transformers model's input embeddings when ``options`` ask for it (see
    ``TrainingOptions.freeze_embeddings``)."""
    if options.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)


def stopping_callbacks(options: TrainingOptions, callbacks: Sequence[Any]) -> list[Any]:
    """Early stopping after ``options.patience`` evaluations, then the caller's own."""
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=options.patience), *callbacks]


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


def _stopped_early(trainer: Any) -> bool:
    """Whether early stopping ended the run (not a sampler that yields fewer batches)."""
    from transformers import EarlyStoppingCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, EarlyStoppingCallback):
            counter = int(getattr(callback, "early_stopping_patience_counter", 0))
            return counter >= callback.early_stopping_patience
    return False


# -- model card ------------------------------------------------------------------------


def recorded_options(options: TrainingOptions) -> dict[str, Any]:
    """The options a model card records: those that shape the model, not the run."""
    return {
        k: v
        for k, v in asdict(options).items()
        if k not in ("progress", "resume", "keep_checkpoints")
    }


def training_line(report: TrainingReport) -> str:
    """One line of a model card: steps, epochs, time, early stop, resume."""
    return (
        f"{report.steps:,} steps, {report.epochs_done} epochs, {report.train_seconds:,.0f} s "
        f"({report.train_cpu_seconds:,.0f} CPU s)"
        + (", stopped early on dev" if report.stopped_early else "")
        + (f", resumed from {report.resumed_from}" if report.resumed_from else "")
    )


def card_head(title: str, report: TrainingReport, facts: Sequence[tuple[str, str]]) -> str:
    """A model card (the output directory's README.md) up to its dev figures: the title,
    ``facts`` (name, text) then the options as a list, the data's counts and the dev
    figures before and after training, as tables."""
    listed = "\n".join(f"- **{name}:** {text}" for name, text in facts)
    options = ", ".join(f"{k}={v}" for k, v in report.options.items())
    counts = "\n".join(f"| {k} | {v:,} |" for k, v in report.counts.items())
    figures = "\n".join(
        f"| {name} | {report.before.get(name, float('nan')):.4f} | "
        f"{report.after.get(name, float('nan')):.4f} |"
        for name in report.after
    )
    return f"""# {title}

{listed}
- **Options:** {options}

## Data

| | count |
|---|---|
{counts}

## Dev accuracy

| measure | before | after |
|---|---|---|
{figures}"""
