"""The index format's codec: what the indexer writes is what the router reads."""

from __future__ import annotations

import pytest

from qroute.errors import IndexCorrupt
from qroute.store.metadata import (
    PAYLOAD_FIELDS,
    IndexMetadata,
    hit_from_payload,
    to_payload,
)
from qroute.types import Example

META = IndexMetadata(
    retrieval="hybrid",
    labels=("금융", "날씨"),
    rows=12,
    table="queries.csv",
    build="incremental",
    created_at="2026-12-02T00:00:00+00:00",
    base="t_v1",
    encoder="model|384",
    dimension=384,
    lexical="char-ngram|1-3",
    lexicon={"points": 12, "frequencies": [1, 2]},
    head={"labels": ["금융", "날씨"]},
)


def test_metadata_round_trips_through_json() -> None:
    assert IndexMetadata.from_json(META.to_json(), "t_v2") == META


def test_a_missing_key_names_the_version_and_the_key() -> None:
    data = META.to_json()
    del data["labels"]
    with pytest.raises(IndexCorrupt, match=r"t_v2.*'labels'"):
        IndexMetadata.from_json(data, "t_v2")


def test_a_key_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(IndexCorrupt, match=r"'rows' is str"):
        IndexMetadata.from_json({**META.to_json(), "rows": "12"}, "t_v2")
    with pytest.raises(IndexCorrupt, match="retrieval 'sparse'"):
        IndexMetadata.from_json({**META.to_json(), "retrieval": "sparse"}, "t_v2")


def test_payload_round_trips_and_extra_columns_never_shadow_its_fields() -> None:
    extra = {name: "spoofed" for name in PAYLOAD_FIELDS} | {"lang": "ko"}
    example = Example("코스닥 지수", "금융", "r1", "/data/queries.csv", 7, extra=extra)
    payload = to_payload(example)
    assert payload == {
        "lang": "ko",
        "text": "코스닥 지수",
        "label": "금융",
        "row_id": "r1",
        "file": "queries.csv",
        "row": 7,
    }
    hit = hit_from_payload("ignored", 0.5, payload)
    assert (hit.row_id, hit.text, hit.label, hit.similarity) == ("r1", "코스닥 지수", "금융", 0.5)
