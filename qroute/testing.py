"""Tiny models built locally, for tests and offline demos (no hub needed).

``build_tiny_models(texts, out_dir)`` trains a WordPiece tokenizer on ``texts`` and
writes a randomly initialised BERT as a sentence-transformers encoder and as an NLI
sequence classifier (entailment/neutral/contradiction). They load through exactly
the code path a hub model takes. Random weights: the encoder maps identical texts
to identical vectors and similar texts to nearby ones, no more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["BagOfWordsEncoder", "TinyModels", "build_tiny_models"]


@dataclass(frozen=True)
class TinyModels:
    encoder: Path
    nli: Path
    nli_unlabelled: Path  # an NLI-shaped classifier whose config names no entailment class


def build_tiny_models(
    texts: Iterable[str],
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    layers: int = 2,
) -> TinyModels:
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer  # type: ignore[no-redef,import-not-found]
    from tokenizers import BertWordPieceTokenizer
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        PreTrainedTokenizerFast,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    wordpiece = BertWordPieceTokenizer(lowercase=True, strip_accents=False)
    wordpiece.train_from_iterator(list(texts), vocab_size=2000, min_frequency=1)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=wordpiece._tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )

    def config(**extra: Any) -> BertConfig:
        return BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=2 * hidden_size,
            max_position_embeddings=128,
            **extra,
        )

    transformer_dir = out / "encoder-transformer"
    BertModel(config()).save_pretrained(transformer_dir)
    tokenizer.save_pretrained(transformer_dir)
    word = Transformer(str(transformer_dir), max_seq_length=64)
    pooling = Pooling(hidden_size, pooling_mode="mean")
    encoder_dir = out / "encoder"
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(encoder_dir))

    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
    nli_dir = out / "nli"
    BertForSequenceClassification(
        config(num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    ).save_pretrained(nli_dir)
    tokenizer.save_pretrained(nli_dir)

    unlabelled_dir = out / "nli-unlabelled"
    BertForSequenceClassification(config(num_labels=3)).save_pretrained(unlabelled_dir)
    tokenizer.save_pretrained(unlabelled_dir)
    return TinyModels(encoder=encoder_dir, nli=nli_dir, nli_unlabelled=unlabelled_dir)


class BagOfWordsEncoder:
    """A deterministic Encoder test double: each whitespace-separated word is one hashed
    dimension, the vector is L2-normalised. Texts sharing n of their words have cosine
    similarity n / sqrt(len(a) * len(b)), so a test can place examples exactly."""

    def __init__(self, dimension: int = 1024) -> None:
        self._dimension = dimension
        self.calls: list[list[str]] = []

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def fingerprint(self) -> str:
        return f"bag-of-words|dim={self._dimension}"

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        import hashlib

        import numpy as np

        self.calls.append(list(texts))
        vectors = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in set(text.split()):
                digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
                vectors[row, int.from_bytes(digest, "little") % self._dimension] = 1.0
            norm = float(np.linalg.norm(vectors[row]))
            if norm:
                vectors[row] /= norm
        return vectors
