"""Fine-tuning the router's encoder on the table (``qroute finetune-encoder``), tiny models."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from qroute_indexer import run_index
from ruamel.yaml import YAML

from qroute.cli import main
from qroute.config import EncoderSettings, Settings
from qroute.embedding.dense import SentenceTransformerEncoder
from qroute.errors import EncoderMismatch
from qroute.evaluation.knn import knn_accuracy
from qroute.routing.classifier import Classifier
from qroute.testing import BagOfWordsEncoder, TinyModels, build_tiny_models
from qroute.training.encoder import EncoderFinetuneOptions, finetune_encoder, held_out_rows
from qroute.types import Example, Query
from tests.conftest import FILLERS, TOPICS, InterruptAfterSave, Interrupted

# Tiny models: see tests.conftest.one_torch_thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(per_label: int, seed: int) -> list[Example]:
    """A topic word between two fillers: two thirds of a query's tokens say nothing about its
    label, so an untrained encoder's nearest rows are those sharing fillers, mostly of other
    labels."""
    rng = random.Random(seed)
    rows: list[Example] = []
    for label, words in TOPICS.items():
        texts: set[str] = set()
        while len(texts) < per_label:
            texts.add(f"{rng.choice(FILLERS)} {rng.choice(words)} {rng.choice(FILLERS)}")
        for text in sorted(texts):
            rows.append(Example(text, label, f"row-{len(rows)}", "t.csv", len(rows) + 2))
    return rows


TABLE = _rows(40, seed=0)
# Queries the fine-tune never sees: texts not in the table.
QUERIES = [e for e in _rows(60, seed=1) if e.text not in {t.text for t in TABLE}][:100]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    texts = [e.text for e in TABLE + QUERIES]
    return build_tiny_models(texts, tmp_path_factory.mktemp("encoder-ft-models"))


def _options(**overrides: Any) -> EncoderFinetuneOptions:
    values: dict[str, Any] = {
        "epochs": 40,
        "batch_size": 20,
        "learning_rate": 2e-3,
        "eval_steps": 40,
        "patience": 100,
        "freeze_embeddings": False,
        "progress": False,
    }
    values.update(overrides)
    return EncoderFinetuneOptions(**values)


def _write_table(path: Path, rows: list[Example]) -> Path:
    path.write_text(
        "text,label\n" + "".join(f"{e.text},{e.label}\n" for e in rows), encoding="utf-8"
    )
    return path


async def _router_accuracy(settings: Settings, table: Path) -> float:
    await run_index(settings, table, progress=False)
    classifier = Classifier.from_settings(settings)
    await classifier.refresh_index()
    try:
        predictions = await classifier.classify([Query(q.text) for q in QUERIES])
        right = sum(p.label == q.label for p, q in zip(predictions, QUERIES, strict=True))
        return right / len(QUERIES)
    finally:
        await classifier.close()


def test_knn_accuracy_is_the_similarity_weighted_vote() -> None:
    encoder = BagOfWordsEncoder()
    reference = [
        Example("a b", "x", "1", "t", 2),
        Example("a c", "x", "2", "t", 3),
        Example("a d e", "y", "3", "t", 4),
        Example("q r", "y", "4", "t", 5),
    ]
    # "a e": x rows at 1/2 each (sum 1.0), y's "a d e" at 2/sqrt(6) = 0.816 (k=3): x wins;
    # with k=1 the single nearest row, "a d e", decides: y.
    query = [Example("a e", "x", "5", "t", 6)]
    assert knn_accuracy(encoder.encode, reference, query, k=3) == 1.0
    assert knn_accuracy(encoder.encode, reference, query, k=1) == 0.0


@pytest.mark.parametrize(
    ("loss", "training"),
    [
        # 5 labels, batches of 20: auto takes the triplet loss.
        ("triplet", ["--epochs", "40", "--batch-size", "20"]),
        ("mnrl", ["--loss", "mnrl", "--epochs", "20", "--batch-size", "8"]),
    ],
)
async def test_a_fine_tuned_encoder_separates_the_labels_for_the_router(
    tmp_path: Path,
    models: TinyModels,
    make_settings: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
    loss: str,
    training: list[str],
) -> None:
    router = {"k": 5, "similarity_threshold": 0.0, "min_margin": 0.0}
    table = _write_table(tmp_path / "table.csv", TABLE)
    base_settings = make_settings(encoder={"model": str(models.encoder)}, router=router)
    before = await _router_accuracy(base_settings, table)
    assert before <= 0.6, before  # chance is 0.2

    out = tmp_path / "encoder-ft"
    config = tmp_path / "qroute.yaml"
    YAML(typ="safe", pure=True).dump(base_settings.model_dump(mode="json"), config)
    args = ["finetune-encoder", str(table), "--config", str(config), "--out", str(out)]
    args += [*training, "--learning-rate", "2e-3", "--no-progress"]
    # A tiny random model: its embeddings are most of what it has, and its dev accuracy
    # stalls for a while before it rises.
    args += ["--train-embeddings", "--patience", "1000"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "dev kNN-5 accuracy" in printed and "encoder.model:" in printed

    report = json.loads((out / "finetune.json").read_text(encoding="utf-8"))
    assert report["loss"] == loss
    assert report["after"]["knn_accuracy"] >= 0.9
    assert report["after"]["knn_accuracy"] > report["before"]["knn_accuracy"]
    card = (out / "README.md").read_text(encoding="utf-8")
    for expected in (str(models.encoder), "train_texts", "| knn_accuracy |", "Date"):
        assert expected in card
    assert not (out / "checkpoints").exists()

    # The router, pointed at the new model by its config, labels unseen queries right.
    tuned_settings = make_settings(
        encoder={"model": str(out)},
        router=router,
        store={"location": str(tmp_path / "store-ft"), "collection": "test"},
    )
    after = await _router_accuracy(tuned_settings, table)
    assert after >= 0.9, after

    # Leave-one-out tuning on the table keeps to the rows the fine-tune held out.
    YAML(typ="safe", pure=True).dump(tuned_settings.model_dump(mode="json"), config)
    tune = ["tune", "--cross-validate", "--table", str(table), "--config", str(config)]
    tune += ["--out", str(tmp_path / "tune"), "--no-progress"]
    assert await asyncio.to_thread(main, tune) == 0  # the CLI runs its own event loop
    held_out = report["counts"]["dev_texts"]
    assert f"tuning on the {held_out} of its {len(TABLE)} rows" in capsys.readouterr().err


async def test_fine_tuning_again_into_the_same_directory_invalidates_its_index(
    tmp_path: Path, models: TinyModels, make_settings: Callable[..., Settings]
) -> None:
    out = tmp_path / "encoder-ft"
    settings = EncoderSettings(model=str(models.encoder))
    finetune_encoder(TABLE, settings, out, _options(max_steps=5), source="t.csv")
    first = SentenceTransformerEncoder(EncoderSettings(model=str(out))).fingerprint
    assert "|run=" in first

    router_settings = make_settings(encoder={"model": str(out)})
    await run_index(router_settings, _write_table(tmp_path / "t.csv", TABLE), progress=False)
    finetune_encoder(TABLE, settings, out, _options(max_steps=5, seed=1), source="t.csv")
    second = SentenceTransformerEncoder(EncoderSettings(model=str(out))).fingerprint
    assert second != first  # same directory name, other vectors

    classifier = Classifier.from_settings(router_settings)
    try:
        with pytest.raises(EncoderMismatch):
            await classifier.refresh_index()
    finally:
        await classifier.close()


@pytest.mark.parametrize("loss", ["triplet", "mnrl"])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(
    tmp_path: Path, models: TinyModels, loss: str
) -> None:
    settings = EncoderSettings(model=str(models.encoder))
    # Checkpoints kept: the final weights are the best checkpoint's, which may be one from
    # before the interruption; the last checkpoint shows whether training went on alike.
    options = _options(loss=loss, max_steps=30, eval_steps=10, keep_checkpoints=True)
    whole = finetune_encoder(TABLE, settings, tmp_path / "whole", options, source="t.csv")

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        finetune_encoder(
            TABLE, settings, out, options, source="t.csv", callbacks=[InterruptAfterSave(20)]
        )
    assert (out / "checkpoints" / "checkpoint-20").is_dir()
    assert not (out / "README.md").exists()
    shutil.copytree(out / "checkpoints" / "checkpoint-20", tmp_path / "at-20")

    again = _options(loss=loss, max_steps=30, eval_steps=10, keep_checkpoints=True, resume=True)
    resumed = finetune_encoder(TABLE, settings, out, again, source="t.csv")
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-20")
    assert resumed.steps == whole.steps == 30
    assert resumed.before == whole.before
    assert resumed.after["knn_accuracy"] == pytest.approx(whole.after["knn_accuracy"], abs=0.06)
    texts = [e.text for e in QUERIES[:16]]

    def vectors(folder: Path) -> Any:
        return SentenceTransformerEncoder(EncoderSettings(model=str(folder))).encode(texts)

    last = Path("checkpoints") / "checkpoint-30"
    torch.testing.assert_close(
        torch.from_numpy(vectors(out / last)),
        torch.from_numpy(vectors(tmp_path / "whole" / last)),
        atol=1e-3,
        rtol=1e-3,
    )
    # and not trivially: those weights moved after the interruption
    moved = vectors(out / last) - vectors(tmp_path / "at-20")
    assert float(abs(moved).max()) > 1e-3


def test_training_stops_once_dev_stops_improving(tmp_path: Path, models: TinyModels) -> None:
    settings = EncoderSettings(model=str(models.encoder))
    options = _options(max_steps=400, eval_steps=10, patience=2)
    report = finetune_encoder(TABLE, settings, tmp_path / "out", options, source="t.csv")
    assert report.after["knn_accuracy"] == 1.0  # reached early, then nothing to gain
    assert report.stopped_early and report.steps < 400
    assert "stopped early on dev" in (tmp_path / "out" / "README.md").read_text(encoding="utf-8")


def _fillers_only(count: int, seed: int) -> list[str]:
    """Texts of fillers alone: no topic word, so no label's (out of scope)."""
    rng = random.Random(seed)
    texts: set[str] = set()
    while len(texts) < count:
        texts.add(" ".join(rng.sample(FILLERS, 3)))
    return sorted(texts)


def test_out_of_scope_rows_are_hard_negatives_not_a_label(
    tmp_path: Path, models: TinyModels
) -> None:
    """With table.none_label the out-of-scope rows push in-scope rows away from them: unseen
    out-of-scope queries end further from every label's rows than after a fine-tune
    without them, so a similarity threshold refuses them more easily."""
    seen = _fillers_only(60, seed=3)
    unseen = [t for t in _fillers_only(120, seed=4) if t not in seen][:30]
    none_rows = [Example(t, "oos", f"oos-{i}", "t.csv", i + 500) for i, t in enumerate(seen)]
    encoder = EncoderSettings(model=str(models.encoder))
    options = _options(loss="mnrl", max_steps=80, eval_steps=1000)

    def nearest_in_scope(out: Path) -> float:
        model = SentenceTransformerEncoder(EncoderSettings(model=str(out)))
        table = model.encode([e.text for e in TABLE])
        return float((model.encode(unseen) @ table.T).max(axis=1).mean())

    plain = finetune_encoder(TABLE, encoder, tmp_path / "plain", options, source="t.csv")
    report = finetune_encoder(
        TABLE + none_rows, encoder, tmp_path / "none", options, source="t.csv", none_label="oos"
    )
    assert report.counts["labels"] == len(TOPICS)  # "oos" is no label to gather
    # Only the train side's: the dev side is held out for tuning, never trained on.
    held_out = held_out_rows(none_rows, str(tmp_path / "none"))
    assert held_out is not None and 0 < len(held_out) < len(seen)
    assert report.counts["none_negatives"] == len(seen) - len(held_out)
    assert plain.counts["none_negatives"] == 0
    with_none, without = nearest_in_scope(tmp_path / "none"), nearest_in_scope(tmp_path / "plain")
    assert with_none < without - 0.05
