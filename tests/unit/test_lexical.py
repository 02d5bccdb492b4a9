"""Character n-gram terms and the IDF arithmetic the store's IDF modifier must match."""

from __future__ import annotations

import math
import unicodedata
from collections import Counter

import pytest

from qroute.config import LexicalSettings
from qroute.embedding.lexical import LexicalEncoder, Lexicon


def _grams(settings: LexicalSettings, text: str) -> set[str]:
    return set(LexicalEncoder(settings)._grams(text))


def test_ngrams_stay_within_words_and_mark_their_edges() -> None:
    grams = _grams(LexicalSettings(ngram_min=1, ngram_max=2), "맛집 추천")
    assert {"맛", "집", " 맛", "맛집", "집 ", " 추", "추천", "천 "} <= grams
    assert "집 추" not in grams  # no n-gram spans two words
    across = _grams(LexicalSettings(ngram_min=3, ngram_max=3, word_boundaries=False), "맛집 추천")
    assert "집 추" in across


def test_decomposed_input_gives_the_same_terms_as_composed() -> None:
    encoder = LexicalEncoder(LexicalSettings())
    text = "서귀포 맛집 알려줘"
    assert encoder.terms(unicodedata.normalize("NFD", text)) == encoder.terms(text)


def test_jamo_terms_survive_a_one_jamo_typo_better_than_syllable_terms() -> None:
    right, typo = "날씨 알려줘", "날시 알려줘"  # ㅆ -> ㅅ

    def overlap(settings: LexicalSettings) -> float:
        encoder = LexicalEncoder(settings)
        a, b = set(encoder.terms(right)), set(encoder.terms(typo))
        return len(a & b) / len(a | b)

    syllables = overlap(LexicalSettings(ngram_min=1, ngram_max=3))
    jamo = overlap(LexicalSettings(ngram_min=2, ngram_max=4, jamo=True))
    assert jamo > syllables


def test_idf_is_qdrants_formula() -> None:
    lexicon = Lexicon(points=4, frequencies={1: 3, 2: 1})
    assert lexicon.idf(1) == pytest.approx(math.log(1 + (4 - 3 + 0.5) / (3 + 0.5)))
    assert lexicon.idf(2) == pytest.approx(math.log(1 + (4 - 1 + 0.5) / (1 + 0.5)))
    assert lexicon.idf(99) == pytest.approx(math.log(1 + 4.5 / 0.5))  # never seen


def test_vectors_have_unit_idf_norm_so_scores_are_cosines() -> None:
    encoder = LexicalEncoder(LexicalSettings())
    texts = ["코스닥 지수 알려줘", "코스피 지수 알려줘", "서귀포 맛집 알려줘"]
    lexicon = Lexicon.count(encoder.terms(t) for t in texts)
    vectors = [lexicon.vector(encoder.terms(t)) for t in texts]
    assert lexicon.similarity(vectors[0], vectors[0]) == pytest.approx(1.0)
    same_topic = lexicon.similarity(vectors[0], vectors[1])
    other_topic = lexicon.similarity(vectors[0], vectors[2])
    assert 1.0 > same_topic > other_topic > 0.0
    assert lexicon.similarity(vectors[0], vectors[1]) == pytest.approx(
        lexicon.similarity(vectors[1], vectors[0])
    )
    assert lexicon.vector(encoder.terms("   ")).indices == ()


def test_lexicon_survives_the_metadata_round_trip() -> None:
    lexicon = Lexicon(points=7, frequencies={5: 2, 1_000_000: 7})
    again = Lexicon.from_metadata(lexicon.to_metadata())
    assert again == lexicon


def test_ngram_range_is_validated() -> None:
    with pytest.raises(ValueError, match="ngram_min"):
        LexicalSettings(ngram_min=4, ngram_max=2)


def test_pruning_keeps_the_rare_terms_and_their_share_of_the_cosine() -> None:
    # Term 1 is in every row but one (IDF ~0.1), term 2 in half, term 3 in one row.
    lexicon = Lexicon(points=10, frequencies={1: 9, 2: 5, 3: 1})
    query = lexicon.vector(Counter({1: 1, 2: 1, 3: 1}))
    pruned = lexicon.prune(query, min_idf=0.5)
    assert pruned.indices == (2, 3)
    assert pruned.as_dict() == {i: v for i, v in query.as_dict().items() if i != 1}
    example = lexicon.vector(Counter({1: 1, 3: 1}))
    assert 0 < lexicon.similarity(pruned, example) < lexicon.similarity(query, example)
    # Nothing reaches the bound: the query is searched whole, not as nothing.
    common = lexicon.vector(Counter({1: 1}))
    assert lexicon.prune(common, min_idf=0.5) == common
