"""``lexical.min_query_idf``: a lexical router searches with only a query's rarer terms,
answers as the unpruned router does on the example table, and its similarities are
never above the whole query's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qroute.config import Settings, TunedSettings
from qroute.routing.classifier import Classifier
from qroute.table import read_table
from qroute.types import Query
from tests.conftest import example_rows
from tests.integration.conftest import ServeRouter

ROWS = [(r["text"], r["label"]) for r in example_rows()]
QUERIES = [e.text for e in read_table(Path(__file__).parents[2] / "examples" / "queries_eval.csv")]
ROUTER = {"k": 10, "group_size": 3, "similarity_threshold": 0.0, "min_margin": 0.0}


async def _whole(serve_router: ServeRouter) -> Classifier:
    """The example table served by a lexical router without pruning."""
    served = await serve_router(
        ROWS,
        encoder=None,
        nli=False,
        retrieval={"mode": "lexical"},
        zero_shot={"method": "off"},
        router=ROUTER,
    )
    whole = served.app.classifier
    assert whole is not None
    return whole


def _pruning(settings: Settings, **update: Any) -> Settings:
    """``settings`` with ``lexical.min_query_idf: 1.0`` (and ``update``)."""
    lexical = settings.lexical.model_copy(update={"min_query_idf": 1.0})
    return settings.model_copy(update={"lexical": lexical, **update})


async def test_a_pruned_query_answers_alike_with_fewer_terms(serve_router: ServeRouter) -> None:
    whole = await _whole(serve_router)
    pruned = Classifier(_pruning(whole.settings), None, None, whole.store)
    index = await pruned.refresh_index()
    assert index is not None
    embedded = pruned.retriever.embed(QUERIES, index.lexicon)
    assert embedded.sparse is not None and embedded.search_sparse is not None
    searched = [len(v.indices) for v in embedded.search_sparse]
    everything = [len(v.indices) for v in embedded.sparse]
    # The terms in more than 1/e of the rows (IDF < 1) are left out of many queries.
    assert sum(s < e for s, e in zip(searched, everything, strict=True)) >= len(QUERIES) // 3
    assert all(s <= e for s, e in zip(searched, everything, strict=True))

    queries = [Query(text) for text in QUERIES]
    before = await whole.classify(queries)
    after = await pruned.classify(queries)
    assert [p.label for p in after] == [p.label for p in before]
    for a, b in zip(after, before, strict=True):
        # The kept terms' share of the cosine: never more than the whole query's.
        assert a.neighbours[0].similarity <= b.neighbours[0].similarity + 1e-5


async def test_thresholds_tuned_without_pruning_ask_for_a_new_tune(
    serve_router: ServeRouter,
) -> None:
    whole = await _whole(serve_router)
    tuned = TunedSettings(encoder=whole.retriever.fingerprint)
    settings = _pruning(whole.settings, tuned=tuned)
    pruned = Classifier(settings, None, None, whole.store)
    # The index itself is the same: the pruned router serves it.
    assert await pruned.refresh_index() is not None
    warning = pruned.tuning_warning()
    assert warning is not None and "min_query_idf=1" in warning and "qroute tune" in warning
    tuned_alike = settings.model_copy(
        update={"tuned": TunedSettings(encoder=pruned.retriever.fingerprint)}
    )
    assert Classifier(tuned_alike, None, None, whole.store).tuning_warning() is None


@pytest.mark.parametrize("bound", [-0.5, 21.0])
def test_the_bound_is_checked(bound: float) -> None:
    from pydantic import ValidationError

    from qroute.config import LexicalSettings

    with pytest.raises(ValidationError, match="min_query_idf"):
        LexicalSettings(min_query_idf=bound)
