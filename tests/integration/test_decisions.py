"""Each decision path and fallback reason, grouping, zero-shot modes, request options,
on a real gRPC router. The bag-of-words encoder places examples at exact similarities."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest

from qroute.routing.vote import shares
from qroute.testing import BagOfWordsEncoder
from qroute.types import LabelScore
from qroute.v1 import router_pb2 as pb
from tests.integration.conftest import ServeRouter

ROWS = [
    ("kospi index today", "finance"),
    ("exchange rate dollar won", "finance"),
    ("stock price samsung", "finance"),
    ("movie oppenheimer cast", "movie"),
    ("cinema showtimes tonight", "movie"),
    ("film director nolan", "movie"),
    ("weather tomorrow rain", "weather"),
    ("fine dust forecast seoul", "weather"),
    ("temperature today seoul", "weather"),
]
KNN = {"k": 5, "group_size": 3, "similarity_threshold": 0.8, "min_margin": 0.0, "min_agreeing": 1}


async def _router(serve_router: ServeRouter, **sections: Any) -> Any:
    router = {**KNN, **sections.pop("router", {})}
    return await serve_router(ROWS, encoder=BagOfWordsEncoder(), router=router, **sections)


async def test_knn_path_explains_itself(serve_router: ServeRouter) -> None:
    router = await _router(serve_router)
    response = await router.classify("kospi index today", top_labels=2)
    assert response.path == pb.DECISION_PATH_KNN
    assert response.label == "finance"
    assert list(response.fallback_reasons) == []
    assert response.neighbours[0].text == "kospi index today"
    assert response.neighbours[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert response.neighbours[0].row_id
    assert response.knn_scores[0].label == "finance"
    assert [s.label for s in response.top_labels][:1] == ["finance"] and len(
        response.top_labels
    ) == 2
    assert response.thresholds.similarity == pytest.approx(0.8)
    assert response.config_version == router.app.settings.version
    assert response.index_version == "test_v1"
    assert response.zero_shot_method == "" and not response.zero_shot_scores
    assert response.reason.startswith("kNN: best similarity 1.000 >= threshold 0.800")


async def test_low_similarity_goes_to_zero_shot(serve_router: ServeRouter) -> None:
    router = await _router(serve_router, zero_shot={"threshold": 0.0})
    response = await router.classify("kospi forecast")
    assert list(response.fallback_reasons) == [pb.FALLBACK_REASON_LOW_SIMILARITY]
    assert response.path == pb.DECISION_PATH_ZERO_SHOT
    assert response.zero_shot_method == "nli-independent"
    assert response.label == response.zero_shot_scores[0].label
    assert "best similarity 0.408 < threshold 0.800" in response.reason


async def test_nothing_clears_the_zero_shot_threshold_so_none_of_these(
    serve_router: ServeRouter,
) -> None:
    router = await _router(serve_router, zero_shot={"threshold": 0.99})
    response = await router.classify("kospi forecast")
    assert response.path == pb.DECISION_PATH_NO_MATCH
    assert response.label == ""
    assert response.zero_shot_scores and response.zero_shot_scores[0].score < 0.99
    assert "none of these" in response.reason


async def test_per_label_threshold_overrides_the_global_one(serve_router: ServeRouter) -> None:
    query = "kospi index today now"  # 3 shared words of 4 and 3: similarity 0.866
    router = await _router(serve_router, zero_shot={"threshold": 0.0})
    assert (await router.classify(query)).path == pb.DECISION_PATH_KNN
    router.write_config(router={"label_thresholds": {"finance": 0.9}})
    await router.wait_for(lambda: _threshold_is(router, query, 0.9))
    response = await router.classify(query)
    assert list(response.fallback_reasons) == [pb.FALLBACK_REASON_LOW_SIMILARITY]
    # Another label keeps the global threshold.
    other = await router.classify("movie oppenheimer cast now")
    assert other.thresholds.similarity == pytest.approx(0.8)


async def _threshold_is(router: Any, query: str, value: float) -> bool:
    response = await router.classify(query)
    return bool(abs(response.thresholds.similarity - value) < 1e-6)


async def test_ambiguous_margin_leaves_knn(serve_router: ServeRouter) -> None:
    router = await _router(
        serve_router,
        router={"similarity_threshold": 0.4, "min_margin": 0.05},
        zero_shot={"threshold": 0.0},
    )
    # Three words of each of two labels: equally close to both.
    response = await router.classify("kospi index today cinema showtimes tonight")
    assert list(response.fallback_reasons) == [pb.FALLBACK_REASON_AMBIGUOUS]
    assert {s.label for s in response.knn_scores[:2]} == {"finance", "movie"}
    assert response.thresholds.margin == pytest.approx(0.05)
    assert response.path == pb.DECISION_PATH_ZERO_SHOT
    assert "(ambiguous)" in response.reason


async def test_too_few_agreeing_neighbours_leave_knn(serve_router: ServeRouter) -> None:
    router = await _router(serve_router, router={"min_agreeing": 2}, zero_shot={"threshold": 0.0})
    response = await router.classify("kospi index today")
    assert list(response.fallback_reasons) == [pb.FALLBACK_REASON_FEW_AGREEING]
    assert response.thresholds.min_agreeing == 2
    assert response.path == pb.DECISION_PATH_ZERO_SHOT


async def test_fifty_near_duplicates_do_not_outvote_a_better_match(
    serve_router: ServeRouter,
) -> None:
    query = "book table for two tonight"
    better = ("book table for two tonight italian", "restaurant")  # similarity 0.913
    duplicates = [(f"book table for two train{i}", "travel") for i in range(50)]  # 0.8 each
    router = await serve_router(
        [better, *duplicates, *ROWS],
        encoder=BagOfWordsEncoder(),
        router={**KNN, "similarity_threshold": 0.7, "k": 10},
    )
    response = await router.classify(query)
    assert response.path == pb.DECISION_PATH_KNN
    assert response.label == "restaurant"
    travel = [n for n in response.neighbours if n.label == "travel"]
    assert len(travel) == 3  # one group of group_size, not 50

    # Control: an ungrouped similarity-weighted vote over the nearest 10 picks "travel".
    classifier = router.app.classifier
    assert classifier is not None and classifier.index is not None
    vector = classifier.encoder.encode([query])[0].tolist()
    [hits] = await classifier.store.search(classifier.index.version, [vector], 10)
    weights: dict[str, float] = {}
    for hit in hits:
        weights[hit.label] = weights.get(hit.label, 0.0) + hit.similarity
    assert max(weights, key=lambda label: weights[label]) == "travel"


async def test_single_mode_always_picks_one_label(serve_router: ServeRouter) -> None:
    router = await _router(serve_router, zero_shot={"mode": "single", "threshold": 0.99})
    response = await router.classify("kospi forecast")
    assert response.path == pb.DECISION_PATH_ZERO_SHOT
    assert response.zero_shot_method == "nli-single"
    assert sum(s.score for s in response.zero_shot_scores) == pytest.approx(1.0, abs=1e-4)


async def test_independent_mode_scores_each_label_on_its_own(serve_router: ServeRouter) -> None:
    router = await _router(serve_router, zero_shot={"threshold": 0.99})
    response = await router.classify("kospi forecast")
    assert response.zero_shot_method == "nli-independent"
    assert response.path == pb.DECISION_PATH_NO_MATCH
    # Entailment vs contradiction per label: the scores need not sum to 1.
    total = sum(s.score for s in response.zero_shot_scores)
    assert len(response.zero_shot_scores) == 3 and total != pytest.approx(1.0, abs=1e-3)


async def test_label_descriptions_become_the_hypotheses(serve_router: ServeRouter) -> None:
    router = await _router(
        serve_router,
        zero_shot={"label_descriptions": {"finance": "주식 같은 금융"}, "candidates": "all"},
    )
    classifier = router.app.classifier
    assert classifier is not None and classifier.nli is not None
    seen: list[list[str]] = []
    nli: Any = classifier.nli
    original = nli.logits

    def spy(premises: list[str], hypotheses: list[str]) -> Any:
        seen.append(list(hypotheses))
        return original(premises, hypotheses)

    nli.logits = spy
    await router.classify("kospi forecast")
    assert seen == [
        [
            "이 문장은 주식 같은 금융에 관한 것입니다.",
            "이 문장은 movie에 관한 것입니다.",
            "이 문장은 weather에 관한 것입니다.",
        ]
    ]


async def test_embedding_zero_shot_needs_no_nli_model(serve_router: ServeRouter) -> None:
    router = await serve_router(
        ROWS,
        encoder=BagOfWordsEncoder(),
        nli=False,
        router=KNN,
        zero_shot={
            "method": "embedding",
            "threshold": 0.2,
            "candidates": "all",
            "label_descriptions": {"weather": "weather rain forecast temperature"},
        },
    )
    response = await router.classify("will it rain")
    assert response.path == pb.DECISION_PATH_ZERO_SHOT
    assert response.zero_shot_method == "embedding"
    assert response.label == "weather"
    assert response.zero_shot_scores[0].score == pytest.approx(1 / np.sqrt(3 * 4), abs=1e-4)


async def test_candidates_are_the_votes_top_n_or_all_labels(serve_router: ServeRouter) -> None:
    router = await _router(serve_router, zero_shot={"threshold": 0.0, "top_n": 1})
    response = await router.classify("kospi forecast")
    assert [s.label for s in response.zero_shot_scores] == [response.knn_scores[0].label]
    router.write_config(zero_shot={"candidates": "all"})

    async def all_labels() -> bool:
        scores = (await router.classify("kospi forecast")).zero_shot_scores
        return {s.label for s in scores} == {"finance", "movie", "weather"}

    await router.wait_for(all_labels)


async def test_allowed_labels_restrict_the_answer(serve_router: ServeRouter) -> None:
    router = await _router(serve_router, zero_shot={"threshold": 0.0})
    response = await router.classify("kospi index today", allowed_labels=["movie", "weather"])
    assert response.label in {"movie", "weather"}
    assert {n.label for n in response.neighbours} <= {"movie", "weather"}
    assert {s.label for s in response.zero_shot_scores} <= {"movie", "weather"}

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.classify("kospi index today", allowed_labels=["finance", "sports"])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sports" in (info.value.details() or "")


def test_knn_confidence_is_the_softmax_share() -> None:
    ranked = shares([LabelScore("a", 1.0), LabelScore("b", 0.5)], temperature=0.05)
    assert ranked[0].score == pytest.approx(1 / (1 + np.exp(-10)))
