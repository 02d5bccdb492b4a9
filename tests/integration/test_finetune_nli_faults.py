"""Regression tests for ``qroute finetune-nli`` faults: negatives sharing the row's own
hypothesis, ``--resume`` after a finished run, checkpoints without their saved pairs, and
a base classifier whose head is not an NLI one."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

from qroute.cli import main
from qroute.config import ZeroShotSettings
from qroute.testing import TinyModels, build_tiny_models
from qroute.training.nli import load_base
from qroute.training.nli_pairs import NLI_LABELS, FinetuneOptions, prepare_table
from qroute.types import Example

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_table(path: Path, labels: list[str]) -> Path:
    rows = "".join(f"{label} 질문 {i},{label}\n" for label in labels for i in range(30))
    path.write_text("text,label\n" + rows, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    texts = [f"{lb} 질문 {i}" for lb in ("금융", "날씨", "영화", "음악", "교통") for i in range(30)]
    return build_tiny_models(texts, tmp_path_factory.mktemp("nli-fault-models"))


def _cli(table: Path, out: Path, models: TinyModels, *extra: str) -> int:
    args = ["finetune-nli", str(table), "--out", str(out), "--base", str(models.nli)]
    args += ["--no-hard-negatives", "--max-steps", "2", "--no-progress", *extra]
    return main(args)


def test_no_negative_repeats_the_row_s_own_hypothesis() -> None:
    """Two labels described alike have one hypothesis: a row of one must not be taught
    that its own hypothesis is a contradiction."""
    zero_shot = ZeroShotSettings(
        template="This is about {label}.", label_descriptions={"loan": "money", "credit": "money"}
    )
    rows = [
        Example(f"{label} text {i}", label, f"{label}-{i}", "t.csv", n * 10 + i + 2)
        for n, label in enumerate(("loan", "credit", "music"))
        for i in range(10)
    ]
    options = FinetuneOptions(negatives=2, dev_fraction=0.3, progress=False)
    data = prepare_table(rows, zero_shot, None, options, source="t.csv")
    verdicts: dict[tuple[str, str], set[str]] = defaultdict(set)
    for pair in data.train + data.dev:
        verdicts[(pair.premise, pair.hypothesis)].add(pair.label)
    assert all(len(found) == 1 for found in verdicts.values()), {
        k: v for k, v in verdicts.items() if len(v) > 1
    }


def test_resume_after_a_finished_run_trains_on_the_table_given(
    tmp_path: Path, models: TinyModels
) -> None:
    """A finished run leaves its pairs but no checkpoint: ``--resume`` (as a preemptible
    job always passes) has nothing to resume and must read the table it is given."""
    out = tmp_path / "out"
    assert _cli(_write_table(tmp_path / "t1.csv", ["금융", "날씨"]), out, models, "--resume") == 0
    second = _write_table(tmp_path / "t2.csv", ["영화", "음악", "교통"])
    assert _cli(second, out, models, "--resume") == 0
    report = json.loads((out / "finetune.json").read_text(encoding="utf-8"))
    assert report["source"] == str(second)
    assert report["counts"]["labels"] == 3


def test_resume_with_checkpoints_but_no_saved_pairs_starts_afresh(
    tmp_path: Path, models: TinyModels
) -> None:
    out = tmp_path / "out"
    table = _write_table(tmp_path / "t.csv", ["금융", "날씨"])
    assert _cli(table, out, models, "--keep-checkpoints") == 0
    shutil.rmtree(out / "finetune-data")
    assert _cli(table, out, models, "--resume") == 0
    report = json.loads((out / "finetune.json").read_text(encoding="utf-8"))
    assert report["resumed_from"] is None


def test_a_base_classifier_with_other_classes_gets_a_new_nli_head(
    tmp_path: Path, models: TinyModels
) -> None:
    """A two-class (say, sentiment) classifier names no entailment class: it is a plain
    encoder to us, and its head's shape must not stop the load."""
    config = AutoConfig.from_pretrained(models.nli)
    config.id2label = {0: "negative", 1: "positive"}
    config.label2id = {"negative": 0, "positive": 1}
    base = tmp_path / "sentiment"
    BertForSequenceClassification(config).save_pretrained(base)
    AutoTokenizer.from_pretrained(models.nli).save_pretrained(base)
    model, _, ids, kind = load_base(str(base), seed=0)
    assert kind.startswith("encoder, new 3-class head")
    assert model.config.num_labels == 3
    assert {model.config.id2label[ids[label]] for label in NLI_LABELS} == set(NLI_LABELS)
