"""The result cache on a real router: a repeated query is answered without the models,
with the same answer; the key holds what changes the answer; a config reload or a newly
published index version empties it; hits and misses are counted."""

from __future__ import annotations

from typing import Any

import pytest
from qroute_indexer import run_index

from qroute.testing import BagOfWordsEncoder
from qroute.v1 import router_pb2 as pb
from tests.integration.conftest import RunningRouter, ServeRouter
from tests.integration.test_decisions import KNN, ROWS


async def _router(
    serve_router: ServeRouter, **router: Any
) -> tuple[RunningRouter, BagOfWordsEncoder]:
    encoder = BagOfWordsEncoder()
    running = await serve_router(ROWS, encoder=encoder, router={**KNN, **router})
    encoder.calls.clear()
    return running, encoder


def _count(router: RunningRouter, result: str) -> float:
    value = router.app.metrics.registry.get_sample_value("qroute_cache_total", {"result": result})
    return value or 0.0


def _embedded(encoder: BagOfWordsEncoder) -> list[str]:
    return [text for call in encoder.calls for text in call]


async def test_a_repeated_query_gets_the_same_answer_without_the_encoder(
    serve_router: ServeRouter,
) -> None:
    router, encoder = await _router(serve_router)
    first = await router.classify("kospi index today", top_labels=2)
    # The same text after normalisation (NFC, runs of whitespace): the same key.
    again = await router.classify("  kospi   index today ", top_labels=2)
    # The same answer; each response still gets its own request id (for feedback).
    assert again.request_id and again.request_id != first.request_id
    again.request_id = first.request_id
    assert again == first
    assert again.label == "finance" and len(again.top_labels) == 2
    assert _embedded(encoder) == ["kospi index today"]
    assert (_count(router, "hit"), _count(router, "miss")) == (1, 1)


async def test_allowed_labels_and_top_labels_are_part_of_the_key(
    serve_router: ServeRouter,
) -> None:
    router, encoder = await _router(serve_router)
    plain = await router.classify("kospi index today")
    restricted = await router.classify("kospi index today", allowed_labels=["movie", "weather"])
    wider = await router.classify("kospi index today", top_labels=3)
    assert plain.label == "finance" and restricted.label != "finance"
    assert len(plain.top_labels) == 1 and len(wider.top_labels) == 3
    assert len(_embedded(encoder)) == 3
    assert (_count(router, "hit"), _count(router, "miss")) == (0, 3)


async def test_a_batch_computes_only_its_misses_in_order(serve_router: ServeRouter) -> None:
    router, encoder = await _router(serve_router)
    await router.classify("movie oppenheimer cast")
    request = pb.ClassifyBatchRequest(
        requests=[
            pb.ClassifyRequest(text="kospi index today"),
            pb.ClassifyRequest(text="movie oppenheimer cast"),
            pb.ClassifyRequest(text="weather tomorrow rain"),
        ]
    )
    response = await router.stub.ClassifyBatch(request, timeout=30)
    assert [r.label for r in response.responses] == ["finance", "movie", "weather"]
    assert encoder.calls[-1] == ["kospi index today", "weather tomorrow rain"]


async def test_a_newly_published_index_version_empties_the_cache(
    serve_router: ServeRouter, tmp_path: Any
) -> None:
    router, encoder = await _router(serve_router)
    before = await router.classify("kospi index today")
    await router.classify("kospi index today")
    assert before.index_version == "test_v1" and len(_embedded(encoder)) == 1

    await run_index(
        router.app.settings, tmp_path / "table.csv", encoder=encoder, full=True, progress=False
    )
    await router.app.follow_index_once()
    encoder.calls.clear()
    after = await router.classify("kospi index today")
    assert after.index_version == "test_v2"
    assert _embedded(encoder) == ["kospi index today"]


async def test_a_config_reload_empties_the_cache_and_resizes_it(
    serve_router: ServeRouter,
) -> None:
    router, encoder = await _router(serve_router)
    before = await router.classify("kospi index today")
    router.write_config(router={"similarity_threshold": 0.95})

    async def reloaded() -> bool:
        return router.app.settings.version != before.config_version

    await router.wait_for(reloaded)
    encoder.calls.clear()
    after = await router.classify("kospi index today")
    assert after.config_version == router.app.settings.version
    assert after.thresholds.similarity == pytest.approx(0.95)
    assert _embedded(encoder) == ["kospi index today"]

    router.write_config(router={"cache_size": 0})  # off, hot

    async def off() -> bool:
        return router.app.settings.router.cache_size == 0

    await router.wait_for(off)
    encoder.calls.clear()
    hits = _count(router, "hit")
    await router.classify("kospi index today")
    await router.classify("kospi index today")
    assert len(_embedded(encoder)) == 2 and _count(router, "hit") == hits
