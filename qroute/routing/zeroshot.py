"""Zero-shot scorers: what decides when the neighbours are not enough.

``NLIZeroShot``: premise = the query, hypothesis = the template filled with each
candidate label (or its description); every pair of every query in one forward pass.
``EmbeddingZeroShot``: cosine similarity between the query and each label's
description, embedded with the router's own encoder; no NLI model needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from qroute.config import NLISettings, ZeroShotSettings
from qroute.embedding.backends import OnnxRunner, cache_root, model_inputs, onnx_file
from qroute.embedding.dense import Encoder, weights_digest
from qroute.errors import ModelLoadError
from qroute.hub import resolve_model
from qroute.types import LabelScore

__all__ = [
    "EmbeddingZeroShot",
    "NLIZeroShot",
    "ZeroShotItem",
    "ZeroShotScorer",
    "class_index",
    "entailment_index",
]


@dataclass(frozen=True, slots=True)
class ZeroShotItem:
    """One query to score: its text, its dense embedding (None in lexical mode), and
    the candidate labels."""

    text: str
    vector: npt.NDArray[np.float32] | None
    labels: tuple[str, ...]


class ZeroShotScorer(Protocol):
    def method(self, settings: ZeroShotSettings) -> str:
        """The name reported in responses, e.g. ``nli-independent``."""
        ...

    def score(
        self, items: Sequence[ZeroShotItem], settings: ZeroShotSettings
    ) -> list[list[LabelScore]]:
        """Scores of each item's labels, best first. Blocking: run off the event loop."""
        ...


def class_index(label2id: Mapping[str, int], prefix: str) -> int | None:
    for name, index in label2id.items():
        if name.strip().lower().startswith(prefix):
            return int(index)
    return None


def entailment_index(label2id: Mapping[str, int], model: str) -> int:
    """The output index of the entailment class, read from the model's own ``label2id``."""
    index = class_index(label2id, "entail")
    if index is None:
        raise ModelLoadError(
            f"NLI model {model!r} has no entailment class in its config "
            f"(label2id: {dict(label2id)}); use an NLI model whose config.json names its "
            "labels (entailment/neutral/contradiction)"
        )
    return index


def _ranked(labels: Sequence[str], scores: Sequence[float]) -> list[LabelScore]:
    pairs = [LabelScore(label, float(s)) for label, s in zip(labels, scores, strict=True)]
    return sorted(pairs, key=lambda s: s.score, reverse=True)


class NLIZeroShot:
    """Any NLI sequence classifier, by hub id or local directory."""

    def __init__(self, settings: NLISettings, *, without: str = "") -> None:
        """``without``: what the error says removes the need for this model, if it fails."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = resolve_model(settings.model, "NLI", "QROUTE_NLI__MODEL", without)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path)
        runner = None
        if settings.backend != "torch":
            name = Path(settings.model.rstrip("/")).name
            onnx = onnx_file(
                model,
                key=f"{name}@{weights_digest(Path(path))}/nli",
                backend=settings.backend,
                inputs=model_inputs(model, tokenizer),
                output="logits",
                cache=cache_root(settings.onnx_cache),
                setting="nli.backend",
            )
            runner = OnnxRunner(onnx)
        self._setup(settings, model, tokenizer, torch, runner)

    @classmethod
    def from_model(cls, settings: NLISettings, model: Any, tokenizer: Any) -> NLIZeroShot:
        """A scorer over a model already in memory (fine-tuning measures its own model),
        run in PyTorch whatever ``settings.backend`` says."""
        import torch

        scorer = cls.__new__(cls)
        scorer._setup(settings, model, tokenizer, torch)
        return scorer

    def _setup(
        self,
        settings: NLISettings,
        model: Any,
        tokenizer: Any,
        torch: Any,
        runner: OnnxRunner | None = None,
    ) -> None:
        self._settings = settings
        self._torch = torch
        self.tokenizer: Any = tokenizer
        # With an ONNX backend the session holds the weights; the torch model goes.
        self.runner = runner
        self.model: Any = None if runner is not None else model.to(settings.device).eval()
        label2id = model.config.label2id
        self.entailment = entailment_index(label2id, settings.model)
        # Without a contradiction class, "independent" falls back to the entailment
        # probability over every class.
        self.contradiction = class_index(label2id, "contradict")

    def method(self, settings: ZeroShotSettings) -> str:
        return f"nli-{settings.mode}"

    def logits(self, premises: Sequence[str], hypotheses: Sequence[str]) -> Any:
        """Raw logits of every (premise, hypothesis) pair, in one forward pass."""
        batch = self.tokenizer(
            list(premises),
            list(hypotheses),
            padding=True,
            truncation=True,
            max_length=self._settings.max_length,
            return_tensors="np" if self.runner is not None else "pt",
        )
        if self.runner is not None:
            return self._torch.from_numpy(self.runner.run(batch))
        batch = batch.to(self._settings.device)
        with self._torch.inference_mode():
            return self.model(**batch).logits.float()

    def score(
        self, items: Sequence[ZeroShotItem], settings: ZeroShotSettings
    ) -> list[list[LabelScore]]:
        premises = [item.text for item in items for _ in item.labels]
        hypotheses = [settings.hypothesis(label) for item in items for label in item.labels]
        if not premises:
            return [[] for _ in items]
        logits = self.logits(premises, hypotheses)
        results: list[list[LabelScore]] = []
        offset = 0
        for item in items:
            rows = logits[offset : offset + len(item.labels)]
            offset += len(item.labels)
            if settings.mode == "single":
                probabilities = rows[:, self.entailment].softmax(dim=0)
            elif self.contradiction is not None:
                pair = rows[:, [self.entailment, self.contradiction]]
                probabilities = pair.softmax(dim=-1)[:, 0]
            else:
                probabilities = rows.softmax(dim=-1)[:, self.entailment]
            results.append(_ranked(item.labels, probabilities.tolist()))
        return results


class EmbeddingZeroShot:
    """Similarity between the query and each label's description (or its name)."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._cache: dict[str, npt.NDArray[np.float32]] = {}

    def method(self, settings: ZeroShotSettings) -> str:
        return "embedding"

    def score(
        self, items: Sequence[ZeroShotItem], settings: ZeroShotSettings
    ) -> list[list[LabelScore]]:
        texts = {
            settings.label_descriptions.get(label, label) for item in items for label in item.labels
        }
        missing = sorted(texts - self._cache.keys())
        if missing:
            # Descriptions change only on a config reload: embed each once.
            self._cache.update(zip(missing, self._encoder.encode(missing), strict=True))
        results = []
        for item in items:
            assert item.vector is not None, "embedding zero-shot needs the dense encoder"
            vectors = [self._cache[settings.label_descriptions.get(lb, lb)] for lb in item.labels]
            similarities = np.stack(vectors) @ item.vector if vectors else np.array([])
            results.append(_ranked(item.labels, similarities.tolist()))
        return results
