"""Fine-tuning the NLI fallback (``qroute finetune-nli``) with tiny models built here."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from qroute_indexer import run_index
from ruamel.yaml import YAML
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertModel,
)

from qroute.cli import main
from qroute.config import Settings, ZeroShotSettings
from qroute.evaluation.run import zero_shot_alone
from qroute.routing.classifier import Classifier
from qroute.testing import BagOfWordsEncoder, TinyModels, build_tiny_models
from qroute.training.common import split_by_text
from qroute.training.nli import finetune, load_base
from qroute.training.nli_pairs import FinetuneOptions, build_pairs, prepare_table, read_nli_pairs
from qroute.types import Example
from tests.conftest import (
    FILLERS,
    TEMPLATE,
    TOPICS,
    InterruptAfterSave,
    Interrupted,
    example_rows,
)

# A constructed table in the shape of a real one: each label's queries name one of its
# topics, which its description lists, among filler words every label shares.
LABELS = tuple(TOPICS)
ZERO_SHOT = ZeroShotSettings(
    template=TEMPLATE,
    label_descriptions={label: " ".join(words) for label, words in TOPICS.items()},
    candidates="all",
)


# Tiny models: see tests.conftest.one_torch_thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _table() -> list[Example]:
    rng = random.Random(0)
    rows: list[Example] = []
    for label, words in TOPICS.items():
        texts: set[str] = set()
        while len(texts) < 12:
            texts.add(f"{rng.choice(FILLERS)} {words[len(texts) % 3]} {rng.choice(FILLERS)}")
        for text in sorted(texts):
            rows.append(Example(text, label, f"row-{len(rows)}", "t.csv", len(rows) + 2))
    return rows


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    texts = [e.text for e in _table()] + [ZERO_SHOT.hypothesis(label) for label in LABELS]
    return build_tiny_models(texts, tmp_path_factory.mktemp("finetune-models"))


@pytest.fixture(scope="session")
def nli_base(models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny NLI model re-initialised at a larger scale, without dropout. At BERT's
    default scale (0.02) a random 2-layer model is nearly linear and needs thousands of
    steps to relate a premise to a hypothesis; at 0.2 its random features already tell
    the pairs apart, so a few hundred steps show learning."""
    config = AutoConfig.from_pretrained(models.nli)
    config.initializer_range = 0.2
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    folder = tmp_path_factory.mktemp("nli-base")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(models.nli).save_pretrained(folder)
    return folder


def _options(**overrides: Any) -> FinetuneOptions:
    values: dict[str, Any] = {
        "negatives": 3,
        "epochs": 30,
        "learning_rate": 1e-3,
        "batch_size": 16,
        "eval_steps": 50,
        "patience": 100,
        "freeze_embeddings": False,
        "progress": False,
    }
    values.update(overrides)
    return FinetuneOptions(**values)


async def _picked(
    make_settings: Callable[..., Settings], models: TinyModels, nli: Path, rows: list[Example]
) -> Any:
    """The router built from its config, ``nli.model`` at ``nli``, with every row sent
    to its zero-shot path."""
    settings = make_settings(
        encoder={"model": str(models.encoder)},
        nli={"model": str(nli)},
        zero_shot=ZERO_SHOT.model_dump(),
    )
    table = Path(settings.store.location + ".csv")
    table.write_text(
        "text,label\n" + "".join(f"{e.text},{e.label}\n" for e in _table()), encoding="utf-8"
    )
    await run_index(settings, table, progress=False)
    classifier = Classifier.from_settings(settings)
    try:
        return await zero_shot_alone(classifier, rows, progress=False)
    finally:
        await classifier.close()


async def test_a_short_fine_tune_teaches_the_router_s_fallback_the_table(
    tmp_path: Path,
    models: TinyModels,
    nli_base: Path,
    make_settings: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:
    examples = _table()
    options = _options()
    data = prepare_table(examples, ZERO_SHOT, BagOfWordsEncoder(), options, source="t.csv")

    before = await _picked(make_settings, models, nli_base, examples)
    assert before.method == "nli-independent"
    assert before.candidate_recall == 1.0
    assert before.picked <= 2 / len(LABELS)  # chance is 1 / 5

    out = tmp_path / "finetuned"
    report = finetune(data, str(nli_base), out, options, zero_shot=ZERO_SHOT)

    after = await _picked(make_settings, models, out, examples)
    assert after.picked >= 0.9, after
    assert report.after["pair_accuracy"] > report.before["pair_accuracy"]
    card = (out / "README.md").read_text(encoding="utf-8")
    for expected in (str(nli_base), "train_pairs", TEMPLATE, "| label_accuracy |", "Date"):
        assert expected in card
    assert json.loads((out / "finetune.json").read_text(encoding="utf-8"))["steps"] > 0
    assert not (out / "checkpoints").exists()  # only an interrupted run keeps them

    # `qroute eval` puts the fallback before and after side by side.
    settings = make_settings(
        encoder={"model": str(models.encoder)},
        nli={"model": str(out)},
        zero_shot=ZERO_SHOT.model_dump(),
        router={"similarity_threshold": 1.0, "min_margin": 2.0},
    )
    config = tmp_path / "qroute.yaml"
    YAML(typ="safe", pure=True).dump(settings.model_dump(mode="json"), config)
    table = Path(settings.store.location + ".csv")
    report_dir = tmp_path / "eval"
    args = ["eval", str(table), "--config", str(config), "--out", str(report_dir)]
    args += ["--zero-shot-alone", "--compare-nli", str(nli_base), "--no-progress"]
    assert await asyncio.to_thread(main, args) == 0  # the CLI runs its own event loop
    printed = capsys.readouterr().out
    assert f"fallback {nli_base}: zero-shot path accuracy" in printed
    assert f"fallback {out}: zero-shot path accuracy" in printed
    rows = json.loads((report_dir / "eval.json").read_text(encoding="utf-8"))["fallback"]
    assert [row["nli_model"] for row in rows] == [str(nli_base), str(out)]
    assert rows[0]["alone_picked"] == pytest.approx(before.picked)
    assert rows[1]["alone_picked"] == pytest.approx(after.picked)
    assert rows[1]["zero_shot_path_accuracy"] >= 0.9


def _logits(folder: Path, data: Any) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    pairs = data.dev[:16]
    batch = tokenizer(
        [p.premise for p in pairs], [p.hypothesis for p in pairs], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        return model(**batch).logits  # type: ignore[no-any-return]


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path: Path, nli_base: Path) -> None:
    options = _options(max_steps=40, eval_steps=10)
    data = prepare_table(_table(), ZERO_SHOT, BagOfWordsEncoder(), options, source="t.csv")

    whole = finetune(data, str(nli_base), tmp_path / "whole", options, zero_shot=ZERO_SHOT)

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        finetune(
            data,
            str(nli_base),
            out,
            options,
            zero_shot=ZERO_SHOT,
            callbacks=[InterruptAfterSave(20)],
        )
    assert (out / "checkpoints" / "checkpoint-20").is_dir()
    assert not (out / "README.md").exists()

    resumed = finetune(
        data,
        str(nli_base),
        out,
        _options(max_steps=40, eval_steps=10, resume=True),
        zero_shot=ZERO_SHOT,
    )
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-20")
    assert resumed.steps == whole.steps == 40
    assert resumed.before == whole.before
    for name, value in whole.after.items():
        assert resumed.after[name] == pytest.approx(value, abs=0.02)
    torch.testing.assert_close(
        _logits(out, data), _logits(tmp_path / "whole", data), atol=1e-3, rtol=1e-3
    )


def test_pairs_split_by_text_with_mostly_hard_negatives() -> None:
    examples = [*_table(), Example(_table()[0].text, "금융", "dup", "t.csv", 99)]
    train, dev = split_by_text(examples, lambda e: e.text, 0.3)
    assert train and dev
    assert not {e.text for e in train} & {e.text for e in dev}
    confusable = {label: [LABELS[(i + 1) % len(LABELS)]] for i, label in enumerate(LABELS)}
    pairs = build_pairs(
        examples[:8], LABELS, ZERO_SHOT, confusable, negatives=3, hard_share=0.75, seed=1
    )
    assert Counter(p.label for p in pairs) == {"entailment": 8, "contradiction": 24}
    own = ZERO_SHOT.hypothesis("금융")
    assert all((p.hypothesis == own) == (p.label == "entailment") for p in pairs)
    # 금융's only confusable label (날씨) is among the negatives of every 금융 row.
    hard = ZERO_SHOT.hypothesis("날씨")
    per_row = defaultdict(set)
    for p in pairs:
        per_row[p.premise].add(p.hypothesis)
    assert all(hard in hypotheses for hypotheses in per_row.values())


def test_bad_rows_are_named_before_any_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "t.csv"
    table.write_text("text,label\n코스닥 지수,금융\n ,날씨\n", encoding="utf-8")
    assert main(["finetune-nli", str(table), "--out", str(tmp_path / "o")]) == 2
    assert f"{table}:3: text: empty" in capsys.readouterr().err

    pairs = tmp_path / "nli.jsonl"
    pairs.write_text(
        '{"premise": "a", "hypothesis": "b", "label": "entailment"}\n'
        '{"premise": "a", "hypothesis": "b", "label": "maybe"}\n',
        encoding="utf-8",
    )
    with pytest.raises(Exception, match=r"nli\.jsonl:2: label"):
        read_nli_pairs(pairs)


def test_generic_nli_pairs_train_through_the_cli(tmp_path: Path, nli_base: Path) -> None:
    pairs = tmp_path / "nli.jsonl"
    rows = []
    for row in example_rows()[:60]:
        other = "교통" if row["label"] != "교통" else "금융"
        for label, verdict in ((row["label"], "entailment"), (other, "contradiction")):
            hypothesis = TEMPLATE.format(label=label)
            rows.append({"premise": row["text"], "hypothesis": hypothesis, "label": verdict})
    pairs.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    out = tmp_path / "nli-model"
    args = ["finetune-nli", str(pairs), "--nli-pairs", "--base", str(nli_base), "--out", str(out)]
    assert main([*args, "--max-steps", "3", "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["label2id"]["entailment"] == 0
    assert "nli-pairs" in (out / "README.md").read_text(encoding="utf-8")


def test_a_base_with_a_placeholder_pooler_gets_a_working_one(
    tmp_path: Path, models: TinyModels
) -> None:
    """Mean-pooling encoders (e5 among them) may ship an all-zero pooler: a new head on it
    sees one vector for every pair and can only learn the majority class."""
    config = AutoConfig.from_pretrained(models.nli)
    config.id2label, config.label2id = {0: "LABEL_0"}, {"LABEL_0": 0}  # a plain encoder
    encoder = BertModel(config)
    with torch.no_grad():
        encoder.pooler.dense.weight.zero_()
        encoder.pooler.dense.bias.zero_()
    base = tmp_path / "mean-pooling-encoder"
    encoder.save_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(models.nli)
    tokenizer.save_pretrained(base)
    pairs = tokenizer(
        ["오늘 주식 알려줘", "내일 비 와"], [TEMPLATE, TEMPLATE], padding=True, return_tensors="pt"
    )

    def logits(model: Any) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return model(**pairs).logits  # type: ignore[no-any-return]

    as_saved = AutoModelForSequenceClassification.from_pretrained(base, num_labels=3)
    assert torch.allclose(*logits(as_saved))  # the head cannot tell the pairs apart

    model, _, _, kind = load_base(str(base), seed=0)
    assert kind == "encoder, new 3-class head, new pooler"
    assert not torch.allclose(*logits(model))
