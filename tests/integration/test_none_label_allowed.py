"""allowed_labels restrict what may be answered; the none label (table.none_label) is
never answered, so the head keeps it: a query the head gives to it stays NO_MATCH when
the request lists allowed labels, and listing every label changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qroute_indexer import run_index

from qroute.config import Settings
from qroute.routing.classifier import Classifier
from qroute.store.embedded import EmbeddedStore
from qroute.types import Decision, Query
from tests.integration.test_indexer import _table
from tests.integration.test_none_label import QUERIES, ROWS


async def test_allowed_labels_keep_the_heads_none_label(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        retrieval={"mode": "lexical"},
        encoder={"model": "/nowhere"},
        zero_shot={"method": "off"},
        router={"k": 3, "similarity_threshold": 0.0, "use_head": True},
        index={"head": True, "canary_per_label": 0},
        table={"none_label": "oos"},
    )
    await run_index(settings, _table(tmp_path / "t.csv", ROWS), progress=False)
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    try:
        classifier = Classifier(settings, None, None, store)
        await classifier.refresh_index()
        every = ("날씨", "환율")
        plain = await classifier.classify([Query(q) for q in QUERIES])
        listed = await classifier.classify([Query(q, allowed_labels=every) for q in QUERIES])
        assert plain[0].decision == Decision.NO_MATCH and "none label" in plain[0].reason
        assert [(p.decision, p.label, p.confidence, p.reason) for p in listed] == [
            (p.decision, p.label, p.confidence, p.reason) for p in plain
        ]
        # A real restriction still may not turn the none label into an answer.
        (song,) = await classifier.classify([Query(QUERIES[0], allowed_labels=("환율",))])
        assert song.decision == Decision.NO_MATCH and song.label is None
        assert all(s.label != "oos" for s in song.top_labels)
    finally:
        await store.close()
