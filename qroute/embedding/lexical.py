"""Character n-gram sparse vectors: the lexical side of retrieval, no model needed.

Short Korean requests share stems and particles more than whole words, so the terms
are character n-grams (within words by default, each word padded with a space), after
Unicode NFC, optionally over jamo (Hangul syllables decomposed) so that a one-jamo typo
or a dropped 받침 changes a few terms instead of every n-gram of the syllable. Terms
are hashed into a fixed space: no vocabulary to ship or grow.

``lexical.analyzer: morph`` (or ``char+morph``) adds Korean morphemes from kiwipiepy
(the ``[morph]`` extra, its model included): each morpheme's form/POS, and each pair of
neighbouring ones, so "알려" and "알리" meet as the verb 알리/VV whatever the ending.
They are hashed into a range of their own, ``[dimensions, 2 * dimensions)``, so a
morpheme never collides with an n-gram and the linear head can weigh the two kinds of
term as separate blocks (``morph_from``).

Weights are set so that Qdrant's IDF modifier scores a query against an example with
their IDF-weighted cosine: the store multiplies each shared term by its IDF,
``idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5))`` over the version's N points; an
example's values are its log-scaled term counts divided by their IDF-weighted norm, and
a query's likewise. The document frequencies that make this exact are counted by the
indexer over the version it writes, and travel in the version's metadata (a
``Lexicon``), so the router can normalise queries for the version it searches.
"""

from __future__ import annotations

import itertools
import math
import threading
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from qroute.config import LexicalSettings
from qroute.hub import optional_import
from qroute.types import SparseVector

__all__ = ["LexicalEncoder", "Lexicon", "SparseVector", "morph_from"]


def _words(text: str, jamo: bool) -> list[str]:
    text = unicodedata.normalize("NFC", text).lower()
    if jamo:
        # NFD splits each precomposed Hangul syllable into its conjoining jamo.
        text = unicodedata.normalize("NFD", text)
    return text.split()


class _Morphemes:
    """One kiwipiepy analyser per process (its model takes seconds to load), behind a
    lock: a call is well under a millisecond, and the analyser is not documented as
    safe to share between threads."""

    def __init__(self) -> None:
        kiwipiepy = optional_import("kiwipiepy", "morph", "lexical.analyzer: morph")
        self.version = str(kiwipiepy.__version__)
        self._kiwi = kiwipiepy.Kiwi()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> list[str]:
        """Each morpheme as "form/POS", in order."""
        with self._lock:
            tokens = self._kiwi.tokenize(text)
        return [f"{t.form}/{t.tag}" for t in tokens]


@cache
def _morphemes() -> _Morphemes:
    return _Morphemes()


class LexicalEncoder:
    """Turns texts into hashed character n-gram (and morpheme) counts (thread-safe)."""

    def __init__(self, settings: LexicalSettings) -> None:
        self.settings = settings
        # Fail at start, not on the first query, when the analyser is missing.
        self._morph = _morphemes() if "morph" in settings.analyzer else None

    @property
    def fingerprint(self) -> str:
        s = self.settings
        base = (
            f"char-ngram|{s.ngram_min}-{s.ngram_max}|words={s.word_boundaries}"
            f"|jamo={s.jamo}|dims={s.dimensions}|tf=log|idf=qdrant"
        )
        if self._morph is None:
            return base  # char alone: the fingerprint every earlier index carries
        # The analyser's version: another model may cut the same text differently.
        # "terms=split": morphemes hashed above the n-grams' range (not into it).
        return f"{base}|analyzer={s.analyzer}|kiwipiepy={self._morph.version}|terms=split"

    def morphemes(self, text: str) -> list[str]:
        """The text's morphemes as "form/POS" (with the morph analyser; else empty)."""
        if self._morph is None:
            return []
        return self._morph(unicodedata.normalize("NFC", text).lower())

    def _morph_terms(self, text: str) -> Iterable[str]:
        units = self.morphemes(text)
        # A prefix of their own: a morpheme never shares a hash input with an n-gram.
        yield from (f"\x00m:{u}" for u in units)
        yield from (f"\x00m2:{a}+{b}" for a, b in itertools.pairwise(units))

    def _grams(self, text: str) -> Iterable[str]:
        s = self.settings
        words = _words(text, s.jamo)
        # Within words: " 서귀포 " yields " 서", "서귀", ... so a term knows where a word
        # starts and ends. Otherwise one string with single spaces: n-grams span words.
        pieces = [f" {w} " for w in words] if s.word_boundaries else [f" {' '.join(words)} "]
        for piece in pieces:
            for n in range(s.ngram_min, s.ngram_max + 1):
                for start in range(len(piece) - n + 1):
                    gram = piece[start : start + n]
                    if not gram.isspace():
                        yield gram

    def terms(self, text: str) -> Counter[int]:
        """Hashed term -> count. crc32, not ``hash``: the same across processes."""
        dims = self.settings.dimensions
        analyzer = self.settings.analyzer
        counts: Counter[int] = Counter()
        if analyzer != "morph":
            counts.update(zlib.crc32(g.encode("utf-8")) % dims for g in self._grams(text))
        if analyzer != "char":
            start = morph_from(self.settings)
            counts.update(
                start + zlib.crc32(m.encode("utf-8")) % dims for m in self._morph_terms(text)
            )
        return counts


def morph_from(settings: LexicalSettings) -> int:
    """The first morpheme term: every term below it is a character n-gram's."""
    return settings.dimensions


@dataclass(frozen=True)
class Lexicon:
    """Document frequencies of one index version: what Qdrant's IDF is computed from."""

    points: int
    frequencies: Mapping[int, int]

    @classmethod
    def count(cls, documents: Iterable[Counter[int]]) -> Lexicon:
        frequencies: Counter[int] = Counter()
        points = 0
        for terms in documents:
            frequencies.update(terms.keys())
            points += 1
        return cls(points, dict(frequencies))

    def idf(self, term: int) -> float:
        n = self.frequencies.get(term, 0)
        return math.log(1.0 + (self.points - n + 0.5) / (n + 0.5))

    def vector(self, terms: Counter[int]) -> SparseVector:
        """Log-scaled counts with unit IDF-weighted norm. The same for examples and
        queries: Qdrant's score of one against the other is then their cosine. A query's
        terms that no example has count in its norm (they are part of what it says)."""
        if not terms:
            return SparseVector((), ())
        indices = sorted(terms)
        weights = [1.0 + math.log(terms[i]) for i in indices]
        norm = math.sqrt(sum(w * w * self.idf(i) for i, w in zip(indices, weights, strict=True)))
        return SparseVector(tuple(indices), tuple(w / norm for w in weights))

    def prune(self, query: SparseVector, min_idf: float) -> SparseVector:
        """``query`` with only its terms of IDF at least ``min_idf``, its values (and
        so its norm) unchanged: its score against an example is then the part of their
        cosine the kept terms make, never more than the whole. A query none of whose
        terms reaches the bound is kept whole (it would otherwise find nothing)."""
        kept = [
            (i, v)
            for i, v in zip(query.indices, query.values, strict=True)
            if self.idf(i) >= min_idf
        ]
        if not kept or len(kept) == len(query.indices):
            return query
        return SparseVector(tuple(i for i, _ in kept), tuple(v for _, v in kept))

    def similarity(self, query: SparseVector, example: SparseVector) -> float:
        """What Qdrant scores for ``query`` against ``example``: their IDF cosine."""
        other = example.as_dict()
        return sum(
            v * other[i] * self.idf(i)
            for i, v in zip(query.indices, query.values, strict=True)
            if i in other
        )

    def to_metadata(self) -> dict[str, Any]:
        # JSON object keys are strings; a flat [term, count, term, count, ...] list is
        # about half the size.
        flat = [x for pair in sorted(self.frequencies.items()) for x in pair]
        return {"points": self.points, "frequencies": flat}

    @classmethod
    def from_metadata(cls, data: Mapping[str, Any]) -> Lexicon:
        flat: Sequence[int] = data["frequencies"]
        return cls(int(data["points"]), dict(zip(flat[::2], flat[1::2], strict=True)))
