"""Sentence embeddings for table rows and queries."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from qroute.config import EncoderSettings
from qroute.embedding.backends import OnnxRunner, cache_root, model_inputs, onnx_file
from qroute.errors import ModelLoadError
from qroute.hub import resolve_model

__all__ = ["Encoder", "SentenceTransformerEncoder", "same_encoder", "weights_digest"]

# Written by ``qroute finetune-encoder`` into the model directory (see finetune_encoder).
RUN_FILE = "finetune.json"


def _finetune_run(folder: Path) -> str:
    """The run id of a model directory written by ``qroute finetune-encoder``, or ""."""
    try:
        run = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("run_id", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return str(run)[:12]


# Files that hold a model's weights, in any format sentence-transformers or transformers
# saves or a hub snapshot carries.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack")
_DIGESTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_DIGESTS_LOCK = threading.Lock()


def weights_digest(folder: Path) -> str:
    """A short hash of the model's weights: every weight file's relative name, size and
    content (all files when none has a weight suffix). Two models saved under the same
    folder name differ here; a copy of the same weights anywhere gives the same value.

    Hashing reads the weights once per process, about what loading them costs; the
    result is kept in memory keyed by each file's (name, size, mtime), so a reload of
    unchanged files does not read them again. Nothing is written beside the model (its
    directory may be read-only) or under the home directory (may be too, in a container).
    """
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)
    )
    if not files:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
    stats = [(p.relative_to(folder).as_posix(), p.stat()) for p in files]
    key = (str(folder.resolve()), tuple((n, st.st_size, st.st_mtime_ns) for n, st in stats))
    with _DIGESTS_LOCK:
        cached = _DIGESTS.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for (name, st), path in zip(stats, files, strict=True):
        digest.update(f"{name}\0{st.st_size}\0".encode())
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    value = digest.hexdigest()[:16]
    with _DIGESTS_LOCK:
        _DIGESTS[key] = value
    return value


# The pipeline's part of a fingerprint ("|pipe=" and a digest, see ``_pipeline_digest``).
_PIPELINE = re.compile(r"\|pipe=[0-9a-f]+")


def _pipeline_digest(model: Any) -> str:
    """A short hash of what the sentence-transformers pipeline does beside its weights:
    each module's type and config (pooling mode, dense and normalise layers), the
    truncation length and the model's own prompts. Edited in place (a pooling switched
    from mean to cls, a shorter max_seq_length), they change every vector while the
    weights stay the same."""
    parts: list[Any] = [
        [type(m).__name__, m.get_config_dict() if hasattr(m, "get_config_dict") else {}]
        for m in model
    ]
    parts.append(
        {
            "max_seq_length": model.max_seq_length,
            "prompts": getattr(model, "prompts", None),
            "default_prompt_name": getattr(model, "default_prompt_name", None),
        }
    )
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def same_encoder(built: str, running: str) -> bool:
    """Whether vectors recorded under fingerprint ``built`` (an index's, a tuning's) are
    this ``running`` encoder's. A fingerprint from before the pipeline joined it (no
    ``|pipe=``) matches the running one without its pipeline part: such an index stays
    searchable after an upgrade (the indexer still rebuilds it on its next run)."""
    if built == running:
        return True
    return _PIPELINE.search(built) is None and _PIPELINE.sub("", running) == built


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
        # A hub id resolves to its snapshot directory, so its files are hashed too.
        self._weights = weights_digest(Path(path))
        self._pipeline = _pipeline_digest(self._model)
        if settings.backend != "torch":
            self._swap_in_onnx()

    def _swap_in_onnx(self) -> None:
        """Replace the transformer inside the sentence-transformers pipeline with an ONNX
        Runtime session: tokenising, prompts, pooling and normalising stay its own."""
        settings = self._settings
        transformer = self._model[0]
        model = getattr(transformer, "model", None)
        if model is None or not hasattr(model, "config"):
            raise ModelLoadError(
                f"encoder.backend: {settings.backend}: the first module of {settings.model!r} "
                f"is {type(transformer).__name__}, not a Hugging Face transformer; "
                "set encoder.backend: torch"
            )
        run = f"-{self._run}" if self._run else ""
        path = onnx_file(
            model,
            key=f"{Path(settings.model.rstrip('/')).name}@{self._weights}{run}/encoder",
            backend=settings.backend,
            inputs=model_inputs(model, transformer.tokenizer),
            output="last_hidden_state",
            cache=cache_root(settings.onnx_cache),
            setting="encoder.backend",
        )
        # The torch weights are dropped with the model: the session holds its own.
        transformer.model = _onnx_module(OnnxRunner(path), model.config)

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def fingerprint(self) -> str:
        # The model's name, not where it was loaded from: a hub id and a local copy of
        # the same model ("jhgan/ko-sroberta-multitask", "/models/ko-sroberta-multitask")
        # give comparable vectors.
        # The name is for people; the weights' digest is what identifies the model: two
        # models saved under the same folder name ("model") differ there.
        # A directory that qroute fine-tuned also names its run: fine-tuning again into
        # the same directory changes every vector without changing the name.
        name = Path(self._settings.model.rstrip("/")).name
        run = f"|run={self._run}" if self._run else ""
        # ONNX fp32 agrees with torch to rounding, int8 only to about 0.99 cosine, so
        # an index is searched only with vectors of the backend that built it. torch
        # adds nothing: indexes built before backends existed stay valid.
        backend = "" if self._settings.backend == "torch" else f"|backend={self._settings.backend}"
        return (
            f"{name}@{self._weights}{run}|pipe={self._pipeline}|dim={self._dimension}"
            f"|prompt={self._settings.prompt!r}|norm=l2{backend}"
        )

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


def _onnx_module(runner: OnnxRunner, config: object) -> Any:
    import torch

    class OnnxTransformer(torch.nn.Module):
        """Stands where sentence-transformers keeps its Hugging Face model: takes the
        tokenizer's tensors, returns the token embeddings."""

        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.runner = runner

        def forward(self, **features: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"last_hidden_state": torch.from_numpy(self.runner.run(features))}

    return OnnxTransformer()
