"""`qroute eval` and `qroute tune` score the zero-shot fallback over the candidate labels
the served router scores: every label with `zero_shot.candidates: all`, the head's best
ones where the index has a head, every label for a query with no neighbours."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from qroute_indexer import run_index

from qroute.config import Settings, ZeroShotSettings
from qroute.embedding.dense import Encoder
from qroute.evaluation.precompute import precompute
from qroute.evaluation.run import Replayed, evaluate_once
from qroute.evaluation.tune import predict
from qroute.routing.classifier import Classifier
from qroute.routing.zeroshot import ZeroShotItem, ZeroShotScorer
from qroute.store.embedded import EmbeddedStore
from qroute.table import read_table
from qroute.testing import BagOfWordsEncoder
from qroute.types import LabelScore, Query
from qroute.v1 import router_pb2 as pb
from tests.integration.conftest import RunningRouter, ServeRouter
from tests.integration.test_head import QUERY as HEAD_QUERY
from tests.integration.test_head import ROWS as HEAD_ROWS
from tests.integration.test_indexer import ROWS, _table


async def _evaluate(
    router: RunningRouter,
    encoder: Encoder | None,
    rows: Sequence[tuple[str, str]],
    tmp_path: Path,
) -> Replayed:
    """`qroute eval`'s figures on the router's own settings and index."""
    settings = router.app.settings
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    classifier = Classifier(settings, encoder, None, store)
    try:
        examples = read_table(_table(tmp_path / "q.csv", rows))
        return await evaluate_once(classifier, examples, latency_rows=0, progress=False)
    finally:
        await classifier.close()


async def test_eval_scores_every_label_with_candidates_all(
    serve_router: ServeRouter, tmp_path: Path
) -> None:
    # Nearest to the finance (movie) rows at 0.35, under the threshold; only the weather
    # label's description shares a word with them (cosine 0.5 >= 0.3).
    queries = [("finance rain", "weather"), ("movie rain", "weather")]
    encoder = BagOfWordsEncoder()
    router = await serve_router(
        ROWS,
        encoder=encoder,
        nli=False,
        router={"k": 1, "group_size": 2, "similarity_threshold": 0.5, "min_margin": 0.0},
        zero_shot={
            "method": "embedding",
            "candidates": "all",
            "threshold": 0.3,
            "label_descriptions": {
                "weather": "rain sunny",
                "finance": "money stocks",
                "movie": "film cinema",
            },
        },
    )
    served = [await router.classify(text) for text, _ in queries]
    assert [(r.label, r.path) for r in served] == [("weather", pb.DECISION_PATH_ZERO_SHOT)] * 2
    once = await _evaluate(router, encoder, queries, tmp_path)
    assert once.result.accuracy == 1.0 and once.result.per_path["ZERO_SHOT"]["share"] == 1.0


async def test_eval_scores_the_heads_candidates_outside_the_groups(
    serve_router: ServeRouter, tmp_path: Path
) -> None:
    # The query's one nearest label (k 1) is 날씨; the head picks 쇼핑, which has no
    # neighbour among them, so it falls back, and zero-shot scores the head's best labels.
    encoder = BagOfWordsEncoder()
    router = await serve_router(
        HEAD_ROWS,
        encoder=encoder,
        nli=False,
        router={"k": 1, "label_score": "max", "similarity_threshold": 0.9},
        index={"head": True, "canary_per_label": 0},
        zero_shot={
            "method": "embedding",
            "threshold": 0.3,
            "label_descriptions": {"쇼핑": "커튼", "날씨": "습도"},
        },
    )
    served = await router.classify(HEAD_QUERY)
    assert (served.label, served.path) == ("쇼핑", pb.DECISION_PATH_ZERO_SHOT)
    once = await _evaluate(router, encoder, [(HEAD_QUERY, "쇼핑")], tmp_path)
    assert once.result.accuracy == 1.0


class _Overlap:
    """An NLI-like scorer without a model: a label's score is 0.2, plus 0.5 where the text
    says its description (``zero_shot.label_descriptions``)."""

    def method(self, settings: ZeroShotSettings) -> str:
        return f"nli-{settings.mode}"

    def score(
        self, items: Sequence[ZeroShotItem], settings: ZeroShotSettings
    ) -> list[list[LabelScore]]:
        out = []
        for item in items:
            said = set(item.text.split())
            raw = [
                0.2 + 0.5 * (settings.label_descriptions.get(label) in said)
                for label in item.labels
            ]
            if settings.mode == "single" and raw:
                total = sum(math.exp(r) for r in raw)
                raw = [math.exp(r) / total for r in raw]
            scored = [LabelScore(lb, s) for lb, s in zip(item.labels, raw, strict=True)]
            out.append(sorted(scored, key=lambda s: s.score, reverse=True))
        return out


async def test_tune_replays_a_lexical_query_with_no_neighbours(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        retrieval={"mode": "lexical"},
        encoder={"model": "/nowhere"},
        router={"k": 3, "similarity_threshold": 0.5},
        zero_shot={"method": "nli", "threshold": 0.6, "label_descriptions": {"weather": "비"}},
    )
    await run_index(settings, _table(tmp_path / "t.csv", ROWS), progress=False)
    scorer: ZeroShotScorer = _Overlap()
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    classifier = Classifier(settings, None, scorer, store)
    try:
        # Korean text shares no character n-gram with the English rows.
        examples = read_table(_table(tmp_path / "q.csv", [("가나다 비", "weather")]))
        served = await classifier.classify([Query(e.text) for e in examples])
        assert served[0].label == "weather" and "no neighbours" in served[0].reason
        pre = await precompute(classifier, examples, k_max=3, progress=False)
        assert predict(pre, settings.router, settings.zero_shot) == ["weather"]
    finally:
        await classifier.close()


async def test_single_mode_scores_are_the_routers_over_its_candidates(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        router={"k": 3, "similarity_threshold": 0.9, "min_confidence": 0.6},
        zero_shot={
            "method": "nli",
            "mode": "single",
            "top_n": 1,
            "label_descriptions": {"weather": "비"},
        },
    )
    encoder = BagOfWordsEncoder()
    await run_index(settings, _table(tmp_path / "t.csv", ROWS), encoder=encoder, progress=False)
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    classifier = Classifier(settings, encoder, _Overlap(), store)
    try:
        # Nearest to the weather rows (0.58, under 0.9): its one candidate is weather, whose
        # softmax over itself alone is 1.
        examples = read_table(_table(tmp_path / "q.csv", [("weather question 비", "weather")]))
        served = await classifier.classify([Query(e.text) for e in examples])
        assert (served[0].label, served[0].confidence) == ("weather", 1.0)
        once = await evaluate_once(classifier, examples, latency_rows=0, progress=False)
        assert once.confidence == [1.0]
    finally:
        await classifier.close()
