"""The linear head (``index.head``): fitted by the indexer, used by the router to pick the
label where the vote is fooled by words that say nothing about the label."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qroute_indexer import list_versions, rollback, run_index

from qroute.config import LexicalSettings, Settings
from qroute.embedding.lexical import LexicalEncoder, Lexicon, morph_from
from qroute.evaluation.precompute import precompute
from qroute.evaluation.tune import predict
from qroute.routing.classifier import Classifier
from qroute.routing.head import HeadData, LinearHead
from qroute.store.embedded import EmbeddedStore
from qroute.table import read_table
from qroute.testing import BagOfWordsEncoder
from qroute.types import Decision, Query
from tests.integration.conftest import RunningRouter, ServeRouter
from tests.integration.test_indexer import _table

FILLERS = [f"w{i} x{i} y{i}" for i in range(12)]
# Every filler is said under both labels, so only "커튼" and "습도" tell them apart.
ROWS = [(f"커튼 {f}", "쇼핑") for f in FILLERS] + [(f"습도 {f}", "날씨") for f in FILLERS]
# One more weather row whose three filler words the query repeats: the query's nearest
# example by far (3 of 4 words), though it says "커튼".
ROWS.append(("습도 a b c", "날씨"))
# Its three words are said under the other label too, each on its own.
ROWS += [(f"커튼 {word}", "쇼핑") for word in ("a", "b", "c")]
QUERY = "커튼 a b c"
ROUTER = {"k": 5, "label_score": "max", "similarity_threshold": 0.2}


async def _serve(serve_router: ServeRouter, **sections: dict[str, Any]) -> RunningRouter:
    """ROWS served in dense mode with a head, zero-shot off; ``sections`` override."""
    defaults: dict[str, dict[str, Any]] = {
        "zero_shot": {"method": "off"},
        "router": ROUTER,
        "index": {"head": True, "canary_per_label": 0},
    }
    return await serve_router(
        ROWS, encoder=BagOfWordsEncoder(), nli=False, **{**defaults, **sections}
    )


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
async def test_the_head_picks_the_label_the_vote_gets_wrong(
    serve_router: ServeRouter, mode: str
) -> None:
    # IDF-weighted n-gram cosines of these texts are lower than bag-of-words ones.
    settings = {**ROUTER, "similarity_threshold": 0.05} if mode == "lexical" else ROUTER
    router = await serve_router(
        ROWS,
        encoder=None if mode == "lexical" else BagOfWordsEncoder(),
        nli=False,
        retrieval={"mode": mode},
        zero_shot={"method": "off"},
        router={**settings, "use_head": False},
        index={"head": True, "canary_per_label": 0},
    )
    vote = await router.classify(QUERY)
    assert vote.label == "날씨"
    assert vote.neighbours[0].text == "습도 a b c"

    router.write_config(router={**settings, "use_head": True})

    async def reloaded() -> bool:
        classifier = router.app.classifier
        return classifier is not None and classifier.settings.router.use_head

    await router.wait_for(reloaded)
    head = await router.classify(QUERY)
    assert head.label == "쇼핑"
    assert head.reason.startswith("head: head p=")
    assert head.confidence > 0.5
    # The neighbours still explain the answer, and still gate it.
    assert head.neighbours[0].text == "습도 a b c"
    assert any(n.label == "쇼핑" for n in head.neighbours)
    assert [s.label for s in head.knn_scores] == ["쇼핑", "날씨"]


async def test_the_neighbours_still_gate_the_heads_answer(serve_router: ServeRouter) -> None:
    router = await _serve(serve_router, router={**ROUTER, "similarity_threshold": 0.72})
    # The head says 쇼핑, but no 쇼핑 example is as close as the threshold asks (the
    # nearest, "커튼 a", shares two of the query's four words: cosine 0.707).
    response = await router.classify(QUERY)
    assert response.label == ""
    assert response.reason.startswith("head p=")
    assert "zero-shot is off" in response.reason


async def test_allowed_labels_restrict_the_head(serve_router: ServeRouter) -> None:
    router = await _serve(serve_router)
    response = await router.classify(QUERY, allowed_labels=["날씨"])
    assert response.label == "날씨"
    assert response.confidence == pytest.approx(1.0)


async def test_an_index_without_a_head_is_served_by_the_vote(serve_router: ServeRouter) -> None:
    router = await _serve(serve_router, index={"canary_per_label": 0})
    assert router.app.classifier is not None
    [prediction] = await router.app.classifier.classify([Query(QUERY)])
    assert (prediction.label, prediction.decision) == ("날씨", Decision.KNN)
    assert prediction.reason.startswith("kNN: ")


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
async def test_tuning_replays_the_heads_decisions(
    make_settings: Callable[..., Settings], tmp_path: Path, mode: str
) -> None:
    settings = make_settings(
        retrieval={"mode": mode},
        router=ROUTER,
        zero_shot={"method": "off"},
        index={"head": True, "canary_per_label": 0},
    )
    encoder = BagOfWordsEncoder()
    await run_index(settings, _table(tmp_path / "t.csv", ROWS), encoder=encoder, progress=False)
    classifier = Classifier(
        settings, encoder, None, EmbeddedStore(settings.store.location, settings.store.collection)
    )
    await classifier.refresh_index()
    queries = [(QUERY, "쇼핑"), ("습도 w1 q", "날씨"), ("커튼 x2 y3 z", "쇼핑"), ("q r s", "날씨")]
    examples = read_table(_table(tmp_path / "q.csv", queries))
    try:
        pre = await precompute(classifier, examples, k_max=5, progress=False)
        answers = set()
        for threshold in (0.1, 0.2, 0.4, 0.6):
            for margin in (0.0, 0.5, 0.95):
                router = settings.router.model_copy(
                    update={"similarity_threshold": threshold, "min_margin": margin}
                )
                live = classifier.reconfigure(settings.model_copy(update={"router": router}))
                served = [p.label for p in await live.classify([Query(q) for q, _ in queries])]
                assert predict(pre, router, settings.zero_shot) == served, (threshold, margin)
                answers.add(served[0])
        assert answers == {"쇼핑", None}  # the head's label, or none when gated
    finally:
        await classifier.close()


async def test_each_version_carries_the_head_fitted_on_its_rows(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        router=ROUTER, zero_shot={"method": "off"}, index={"head": True, "canary_per_label": 0}
    )
    encoder = BagOfWordsEncoder()
    await run_index(settings, _table(tmp_path / "a.csv", ROWS), encoder=encoder, progress=False)
    grown = [*ROWS, *((f"영화 {f}", "영화") for f in FILLERS)]
    second = await run_index(
        settings, _table(tmp_path / "b.csv", grown), encoder=encoder, progress=False
    )
    assert second.mode == "incremental"  # reused vectors, a head refitted on all rows
    classifier = Classifier(
        settings, encoder, None, EmbeddedStore(settings.store.location, settings.store.collection)
    )
    try:
        index = await classifier.refresh_index()
        assert index is not None and index.head is not None
        assert set(index.head.labels) == {"쇼핑", "날씨", "영화"}
        [prediction] = await classifier.classify([Query("영화 a b c")])
        assert prediction.label == "영화"

        await rollback(settings)
        index = await classifier.refresh_index()
        assert index is not None and index.head is not None
        assert set(index.head.labels) == {"쇼핑", "날씨"}
    finally:
        await classifier.close()
    assert [row.head for row in await list_versions(settings)] == [True, True]


def _fitted(labels_per_row: list[str], texts: list[str]) -> tuple[LinearHead, Lexicon]:
    encoder, lexical = BagOfWordsEncoder(64), LexicalEncoder(LexicalSettings())
    lexicon = Lexicon.count(lexical.terms(t) for t in texts)
    data = HeadData()
    dense = encoder.encode(texts)
    sparse = [lexicon.vector(lexical.terms(t)) for t in texts]
    data.offer([str(i) for i in range(len(texts))], labels_per_row, dense, sparse)
    # A row offered twice (an incremental index writes no row twice, but be sure) counts once.
    data.offer(["0"], [labels_per_row[0]], dense[:1], sparse[:1])
    return data.fit(lexicon, c=3.0, morph_from=morph_from(LexicalSettings())), lexicon


def test_a_head_survives_the_metadata_round_trip() -> None:
    texts = [f"{word} {f}" for word in ("커튼", "습도", "영화") for f in FILLERS]
    labels = [label for label in ("쇼핑", "날씨", "영화") for _ in FILLERS]
    head, lexicon = _fitted(labels, texts)
    again = LinearHead.from_metadata(head.to_metadata())
    encoder, lexical = BagOfWordsEncoder(64), LexicalEncoder(LexicalSettings())
    queries = ["커튼 a b", "습도 w1", "영화 x3 y4"]
    dense = encoder.encode(queries)
    sparse = [lexicon.vector(lexical.terms(q)) for q in queries]
    before = head.scores(dense, sparse, lexicon)
    after = again.scores(dense, sparse, lexicon)
    assert [s[0].label for s in before] == ["쇼핑", "날씨", "영화"]
    assert [s[0].label for s in after] == ["쇼핑", "날씨", "영화"]
    for one, other in zip(before, after, strict=True):
        assert [s.label for s in one] == [s.label for s in other]
        np.testing.assert_allclose([s.score for s in one], [s.score for s in other], atol=2e-3)
        assert sum(s.score for s in one) == pytest.approx(1.0)


def test_a_head_written_before_the_term_blocks_scores_as_it_was_fitted() -> None:
    """Metadata without ``morph_from`` (a head of an earlier release) keeps its features:
    one block, each value scaled by the square root of its IDF, not renormalised."""
    texts = [f"{word} {f}" for word in ("커튼", "습도") for f in FILLERS]
    labels = [label for label in ("쇼핑", "날씨") for _ in FILLERS]
    head, lexicon = _fitted(labels, texts)
    legacy = head.to_metadata()
    del legacy["morph_from"]
    old = LinearHead.from_metadata(legacy)
    lexical = LexicalEncoder(LexicalSettings())
    query = lexicon.vector(lexical.terms("커튼 습도 습도 zz"))
    dense = BagOfWordsEncoder(64).encode(["커튼 습도 습도 zz"])
    column = {term: c for term, c in old.terms.items()}
    features = np.zeros(len(column), dtype=np.float32)
    for term, value in zip(query.indices, query.values, strict=True):
        if term in column:
            features[column[term]] = value * np.sqrt(lexicon.idf(term))
    assert old.dense is not None and old.lexical is not None
    logits = old.bias + dense[0] @ old.dense.T + features @ old.lexical.T
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    scores = {s.label: s.score for s in old.scores(dense, [query], lexicon)[0]}
    assert scores == pytest.approx(dict(zip(old.labels, expected.tolist(), strict=True)), abs=1e-5)
    # The current features differ (full IDF, unit blocks): the same weights score otherwise.
    now = {s.label: s.score for s in head.scores(dense, [query], lexicon)[0]}
    assert now != pytest.approx(scores, abs=1e-3)
