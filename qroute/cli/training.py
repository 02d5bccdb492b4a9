"""``qroute finetune-nli`` and ``finetune-encoder``: fine-tune the fallback's NLI model
and the router's encoder on the labelled table (the [train] extra)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any, TypeVar

from qroute.cli.common import Command, settings_of, with_config
from qroute.config import Settings
from qroute.training.common import TrainingOptions
from qroute.training.encoder import EncoderFinetuneOptions
from qroute.training.nli_pairs import FinetuneOptions

__all__ = ["COMMANDS"]

T = TypeVar("T", bound=TrainingOptions)


# The options both fine-tunes take. Their defaults are the options dataclasses' own
# (one owner); the CLI only adds the help text.
_SHARED = {
    "epochs": "passes over the training rows",
    "max_steps": "> 0: stop after this many optimisation steps (overrides --epochs)",
    "batch_size": "rows per batch",
    "learning_rate": "peak learning rate (linear warm-up, then decay)",
    "dev_fraction": "share of rows held out, by text, for the dev figures",
    "patience": "evaluations without a better dev figure before stopping",
    "bf16": "mixed precision (CPUs with AVX512-BF16/AMX, GPUs)",
    "seed": "random seed of the split, the sampling and the model's new weights",
    "resume": "continue an interrupted run from its checkpoint",
    "keep_checkpoints": "keep the checkpoints once training has finished",
}


def _add_options(
    parser: argparse.ArgumentParser, options: type[TrainingOptions], helps: dict[str, str]
) -> None:
    """A flag per option in ``helps``, its default taken from ``options``."""
    defaults = {f.name: f.default for f in dataclasses.fields(options)}
    for name, text in helps.items():
        flag, default = "--" + name.replace("_", "-"), defaults[name]
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=default, help=text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=text)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _options(options: type[T], args: argparse.Namespace, helps: dict[str, str], **fixed: Any) -> T:
    """The options a command's flags chose (``helps`` names the flags)."""
    chosen = {name: getattr(args, name) for name in {**_SHARED, **helps}}
    return options(**chosen, progress=not args.no_progress, **fixed)


_NLI = {
    "negatives": "contradiction pairs per row",
    "hard_share": "share of negatives among confusable labels",
    "max_length": "tokens per premise+hypothesis pair",
}
_ENCODER = {"margin": "triplet margin, in cosine distance"}


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
    finetune.add_argument(
        "--no-hard-negatives",
        action="store_true",
        help="draw every negative at random (skips loading the encoder)",
    )
    _add_options(finetune, FinetuneOptions, {**_SHARED, **_NLI})


def _encoder_arguments(encoder_ft: argparse.ArgumentParser) -> None:
    with_config(encoder_ft)
    encoder_ft.add_argument("table", help="labelled table (as for `qroute index`)")
    encoder_ft.add_argument("--out", required=True, help="output model directory")
    encoder_ft.add_argument(
        "--base", help="sentence-transformers model to start from (default: encoder.model)"
    )
    encoder_ft.add_argument(
        "--loss",
        choices=typing.get_args(typing.get_type_hints(EncoderFinetuneOptions)["loss"]),
        default=EncoderFinetuneOptions.loss,
        help="auto: mnrl when the table has at least --batch-size labels, else triplet",
    )
    encoder_ft.add_argument(
        "--train-embeddings",
        action="store_true",
        help="also train the word-embedding matrix (frozen by default: faster, rarely worse)",
    )
    _add_options(encoder_ft, EncoderFinetuneOptions, {**_SHARED, **_ENCODER})


def _finetune(settings: Settings, args: argparse.Namespace) -> int:
    from qroute.table import read_table
    from qroute.training.nli import finetune, saved_data
    from qroute.training.nli_pairs import prepare_nli_pairs, prepare_table, read_nli_pairs

    options = _options(FinetuneOptions, args, _NLI)
    base = args.base or settings.nli.model
    # The interrupted run's pairs: the same data, without re-embedding the table. None
    # without a checkpoint to resume: the table given is read then.
    saved = saved_data(args.out) if args.resume else None
    if saved is not None:
        data = saved
    elif args.nli_pairs:
        data = prepare_nli_pairs(read_nli_pairs(args.table), options, source=args.table)
    else:
        from qroute.embedding.dense import SentenceTransformerEncoder

        examples = read_table(args.table, settings.table)
        encoder = (
            None
            if args.no_hard_negatives
            else SentenceTransformerEncoder(
                settings.encoder,
                without="To fine-tune without it: --no-hard-negatives (draws negatives at random).",
            )
        )
        data = prepare_table(
            examples,
            settings.zero_shot,
            encoder,
            options,
            source=args.table,
            none_label=settings.table.none_label,
        )
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
    from qroute.training.encoder import finetune_encoder

    options = _options(
        EncoderFinetuneOptions,
        args,
        _ENCODER,
        loss=args.loss,
        freeze_embeddings=not args.train_embeddings,
    )
    examples = read_table(args.table, settings.table)
    report = finetune_encoder(
        examples,
        settings.encoder,
        args.out,
        options,
        source=args.table,
        base=args.base,
        none_label=settings.table.none_label,
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
