"""Sentence embeddings for table rows and queries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from qroute.config import EncoderSettings
from qroute.hub import resolve_model

__all__ = ["Encoder", "SentenceTransformerEncoder"]

# Written by ``qroute finetune-encoder`` into the model directory (see finetune_encoder).
RUN_FILE = "finetune.json"


def _finetune_run(folder: Path) -> str:
    """The run id of a model directory written by ``qroute finetune-encoder``, or ""."""
    try:
        run = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("run_id", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return str(run)[:12]


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

    def __init__(self, settings: EncoderSettings, *, without: str = "") -> None:
        """``without``: what the error says removes the need for this model, if it fails."""
        from sentence_transformers import SentenceTransformer

        self._settings = settings
        path = resolve_model(settings.model, "encoder", "QROUTE_ENCODER__MODEL", without)
        self._model = SentenceTransformer(path, device=settings.device)
        # Renamed in sentence-transformers 6; the old name warns there.
        dimension_of = getattr(self._model, "get_embedding_dimension", None)
        dimension_of = dimension_of or self._model.get_sentence_embedding_dimension
        dimension = dimension_of()
        if dimension is None:
            raise ValueError(f"encoder {settings.model!r} does not report an embedding dimension")
        self._dimension = int(dimension)
        self._run = _finetune_run(Path(path))

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def fingerprint(self) -> str:
        # The model's name, not where it was loaded from: a hub id and a local copy of
        # the same model ("jhgan/ko-sroberta-multitask", "/models/ko-sroberta-multitask")
        # give comparable vectors.
        # A directory that qroute fine-tuned also names its run: fine-tuning again into
        # the same directory changes every vector without changing the name.
        name = Path(self._settings.model.rstrip("/")).name
        run = f"|run={self._run}" if self._run else ""
        return f"{name}{run}|dim={self._dimension}|prompt={self._settings.prompt!r}|norm=l2"

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
