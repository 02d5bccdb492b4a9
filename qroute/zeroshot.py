"""NLI zero-shot scoring: premise = the query, hypothesis = the template filled with a label."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qroute.config import NLISettings
from qroute.errors import ModelLoadError
from qroute.models import resolve_model
from qroute.types import LabelScore

__all__ = ["NLIZeroShot", "entailment_index"]


def entailment_index(label2id: Mapping[str, int], model: str) -> int:
    """The output index of the entailment class, read from the model's own ``label2id``."""
    for name, index in label2id.items():
        if name.strip().lower().startswith("entail"):
            return int(index)
    raise ModelLoadError(
        f"NLI model {model!r} has no entailment class in its config (label2id: {dict(label2id)}); "
        "use an NLI model whose config.json names its labels (entailment/neutral/contradiction)"
    )


class NLIZeroShot:
    """Scores (query, label) pairs with an NLI cross-encoder. Blocking: run off the event loop."""

    def __init__(self, settings: NLISettings) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._settings = settings
        self._torch = torch
        path = resolve_model(settings.model, "NLI", "QROUTE_NLI__MODEL")
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        self.model: Any = AutoModelForSequenceClassification.from_pretrained(path)
        self.model.to(settings.device).eval()
        self.entailment = entailment_index(self.model.config.label2id, settings.model)

    def score(
        self, items: Sequence[tuple[str, Sequence[str]]], template: str
    ) -> list[list[LabelScore]]:
        """For each (query, candidate labels), the entailment probability of every label,
        best first. All pairs of all items go through the model in one forward pass."""
        premises: list[str] = []
        hypotheses: list[str] = []
        for query, labels in items:
            for label in labels:
                premises.append(query)
                hypotheses.append(template.format(label=label))
        if not premises:
            return [[] for _ in items]
        batch = self.tokenizer(
            premises,
            hypotheses,
            padding=True,
            truncation=True,
            max_length=self._settings.max_length,
            return_tensors="pt",
        ).to(self._settings.device)
        with self._torch.inference_mode():
            logits = self.model(**batch).logits
        probabilities = logits.softmax(dim=-1)[:, self.entailment].tolist()

        results: list[list[LabelScore]] = []
        offset = 0
        for _, labels in items:
            scores = [
                LabelScore(label, float(p))
                for label, p in zip(
                    labels, probabilities[offset : offset + len(labels)], strict=True
                )
            ]
            offset += len(labels)
            results.append(sorted(scores, key=lambda s: s.score, reverse=True))
        return results
