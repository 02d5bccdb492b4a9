"""Retrieval modes (dense, lexical, hybrid) on a real router over the embedded store."""

from __future__ import annotations

import pytest

from qroute.errors import EncoderMismatch
from qroute.testing import BagOfWordsEncoder
from qroute.types import Decision, Query
from tests.conftest import example_rows
from tests.integration.conftest import ServeRouter

ROWS = [(r["text"], r["label"]) for r in example_rows()]
# Each row is its own nearest example (similarity 1 in every mode): it must win.
EXACT = {"k": 5, "label_score": "max", "similarity_threshold": 0.5, "min_margin": 0.0}


@pytest.mark.parametrize(
    ("mode", "fusion"),
    [("dense", "blend"), ("lexical", "blend"), ("hybrid", "blend"), ("hybrid", "rrf")],
)
async def test_each_mode_classifies_the_tables_own_rows(
    serve_router: ServeRouter, mode: str, fusion: str
) -> None:
    encoder = None if mode == "lexical" else BagOfWordsEncoder()
    router = await serve_router(
        ROWS,
        encoder=encoder,
        nli=False,
        retrieval={"mode": mode, "fusion": fusion},
        zero_shot={"method": "off"},
        router=EXACT,
    )
    assert router.app.classifier is not None
    predictions = await router.app.classifier.classify([Query(text) for text, _ in ROWS])
    wrong = [
        (text, label, p.label)
        for (text, label), p in zip(ROWS, predictions, strict=True)
        if p.label != label or p.decision != Decision.KNN
    ]
    assert wrong == []
    assert all(p.neighbours[0].similarity == pytest.approx(1.0, abs=1e-4) for p in predictions)


async def test_hybrid_explanation_shows_both_similarities(serve_router: ServeRouter) -> None:
    router = await serve_router(
        ROWS,
        encoder=BagOfWordsEncoder(),
        nli=False,
        retrieval={"mode": "hybrid", "dense_weight": 0.25},
        zero_shot={"method": "off"},
        router=EXACT,
    )
    response = await router.classify("서귀포 맛집 좀 알려줘")
    assert response.label == "장소"
    assert len(response.neighbours) > 1
    for n in response.neighbours:
        assert n.HasField("dense_similarity") and n.HasField("lexical_similarity")
        blend = 0.25 * n.dense_similarity + 0.75 * n.lexical_similarity
        assert n.similarity == pytest.approx(blend, abs=1e-5)
    top = response.neighbours[0]
    assert top.text == "서귀포 맛집 알려줘"
    # Bag of words: the row's 3 words are 3 of the query's 4.
    assert top.dense_similarity == pytest.approx(3 / (4 * 3) ** 0.5, abs=1e-5)
    assert 0.3 < top.lexical_similarity < 1.0


async def test_dense_mode_has_no_partial_similarities(serve_router: ServeRouter) -> None:
    router = await serve_router(
        ROWS, encoder=BagOfWordsEncoder(), nli=False, zero_shot={"method": "off"}, router=EXACT
    )
    response = await router.classify("서귀포 맛집 알려줘")
    assert not response.neighbours[0].HasField("lexical_similarity")


async def test_a_router_refuses_an_index_without_the_vectors_its_mode_needs(
    serve_router: ServeRouter,
) -> None:
    router = await serve_router(
        ROWS, encoder=BagOfWordsEncoder(), nli=False, zero_shot={"method": "off"}, router=EXACT
    )
    classifier = router.app.classifier
    assert classifier is not None
    settings = classifier.settings.model_copy(
        update={"retrieval": classifier.settings.retrieval.model_copy(update={"mode": "hybrid"})}
    )
    from qroute.routing.classifier import Classifier

    hybrid = Classifier(settings, classifier.encoder, None, classifier.store)
    with pytest.raises(EncoderMismatch, match="no lexical vectors"):
        await hybrid.refresh_index()
