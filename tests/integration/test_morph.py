"""lexical.analyzer: Korean morphemes (kiwipiepy) beside or instead of character n-grams."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from qroute_indexer import run_index

from qroute.config import LexicalSettings, Settings
from qroute.embedding import lexical as lexical_module
from qroute.embedding.lexical import LexicalEncoder, morph_from
from qroute.errors import EncoderMismatch, MissingDependency
from qroute.routing.classifier import Classifier
from qroute.store.embedded import EmbeddedStore
from qroute.types import Query
from tests.integration.test_indexer import _table

ROWS = [
    *[(f"내일 {place} 날씨 알려 주세요", "날씨") for place in ("서울", "부산", "제주")],
    *[(f"{place} 맛집 추천해 줘", "맛집") for place in ("서울", "부산", "제주")],
]


def test_the_morph_analyser_cuts_a_request_into_form_and_pos() -> None:
    encoder = LexicalEncoder(LexicalSettings(analyzer="morph"))
    assert encoder.morphemes("내일 날씨 알려 주세요") == [
        "내일/NNG",
        "날씨/NNG",
        "알리/VV",
        "어/EC",
        "주/VX",
        "세요/EF",
    ]
    # Six morphemes and five neighbouring pairs, nothing else.
    assert sum(encoder.terms("내일 날씨 알려 주세요").values()) == 11


def test_char_and_morph_terms_keep_apart_and_the_fingerprint_says_which() -> None:
    settings = LexicalSettings(dimensions=1024)
    char = LexicalEncoder(settings)
    morph = LexicalEncoder(settings.model_copy(update={"analyzer": "morph"}))
    both = LexicalEncoder(settings.model_copy(update={"analyzer": "char+morph"}))
    text = "내일 날씨 알려 주세요"
    assert both.terms(text) == char.terms(text) + morph.terms(text)
    # In a space this small a morpheme hashed among the n-grams would collide with one;
    # the morphemes have a range of their own, so the head can weigh them apart.
    start = morph_from(settings)
    assert all(term < start for term in char.terms(text))
    assert all(start <= term < 2 * start for term in morph.terms(text))
    # The char fingerprint is the one every earlier index carries.
    assert char.fingerprint.endswith("|tf=log|idf=qdrant")
    assert "analyzer=char+morph" in both.fingerprint and "kiwipiepy=" in both.fingerprint
    assert both.fingerprint.endswith("|terms=split")


def test_a_missing_kiwipiepy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kiwipiepy", None)
    lexical_module._morphemes.cache_clear()
    try:
        with pytest.raises(MissingDependency, match=r"qroute\[morph\]"):
            LexicalEncoder(LexicalSettings(analyzer="char+morph"))
    finally:
        lexical_module._morphemes.cache_clear()


async def test_the_router_refuses_an_index_built_with_another_analyser(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    def settings(analyzer: str) -> Settings:
        return make_settings(
            retrieval={"mode": "lexical"},
            lexical={"analyzer": analyzer},
            encoder={"model": "/nowhere"},
            zero_shot={"method": "off"},
            router={"k": 2, "similarity_threshold": 0.1},
            index={"canary_per_label": 0},
        )

    built = settings("char+morph")
    await run_index(built, _table(tmp_path / "t.csv", ROWS), progress=False)
    store = EmbeddedStore(built.store.location, built.store.collection)
    try:
        morph = Classifier(built, None, None, store)
        await morph.refresh_index()
        (prediction,) = await morph.classify([Query("모레 날씨 알려 줘")])
        assert prediction.label == "날씨"
        char = Classifier(settings("char"), None, None, store)
        with pytest.raises(EncoderMismatch, match="analyzer=char\\+morph"):
            await char.refresh_index()
    finally:
        await store.close()


def test_a_dense_router_never_loads_the_analyser(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from qroute.testing import BagOfWordsEncoder

    monkeypatch.setitem(sys.modules, "kiwipiepy", None)
    lexical_module._morphemes.cache_clear()
    try:
        settings = make_settings(lexical={"analyzer": "morph"}, zero_shot={"method": "off"})
        store = EmbeddedStore(settings.store.location, settings.store.collection)
        classifier = Classifier(settings, BagOfWordsEncoder(), None, store)
        assert classifier.retriever.lexical is None
    finally:
        lexical_module._morphemes.cache_clear()
