"""The model sections: the sentence encoder, the lexical analyser and the NLI model
(all restart-only)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from qroute.config.section import Section

# The inference backends of the encoder and the NLI model (qroute.embedding.backends).
Backend = Literal["torch", "onnx", "onnx-int8"]


def _cpu_only(section: str, backend: Backend, device: str) -> None:
    # ONNX Runtime runs here on the CPU execution provider only.
    if backend != "torch" and device != "cpu":
        raise ValueError(
            f"{section}.backend: {backend} runs on the CPU; set {section}.device: cpu "
            f"(not {device!r}) or {section}.backend: torch"
        )


class EncoderSettings(Section):
    model: str = "jhgan/ko-sroberta-multitask"
    device: str = "cpu"
    batch_size: int = Field(64, ge=1, le=4096)
    # e5-style models expect a prefix ("query: "); it is applied to table rows
    # and queries alike, since both are queries.
    prompt: str = ""
    # torch, or ONNX Runtime: onnx (fp32) or onnx-int8 (dynamic int8 quantisation). The
    # model is exported once into onnx_cache; an index is searched only with the backend
    # that built it (the backend is part of the encoder fingerprint).
    backend: Backend = "torch"
    # Where exported models are kept, keyed by the weights' digest; "" is
    # $XDG_CACHE_HOME/qroute/onnx (~/.cache/qroute/onnx).
    onnx_cache: str = ""

    @model_validator(mode="after")
    def _backend_device(self) -> EncoderSettings:
        _cpu_only("encoder", self.backend, self.device)
        return self


class LexicalSettings(Section):
    """Character n-gram sparse vectors (restart-only: an index is built with them)."""

    ngram_min: int = Field(1, ge=1, le=10)
    ngram_max: int = Field(3, ge=1, le=10)
    # n-grams within words (each padded with a space), or across the whole text.
    word_boundaries: bool = True
    # Decompose Hangul syllables into jamo first: a one-jamo typo or a dropped 받침
    # then changes a few terms, not the whole syllable's (use larger n-grams with it).
    jamo: bool = False
    # Terms are hashed into this many dimensions.
    dimensions: int = Field(2**20, ge=1024, le=2**31)
    # What the terms are: char (character n-grams), morph (Korean morphemes from
    # kiwipiepy, form/POS unigrams and bigrams: the [morph] extra), or char+morph (both;
    # the morphemes hashed into [dimensions, 2 * dimensions), apart from the n-grams).
    analyzer: Literal["char", "morph", "char+morph"] = "char"
    # Query-side only: search with just the query's terms whose IDF in the searched
    # version is at least this (None: every term). The commonest terms (single letters,
    # frequent word endings) have the longest posting lists and add least to the cosine;
    # the similarities are then over the kept terms (never higher than the full ones).
    min_query_idf: float | None = Field(None, ge=0.0, le=20.0)

    @model_validator(mode="after")
    def _range(self) -> LexicalSettings:
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min ({self.ngram_min}) > ngram_max ({self.ngram_max})")
        return self


class NLISettings(Section):
    """The NLI cross-encoder behind the ``nli`` zero-shot method (restart-only)."""

    model: str = "Huffon/klue-roberta-base-nli"
    device: str = "cpu"
    max_length: int = Field(128, ge=8, le=4096)
    # As encoder.backend; onnx-int8 is the fast one (bench/RESULTS.md): check its accuracy
    # on your data (`qroute eval`) before use.
    backend: Backend = "torch"
    onnx_cache: str = ""

    @model_validator(mode="after")
    def _backend_device(self) -> NLISettings:
        _cpu_only("nli", self.backend, self.device)
        return self

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "quantize" in data:
            raise ValueError(
                "nli.quantize was replaced by nli.backend: write backend: onnx-int8 "
                "(for quantize: int8) or remove the key (for quantize: none)"
            )
        return data
