"""``qroute finetune-nli`` and ``finetune-encoder``: fine-tune the fallback's NLI model
and the router's encoder on the labelled table (the [train] extra)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from qroute.cli.common import Command, settings_of, with_config
from qroute.config import Settings

__all__ = ["COMMANDS"]


def _with_training(p: argparse.ArgumentParser, batch_size: int) -> None:
    """The options both fine-tunes take."""
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--dev-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=3, help="evaluations without gain")
    p.add_argument(
        "--bf16", action="store_true", help="mixed precision (CPUs with AVX512-BF16/AMX, GPUs)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its checkpoint"
    )
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def _finetune_arguments(finetune: argparse.ArgumentParser) -> None:
    with_config(finetune)
    finetune.add_argument(
        "table", help="labelled table (as for `qroute index`), or NLI JSONL with --nli-pairs"
    )
    finetune.add_argument("--out", required=True, help="output model directory")
    finetune.add_argument(
        "--base", help="NLI model or plain encoder to start from (default: the config's nli.model)"
    )
    finetune.add_argument(
        "--nli-pairs",
        action="store_true",
        help="TABLE is generic NLI JSONL (premise, hypothesis, label), not a labelled table",
    )
    finetune.add_argument("--negatives", type=int, default=3, help="contradiction pairs per row")
    finetune.add_argument(
        "--hard-share", type=float, default=0.75, help="share of negatives among confusable labels"
    )
    finetune.add_argument(
        "--no-hard-negatives",
        action="store_true",
        help="draw every negative at random (skips loading the encoder)",
    )
    finetune.add_argument(
        "--max-length", type=int, default=64, help="tokens per premise+hypothesis pair"
    )
    _with_training(finetune, batch_size=32)


def _encoder_arguments(encoder_ft: argparse.ArgumentParser) -> None:
    with_config(encoder_ft)
    encoder_ft.add_argument("table", help="labelled table (as for `qroute index`)")
    encoder_ft.add_argument("--out", required=True, help="output model directory")
    encoder_ft.add_argument(
        "--base", help="sentence-transformers model to start from (default: encoder.model)"
    )
    encoder_ft.add_argument(
        "--loss",
        choices=["auto", "mnrl", "triplet"],
        default="auto",
        help="auto: mnrl when the table has at least --batch-size labels, else triplet",
    )
    encoder_ft.add_argument(
        "--margin", type=float, default=0.3, help="triplet margin, in cosine distance"
    )
    encoder_ft.add_argument(
        "--train-embeddings",
        action="store_true",
        help="also train the word-embedding matrix (frozen by default: faster, rarely worse)",
    )
    _with_training(encoder_ft, batch_size=64)


def _training_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options both fine-tunes take (see ``_with_training``)."""
    return {
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "dev_fraction": args.dev_fraction,
        "patience": args.patience,
        "bf16": args.bf16,
        "seed": args.seed,
        "progress": not args.no_progress,
        "resume": args.resume,
        "keep_checkpoints": args.keep_checkpoints,
    }


def _finetune(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from qroute.table import read_table
    from qroute.training.nli import (
        DATA_DIR,
        FinetuneOptions,
        PreparedData,
        finetune,
        prepare_nli_pairs,
        prepare_table,
        read_nli_pairs,
    )

    options = FinetuneOptions(
        negatives=args.negatives,
        hard_share=args.hard_share,
        max_length=args.max_length,
        **_training_options(args),
    )
    base = args.base or settings.nli.model
    saved = Path(args.out) / DATA_DIR
    if args.resume and (saved / "meta.json").exists():
        # The interrupted run's pairs: the same data, without re-embedding the table.
        data = PreparedData.load(saved)
    elif args.nli_pairs:
        data = prepare_nli_pairs(read_nli_pairs(args.table), options, source=args.table)
    else:
        from qroute.embedding.dense import SentenceTransformerEncoder

        examples = read_table(args.table, settings.table)
        encoder = None if args.no_hard_negatives else SentenceTransformerEncoder(settings.encoder)
        data = prepare_table(examples, settings.zero_shot, encoder, options, source=args.table)
    print(
        "pairs: " + ", ".join(f"{k} {v}" for k, v in data.counts.items()),
        file=sys.stderr,
    )
    report = finetune(data, base, args.out, options, zero_shot=settings.zero_shot)
    print(f"wrote {report.out} ({report.steps} steps, {report.train_seconds:.0f} s)")
    for name in report.after:
        before = report.before.get(name, float("nan"))
        print(f"  dev {name}: {before:.4f} -> {report.after[name]:.4f}")
    print(f"point the router at it: nli.model: {report.out} (or QROUTE_NLI__MODEL={report.out})")
    return 0


def _finetune_encoder(settings: Settings, args: argparse.Namespace) -> int:
    from qroute.table import read_table
    from qroute.training.encoder import EncoderFinetuneOptions, finetune_encoder

    options = EncoderFinetuneOptions(
        loss=args.loss,
        margin=args.margin,
        freeze_embeddings=not args.train_embeddings,
        **_training_options(args),
    )
    examples = read_table(args.table, settings.table)
    report = finetune_encoder(
        examples, settings.encoder, args.out, options, source=args.table, base=args.base
    )
    print(f"wrote {report.out} ({report.steps} steps, {report.train_seconds:.0f} s)")
    before, after = report.before["knn_accuracy"], report.after["knn_accuracy"]
    print(f"  dev kNN-5 accuracy: {before:.4f} -> {after:.4f}")
    print(
        f"point the router at it: encoder.model: {report.out} (or QROUTE_ENCODER__MODEL="
        f"{report.out}), then re-index and re-tune: similarities have changed"
    )
    return 0


COMMANDS = (
    Command(
        "finetune-nli",
        "fine-tune the NLI fallback on the labelled table (or on generic NLI pairs)",
        _finetune_arguments,
        lambda args: _finetune(settings_of(args), args),
    ),
    Command(
        "finetune-encoder",
        "fine-tune the router's encoder on the labelled table (tighter label groups)",
        _encoder_arguments,
        lambda args: _finetune_encoder(settings_of(args), args),
    ),
)
