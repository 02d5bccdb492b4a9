"""Tuning replays the router's own decisions; it finds a known optimum and writes it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from qroute_indexer import run_index

from qroute.config import Settings, load_settings
from qroute.evaluation.precompute import precompute
from qroute.evaluation.tune import predict, sweep
from qroute.evaluation.tuned import write_tuned
from qroute.routing.classifier import Classifier
from qroute.store.embedded import EmbeddedStore
from qroute.table import normalise, read_table
from qroute.testing import BagOfWordsEncoder
from qroute.types import Query
from tests.integration.test_indexer import ROWS, _table

# Queries at known similarities to their label's rows: "finance question number 1 x"
# shares 4 of 5 words with a finance row (0.8); "finance zzz" 1 of 2 (0.35); OOS share none.
QUERIES = [
    *[
        (f"{topic} question number {i} extra", topic)
        for topic in ("finance", "movie")
        for i in range(3)
    ],
    ("weather foo bar baz", "weather"),  # weak: the right label, similarity 0.35
    ("nothing alike here", "oos"),
    ("totally unrelated words", "oos"),
]


@pytest.fixture
async def indexed(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[tuple[Settings, Classifier]]:
    settings = make_settings(
        router={"k": 3, "group_size": 2, "similarity_threshold": 0.5, "min_margin": 0.0},
        zero_shot={"method": "off"},
    )
    encoder = BagOfWordsEncoder()
    await run_index(settings, _table(tmp_path / "t.csv", ROWS), encoder=encoder, progress=False)
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    classifier = Classifier(settings, encoder, None, store)
    await classifier.refresh_index()
    yield settings, classifier
    await classifier.close()


async def test_sweep_replays_exactly_the_classifiers_decisions(
    indexed: tuple[Settings, Classifier], tmp_path: Path
) -> None:
    settings, classifier = indexed
    examples = read_table(_table(tmp_path / "q.csv", QUERIES))
    pre = await precompute(classifier, examples, k_max=3, progress=False)
    for threshold in (0.2, 0.5, 0.79, 0.81):
        for margin in (0.0, 0.3):
            router = settings.router.model_copy(
                update={"similarity_threshold": threshold, "min_margin": margin}
            )
            live = classifier.reconfigure(settings.model_copy(update={"router": router}))
            served = [p.label for p in await live.classify([Query(e.text) for e in examples])]
            assert predict(pre, router, settings.zero_shot) == served, (threshold, margin)


async def test_sweep_finds_the_known_optimum(
    indexed: tuple[Settings, Classifier], tmp_path: Path
) -> None:
    settings, classifier = indexed
    examples = read_table(_table(tmp_path / "q.csv", QUERIES))
    pre = await precompute(classifier, examples, k_max=3, progress=False)
    # In-scope rows sit at 0.89 (six) and 0.35 (one); out-of-scope rows at 0. Any threshold
    # in (0, 0.35] answers all seven in-scope rows and refuses both oos rows: accuracy 1.
    result = sweep(pre, settings.router, settings.zero_shot, oos_label="oos", per_label=False)
    assert result.best.accuracy == 1.0
    assert 0.0 < result.best.similarity_threshold <= 0.36
    # Requiring more than the best reachable OOS recall still returns the best trade-off.
    strict = sweep(
        pre, settings.router, settings.zero_shot, objective="oos", target=1.0, oos_label="oos"
    )
    assert strict.best.oos_recall == 1.0 and strict.best.in_scope_accuracy == 1.0
    assert result.curve["threshold"][0] == 0.0 and len(result.curve["accuracy"]) == 101


async def test_leave_one_out_ignores_each_rows_own_point(
    indexed: tuple[Settings, Classifier],
) -> None:
    settings, classifier = indexed
    examples = read_table(_table(Path(settings.store.location).parent / "rows.csv", ROWS))
    pre = await precompute(classifier, examples, k_max=3, leave_one_out=True, progress=False)
    for example, groups in zip(examples, pre.groups, strict=True):
        assert all(h.row_id != example.row_id for g in groups for h in g.hits)
        assert groups[0].hits[0].similarity < 0.999


def test_writer_keeps_comments_and_unrelated_keys(tmp_path: Path) -> None:
    from qroute.evaluation.tune import Choice

    path = tmp_path / "qroute.yaml"
    path.write_text(
        "# top comment\nencoder:\n  model: my/model  # keep me\nrouter:\n  k: 10\n"
        "  group_size: 4   # not tuned\nstore:\n  collection: mine\n",
        encoding="utf-8",
    )
    choice = Choice(5, 0.71, 0.02, 0.4, {"금융": 0.8}, 0.95, 0.94, 0.9, 0.97, 0.1)
    write_tuned(
        path,
        choice,
        encoder="enc|dim=3",
        index_version="mine_v2",
        objective="oos",
        data="dev.jsonl",
    )
    text = path.read_text(encoding="utf-8")
    assert "# top comment" in text and "# keep me" in text and "# not tuned" in text
    settings = load_settings(path)
    assert settings.encoder.model == "my/model" and settings.store.collection == "mine"
    assert settings.router.group_size == 4 and settings.router.k == 5
    assert settings.router.similarity_threshold == 0.71
    assert settings.router.label_thresholds == {"금융": 0.8}
    assert settings.zero_shot.threshold == 0.4
    assert settings.tuned is not None and settings.tuned.encoder == "enc|dim=3"
    assert settings.tuned.figures["oos_recall"] == 0.9


# Strings a YAML 1.1 reader takes for booleans, null, numbers or dates, and strings that
# YAML syntax claims: each must come back as the same label.
HAZARDS = [
    *("no", "No", "NO", "yes", "Yes", "off", "Off", "on", "ON", "y", "n", "true", "False"),
    *("null", "Null", "~", "", "0", "12", "1.5", "1e3", "0x1F", "0o17", "012", ".inf", ".NaN"),
    *("2024-01-01", "12:30", "1_000", "-", "?", ":", "a: b", "#tag", "x #y", "!", "&a", "*a"),
    *("[a]", "{a}", "|", ">", "%", "@", "`", "'", '"', "<<", "=", " lead", "trail ", "금융"),
]
# The labels of the shared datasets (outside the repository: CI gets a copy beside it).
DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def _dataset_labels(root: Path) -> set[str]:
    import json

    labels: set[str] = set()
    for path in sorted(root.glob("*/*.jsonl")):
        if path.stem not in ("train", "dev"):
            continue
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                label = json.loads(line).get("label")
                if isinstance(label, str):
                    labels.add(label)
    return labels


def _round_trip(path: Path, labels: set[str]) -> dict[str, float]:
    from qroute.evaluation.tune import Choice

    path.write_text("# mine\nrouter:\n  k: 10\n", encoding="utf-8")
    thresholds = {label: round(0.5 + (i % 40) / 100, 2) for i, label in enumerate(sorted(labels))}
    choice = Choice(5, 0.7, 0.0, 0.4, thresholds, 0.9, 0.9, None, 1.0, 0.0)
    write_tuned(path, choice, encoder="enc", index_version="v1", objective="accuracy", data="d")
    assert load_settings(path).router.label_thresholds == thresholds
    return thresholds


def test_every_label_survives_tune_write_then_load(tmp_path: Path) -> None:
    labels = set(HAZARDS)
    if DATASETS.is_dir():
        labels |= _dataset_labels(DATASETS)
    _round_trip(tmp_path / "qroute.yaml", labels)


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.sets(
        st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)
        .map(normalise)
        .filter(bool),
        min_size=1,
        max_size=8,
    )
)
def test_label_like_strings_survive_tune_write_then_load(tmp_path: Path, labels: set[str]) -> None:
    _round_trip(tmp_path / "qroute.yaml", labels)


async def test_router_warns_when_tuned_with_another_encoder(
    indexed: tuple[Settings, Classifier], tmp_path: Path
) -> None:
    settings, classifier = indexed
    assert classifier.tuning_warning() is None
    tuned = Settings(**{**settings.model_dump(), "tuned": {"encoder": "other|dim=9"}})
    warning = classifier.reconfigure(tuned).tuning_warning()
    assert warning is not None and "other|dim=9" in warning and "bag-of-words" in warning
    fingerprint = classifier.encoder.fingerprint
    same = Settings(**{**settings.model_dump(), "tuned": {"encoder": fingerprint}})
    assert classifier.reconfigure(same).tuning_warning() is None


async def test_calibrated_confidence_and_min_confidence_replay_as_served(
    indexed: tuple[Settings, Classifier], tmp_path: Path
) -> None:
    settings, classifier = indexed
    examples = read_table(_table(tmp_path / "q.csv", QUERIES))
    pre = await precompute(classifier, examples, k_max=3, progress=False)
    knots = [(0.3, 0.2), (0.6, 0.55), (0.9, 0.9)]
    for least in (0.0, 0.5, 0.8):
        router = settings.router.model_copy(
            update={"calibration": {"knn": knots}, "min_confidence": least}
        )
        live = classifier.reconfigure(settings.model_copy(update={"router": router}))
        served = await live.classify([Query(e.text) for e in examples])
        assert predict(pre, router, settings.zero_shot) == [p.label for p in served], least
        for p in served:
            if p.label is not None:
                assert p.confidence >= least and 0.2 <= p.confidence <= 0.9


async def test_eval_searches_each_row_once_and_scores_as_the_classifier(
    indexed: tuple[Settings, Classifier], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qroute.evaluation.run import evaluate, evaluate_once

    _, classifier = indexed
    examples = read_table(_table(tmp_path / "q.csv", QUERIES))
    served, _ = await evaluate(classifier, examples, oos_label="oos", progress=False)
    searched: list[int] = []
    neighbours = classifier.neighbours

    async def counting(texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        searched.append(len(texts))
        return await neighbours(texts, *args, **kwargs)

    monkeypatch.setattr(classifier, "neighbours", counting)
    once = await evaluate_once(
        classifier, examples, oos_label="oos", latency_rows=0, progress=False
    )
    assert sum(searched) == len(examples)
    assert once.result.accuracy == served.accuracy
    assert once.result.per_path == served.per_path
    assert len(once.confidence) == round(served.coverage * len(examples))


async def test_leave_one_out_searches_with_the_stored_vectors_not_the_encoder(
    indexed: tuple[Settings, Classifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    from qroute.evaluation import precompute as module

    settings, classifier = indexed
    examples = read_table(_table(Path(settings.store.location).parent / "rows.csv", ROWS))
    encoder = classifier.retriever.encoder
    assert isinstance(encoder, BagOfWordsEncoder)
    encoder.calls.clear()
    reused = await precompute(classifier, examples, k_max=3, leave_one_out=True, progress=False)
    assert encoder.calls == [] and reused.reused == len(examples)

    async def nothing_stored(*args: object) -> None:
        return None

    monkeypatch.setattr(module, "_stored", nothing_stored)
    encoded = await precompute(classifier, examples, k_max=3, leave_one_out=True, progress=False)
    assert sum(len(c) for c in encoder.calls) == len(examples) and encoded.reused == 0
    # The same neighbours either way: the stored vector is the one the encoder gives.
    for a, b in zip(reused.groups, encoded.groups, strict=True):
        assert [(g.label, [round(h.similarity, 5) for h in g.hits]) for g in a] == [
            (g.label, [round(h.similarity, 5) for h in g.hits]) for g in b
        ]
