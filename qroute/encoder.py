"""Sentence embeddings for table rows and queries."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from qroute.config import EncoderSettings
from qroute.models import resolve_model

__all__ = ["Encoder", "SentenceTransformerEncoder"]


class Encoder(Protocol):
    """Maps texts to L2-normalised float32 vectors, one row per text."""

    @property
    def dimension(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """Identifies the model and its settings; an index is only valid for the same value."""
        ...

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class SentenceTransformerEncoder:
    """Any sentence-transformers model, by hub id or local directory. Blocking: callers
    on an event loop run ``encode`` in a worker thread."""

    def __init__(self, settings: EncoderSettings) -> None:
        from sentence_transformers import SentenceTransformer

        self._settings = settings
        path = resolve_model(settings.model, "encoder", "QROUTE_ENCODER__MODEL")
        self._model = SentenceTransformer(path, device=settings.device)
        # Renamed in sentence-transformers 6; the old name warns there.
        dimension_of = getattr(self._model, "get_embedding_dimension", None)
        dimension_of = dimension_of or self._model.get_sentence_embedding_dimension
        dimension = dimension_of()
        if dimension is None:
            raise ValueError(f"encoder {settings.model!r} does not report an embedding dimension")
        self._dimension = int(dimension)

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def fingerprint(self) -> str:
        # The model's name, not where it was loaded from: a hub id and a local copy of
        # the same model ("jhgan/ko-sroberta-multitask", "/models/ko-sroberta-multitask")
        # give comparable vectors.
        name = Path(self._settings.model.rstrip("/")).name
        return f"{name}|dim={self._dimension}|prompt={self._settings.prompt!r}|norm=l2"

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        vectors = self._model.encode(
            list(texts),
            batch_size=self._settings.batch_size,
            prompt=self._settings.prompt or None,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
