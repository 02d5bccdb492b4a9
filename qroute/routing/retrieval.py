"""Finding a query's neighbours: dense, lexical or hybrid, always with a real similarity.

``dense``: the sentence encoder's cosine. ``lexical``: the IDF cosine of character
n-gram vectors (Qdrant's IDF modifier, see ``qroute.embedding.lexical``); no model at all.
``hybrid``: Qdrant fetches candidates by each vector and fuses them (reciprocal rank
fusion), then scores both similarities of exactly those candidates. The hybrid
similarity ``w * dense + (1 - w) * lexical`` is what thresholds and the vote use, since a
fused rank score is not a similarity. Candidates are ranked by that similarity
(``fusion: blend``) or kept in Qdrant's fused order (``fusion: rrf``).

The index records what it was built with; a retriever refuses an index whose vectors it
cannot compare with its own (another encoder, other n-grams, a missing vector).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qroute.config import RetrievalSettings, Settings
from qroute.embedding.dense import Encoder, same_encoder
from qroute.embedding.lexical import LexicalEncoder, Lexicon
from qroute.errors import EncoderMismatch
from qroute.store import VectorStore
from qroute.store.base import Candidate, SearchVector
from qroute.store.metadata import IndexMetadata
from qroute.types import Group, Hit, SparseVector

__all__ = ["Embedded", "Retriever", "fuse", "load_encoder"]


@dataclass(frozen=True)
class Embedded:
    """A batch of texts, ready to search: dense rows and/or sparse vectors.
    ``searched``: the sparse vectors the search sends when they are not ``sparse``
    itself (``lexical.min_query_idf`` pruned them); ``sparse`` stays whole for the
    linear head, which was fitted on whole vectors."""

    dense: npt.NDArray[np.float32] | None
    sparse: list[SparseVector] | None
    searched: list[SparseVector] | None = None

    def __len__(self) -> int:
        if self.dense is not None:
            return len(self.dense)
        return len(self.sparse or ())

    @property
    def search_sparse(self) -> list[SparseVector] | None:
        """The sparse vectors a search sends."""
        return self.searched if self.searched is not None else self.sparse

    def search_vectors(self) -> list[SearchVector]:
        """What a single-vector search sends: the dense rows, else the sparse vectors."""
        if self.dense is not None:
            return list(self.dense.tolist())
        return list(self.search_sparse or ())


class Retriever:
    """The encoders a retrieval mode needs, and the one way neighbours are found."""

    def __init__(self, mode: str, encoder: Encoder | None, lexical: LexicalEncoder | None) -> None:
        if mode != "lexical" and encoder is None:
            raise ValueError(f"retrieval mode {mode!r} needs a dense encoder")
        if mode != "dense" and lexical is None:
            raise ValueError(f"retrieval mode {mode!r} needs a lexical encoder")
        self.mode = mode
        self.encoder = encoder if mode != "lexical" else None
        self.lexical = lexical if mode != "dense" else None

    @classmethod
    def from_settings(cls, settings: Settings, encoder: Encoder | None = None) -> Retriever:
        """Load what the mode needs (``encoder``, when given, is used instead of loading
        the configured one): no model at all for ``lexical``."""
        if encoder is None:
            encoder = load_encoder(settings)
        mode = settings.retrieval.mode
        # Not in dense mode: the morph analyser loads a model of its own.
        lexical = LexicalEncoder(settings.lexical) if mode != "dense" else None
        return cls(mode, encoder, lexical)

    @property
    def fingerprint(self) -> str:
        """Identifies what the similarities come from (thresholds are tuned against it)."""
        if self.lexical is not None:
            # Query pruning changes the similarities (not the index's vectors, so it is
            # not in the n-grams' fingerprint): thresholds tuned without it do not hold.
            bound = self.lexical.settings.min_query_idf
            lexical = self.lexical.fingerprint + (
                f"|min_query_idf={bound:g}" if bound is not None else ""
            )
            if self.encoder is not None:
                return f"hybrid:{self.encoder.fingerprint}+{lexical}"
            return f"lexical:{lexical}"
        assert self.encoder is not None
        return self.encoder.fingerprint

    # -- the index ----------------------------------------------------------

    def describe(self, lexicon: Lexicon | None) -> dict[str, Any]:
        """The IndexMetadata fields that say what a version's vectors are: its retrieval
        mode, and the encoder's and n-grams' fingerprints (with the lexicon)."""
        data: dict[str, Any] = {"retrieval": self.mode}
        if self.encoder is not None:
            data["encoder"] = self.encoder.fingerprint
            data["dimension"] = self.encoder.dimension
        if self.lexical is not None:
            assert lexicon is not None
            data["lexical"] = self.lexical.fingerprint
            data["lexicon"] = lexicon.to_metadata()
        return data

    def check(self, version: str, metadata: IndexMetadata) -> Lexicon | None:
        """The version's lexicon (lexical and hybrid); EncoderMismatch when this
        retriever cannot search the version's vectors."""
        if self.encoder is not None:
            built = metadata.encoder
            if not same_encoder(built or "", self.encoder.fingerprint):
                # Vectors from another model are not comparable: searching them would
                # give confident nonsense.
                what = f"encoder {built!r}" if built else "no dense vectors"
                raise EncoderMismatch(
                    f"index version {version} was built with {what}, but this router runs "
                    f"{self.encoder.fingerprint!r} ({self.mode} mode): re-index with this "
                    "configuration, or restart the router with the index's",
                    version,
                )
        if self.lexical is None:
            return None
        built = metadata.lexical
        if built != self.lexical.fingerprint or metadata.lexicon is None:
            what = f"n-grams {built!r}" if built else "no lexical vectors"
            raise EncoderMismatch(
                f"index version {version} was built with {what}, but this router's "
                f"{self.mode} mode needs {self.lexical.fingerprint!r}: re-index with "
                "this configuration (`qroute index TABLE`), or restart the router with "
                "the index's retrieval settings",
                version,
            )
        return Lexicon.from_metadata(metadata.lexicon)

    # -- queries ------------------------------------------------------------

    def probe(self, lexicon: Lexicon | None) -> Embedded:
        """One query that finds a neighbour in any non-empty version this retriever can
        search, without a model call: a one-hot dense vector (a cosine search has no
        cut-off) and the lexicon's most frequent term (some example holds it)."""
        dense = None
        if self.encoder is not None:
            dense = np.zeros((1, self.encoder.dimension), dtype=np.float32)
            dense[0, 0] = 1.0
        sparse = None
        if self.lexical is not None:
            assert lexicon is not None
            counts = lexicon.frequencies
            common = max(counts, key=counts.__getitem__) if counts else None
            sparse = [
                SparseVector((common,), (1.0,)) if common is not None else SparseVector((), ())
            ]
        return Embedded(dense, sparse)

    def embed(self, texts: Sequence[str], lexicon: Lexicon | None) -> Embedded:
        """Blocking (a model call): run it on the model thread."""
        dense = self.encoder.encode(texts) if self.encoder is not None else None
        return self.with_lexical(texts, dense, lexicon)

    def with_lexical(
        self,
        texts: Sequence[str],
        dense: npt.NDArray[np.float32] | None,
        lexicon: Lexicon | None,
    ) -> Embedded:
        """``dense`` (the texts' dense rows, or None) with the texts' n-gram vectors
        where the mode has them, and the pruned ones a search sends
        (``lexical.min_query_idf``). Cheap: no model call."""
        if self.lexical is None:
            return Embedded(dense, None)
        assert lexicon is not None
        sparse = [lexicon.vector(self.lexical.terms(text)) for text in texts]
        bound = self.lexical.settings.min_query_idf
        searched = None if bound is None else [lexicon.prune(v, bound) for v in sparse]
        return Embedded(dense, sparse, searched)

    async def search_groups(
        self,
        store: VectorStore,
        version: str,
        embedded: Embedded,
        settings: RetrievalSettings,
        *,
        groups: int,
        group_size: int,
        labels: Sequence[Sequence[str] | None],
    ) -> list[list[Group]]:
        """For each query, the ``groups`` nearest labels with their ``group_size`` nearest
        examples (see ``VectorStore.search_groups``)."""
        if self.mode != "hybrid":
            return await store.search_groups(
                version,
                embedded.search_vectors(),
                groups=groups,
                group_size=group_size,
                labels=labels,
            )
        sparse = embedded.search_sparse
        assert embedded.dense is not None and sparse is not None
        found = await store.search_fused(
            version,
            embedded.dense.tolist(),
            sparse,
            limit=max(settings.candidates, groups * group_size),
            labels=labels,
        )
        return [
            fuse(candidates, settings, groups=groups, group_size=group_size) for candidates in found
        ]


def load_encoder(settings: Settings) -> Encoder | None:
    """The configured sentence encoder, or None in lexical mode (blocking: may download)."""
    if settings.retrieval.mode == "lexical":
        return None
    from qroute.embedding.dense import SentenceTransformerEncoder
    from qroute.hub import encoder_alternative

    without = encoder_alternative(settings.zero_shot.method)
    return SentenceTransformerEncoder(settings.encoder, without=without)


def fuse(
    candidates: Sequence[Candidate],
    settings: RetrievalSettings,
    *,
    groups: int,
    group_size: int,
) -> list[Group]:
    """Hybrid candidates (in Qdrant's fused order) -> label groups whose similarity is
    the blend of the two similarities the store scored."""
    weight = settings.dense_weight
    hits = [
        Hit(
            c.hit.row_id,
            c.hit.text,
            c.hit.label,
            weight * c.dense + (1.0 - weight) * c.lexical,
            dense_similarity=c.dense,
            lexical_similarity=c.lexical,
        )
        for c in candidates
    ]
    if settings.fusion == "blend":
        hits.sort(key=lambda h: h.similarity, reverse=True)
    by_label: dict[str, list[Hit]] = {}
    for hit in hits:
        kept = by_label.setdefault(hit.label, [])
        if len(kept) < group_size:
            kept.append(hit)
    chosen = list(by_label.items())[:groups]
    return [
        Group(label, tuple(sorted(kept, key=lambda h: h.similarity, reverse=True)))
        for label, kept in chosen
    ]
